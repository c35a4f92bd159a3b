//! What an `ip tunnel` user types, xtun accepts and prints the same way:
//! commands replayed against the real `xtun` binary, their output, JSON
//! and exit status compared with what iproute2 6.1 on Linux 6.1 gives for
//! the same words (the expected lines below were taken from it). The
//! binary runs with `-n NAME` (iproute2's `-netns`), so that is tested too.
//! Needs root.

mod common;

use std::{io::Write as _, process::Command};

use tunnel_userspace::testbed::{run, unique_prefix, Netns};

use common::net::{exec_line, XTUN};

/// A namespace with v1 10.10.10.2/16 on a veth to a peer namespace, and a
/// route to 10.10.20.0/24 through the peer: every remote below has a route.
struct Site {
    ns: Netns,
    _peer: Netns,
}

impl Site {
    fn new(tag: &str) -> Self {
        let prefix = unique_prefix(tag);
        let ns = Netns::new(format!("{prefix}-a")).unwrap();
        let peer = Netns::new(format!("{prefix}-b")).unwrap();
        run(&[
            "ip", "link", "add", "v1", "netns", &ns.name, "type", "veth", "peer", "name", "v2",
            "netns", &peer.name,
        ])
        .unwrap();
        exec_line(&ns, "ip addr add 10.10.10.2/16 dev v1");
        exec_line(&ns, "ip link set v1 up");
        exec_line(&ns, "ip route add 10.10.20.0/24 via 10.10.10.1");
        exec_line(&peer, "ip addr add 10.10.10.1/16 dev v2");
        exec_line(&peer, "ip link set v2 up");
        Self { ns, _peer: peer }
    }

    /// `xtun -n NS words…`: (exit status, stdout, stderr).
    fn xtun(&self, words: &str) -> (i32, String, String) {
        let out = Command::new(XTUN)
            .args(["-n", &self.ns.name])
            .args(words.split_whitespace())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// Succeeds quietly; returns stdout.
    fn ok(&self, words: &str) -> String {
        let (code, out, err) = self.xtun(words);
        assert_eq!((code, err.as_str()), (0, ""), "xtun {words}");
        out
    }

    /// Fails with exactly `line` on stderr (one line) and `status`.
    fn fails(&self, words: &str, status: i32, line: &str) {
        let (code, out, err) = self.xtun(words);
        assert_eq!(
            (code, err.as_str(), out.as_str()),
            (status, format!("{line}\n").as_str(), ""),
            "xtun {words}"
        );
    }
}

#[test]
fn the_lines_of_issue_16_as_iproute2_gives_them() {
    let s = Site::new("gr1");
    // The mode from the name; ttl 0 is inherit; C-notation key and ttl.
    s.ok("tunnel add gre5 remote 10.10.20.9 local 10.10.10.2");
    s.ok("tunnel a tun11 mode gre remote 10.10.20.10 local 10.10.10.2 ttl 0");
    s.ok("tunnel add tun12 mode gre remote 10.10.20.11 local 10.10.10.2 key 010");
    s.ok("tunnel add tun13 mode gre remote 10.10.20.12 local 10.10.10.2 ttl 0x40");
    assert_eq!(
        s.ok("tun sh tun12"),
        "tun12: gre/ip remote 10.10.20.11 local 10.10.10.2 ttl inherit key 8\n"
    );
    assert_eq!(
        s.ok("tunnel show gre5"),
        "gre5: gre/ip remote 10.10.20.9 local 10.10.10.2 ttl inherit\n"
    );
    assert_eq!(
        s.ok("tunnel show tun11"),
        "tun11: gre/ip remote 10.10.20.10 local 10.10.10.2 ttl inherit\n"
    );
    assert_eq!(
        s.ok("tunnel show tun13"),
        "tun13: gre/ip remote 10.10.20.12 local 10.10.10.2 ttl 64\n"
    );

    s.fails(
        "tunnel add tun9 mode ipip remote 10.10.20.8 local 10.10.10.2 key 5",
        1,
        "Keys are not allowed with ipip and sit tunnels",
    );
    s.fails(
        "tunnel add tun10 mode gre remote 10.10.20.8 local 10.10.10.2 ttl 64 nopmtudisc",
        1,
        "ttl != 0 and nopmtudisc are incompatible",
    );
    s.fails(
        "tunnel add tun14 mode bogus remote 10.10.20.9",
        255,
        "Unknown tunnel mode \"bogus\"",
    );
    s.fails(
        "tunnel add tun15 remote 10.10.20.9",
        1,
        "cannot determine tunnel mode (ipip, gre, vti or sit)",
    );
    s.fails(
        "tunnel del nosuch",
        1,
        "delete tunnel \"nosuch\" failed: No such device",
    );
    // Multipoint without `dev`: it receives where its local address is.
    s.ok("tunnel add tun7 mode gre remote any local 10.10.10.2 key 7");
    let shown = s.ok("-j tunnel show tun7");
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc[0]["underlay"], "v1", "{shown}");
    // With local any too there is nothing to tell where: `dev` is needed.
    let (code, _, err) = s.xtun("tunnel add tun8 mode gre remote any key 8");
    assert_eq!(code, 1);
    assert!(err.contains("needs `dev PHYS`"), "{err}");
}

#[test]
fn json_has_ip_j_tunnel_shows_fields_in_its_order() {
    let s = Site::new("gr2");
    s.ok("tunnel add tun2 mode gre remote 10.10.20.3 local 10.10.10.2 key 42");
    s.ok("tunnel add tun3 mode gre remote 10.10.20.4 local 10.10.10.2 ttl 64 ikey 11 okey 22 csum seq");
    s.ok("tunnel add tun4 mode ipip remote 10.10.20.5 local 10.10.10.2 ttl 10");
    s.ok("tunnel add tun6 mode gre remote 10.10.20.7 local 10.10.10.2 nopmtudisc key 1.2.3.4");
    s.ok("tunnel add tun7 mode gre remote any local 10.10.10.2 key 7");
    let out = s.ok("-j tunnel show");
    // ip -j tunnel show, one record each; xtun's own fields follow.
    let expected = [
        r#"{"ifname":"tun2","mode":"gre/ip","remote":"10.10.20.3","local":"10.10.10.2","key":42,"flags":[]"#,
        r#"{"ifname":"tun3","mode":"gre/ip","remote":"10.10.20.4","local":"10.10.10.2","ttl":64,"ikey":11,"okey":22,"flags":["rx_drop_ooseq","rx_csum","tx_seq","tx_csum"]"#,
        r#"{"ifname":"tun4","mode":"ip/ip","remote":"10.10.20.5","local":"10.10.10.2","ttl":10"#,
        r#"{"ifname":"tun6","mode":"gre/ip","remote":"10.10.20.7","local":"10.10.10.2","nopmtudisc":null,"key":16909060,"flags":[]"#,
        r#"{"ifname":"tun7","mode":"gre/ip","remote":"0.0.0.0","local":"10.10.10.2","key":7,"flags":[]"#,
    ];
    let records = records_of(&out);
    assert_eq!(records.len(), expected.len(), "{out}");
    for (record, ip) in records.iter().zip(expected) {
        assert!(
            record.starts_with(ip) && record[ip.len()..].starts_with(",\"ifindex\":"),
            "\n  xtun: {record}\n    ip: {ip}"
        );
    }
    let docs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(docs[0]["underlay"], "v1");
    assert_eq!(docs[1]["mtu"], 1464);
    // -p changes the layout, not the document.
    let pretty: serde_json::Value = serde_json::from_str(&s.ok("-j -p tunnel show")).unwrap();
    assert_eq!(pretty, docs);
}

/// The objects of a compact JSON array, as text (fields in printed order).
fn records_of(array: &str) -> Vec<String> {
    let inner = array.trim().trim_start_matches('[').trim_end_matches(']');
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' | '[' => {
                if depth == 0 && c == '{' {
                    start = i;
                }
                depth += 1;
            }
            '}' | ']' => {
                depth -= 1;
                if depth == 0 && c == '}' {
                    out.push(inner[start..=i].to_string());
                }
            }
            _ => {}
        }
    }
    out
}

#[test]
fn keyword_and_option_prefixes_as_ip_matches_them() {
    let s = Site::new("gr3");
    s.ok("tunl a tun1 mode gre remote 10.10.20.2 local 10.10.10.2 key 5");
    s.ok("t add ipip1 remote 10.10.20.3 local 10.10.10.2");
    let line1 = "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 5\n";
    let line2 = "ipip1: ip/ip remote 10.10.20.3 local 10.10.10.2 ttl inherit\n";
    let all = format!("{line1}{line2}");
    // A bare `tunnel` lists, as `ip tunnel` does; every spelling of show.
    for words in [
        "tunnel",
        "tunnel show",
        "tun sh",
        "tu s",
        "t l",
        "tunl lst",
        "tunnel list",
        "--stats --stats -d tunnel",
    ] {
        let expected = if words.contains("stats") {
            None
        } else {
            Some(all.as_str())
        };
        let out = s.ok(words);
        if let Some(e) = expected {
            assert_eq!(out, e, "{words}");
        } else {
            assert!(out.starts_with(line1.trim_end()), "{words}: {out}");
            assert!(out.contains("RX: Packets"), "{words}: {out}");
        }
    }
    for words in ["-j tunnel show", "-json tun show", "--json t", "-js tun"] {
        let v: serde_json::Value = serde_json::from_str(&s.ok(words)).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2, "{words}");
    }
    assert!(s.ok("-j -p tunnel show").lines().count() > 10);
    assert!(s.ok("-json -pretty tunnel show").lines().count() > 10);
    // change, delete.
    s.ok("tun ch tun1 ttl 9");
    assert!(s.ok("tun show tun1").contains(" ttl 9 "));
    s.ok("tunnel d ipip1");
    assert_eq!(
        s.ok("tunnel"),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl 9 key 5\n"
    );
    // -V is the version, as `ip -V`.
    let (code, out, _) = s.xtun("-V");
    assert_eq!(code, 0);
    assert!(out.starts_with("xtun "), "{out}");

    s.fails(
        "-x tunnel show",
        255,
        "Option \"-x\" is unknown, try \"xtun --help\".",
    );
    s.fails(
        "tunnel frob",
        255,
        "Command \"frob\" is unknown, try \"xtun tunnel help\".",
    );
}

#[test]
fn values_as_ip_reads_them() {
    let s = Site::new("gr4");
    // DSCP names and hex for tos, printed back as ip prints them.
    s.ok("tunnel add tos1 mode gre remote 10.10.20.2 local 10.10.10.2 tos CS6");
    s.ok("tunnel add tos2 mode gre remote 10.10.20.3 local 10.10.10.2 tos inherit/AF41");
    s.ok("tunnel add tos3 mode gre remote 10.10.20.4 local 10.10.10.2 dsfield 0x04");
    s.ok("tunnel add tos4 mode gre remote 10.10.20.5 local 10.10.10.2 tos inherit ttl 0377");
    assert_eq!(
        s.ok("tunnel show"),
        "tos1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit tos CS6\n\
         tos2: gre/ip remote 10.10.20.3 local 10.10.10.2 ttl inherit tos inherit/AF41\n\
         tos3: gre/ip remote 10.10.20.4 local 10.10.10.2 ttl inherit tos 0x04\n\
         tos4: gre/ip remote 10.10.20.5 local 10.10.10.2 ttl 255 tos inherit\n"
    );
    let docs: serde_json::Value = serde_json::from_str(&s.ok("-j tunnel show")).unwrap();
    assert_eq!(docs[0]["tos"], "CS6");
    // ip -j prints the kernel's byte: odd is inherit.
    assert_eq!(docs[1]["tos"], "0x89");
    // Plain inherit and ttl inherit only show in text.
    assert!(docs[3].get("tos").is_none() && docs[0].get("ttl").is_none());

    // Errors in ip's words and with its status.
    let add = "tunnel add t1 mode gre remote 10.10.20.2";
    for (tail, status, line) in [
        (
            "ttl 300",
            255,
            "Error: argument \"300\" is wrong: invalid TTL",
        ),
        (
            "ttl 08",
            255,
            "Error: argument \"08\" is wrong: invalid TTL",
        ),
        (
            "tos bogus",
            255,
            "Error: argument \"bogus\" is wrong: bad TOS value",
        ),
        (
            "tos inherit/zz",
            255,
            "Error: argument \"inherit\" is wrong: bad TOS value",
        ),
        (
            "key x",
            255,
            "invalid value for \"key\": \"x\"; it should be an unsigned integer",
        ),
        (
            "ikey 4294967296",
            255,
            "invalid value for \"ikey\": \"4294967296\"; it should be an unsigned integer",
        ),
        (
            "junk",
            255,
            "Error: either \"name\" is duplicate, or \"junk\" is a garbage.",
        ),
        (
            "local",
            255,
            "Command line is not complete. Try option \"help\"",
        ),
        (
            "mode ipip",
            255,
            "You managed to ask for more than one tunnel mode.",
        ),
        (
            "local 10.10.10.300",
            1,
            "Error: an IP address is expected rather than \"10.10.10.300\"",
        ),
        ("dev nosuch0", 1, "Cannot find device \"nosuch0\""),
    ] {
        s.fails(&format!("{add} {tail}"), status, line);
    }
    s.fails(
        "tunnel add t1 mode gre remote 10.10.20.2 local 10.10.10.2 key 5 nopmtudisc ttl 3",
        1,
        "ttl != 0 and nopmtudisc are incompatible",
    );
    s.ok("tunnel add t1 mode gre remote 10.10.20.2 local 10.10.10.2 key 5");
    s.fails(
        "tunnel add t1 mode gre remote 10.10.20.2 local 10.10.10.2",
        1,
        "add tunnel \"t1\" failed: File exists",
    );
}

#[test]
fn show_selects_as_ip_tunnel_show() {
    let s = Site::new("gr5");
    s.ok("tunnel add a1 mode gre remote 10.10.20.2 local 10.10.10.2 key 5");
    s.ok("tunnel add a2 mode gre remote 10.10.20.3 local 10.10.10.2 key 6 dev v1");
    s.ok("tunnel add a3 mode ipip remote 10.10.20.2 local 10.10.10.2");
    let names = |words: &str| -> Vec<String> {
        s.ok(words)
            .lines()
            .map(|l| l.split(':').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("tunnel show remote 10.10.20.2"), ["a1", "a3"]);
    assert_eq!(names("tunnel show local 10.10.10.2"), ["a1", "a2", "a3"]);
    assert_eq!(names("tunnel show dev v1"), ["a2"]);
    assert_eq!(names("tunnel show mode ipip"), ["a3"]);
    assert_eq!(names("tunnel show mode gre key 6"), ["a2"]);
    assert_eq!(
        names("tunnel show a3 remote 10.10.20.9"),
        Vec::<String>::new()
    );
    assert_eq!(names("tunnel show name a1"), ["a1"]);
    // A name without a mode filters, silently; a name with one (given, or
    // implied as in gre9) must exist.
    assert_eq!(s.ok("tunnel show nosuch"), "");
    s.fails(
        "tunnel show gre9",
        1,
        "get tunnel \"gre9\" failed: No such device",
    );
    s.fails(
        "tunnel show key 5",
        1,
        "Keys are not allowed with ipip and sit tunnels",
    );
    s.fails(
        "tunnel show dev nosuch0",
        1,
        "Cannot find device \"nosuch0\"",
    );
    // -o joins the continuation lines, as ip -o does.
    s.ok("tunnel add c1 mode gre remote 10.10.20.4 local 10.10.10.2 csum");
    assert_eq!(
        s.ok("-o tunnel show c1"),
        "c1: gre/ip remote 10.10.20.4 local 10.10.10.2 ttl inherit\\  Checksum in received packet is required.\\  Checksum output packets.\n"
    );
}

#[test]
fn netns_batch_and_force() {
    let s = Site::new("gr6");
    // -n and `ip netns exec` see the same tunnels.
    s.ok("tunnel add b0 mode gre remote 10.10.20.2 local 10.10.10.2");
    let via_exec = s.ns.exec(&[XTUN, "tunnel", "show"]).unwrap();
    assert_eq!(
        String::from_utf8(via_exec.stdout).unwrap(),
        s.ok("tunnel show")
    );
    let (code, _, err) = s.xtun_raw(&["-n", "xtun-no-such-ns", "tunnel", "show"]);
    assert_eq!(
        (code, err.as_str()),
        (
            255,
            "Cannot open network namespace \"xtun-no-such-ns\": No such file or directory\n"
        )
    );

    let dir = std::env::temp_dir().join(unique_prefix("grb"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("batch");
    let mut f = std::fs::File::create(&file).unwrap();
    writeln!(f, "tun a b1 mode gre remote 10.10.20.3 local 10.10.10.2").unwrap();
    writeln!(f, "tunnel add b2 mode bogus remote 10.10.20.4").unwrap();
    writeln!(
        f,
        "tunnel add b3 mode ipip remote 10.10.20.5 local 10.10.10.2"
    )
    .unwrap();
    drop(f);
    let path = file.to_str().unwrap();
    // Without -force: stops at the bad line; the lines before it stay.
    let (code, _, err) = s.xtun_raw(&["-n", &s.ns.name, "-batch", path]);
    assert_eq!(code, 1);
    assert!(err.contains(":2:"), "{err}");
    assert_eq!(s.ok("tunnel show b3"), "");
    assert!(!s.ok("tunnel show b1").is_empty());
    s.ok("tunnel del b1");
    // With -force: goes on, and fails at the end.
    let (code, _, err) = s.xtun_raw(&["-n", &s.ns.name, "-force", "-batch", path]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!s.ok("tunnel show b1").is_empty() && !s.ok("tunnel show b3").is_empty());
    let _ = std::fs::remove_dir_all(dir);
}

impl Site {
    fn xtun_raw(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(XTUN).args(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }
}

/// The interfaces' MTUs, by name, from `ip -j link show`.
fn mtus(ns: &Netns) -> std::collections::BTreeMap<String, u64> {
    let out = exec_line(ns, "ip -j link show");
    let links: serde_json::Value = serde_json::from_str(&out).unwrap();
    links
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["mtu"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn ip_6_tunnel_lines_json_and_mtus_of_issue_17() {
    let s = Site::new("gr6");
    exec_line(&s.ns, "ip addr add fd00:10::2/64 dev v1 nodad");
    exec_line(&s._peer, "ip addr add fd00:10::1/64 dev v2 nodad");
    exec_line(&s.ns, "ip -6 route add fd00:20::/64 via fd00:10::1");
    s.ok("-6 tunnel add t6gre mode ip6gre remote fd00:20::2 local fd00:10::2");
    s.ok("-6 tunnel add t6ip6 mode ip6ip6 remote fd00:20::3 local fd00:10::2");
    s.ok("-6 tunnel add t4ip6 mode ipip6  remote fd00:20::4 local fd00:10::2");
    s.ok("-6 tunnel add tany  mode any    remote fd00:20::5 local fd00:10::2");
    s.ok("-6 tunnel add t6k   mode ip6gre remote fd00:20::6 local fd00:10::2 key 5 encaplimit none hoplimit 32 tclass inherit flowlabel 0x12345");
    let lines = [
        "t6gre: gre/ipv6 remote fd00:20::2 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000)",
        "t6ip6: ipv6/ipv6 remote fd00:20::3 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000)",
        "t4ip6: ip/ipv6 remote fd00:20::4 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000)",
        "tany: any/ipv6 remote fd00:20::5 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000)",
        "t6k: gre/ipv6 remote fd00:20::6 local fd00:10::2 encaplimit none hoplimit 32 tclass inherit flowlabel 0x12345 (flowinfo 0x00012345) key 5",
    ];
    assert_eq!(s.ok("-6 tunnel show"), format!("{}\n", lines.join("\n")));
    assert_eq!(
        s.ok("-family inet6 tunnel show t6k"),
        format!("{}\n", lines[4])
    );
    // Without -6, as `ip tunnel show`: only tunnels over IPv4.
    assert_eq!(s.ok("tunnel show"), "");

    // ip -j -6 tunnel show; xtun's own fields follow.
    let out = s.ok("-j -6 tunnel show");
    let expected = [
        r#"{"ifname":"t6gre","mode":"gre/ipv6","remote":"fd00:20::2","local":"fd00:10::2","encap_limit":4,"hoplimit":64,"tclass":"0x00","flowlabel":"0x00000","flowinfo":"0x00000000","flags":[]"#,
        r#"{"ifname":"t6ip6","mode":"ipv6/ipv6","remote":"fd00:20::3","local":"fd00:10::2","encap_limit":4,"hoplimit":64,"tclass":"0x00","flowlabel":"0x00000","flowinfo":"0x00000000""#,
        r#"{"ifname":"t4ip6","mode":"ip/ipv6","remote":"fd00:20::4","local":"fd00:10::2","encap_limit":4,"hoplimit":64,"tclass":"0x00","flowlabel":"0x00000","flowinfo":"0x00000000""#,
        r#"{"ifname":"tany","mode":"any/ipv6","remote":"fd00:20::5","local":"fd00:10::2","encap_limit":4,"hoplimit":64,"tclass":"0x00","flowlabel":"0x00000","flowinfo":"0x00000000""#,
        r#"{"ifname":"t6k","mode":"gre/ipv6","remote":"fd00:20::6","local":"fd00:10::2","ip6_tnl_f_ign_encap_limit":null,"hoplimit":32,"ip6_tnl_f_use_orig_tclass":null,"flowlabel":"0x12345","flowinfo":"0x00012345","key":5,"flags":[]"#,
    ];
    let records = records_of(&out);
    assert_eq!(records.len(), expected.len(), "{out}");
    for (record, ip) in records.iter().zip(expected) {
        assert!(
            record.starts_with(ip) && record[ip.len()..].starts_with(",\"ifindex\":"),
            "\n  xtun: {record}\n    ip: {ip}"
        );
    }
    let docs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(docs[0]["ifname"], "t6gre");
    assert_eq!(docs[0]["flags"], serde_json::json!([]));
    assert_eq!(docs[0]["underlay"], "v1");

    // The kernel's MTUs over a 1500-byte underlay.
    let mtu = mtus(&s.ns);
    for (name, want) in [
        ("t6gre", 1448),
        ("t6ip6", 1452),
        ("t4ip6", 1452),
        ("tany", 1452),
        ("t6k", 1452),
    ] {
        assert_eq!(mtu[name], want, "{name}");
    }

    // export writes them as tables with `ip -6 tunnel`'s keys; apply of
    // its output leaves them alone.
    let exported = s.ok("export");
    assert!(
        exported.contains("\n[[tunnel]]\nname = \"t6k\"\nmode = \"ip6gre\"\nremote = \"fd00:20::6\"\nlocal = \"fd00:10::2\"\nkey = 5\nencaplimit = \"none\"\nhoplimit = 32\ntclass = \"inherit\"\nflowlabel = \"0x12345\"\n"),
        "{exported}"
    );
    let file = std::env::temp_dir().join(format!("{}-export.toml", s.ns.name));
    std::fs::write(&file, &exported).unwrap();
    let applied = s.ok(&format!("apply -f {}", file.display()));
    let _ = std::fs::remove_file(&file);
    assert!(applied.starts_with("no changes"), "{applied}");
    assert_eq!(s.ok("-6 tunnel show"), format!("{}\n", lines.join("\n")));

    // -s adds the counters, -d the underlay, as for tunnels over IPv4.
    let stats = s.ok("-s -d -6 tunnel show t6k");
    assert!(
        stats.starts_with(lines[4])
            && stats.contains("\nRX: Packets    Bytes        Errors CsumErrs OutOfSeq Mcasts\n")
            && stats.ends_with("\n    underlay v1\n"),
        "{stats}"
    );
    // GRE flags, one-sided keys and allow-localremote, as ip prints them.
    s.ok("-6 tunnel add t6f mode ip6gre remote fd00:20::8 local fd00:10::2 ikey 1 okey 2 iseq ocsum allow-localremote");
    assert_eq!(
        s.ok("-6 tunnel show t6f"),
        "t6f: gre/ipv6 remote fd00:20::8 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000) allow-localremote ikey 1 okey 2\n  Drop packets out of sequence.\n  Checksum output packets.\n"
    );
    let f = s.ok("-j -6 tunnel show t6f");
    let ip = r#"[{"ifname":"t6f","mode":"gre/ipv6","remote":"fd00:20::8","local":"fd00:10::2","encap_limit":4,"hoplimit":64,"tclass":"0x00","flowlabel":"0x00000","flowinfo":"0x00000000","ip6_tnl_f_allow_local_remote":null,"ikey":1,"okey":2,"flags":["rx_drop_ooseq","tx_csum"],"ifindex":"#;
    assert!(f.starts_with(ip), "{f}");
    assert_eq!(mtus(&s.ns)["t6f"], 1440);
    s.ok("-6 tunnel del t6f");

    // change: what is not named stays; the MTU follows encaplimit.
    s.ok("-6 tunnel change t6ip6 hoplimit 10 flowlabel 0x1 tclass 0x20 encaplimit none");
    assert_eq!(
        s.ok("-6 tunnel show t6ip6"),
        "t6ip6: ipv6/ipv6 remote fd00:20::3 local fd00:10::2 encaplimit none hoplimit 10 tclass 0x20 flowlabel 0x00001 (flowinfo 0x02000001)\n"
    );
    assert_eq!(mtus(&s.ns)["t6ip6"], 1460);
    s.ok("-6 tunnel change t6gre okey 9 remote fd00:20::9");
    assert_eq!(
        s.ok("-6 tunnel show t6gre"),
        "t6gre: gre/ipv6 remote fd00:20::9 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000) okey 9\n"
    );
    assert_eq!(mtus(&s.ns)["t6gre"], 1444);
    s.fails(
        "-6 tunnel change t6gre mode ip6ip6",
        1,
        "xtun: cannot change the tunnel mode from ip6gre to ip6ip6 (delete the tunnel and add it again)",
    );
    // Receiving what another tunnel receives is refused.
    s.fails(
        "-6 tunnel add tdup mode ip6ip6 remote fd00:20::3 local fd00:10::2",
        1,
        "xtun: add tunnel \"tdup\" failed: tunnel t6ip6 already has remote fd00:20::3 local fd00:10::2",
    );

    // del by name, with or without -6.
    s.ok("tunnel del t6gre");
    s.ok("-6 tunnel del t6ip6");
    s.ok("-6 tunnel del t4ip6");
    s.ok("-6 tunnel del tany");
    s.ok("-6 tunnel del t6k");
    assert_eq!(s.ok("-6 tunnel show"), "");
    let links = exec_line(&s.ns, "ip -o link show");
    for name in ["t6gre", "t6ip6", "t4ip6", "tany", "t6k"] {
        assert!(!links.contains(&format!(" {name}:")), "{links}");
    }
}
