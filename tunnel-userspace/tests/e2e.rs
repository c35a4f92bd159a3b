//! End to end in the seed topology: namespaces made by the test, the real
//! `xtun` binary run through `ip netns exec`, real veth traffic, and captures
//! decoded by tshark. Needs root. Every namespace is removed on drop, so a
//! failing test still cleans up.

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use net::{stdout, XTUN};
use tunnel_userspace::testbed::{Lan, Netns, SeedTopology};

mod net;

/// Serializes the tests that push bulk traffic or count every packet.
fn heavy_traffic() -> std::sync::MutexGuard<'static, ()> {
    static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ping(ns: &Netns, dst: &str, count: u32) -> String {
    let out = ns
        .try_exec(&[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            dst,
        ])
        .unwrap();
    stdout(out)
}

/// A tcpdump writing a pcap in a namespace; stopped on drop.
struct Capture {
    child: Child,
    path: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &Netns, dev: &str, filter: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}-{dev}.pcap", ns.name));
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "tcpdump",
                "-i",
                dev,
                "-nn",
                "--immediate-mode",
                "-U",
                "-w",
            ])
            .arg(&path)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump");
        // tcpdump creates the file once it is listening.
        let start = Instant::now();
        while !path.exists() && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(50));
        }
        thread::sleep(Duration::from_millis(200));
        Self { child, path }
    }

    /// Stops the capture and decodes it with tshark: one line per packet,
    /// the requested fields separated by `;`, repeated fields (outer and
    /// inner IP) joined by `,`.
    fn decode(mut self, fields: &[&str]) -> Vec<String> {
        thread::sleep(Duration::from_millis(300));
        // SIGINT lets tcpdump flush what it has captured.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let mut cmd = Command::new("tshark");
        cmd.args(["-r"]).arg(&self.path);
        cmd.args([
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-E",
            "aggregator=,",
        ]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().expect("tshark");
        assert!(
            out.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(out).lines().map(str::to_owned).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

const FIELDS: &[&str] = &[
    "ip.src",
    "ip.dst",
    "ip.proto",
    "ip.ttl",
    "ip.dsfield",
    "ip.flags.df",
    "ip.checksum.status",
    "gre.key",
    "icmp.type",
];

/// Runs the walkthrough in `mode` with `extra` options, pings 4 times and
/// returns the decoded router capture.
fn walkthrough(
    tag: &str,
    mode: &str,
    extra: &[&str],
    ping_opts: &[&str],
) -> (SeedTopology, Vec<String>) {
    let topo = SeedTopology::new(tag).unwrap();
    topo.add_tunnels(XTUN, mode, extra).unwrap();
    let proto = if mode == "gre" { "47" } else { "4" };
    let capture = Capture::start(&topo.router, "r1", &format!("ip proto {proto}"));
    let mut args = vec!["ping", "-c", "4", "-i", "0.2", "-W", "2"];
    args.extend_from_slice(ping_opts);
    args.push("10.10.200.10");
    let out = topo.ns1.try_exec(&args).unwrap();
    let text = stdout(out);
    assert!(text.contains("4 received"), "ping through {mode}: {text}");
    let lines = capture.decode(FIELDS);
    (topo, lines)
}

/// One side of the walkthrough: a GRE tunnel `name` with `extra` options,
/// up and addressed like the seed's (tun1 10.10.100.10, tun2 10.10.200.10).
fn add_side(ns: &Netns, name: &str, remote: &str, local: &str, extra: &[&str]) {
    let mut args = vec![
        XTUN, "tunnel", "add", name, "mode", "gre", "remote", remote, "local", local,
    ];
    args.extend_from_slice(extra);
    ns.exec(&args).unwrap();
    let (addr, peer) = if name == "tun1" {
        ("10.10.100.10", "10.10.200.10")
    } else {
        ("10.10.200.10", "10.10.100.10")
    };
    SeedTopology::bring_up(ns, name, addr, peer).unwrap();
}

/// `xtun tunnel show NAME` prints `shown`, and the interface has `mtu`.
fn assert_shown_with_mtu(ns: &Netns, name: &str, shown: &str, mtu: u32) {
    let out = stdout(ns.exec(&[XTUN, "tunnel", "show", name]).unwrap());
    assert_eq!(out, shown);
    let link = stdout(ns.exec(&["ip", "-o", "link", "show", name]).unwrap());
    assert!(link.contains(&format!("mtu {mtu} ")), "{link}");
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let i = FIELDS.iter().position(|f| *f == name).unwrap();
    line.split(';').nth(i).unwrap_or("")
}

#[test]
fn gre_walkthrough_pings_and_the_wire_shows_two_ip_headers() {
    let (topo, lines) = walkthrough("gre", "gre", &[], &[]);
    assert_eq!(lines.len(), 8, "4 requests and 4 replies: {lines:#?}");
    for line in &lines {
        let request = field(line, "icmp.type") == "8";
        let (outer_src, outer_dst, inner_src, inner_dst) = if request {
            ("10.10.10.2", "10.10.20.2", "10.10.100.10", "10.10.200.10")
        } else {
            ("10.10.20.2", "10.10.10.2", "10.10.200.10", "10.10.100.10")
        };
        assert_eq!(
            field(line, "ip.src"),
            format!("{outer_src},{inner_src}"),
            "{line}"
        );
        assert_eq!(
            field(line, "ip.dst"),
            format!("{outer_dst},{inner_dst}"),
            "{line}"
        );
        assert_eq!(field(line, "ip.proto"), "47,1", "{line}");
        // Outer TTL inherits the inner 64 (less one hop for replies that
        // crossed the router before r1 saw them).
        let outer_ttl = field(line, "ip.ttl").split(',').next().unwrap();
        assert_eq!(outer_ttl, if request { "64" } else { "63" }, "{line}");
        // pmtudisc (the default) sets DF on the outer header.
        assert!(field(line, "ip.flags.df").starts_with("1,"), "{line}");
        // 1 = checksum verified good, for the outer and the inner header.
        assert_eq!(field(line, "ip.checksum.status"), "1,1", "{line}");
        assert_eq!(field(line, "gre.key"), "", "no key configured: {line}");
    }

    // Delivered as received on tun2: tcpdump there sees the inner ICMP.
    let capture = Capture::start(&topo.ns2, "tun2", "icmp");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let inner = capture.decode(&["ip.src", "ip.dst", "icmp.type"]);
    assert!(
        inner.contains(&"10.10.100.10;10.10.200.10;8".to_string()),
        "{inner:#?}"
    );

    // The counters are exact: 6 pings each way so far.
    let shown = stdout(
        topo.ns1
            .exec(&[XTUN, "-s", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let rows: Vec<Vec<&str>> = shown
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0].join(" "),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit"
    );
    assert_eq!(&rows[2][..3], &["6", "504", "0"], "RX: {shown}");
    assert_eq!(&rows[4][..3], &["6", "504", "0"], "TX: {shown}");
}

#[test]
fn ipip_walkthrough_as_in_the_reference() {
    let (_topo, lines) = walkthrough("ipip", "ipip", &[], &[]);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    for line in &lines {
        assert_eq!(field(line, "ip.proto"), "4,1", "{line}");
        assert_eq!(field(line, "ip.checksum.status"), "1,1", "{line}");
        assert!(
            field(line, "ip.src").starts_with("10.10.10.2,")
                || field(line, "ip.src").starts_with("10.10.20.2,")
        );
    }
}

#[test]
fn gre_keys_ttl_and_tos_reach_the_wire() {
    let (_topo, lines) = walkthrough(
        "key",
        "gre",
        &["key", "0.0.1.2", "ttl", "33", "tos", "0x20"],
        &[],
    );
    assert_eq!(lines.len(), 8, "{lines:#?}");
    for line in &lines {
        assert_eq!(field(line, "gre.key"), "0x00000102", "{line}");
        let ttl = field(line, "ip.ttl").split(',').next().unwrap().to_string();
        assert!(ttl == "33" || ttl == "32", "{line}");
        assert_eq!(
            field(line, "ip.dsfield").split(',').next().unwrap(),
            "0x20",
            "{line}"
        );
    }

    // tos inherit copies the inner DSCP (ping -Q) and ikey/okey pair up.
    let topo = SeedTopology::new("ikey").unwrap();
    add_side(
        &topo.ns1,
        "tun1",
        "10.10.20.2",
        "10.10.10.2",
        &["ikey", "1", "okey", "2", "tos", "inherit"],
    );
    add_side(
        &topo.ns2,
        "tun2",
        "10.10.10.2",
        "10.10.20.2",
        &["ikey", "2", "okey", "1", "tos", "inherit"],
    );
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit tos inherit ikey 1 okey 2\n"
    );
    let capture = Capture::start(&topo.router, "r1", "ip proto 47");
    let out = stdout(
        topo.ns1
            .try_exec(&["ping", "-c", "2", "-i", "0.2", "-Q", "0xb8", "10.10.200.10"])
            .unwrap(),
    );
    assert!(out.contains("2 received"), "{out}");
    let lines = capture.decode(FIELDS);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for line in &lines {
        let request = field(line, "icmp.type") == "8";
        assert_eq!(
            field(line, "gre.key"),
            if request { "0x00000002" } else { "0x00000001" },
            "{line}"
        );
        assert_eq!(field(line, "ip.dsfield"), "0xb8,0xb8", "{line}");
    }
}

#[test]
fn tcp_transfer_is_intact_and_uses_the_underlay_named_by_dev() {
    let topo = SeedTopology::new("tcp").unwrap();
    add_side(
        &topo.ns1,
        "tun1",
        "10.10.20.2",
        "10.10.10.2",
        &["dev", "v1"],
    );
    // `dev v1` does not exist in ns2: the error is clean and nothing is left.
    let failed = topo
        .ns2
        .try_exec(&[
            XTUN,
            "tunnel",
            "add",
            "tun2",
            "mode",
            "gre",
            "remote",
            "10.10.10.2",
            "local",
            "10.10.20.2",
            "dev",
            "v1",
        ])
        .unwrap();
    assert!(!failed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&failed.stderr),
        "Cannot find device \"v1\"\n"
    );
    add_side(
        &topo.ns2,
        "tun2",
        "10.10.10.2",
        "10.10.20.2",
        &["dev", "v2"],
    );
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show", "tun1"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 dev v1 ttl inherit\n"
    );

    transfer_16mib(&topo);
}

/// 16 MiB of random bytes from ns1 to ns2 through the tunnel, with sha256
/// compared on both ends (TCP with GSO/GRO across encap and decap).
fn transfer_16mib(topo: &SeedTopology) {
    let _heavy = heavy_traffic();
    net::transfer(&topo.ns1, &topo.ns2, "10.10.200.10", 16 << 20);
}

#[test]
fn xdp_decapsulation_carries_pings_and_tcp() {
    let topo = SeedTopology::new("xdp").unwrap();
    for (ns, dev) in [(&topo.ns1, "v1"), (&topo.ns2, "v2")] {
        let out = stdout(ns.exec(&[XTUN, "attach", dev, "--decap", "xdp"]).unwrap());
        assert_eq!(
            out,
            format!("attached to {dev}: decapsulation in XDP native + tc ingress delivery\n")
        );
    }
    topo.add_tunnels(XTUN, "gre", &["key", "9"]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 3).contains("3 received"));
    let status: serde_json::Value =
        serde_json::from_str(&stdout(topo.ns2.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap();
    let v2 = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ifname"] == "v2")
        .unwrap()
        .clone();
    assert_eq!(v2["decap"], "xdp");
    assert_eq!(v2["xdp"]["mode"], "native");
    transfer_16mib(&topo);
    let stats: serde_json::Value =
        serde_json::from_str(&stdout(topo.ns2.exec(&[XTUN, "-j", "stats"]).unwrap())).unwrap();
    let v2 = stats
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ifname"] == "v2")
        .unwrap()
        .clone();
    let decapsulated = v2["counters"]["rx_decapsulated"].as_u64().unwrap();
    assert!(decapsulated > 1000, "{v2}");
    assert_eq!(
        v2["counters"]["rx_delivered"].as_u64().unwrap(),
        decapsulated
    );
}

/// Ids of the xtun programs attached in a namespace.
fn attached_program_ids(ns: &Netns) -> Vec<String> {
    let links = stdout(ns.exec(&["ip", "-d", "link", "show"]).unwrap());
    let mut ids: Vec<String> = links
        .split("prog/xdp id ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next().map(str::to_owned))
        .collect();
    for dev in ["v1", "v2", "tun1", "tun2"] {
        for hook in ["ingress", "egress"] {
            let out = ns
                .try_exec(&["tc", "filter", "show", "dev", dev, hook])
                .unwrap();
            let text = stdout(out);
            ids.extend(
                text.split(" id ")
                    .skip(1)
                    .filter_map(|s| s.split_whitespace().next().map(str::to_owned)),
            );
        }
    }
    ids
}

fn program_exists(id: &str) -> bool {
    Command::new("bpftool")
        .args(["prog", "show", "id", id])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn del_and_detach_leave_nothing_behind() {
    let topo = SeedTopology::new("clean").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    // An explicit attach survives the last tunnel; an implicit one does not.
    let out = stdout(topo.ns2.exec(&[XTUN, "attach", "v2"]).unwrap());
    assert_eq!(out, "already attached to v2\n");
    let mut ids = attached_program_ids(&topo.ns1);
    ids.extend(attached_program_ids(&topo.ns2));
    assert!(
        ids.len() >= 2,
        "tc on each side (and XDP where it decapsulates): {ids:?}"
    );

    topo.ns1.exec(&[XTUN, "tunnel", "del", "tun1"]).unwrap();
    topo.ns2.exec(&[XTUN, "tunnel", "del", "tun2"]).unwrap();
    assert_eq!(attached_program_ids(&topo.ns1), Vec::<String>::new());
    assert!(
        !attached_program_ids(&topo.ns2).is_empty(),
        "v2 stays attached until detach"
    );
    let refused = topo.ns2.try_exec(&[XTUN, "tunnel", "del", "tun2"]).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&refused.stderr),
        "delete tunnel \"tun2\" failed: No such device\n"
    );
    topo.ns2.exec(&[XTUN, "detach", "v2"]).unwrap();
    assert_eq!(attached_program_ids(&topo.ns2), Vec::<String>::new());

    for ns in [&topo.ns1, &topo.ns2] {
        let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
        assert!(!links.contains(": tun"), "{links}");
        let qdiscs = stdout(ns.exec(&["tc", "qdisc", "show"]).unwrap());
        assert!(!qdiscs.contains("clsact"), "{qdiscs}");
    }
    // With nothing attached, the kernel frees the programs (and their maps).
    let deadline = Instant::now() + Duration::from_secs(10);
    while ids.iter().any(|id| program_exists(id)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<_> = ids.iter().filter(|id| program_exists(id)).collect();
    assert!(left.is_empty(), "programs still loaded: {left:?}");
    assert!(std::fs::read_dir("/sys/fs/bpf")
        .map(|d| d
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains("xtun")))
        .unwrap_or(true));
}

#[test]
fn bad_input_gets_one_line_errors_and_changes_nothing() {
    let topo = SeedTopology::new("bad").unwrap();
    let base = [
        "tunnel",
        "add",
        "tun1",
        "mode",
        "gre",
        "remote",
        "10.10.20.2",
        "local",
        "10.10.10.2",
    ];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.300"], "Error: an IP address is expected rather than \"10.10.20.300\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "bogus", "remote", "10.10.20.2"], "Unknown tunnel mode \"bogus\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "ipip", "remote", "10.10.20.2", "key", "1"], "Keys are not allowed with ipip and sit tunnels\n"),
        (vec!["tunnel", "add", "a-name-that-is-too-long", "mode", "gre", "remote", "10.10.20.2"], "Error: argument \"a-name-that-is-too-long\" is wrong: \"name\" not a valid ifname\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "ttl", "300"], "Error: argument \"300\" is wrong: invalid TTL\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "dev", "nosuch0"], "Cannot find device \"nosuch0\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "192.0.2.1"], ""),
        (vec!["attach", "nosuch0"], "Cannot find device \"nosuch0\"\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "any", "local", "10.10.10.9"], "xtun: local 10.10.10.9 is not an address of this host: a tunnel with remote any receives on the interface that has it\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "any"], "xtun: a tunnel with remote any and local any (gre) needs `dev PHYS`: the underlay to receive on\n"),
        (vec!["tunnel", "add", "tun1", "mode", "isatap", "remote", "10.10.20.2"], "xtun: an isatap tunnel has no fixed remote (its remotes come from the inner destinations)\n"),
        (vec!["tunnel", "add", "tun1", "mode", "ipip", "remote", "10.10.20.2", "csum"], "xtun: \"csum\" is a GRE option (not for ipip, sit or isatap)\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "tos", "inherit/0x1ff"], "Error: argument \"inherit\" is wrong: bad TOS value\n"),
        (vec!["tunnel", "add", "tun1", "mode", "gre", "remote", "10.10.20.2", "prl-default", "10.0.0.1"], "xtun: option \"prl-default (use `xtun tunnel prl prl-default ADDR dev NAME`)\" is not supported by xtun yet\n"),
        (vec!["neigh", "add", "10.1.0.0/16", "lladdr", "10.10.20.2", "dev", "v1"], "xtun: xtun is not attached in this network namespace\n"),
        (vec!["neigh", "add", "10.1.0.0/33", "lladdr", "10.10.20.2", "dev", "v1"], "xtun: invalid prefix length in \"10.1.0.0/33\": expected 0..32\n"),
        (vec!["detach", "v1"], "xtun: xtun is not attached to v1\n"),
        (vec!["tunnel", "del", "v1"], "xtun: delete tunnel \"v1\" failed: not an xtun tunnel\n"),
    ];
    for (args, expected) in cases {
        let mut full = vec![XTUN];
        full.extend(&args);
        let out = topo.ns1.try_exec(&full).unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} must fail");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        if !expected.is_empty() {
            assert_eq!(err, expected, "{args:?}");
        }
        let links = stdout(topo.ns1.exec(&["ip", "-o", "link", "show"]).unwrap());
        assert!(
            !links.contains(": tun1:"),
            "{args:?} left an interface: {links}"
        );
        assert_eq!(
            attached_program_ids(&topo.ns1),
            Vec::<String>::new(),
            "{args:?} left programs"
        );
    }
    // Adding a tunnel that exists fails cleanly and keeps the first one.
    let mut add = vec![XTUN];
    add.extend(&base);
    topo.ns1.exec(&add).unwrap();
    let out = topo.ns1.try_exec(&add).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "add tunnel \"tun1\" failed: File exists\n"
    );
    let mut same = add.clone();
    same[3] = "tun3";
    let out = topo.ns1.try_exec(&same).unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("tunnel tun1 already has remote 10.10.20.2 local 10.10.10.2"));
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
    // The interface is as the kernel makes it: down, NOARP, MTU 1476 (a
    // veth end cannot carry the POINTOPOINT flag; it behaves so: NOARP,
    // one peer).
    let link = stdout(
        topo.ns1
            .exec(&["ip", "-o", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(
        link.contains("NOARP") && link.contains("mtu 1476"),
        "{link}"
    );
    assert!(
        !link.contains(",UP") && !link.contains("<UP"),
        "created down: {link}"
    );
}

#[test]
fn an_xdp_underlay_joins_an_instance_that_had_only_tc() {
    let topo = SeedTopology::new("join").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    let before: serde_json::Value =
        serde_json::from_str(&stdout(topo.ns1.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap();
    assert_eq!(
        before["programs"].as_array().unwrap().len(),
        1,
        "only tc: {before}"
    );
    // A second underlay in ns1, attached with XDP: the XDP program is loaded
    // again, sharing the running instance's maps.
    topo.ns1
        .exec(&[
            "ip", "link", "add", "v9", "type", "veth", "peer", "name", "v9p",
        ])
        .unwrap();
    topo.ns1.exec(&["ip", "link", "set", "v9", "up"]).unwrap();
    let out = stdout(
        topo.ns1
            .exec(&[XTUN, "attach", "v9", "--decap", "xdp"])
            .unwrap(),
    );
    assert_eq!(
        out,
        "attached to v9: decapsulation in XDP native + tc ingress delivery\n"
    );
    let after: serde_json::Value =
        serde_json::from_str(&stdout(topo.ns1.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap();
    assert_eq!(after["programs"].as_array().unwrap().len(), 2, "{after}");
    let shared = |doc: &serde_json::Value| {
        let mut ids: Vec<u64> = doc["maps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"].as_str().unwrap().starts_with("XTUN_"))
            .map(|m| m["id"].as_u64().unwrap())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        shared(&before),
        shared(&after),
        "the same maps, not new ones"
    );
    // The tunnel still works, and nothing was pinned on the way.
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
    let pins = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("XTUN"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(pins, 0);
}

#[test]
fn batch_runs_many_commands_in_one_process_and_stops_at_the_first_error() {
    let topo = SeedTopology::new("batch").unwrap();
    let file = std::env::temp_dir().join(format!("{}-batch.txt", topo.ns1.name));
    std::fs::write(
        &file,
        "# two tunnels to ns2, then a mistake\n\
         tunnel add ta mode gre remote 10.10.20.2 local 10.10.10.2 key 1\n\
         \n\
         tunnel add tb mode ipip remote 10.10.20.2 local 10.10.10.2\n\
         tunnel add tc mode ipip remote 10.10.20.2 key 3\n\
         tunnel add td mode gre remote 10.10.20.2 local 10.10.10.2 key 4\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = topo.ns1.try_exec(&[XTUN, "-batch", path]).unwrap();
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("xtun: {path}:5:1: keys are not allowed with ipip and sit tunnels\n")
    );
    // The column is that of the word the error is about.
    std::fs::write(&file, "  tunnel add te mode gre remote 10.10.20.300\n").unwrap();
    let out = topo.ns1.try_exec(&[XTUN, "-batch", path]).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("xtun: {path}:1:33: invalid address \"10.10.20.300\"\n")
    );
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "ta: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 1\n\
         tb: ip/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
}

/// IPv6 addresses and routes on both tunnel ends, as a user adds them.
fn address_ipv6(topo: &SeedTopology, name1: &str, name2: &str, a1: &str, a2: &str) {
    net::address_ipv6([(&topo.ns1, name1, a1), (&topo.ns2, name2, a2)]);
}

#[test]
fn ipv6_inside_gre_and_sit() {
    let topo = SeedTopology::new("v6").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    address_ipv6(&topo, "tun1", "tun2", "fd00:100::10", "fd00:200::10");
    for (ns, name, remote, local) in [
        (&topo.ns1, "sit1", "10.10.20.2", "10.10.10.2"),
        (&topo.ns2, "sit2", "10.10.10.2", "10.10.20.2"),
    ] {
        ns.exec(&[
            XTUN, "tunnel", "add", name, "mode", "sit", "remote", remote, "local", local,
        ])
        .unwrap();
        ns.exec(&["ip", "link", "set", name, "up"]).unwrap();
    }
    address_ipv6(&topo, "sit1", "sit2", "fd00:300::1", "fd00:300::2");
    assert_shown_with_mtu(
        &topo.ns1,
        "sit1",
        "sit1: ipv6/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n",
        1480,
    );

    let capture = Capture::start(&topo.router, "r1", "ip proto 47 or ip proto 41");
    for dst in ["fd00:200::10", "fd00:300::2"] {
        let out = stdout(
            topo.ns1
                .try_exec(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", dst])
                .unwrap(),
        );
        assert!(out.contains("2 received"), "{dst}: {out}");
    }
    let lines = capture.decode(&[
        "ip.src",
        "ip.proto",
        "gre.proto",
        "ipv6.src",
        "ipv6.dst",
        "icmpv6.type",
        "ip.checksum.status",
    ]);
    assert_eq!(lines.len(), 8, "{lines:#?}");
    let gre: Vec<_> = lines
        .iter()
        .filter(|l| l.split(';').nth(1) == Some("47"))
        .collect();
    let sit: Vec<_> = lines
        .iter()
        .filter(|l| l.split(';').nth(1) == Some("41"))
        .collect();
    assert_eq!((gre.len(), sit.len()), (4, 4), "{lines:#?}");
    // GRE carries 0x86dd; the inner IPv6 addresses are the tunnel's.
    assert!(
        gre.contains(&&"10.10.10.2;47;0x86dd;fd00:100::10;fd00:200::10;128;1".to_string()),
        "{gre:#?}"
    );
    assert!(
        gre.contains(&&"10.10.20.2;47;0x86dd;fd00:200::10;fd00:100::10;129;1".to_string()),
        "{gre:#?}"
    );
    assert!(
        sit.contains(&&"10.10.10.2;41;;fd00:300::1;fd00:300::2;128;1".to_string()),
        "{sit:#?}"
    );
    assert!(
        sit.contains(&&"10.10.20.2;41;;fd00:300::2;fd00:300::1;129;1".to_string()),
        "{sit:#?}"
    );
}

#[test]
fn change_updates_a_live_tunnel_without_disturbing_others() {
    let topo = SeedTopology::new("change").unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "42"]).unwrap();
    // A second, untouched tunnel pair that keeps pinging throughout.
    for (ns, name, remote, local, addr, peer) in [
        (
            &topo.ns1,
            "tb1",
            "10.10.20.2",
            "10.10.10.2",
            "10.10.101.1",
            "10.10.201.1",
        ),
        (
            &topo.ns2,
            "tb2",
            "10.10.10.2",
            "10.10.20.2",
            "10.10.201.1",
            "10.10.101.1",
        ),
    ] {
        ns.exec(&[
            XTUN, "tunnel", "add", name, "mode", "ipip", "remote", remote, "local", local,
        ])
        .unwrap();
        SeedTopology::bring_up(ns, name, addr, peer).unwrap();
    }
    let steady = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns1.name,
            "ping",
            "-c",
            "300",
            "-i",
            "0.005",
            "-q",
            "10.10.201.1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();

    let show = |ns: &Netns, name: &str| stdout(ns.exec(&[XTUN, "tunnel", "show", name]).unwrap());
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    // A new okey that ns2 does not expect: its packets are no longer taken.
    topo.ns1
        .exec(&[XTUN, "tunnel", "change", "tun1", "okey", "7"])
        .unwrap();
    assert_eq!(
        show(&topo.ns1, "tun1"),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit ikey 42 okey 7\n"
    );
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains(" 0 received"));
    topo.ns2
        .exec(&[XTUN, "tunnel", "change", "tun2", "ikey", "7"])
        .unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    // TTL, and dropping the keys: the MTU follows the overhead.
    topo.ns1
        .exec(&[XTUN, "tunnel", "change", "tun1", "ttl", "33", "nokey"])
        .unwrap();
    topo.ns2
        .exec(&[XTUN, "tunnel", "change", "tun2", "nokey"])
        .unwrap();
    assert_eq!(
        show(&topo.ns1, "tun1"),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl 33\n"
    );
    let link = stdout(
        topo.ns1
            .exec(&["ip", "-o", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(link.contains("mtu 1476"), "{link}");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));

    // Refusals change nothing.
    for (args, expected) in [
        (
            &["tunnel", "change", "tun1", "mode", "ipip"][..],
            "xtun: cannot change the tunnel mode (delete the tunnel and add it again)\n",
        ),
        (
            &["tunnel", "change", "tun1", "ttl", "300"],
            "Error: argument \"300\" is wrong: invalid TTL\n",
        ),
        (
            &["tunnel", "change", "nosuch", "ttl", "9"],
            "change tunnel \"nosuch\" failed: No such device\n",
        ),
    ] {
        let mut full = vec![XTUN];
        full.extend_from_slice(args);
        let out = topo.ns1.try_exec(&full).unwrap();
        assert!(!out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    }
    assert_eq!(
        show(&topo.ns1, "tun1"),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl 33\n"
    );

    let steady = String::from_utf8(steady.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        steady.contains("300 packets transmitted, 300 received"),
        "{steady}"
    );
}

#[test]
fn vti_names_the_missing_kernel_support() {
    let topo = SeedTopology::new("vti").unwrap();
    let out = topo
        .ns1
        .try_exec(&[
            XTUN,
            "tunnel",
            "add",
            "vti1",
            "mode",
            "vti",
            "remote",
            "10.10.20.2",
            "local",
            "10.10.10.2",
        ])
        .unwrap();
    assert!(!out.status.success());
    let config = Command::new("sh")
        .args([
            "-c",
            "zcat /proc/config.gz 2>/dev/null | grep -c '^CONFIG_INET_ESP=[ym]'",
        ])
        .output()
        .unwrap();
    let has_esp = String::from_utf8_lossy(&config.stdout).trim() != "0";
    let expected = if has_esp {
        "xtun: mode vti is not implemented by xtun yet (use `ip tunnel add ... mode vti` with the kernel's IPsec)\n"
    } else {
        "xtun: mode vti needs kernel IPsec with ESP (CONFIG_INET_ESP), which this kernel does not have\n"
    };
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    let links = stdout(topo.ns1.exec(&["ip", "-o", "link", "show"]).unwrap());
    assert!(!links.contains(": vti1:"), "{links}");
}

#[test]
fn concurrent_adds_share_one_data_plane_and_lose_nothing() {
    let topo = SeedTopology::new("conc").unwrap();
    let children: Vec<_> = (1..=8)
        .map(|k| {
            let key = k.to_string();
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &topo.ns1.name,
                    XTUN,
                    "tunnel",
                    "add",
                    &format!("tc{k}"),
                ])
                .args([
                    "mode",
                    "gre",
                    "remote",
                    "10.10.20.2",
                    "local",
                    "10.10.10.2",
                    "key",
                    &key,
                ])
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Listed in link order, as `ip tunnel show` lists them: the order the
    // concurrent adds happened to create them in.
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    let mut shown: Vec<&str> = shown.lines().collect();
    shown.sort_unstable();
    let expected: Vec<String> = (1..=8)
        .map(|k| format!("tc{k}: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key {k}"))
        .collect();
    assert_eq!(shown, expected);
    // One data plane: every attachment runs the same tc program.
    let status: serde_json::Value =
        serde_json::from_str(&stdout(topo.ns1.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap();
    assert_eq!(status["programs"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(
        status["interfaces"].as_array().unwrap().len(),
        9,
        "{status}"
    );
}

#[test]
fn path_mtu_discovery_sees_the_tunnel_mtu() {
    let topo = SeedTopology::new("pmtu").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    // A 1500-byte packet with DF set does not fit the 1476-byte tunnel: the
    // sender learns the tunnel MTU instead of losing packets silently.
    let out = topo
        .ns1
        .try_exec(&[
            "ping",
            "-c",
            "1",
            "-M",
            "do",
            "-s",
            "1472",
            "-W",
            "1",
            "10.10.200.10",
        ])
        .unwrap();
    let text = format!(
        "{}{}",
        stdout(out.clone()),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("mtu=1476") || text.contains("mtu = 1476"),
        "{text}"
    );
    // What fits the tunnel MTU exactly goes through with DF.
    let fits = stdout(
        topo.ns1
            .try_exec(&[
                "ping",
                "-c",
                "1",
                "-M",
                "do",
                "-s",
                "1448",
                "-W",
                "2",
                "10.10.200.10",
            ])
            .unwrap(),
    );
    assert!(fits.contains("1 received"), "{fits}");
}

#[test]
fn a_killed_add_leaves_the_tunnel_whole_or_absent() {
    let topo = SeedTopology::new("kill").unwrap();
    let ns = &topo.ns1;
    let add = |k: u32| -> Vec<String> {
        [
            XTUN,
            "tunnel",
            "add",
            &format!("tk{k}"),
            "mode",
            "gre",
            "remote",
            "10.10.20.2",
            "local",
            "10.10.10.2",
            "key",
            &k.to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let mut killed_halfway = 0;
    for k in 1..=24u32 {
        let args = add(k);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        thread::sleep(Duration::from_micros(500 * k as u64));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let _ = child.wait();
        let name = format!("tk{k}");
        let link = ns.try_exec(&["ip", "link", "show", &name]).unwrap();
        let shown = ns.try_exec(&[XTUN, "tunnel", "show", &name]).unwrap();
        // Whole or absent: the interface exists exactly when xtun knows it
        // (`show NAME` lists it; as `ip tunnel show`, it prints nothing for
        // a name it does not know).
        assert!(shown.status.success(), "tk{k}");
        assert_eq!(link.status.success(), !shown.stdout.is_empty(), "tk{k}");
        if !link.status.success() {
            killed_halfway += 1;
            // Whatever the kill left in the maps does not block a retry.
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ns.exec(&refs).unwrap();
        }
    }
    eprintln!("{killed_halfway} of 24 adds were killed before they completed");
    let shown = stdout(ns.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(shown.lines().count(), 24, "{shown}");
    for k in 1..=24 {
        ns.exec(&[XTUN, "tunnel", "del", &format!("tk{k}")])
            .unwrap();
    }
    // Nothing stale is left in the maps (the underlay stays attached only
    // if a killed add attached it and no tunnel took it over).
    if let Ok(out) = ns.try_exec(&[XTUN, "map", "dump", "XTUN_DECAP"]) {
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "(empty)\n");
        }
    }
}

#[test]
fn forwarding_loses_nothing_during_upgrades_changes_and_kills() {
    // A bulk transfer in another test shares the CPUs' receive backlogs;
    // the exact-loss count is only meaningful without one.
    let _heavy = heavy_traffic();
    let topo = SeedTopology::new("flood").unwrap();
    // ns2 decapsulates in XDP, ns1 in tc: both kinds of attachment get replaced.
    topo.ns2
        .exec(&[XTUN, "attach", "v2", "--decap", "xdp"])
        .unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "5"]).unwrap();
    let status = |ns: &Netns| -> serde_json::Value {
        serde_json::from_str(&stdout(ns.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap()
    };
    let ids = |doc: &serde_json::Value| -> Vec<u64> {
        doc["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect()
    };
    let before = (ids(&status(&topo.ns1)), ids(&status(&topo.ns2)));

    // 3,000 pings at 1,000 per second through the tunnel while everything happens.
    let flood = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns1.name,
            "ping",
            "-i",
            "0.001",
            "-c",
            "3000",
            "-q",
            "10.10.200.10",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    for ns in [&topo.ns1, &topo.ns2] {
        let out = stdout(ns.exec(&[XTUN, "upgrade"]).unwrap());
        assert!(out.starts_with("upgraded "), "{out}");
    }
    for k in 1..=5 {
        topo.ns1
            .exec(&[
                XTUN,
                "tunnel",
                "add",
                &format!("tx{k}"),
                "mode",
                "ipip",
                "remote",
                &format!("10.10.20.{}", 10 + k),
                "local",
                "10.10.10.2",
            ])
            .unwrap();
    }
    let mut killed = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns1.name,
            XTUN,
            "tunnel",
            "add",
            "tx9",
            "mode",
            "gre",
            "remote",
            "10.10.20.9",
            "local",
            "10.10.10.2",
        ])
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(3));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(killed.id() as i32, libc::SIGKILL) };
    let _ = killed.wait();
    for k in 1..=5 {
        topo.ns1
            .exec(&[XTUN, "tunnel", "del", &format!("tx{k}")])
            .unwrap();
    }
    topo.ns1.exec(&[XTUN, "upgrade"]).unwrap();

    let flood = String::from_utf8(flood.wait_with_output().unwrap().stdout).unwrap();
    assert!(
        flood.contains("3000 packets transmitted, 3000 received"),
        "{flood}"
    );
    let after = (status(&topo.ns1), status(&topo.ns2));
    assert_ne!(ids(&after.0), before.0, "new programs in ns1");
    assert_ne!(ids(&after.1), before.1, "new programs in ns2");
    assert_eq!(ids(&after.1).len(), 2, "XDP and tc in ns2: {}", after.1);
    for doc in [&after.0, &after.1] {
        assert_eq!(doc["build_matches"], true);
    }
    // The tunnel and its counters survived: 3,000+ each way.
    let shown = stdout(
        topo.ns1
            .exec(&[XTUN, "-s", "-j", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert!(
        doc[0]["stats"]["tx"]["packets"].as_u64().unwrap() >= 3000,
        "{doc}"
    );
}

#[test]
fn without_privileges_the_error_names_the_capabilities() {
    let topo = SeedTopology::new("caps").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        XTUN,
    ];
    let cases: [(&[&str], &str); 3] = [
        (
            &["tunnel", "add", "t9", "mode", "gre", "remote", "10.10.20.2"],
            "xtun: permission denied: this needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run xtun as root)\n",
        ),
        (
            &["tunnel", "del", "tun1"],
            "xtun: permission denied: this needs CAP_NET_ADMIN and CAP_SYS_ADMIN (run xtun as root)\n",
        ),
        (
            &["tunnel", "show"],
            "xtun: permission denied: this needs CAP_SYS_ADMIN (run xtun as root)\n",
        ),
    ];
    for (args, expected) in cases {
        let mut full = nobody.to_vec();
        full.extend_from_slice(args);
        let out = topo.ns1.try_exec(&full).unwrap();
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), expected, "{args:?}");
    }
    // Nothing changed.
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
}

#[test]
fn an_underlay_that_goes_and_comes_back_is_picked_up_again() {
    let topo = SeedTopology::new("flap").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    // The underlay disappears: its programs go with it, the tunnel stays.
    let ids_before = attached_program_ids(&topo.ns1);
    topo.ns1.exec(&["ip", "link", "del", "v1"]).unwrap();
    let shown = stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n"
    );
    let stats = stdout(topo.ns1.exec(&[XTUN, "stats"]).unwrap());
    assert!(stats.contains("(underlay, gone):"), "{stats}");
    // It comes back (a new ifindex): `tunnel change` with no option
    // resolves the route again and attaches there.
    topo.link_ns1_to_router("v1", "r1", "10.10.10").unwrap();
    topo.ns1
        .exec(&["ip", "route", "add", "10.10.20.0/24", "via", "10.10.10.1"])
        .unwrap();
    topo.ns1.exec(&[XTUN, "tunnel", "change", "tun1"]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let status: serde_json::Value =
        serde_json::from_str(&stdout(topo.ns1.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap();
    assert!(
        status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["ifname"] == "v1" && i["role"] == "underlay"),
        "{status}"
    );
    assert!(!ids_before.is_empty());
}

/// The router's capture of GRE, decoded with tshark's GRE fields.
const GRE_FIELDS: &[&str] = &[
    "ip.src",
    "gre.flags.checksum",
    "gre.flags.key",
    "gre.flags.sequence_number",
    "gre.checksum.status",
    "gre.key",
    "gre.sequence_number",
    "icmp.type",
];

#[test]
fn gre_checksums_and_sequence_numbers_reach_the_wire_and_carry_tcp() {
    let topo = SeedTopology::new("csq").unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "5", "csum", "seq"])
        .unwrap();
    // 24 bytes of GRE (4 + key + csum + seq) and 20 of IPv4.
    assert_shown_with_mtu(
        &topo.ns1,
        "tun1",
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 5\n  Drop packets out of sequence.\n  Checksum in received packet is required.\n  Sequence packets on output.\n  Checksum output packets.\n",
        1464,
    );
    let capture = Capture::start(&topo.router, "r1", "ip proto 47");
    assert!(ping(&topo.ns1, "10.10.200.10", 5).contains("5 received"));
    let lines = capture.decode(GRE_FIELDS);
    assert_eq!(lines.len(), 10, "{lines:#?}");
    let mut seqs: Vec<(String, u32)> = Vec::new();
    for line in &lines {
        let f: Vec<&str> = line.split(';').collect();
        assert_eq!(&f[1..4], &["1", "1", "1"], "C, K and S bits: {line}");
        assert_eq!(f[4], "1", "tshark verified the GRE checksum: {line}");
        assert_eq!(f[5], "0x00000005", "{line}");
        let src = f[0].split(',').next().unwrap().to_string();
        seqs.push((src, f[6].parse().unwrap()));
    }
    // Each direction numbers its packets 0, 1, 2, ... in order.
    for side in ["10.10.10.2", "10.10.20.2"] {
        let mine: Vec<u32> = seqs
            .iter()
            .filter(|(s, _)| s == side)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(mine, vec![0, 1, 2, 3, 4], "{side}");
    }
    // TCP (checksums left to offload, segmentation off) arrives intact.
    transfer_16mib(&topo);
    let stats = stdout(
        topo.ns2
            .exec(&[XTUN, "-j", "-s", "tunnel", "show", "tun2"])
            .unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let rx = &doc[0]["stats"]["rx"];
    // No checksum error. Packets that two CPUs sent in the other order than
    // they were numbered are dropped as out of sequence, as the kernel's
    // `iseq` does; TCP resends them and the transfer stays intact.
    assert_eq!(rx["csum_errors"].as_u64(), Some(0), "{stats}");
    assert_eq!(rx["errors"], rx["out_of_sequence"], "{stats}");
    assert!(rx["packets"].as_u64().unwrap() > 10_000, "{stats}");
    // One packet per GRE header: the tunnel takes no segmentation offload.
    let details = stdout(
        topo.ns1
            .exec(&["ip", "-d", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(details.contains("gso_max_segs 1 "), "{details}");
}

#[test]
fn out_of_sequence_and_bad_checksum_input_is_dropped_and_counted() {
    let topo = SeedTopology::new("oos").unwrap();
    topo.add_tunnels(XTUN, "gre", &["csum", "seq"]).unwrap();
    // Packets crafted by scapy in ns1's underlay, bypassing its tunnel.
    let script = r#"
from scapy.all import *
inner = IP(src="10.10.100.10", dst="10.10.200.10")/ICMP(type=8, id=9, seq=1)/Raw(b"x"*16)
def send_gre(seq, bad_csum=False):
    g = GRE(chksum_present=1, seqnum_present=1, seqence_number=seq, proto=0x0800)
    pkt = IP(src="10.10.10.2", dst="10.10.20.2")/g/inner
    pkt = IP(raw(pkt))
    if bad_csum:
        pkt[GRE].chksum ^= 0x1111
    send(pkt, iface="v1", verbose=0)
send_gre(1000)
send_gre(1001)
send_gre(999)
send_gre(1000)
send_gre(1002, bad_csum=True)
"#;
    let out = topo
        .ns1
        .try_exec(&["/usr/bin/python3", "-c", script])
        .unwrap();
    assert!(
        out.status.success(),
        "scapy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    thread::sleep(Duration::from_millis(300));
    let stats = stdout(
        topo.ns2
            .exec(&[XTUN, "-j", "-s", "tunnel", "show", "tun2"])
            .unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let rx = &doc[0]["stats"]["rx"];
    assert_eq!(rx["packets"].as_u64(), Some(2), "{stats}");
    assert_eq!(rx["out_of_sequence"].as_u64(), Some(2), "{stats}");
    assert_eq!(rx["csum_errors"].as_u64(), Some(1), "{stats}");
    assert_eq!(rx["errors"].as_u64(), Some(3), "{stats}");
    let counters = stdout(topo.ns2.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(counters.contains("\"rx_out_of_sequence\":2"), "{counters}");
    assert!(counters.contains("\"rx_bad_gre_checksum\":1"), "{counters}");
}

/// Multipoint GRE: a hub with one `remote any` tunnel reaches three sites,
/// each on a point-to-point tunnel with `local any`.
#[test]
fn multipoint_gre_reaches_three_sites_by_longest_prefix() {
    let lan = Lan::new("mp", 4, "10.77.0").unwrap();
    let hub = &lan.hosts[0];
    hub.exec(&[
        XTUN,
        "tunnel",
        "add",
        "mgre0",
        "mode",
        "gre",
        "remote",
        "any",
        "local",
        "10.77.0.1",
        "key",
        "7",
        "dev",
        "eth0",
    ])
    .unwrap();
    hub.exec(&["ip", "link", "set", "mgre0", "up"]).unwrap();
    hub.exec(&["ip", "addr", "add", "10.200.0.1/32", "dev", "mgre0"])
        .unwrap();
    hub.exec(&["ip", "route", "add", "10.0.0.0/8", "dev", "mgre0"])
        .unwrap();
    let mut batch = String::new();
    for site in 1..=3 {
        let host = &lan.hosts[site];
        host.exec(&[
            XTUN,
            "tunnel",
            "add",
            "gre1",
            "mode",
            "gre",
            "remote",
            "10.77.0.1",
            "key",
            "7",
        ])
        .unwrap();
        host.exec(&["ip", "link", "set", "gre1", "up"]).unwrap();
        let inner = format!("10.{}.0.1/32", 200 + site);
        host.exec(&["ip", "addr", "add", &inner, "dev", "gre1"])
            .unwrap();
        host.exec(&["ip", "route", "add", "10.200.0.0/16", "dev", "gre1"])
            .unwrap();
        batch.push_str(&format!(
            "neigh add 10.{}.0.0/16 lladdr {} dev mgre0\n",
            200 + site,
            lan.addr(site)
        ));
    }
    // A bad line stops the batch there; the lines before it take effect.
    let bad = std::env::temp_dir().join(format!("{}-bad.batch", hub.name));
    std::fs::write(
        &bad,
        "neigh add 10.250.0.0/16 lladdr 10.77.0.2 dev mgre0\nneigh add 10.251.0.0/16 lladdr 10.77.0.300 dev mgre0\n",
    )
    .unwrap();
    let out = hub
        .try_exec(&[XTUN, "-batch", bad.to_str().unwrap()])
        .unwrap();
    let _ = std::fs::remove_file(&bad);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "xtun: {}:2:32: invalid lladdr \"10.77.0.300\": expected the remote's IPv4 address\n",
            bad.display()
        )
    );
    hub.exec(&[XTUN, "neigh", "del", "10.250.0.0/16", "dev", "mgre0"])
        .unwrap();
    // A longer prefix inside site 1's range points at site 3.
    batch.push_str("neigh add 10.201.9.0/24 lladdr 10.77.0.4 dev mgre0\n");
    let file = std::env::temp_dir().join(format!("{}-neigh.batch", hub.name));
    std::fs::write(&file, &batch).unwrap();
    hub.exec(&[XTUN, "-batch", file.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&file);
    lan.hosts[3]
        .exec(&["ip", "addr", "add", "10.201.9.1/32", "dev", "gre1"])
        .unwrap();

    let shown = stdout(lan.hosts[1].exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "gre1: gre/ip remote 10.77.0.1 local any ttl inherit key 7\n"
    );
    let neigh = stdout(hub.exec(&[XTUN, "neigh", "show", "dev", "mgre0"]).unwrap());
    assert_eq!(
        neigh,
        "10.201.0.0/16 dev mgre0 lladdr 10.77.0.2 PERMANENT\n\
         10.201.9.0/24 dev mgre0 lladdr 10.77.0.4 PERMANENT\n\
         10.202.0.0/16 dev mgre0 lladdr 10.77.0.3 PERMANENT\n\
         10.203.0.0/16 dev mgre0 lladdr 10.77.0.4 PERMANENT\n"
    );

    let capture = Capture::start(&lan.switch, "br0", "ip proto 47");
    for dst in ["10.201.0.1", "10.202.0.1", "10.203.0.1", "10.201.9.1"] {
        assert!(ping(hub, dst, 2).contains("2 received"), "hub -> {dst}");
    }
    let lines = capture.decode(&["ip.src", "ip.dst", "gre.key"]);
    let outer = |l: &str, i: usize| -> String {
        l.split(';')
            .nth(i)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .to_string()
    };
    for (inner_dst, remote) in [
        ("10.201.0.1", "10.77.0.2"),
        ("10.202.0.1", "10.77.0.3"),
        ("10.203.0.1", "10.77.0.4"),
        ("10.201.9.1", "10.77.0.4"),
    ] {
        let sent: Vec<&String> = lines
            .iter()
            .filter(|l| {
                l.split(';')
                    .nth(1)
                    .unwrap()
                    .ends_with(&format!(",{inner_dst}"))
            })
            .collect();
        assert_eq!(sent.len(), 2, "{inner_dst}: {lines:#?}");
        for l in sent {
            assert_eq!(outer(l, 1), remote, "{l}");
            assert_eq!(outer(l, 0), "10.77.0.1", "{l}");
            assert_eq!(l.split(';').nth(2).unwrap(), "0x00000007", "{l}");
        }
    }
    // Replies from `local any` sites carry the route's source address.
    assert!(
        lines.iter().any(|l| outer(l, 0) == "10.77.0.3"),
        "{lines:#?}"
    );

    // No neighbour: dropped and counted, never sent to 0.0.0.0.
    assert!(ping(hub, "10.209.0.1", 2).contains(" 0 received"));
    let stats = stdout(hub.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(stats.contains("\"tx_no_neighbour\":2"), "{stats}");
    hub.exec(&[XTUN, "neigh", "del", "10.202.0.0/16", "dev", "mgre0"])
        .unwrap();
    assert!(ping(hub, "10.202.0.1", 1).contains(" 0 received"));
    // Deleting the tunnel takes its neighbours along (another tunnel keeps
    // the data plane, and its maps, alive to look).
    hub.exec(&[
        XTUN,
        "tunnel",
        "add",
        "keep0",
        "mode",
        "ipip",
        "remote",
        "10.77.0.2",
        "local",
        "10.77.0.1",
    ])
    .unwrap();
    hub.exec(&[XTUN, "tunnel", "del", "mgre0"]).unwrap();
    let left = stdout(
        hub.exec(&[XTUN, "-j", "map", "dump", "XTUN_NEIGH"])
            .unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&left).unwrap();
    assert_eq!(doc["entries"].as_array().map(Vec::len), Some(0), "{left}");
    assert_eq!(stdout(hub.exec(&[XTUN, "neigh", "show"]).unwrap()), "");
}

/// ISATAP hosts on one LAN: remotes from the interface identifiers, and a
/// potential router for everything else.
#[test]
fn isatap_hosts_reach_each_other_and_the_default_router() {
    let lan = Lan::new("isa", 3, "10.78.0").unwrap();
    for (i, host) in lan.hosts.iter().enumerate() {
        let local = lan.addr(i);
        host.exec(&[
            XTUN, "tunnel", "add", "is0", "mode", "isatap", "local", &local, "dev", "eth0",
        ])
        .unwrap();
        host.exec(&["ip", "link", "set", "is0", "up"]).unwrap();
        let ll = format!("fe80::5efe:{local}/64");
        let global = format!("fd00:78::5efe:{local}/64");
        host.exec(&["ip", "-6", "addr", "add", &ll, "dev", "is0", "nodad"])
            .unwrap();
        host.exec(&["ip", "-6", "addr", "add", &global, "dev", "is0", "nodad"])
            .unwrap();
    }
    let show = stdout(lan.hosts[0].exec(&[XTUN, "tunnel", "show"]).unwrap());
    assert_eq!(
        show,
        "is0: ipv6/ip remote any local 10.78.0.1 dev eth0 ttl inherit\n"
    );
    // Host 3 is the router for fd00:99::/64 (it owns fd00:99::1).
    let router = &lan.hosts[2];
    router
        .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
        .unwrap();
    router
        .exec(&["ip", "-6", "addr", "add", "fd00:99::1/128", "dev", "lo"])
        .unwrap();
    let host = &lan.hosts[0];
    host.exec(&[
        XTUN,
        "tunnel",
        "prl",
        "prl-default",
        "10.78.0.3",
        "dev",
        "is0",
    ])
    .unwrap();
    host.exec(&["ip", "-6", "route", "add", "fd00:99::/64", "dev", "is0"])
        .unwrap();

    let capture = Capture::start(&lan.switch, "br0", "ip proto 41");
    let ping6 = |dst: &str| {
        stdout(
            host.try_exec(&["ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", dst])
                .unwrap(),
        )
    };
    assert!(ping6("fd00:78::5efe:10.78.0.2").contains("2 received"));
    assert!(ping6("fe80::5efe:10.78.0.2%is0").contains("2 received"));
    assert!(
        ping6("fd00:99::1").contains("2 received"),
        "via the PRL router"
    );
    let lines = capture.decode(&["ip.src", "ip.dst", "ipv6.dst"]);
    let to = |inner: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.ends_with(&format!(";{inner}")))
            .map(|l| l.split(';').nth(1).unwrap().to_string())
            .collect()
    };
    assert_eq!(
        to("fd00:78::5efe:a4e:2"),
        vec!["10.78.0.2"; 2],
        "{lines:#?}"
    );
    assert_eq!(to("fd00:99::1"), vec!["10.78.0.3"; 2], "{lines:#?}");
    let prl = stdout(host.exec(&[XTUN, "map", "dump", "XTUN_PRL"]).unwrap());
    assert!(prl.contains("router 10.78.0.3 default"), "{prl}");
    // Without the router listed, a spoofed inner source from host 2 is refused.
    host.exec(&[
        XTUN,
        "tunnel",
        "prl",
        "prl-delete",
        "10.78.0.3",
        "dev",
        "is0",
    ])
    .unwrap();
    assert!(
        ping6("fd00:99::1").contains(" 0 received"),
        "no default router any more"
    );
}

/// `local any` on a host that forwards: the outer source is looked up per
/// packet; and when the route to the remote leads into the tunnel itself,
/// packets are dropped and counted as DeadLoop instead of looping.
#[test]
fn a_route_back_into_the_tunnel_is_a_counted_dead_loop() {
    let topo = SeedTopology::new("loop").unwrap();
    for ns in [&topo.ns1, &topo.ns2] {
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"])
            .unwrap();
    }
    topo.ns1
        .exec(&[
            XTUN,
            "tunnel",
            "add",
            "tun1",
            "mode",
            "gre",
            "remote",
            "10.10.20.2",
        ])
        .unwrap();
    SeedTopology::bring_up(&topo.ns1, "tun1", "10.10.100.10", "10.10.200.10").unwrap();
    add_side(&topo.ns2, "tun2", "10.10.10.2", "10.10.20.2", &[]);
    let capture = Capture::start(&topo.router, "r1", "ip proto 47");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let lines = capture.decode(&["ip.src"]);
    assert!(
        lines.iter().any(|l| l.starts_with("10.10.10.2,")),
        "the route's source, looked up per packet: {lines:#?}"
    );

    // The remote now routed into tun1 itself.
    topo.ns1
        .exec(&["ip", "route", "add", "10.10.20.2/32", "dev", "tun1"])
        .unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 3).contains(" 0 received"));
    let shown = stdout(
        topo.ns1
            .exec(&[XTUN, "-j", "-s", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let dead = doc[0]["stats"]["tx"]["dead_loop"].as_u64().unwrap();
    // The 3 pings, and whatever else the kernel sent to the remote meanwhile.
    assert!(dead >= 3, "{shown}");
    assert_eq!(doc[0]["stats"]["tx"]["packets"], 2, "nothing left: {shown}");
    let stats = stdout(topo.ns1.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(
        stats.contains(&format!("\"tx_dead_loop\":{dead}")),
        "{stats}"
    );
    // The route goes, the tunnel works again.
    topo.ns1
        .exec(&["ip", "route", "del", "10.10.20.2/32", "dev", "tun1"])
        .unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
}

/// Deleting a namespace takes xtun's programs and maps with it: nothing is
/// pinned, so the kernel frees them with the namespace's interfaces.
#[test]
fn deleting_the_namespace_frees_every_program_and_map() {
    let topo = SeedTopology::new("nsdel").unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "1"]).unwrap();
    // An attachment switches where it decapsulates on request, both ways.
    for (decap, said) in [
        ("xdp", "XDP native"),
        ("tc", "tc ingress"),
        ("xdp", "XDP native"),
    ] {
        let out = stdout(
            topo.ns2
                .exec(&[XTUN, "attach", "v2", "--decap", decap])
                .unwrap(),
        );
        assert!(
            out.starts_with(&format!("attached to v2: decapsulation in {said}")),
            "{out}"
        );
        assert!(
            ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"),
            "{decap}"
        );
    }
    topo.ns1
        .exec(&[XTUN, "attach", "v1", "--decap", "xdp"])
        .unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    let status = stdout(topo.ns1.exec(&[XTUN, "-j", "status"]).unwrap());
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    let programs: Vec<u64> = doc["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_u64().unwrap())
        .collect();
    let maps: Vec<u64> = doc["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_u64().unwrap())
        .collect();
    assert_eq!(programs.len(), 2, "XDP and tc: {status}");
    assert!(maps.len() >= 8, "{status}");
    let map_exists = |id: u64| {
        Command::new("bpftool")
            .args(["map", "show", "id", &id.to_string()])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    assert!(programs.iter().all(|id| program_exists(&id.to_string())));
    assert!(maps.iter().all(|&id| map_exists(id)));
    let SeedTopology { ns1, ns2, router } = topo;
    drop(ns1);
    // The kernel tears a namespace down asynchronously.
    let start = Instant::now();
    let leaked = || {
        programs
            .iter()
            .filter(|id| program_exists(&id.to_string()))
            .count()
            + maps.iter().filter(|&&id| map_exists(id)).count()
    };
    while leaked() > 0 && start.elapsed() < Duration::from_secs(20) {
        thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        leaked(),
        0,
        "programs {programs:?} / maps {maps:?} outlived ns1"
    );
    // And nothing was pinned anywhere.
    let pins: Vec<String> = std::fs::read_dir("/sys/fs/bpf")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.to_lowercase().contains("xtun"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(pins, Vec::<String>::new());
    drop((ns2, router));
}

/// `rpfilter`: inner IPv4 sources must be ones the tunnel's routes lead
/// back to, as rp_filter decides (the kernel counts its drops as
/// IPReversePathFilter).
#[test]
fn rpfilter_refuses_inner_sources_the_tunnel_does_not_route() {
    let topo = SeedTopology::new("rpf").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    // Only the tunnel's own setting counts here.
    topo.ns2
        .exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])
        .unwrap();
    let rp_drops = || -> u64 {
        let text = stdout(topo.ns2.exec(&["cat", "/proc/net/netstat"]).unwrap());
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
        let names: Vec<&str> = lines[0].split_whitespace().collect();
        let values: Vec<&str> = lines[1].split_whitespace().collect();
        let i = names
            .iter()
            .position(|n| *n == "IPReversePathFilter")
            .unwrap();
        values[i].parse().unwrap()
    };
    let spoof = r#"
from scapy.all import *
inner = IP(src="10.99.0.1", dst="10.10.200.10")/ICMP(type=8, id=7, seq=1)
send(IP(src="10.10.10.2", dst="10.10.20.2")/GRE(proto=0x0800)/inner, iface="v1", verbose=0)
"#;
    let send_spoofed = || {
        let out = topo
            .ns1
            .try_exec(&["/usr/bin/python3", "-c", spoof])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        thread::sleep(Duration::from_millis(300));
    };
    let before = rp_drops();
    send_spoofed();
    assert_eq!(
        rp_drops(),
        before,
        "without rpfilter the source is not checked"
    );

    topo.ns2
        .exec(&[XTUN, "tunnel", "change", "tun2", "rpfilter"])
        .unwrap();
    let shown = stdout(topo.ns2.exec(&[XTUN, "tunnel", "show", "tun2"]).unwrap());
    assert!(
        shown.trim_end().ends_with("ttl inherit rpfilter"),
        "{shown}"
    );
    let sysctl = stdout(
        topo.ns2
            .exec(&["sysctl", "-n", "net.ipv4.conf.tun2.rp_filter"])
            .unwrap(),
    );
    assert_eq!(sysctl.trim(), "1");
    send_spoofed();
    assert_eq!(rp_drops(), before + 1, "the spoofed source is refused");
    // The tunnel's own peer still gets through.
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    assert_eq!(rp_drops(), before + 1);
}

/// The only files xtun creates are its per-namespace lock files: only root
/// may read or write them.
#[test]
fn the_files_xtun_creates_are_root_only() {
    use std::os::unix::fs::MetadataExt as _;
    let topo = SeedTopology::new("perm").unwrap();
    topo.add_tunnels(XTUN, "ipip", &[]).unwrap();
    let dir = std::fs::metadata("/run/xtun").unwrap();
    assert_eq!((dir.mode() & 0o777, dir.uid()), (0o700, 0));
    let ns = std::fs::metadata(format!("/run/netns/{}", topo.ns1.name)).unwrap();
    let lock =
        std::fs::metadata(format!("/run/xtun/netns-{}-{}.lock", ns.dev(), ns.ino())).unwrap();
    assert_eq!((lock.mode() & 0o777, lock.uid()), (0o600, 0));
}

/// Runs `args` in `ns` and SIGKILLs it after `delay`; returns its pid.
fn kill_after(ns: &Netns, args: &[&str], delay: Duration) -> u32 {
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(delay);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    child.id()
}

/// The decapsulation index holds exactly one entry per tunnel, the one its
/// configuration implies, and nothing else.
fn assert_maps_consistent(ns: &Netns, what: &str) {
    let tunnels: serde_json::Value =
        serde_json::from_str(&stdout(ns.exec(&[XTUN, "-j", "tunnel", "show"]).unwrap())).unwrap();
    let decap: serde_json::Value = serde_json::from_str(&stdout(
        ns.exec(&[XTUN, "-j", "map", "dump", "XTUN_DECAP"]).unwrap(),
    ))
    .unwrap();
    let entries = decap["entries"].as_array().unwrap();
    let tunnels = tunnels.as_array().unwrap();
    assert_eq!(
        entries.len(),
        tunnels.len(),
        "{what}: {decap} vs {tunnels:?}"
    );
    for t in tunnels {
        // `ip -j` prints one "key" when the receive and send keys are equal.
        let ikey = t.get("key").unwrap_or(&t["ikey"]);
        let matching = entries
            .iter()
            .filter(|e| {
                e["ifname"] == t["ifname"] && e["key"] == *ikey && e["remote"] == t["remote"]
            })
            .count();
        assert_eq!(matching, 1, "{what}: {t} in {decap}");
    }
}

/// SIGKILL at many points of `change`, `del`, `attach` and `detach`: each
/// leaves the old state or the new one, the next command repairs what a
/// kill left in the maps, and the tunnel that is not touched keeps working.
#[test]
fn killed_changes_deletes_and_attachments_leave_a_consistent_state() {
    let topo = SeedTopology::new("kil2").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    let ns = &topo.ns1;
    let mut repaired = 0;
    for k in 1..=16u32 {
        // A second tunnel, changed under a kill, then deleted under a kill.
        let out = ns
            .try_exec(&[
                XTUN,
                "tunnel",
                "add",
                "tk",
                "mode",
                "gre",
                "remote",
                "10.10.20.2",
                "local",
                "10.10.10.2",
                "key",
                "100",
            ])
            .unwrap();
        repaired += String::from_utf8_lossy(&out.stderr)
            .matches("repaired")
            .count();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = (100 + k).to_string();
        let delay = Duration::from_micros(400 * k as u64);
        kill_after(ns, &[XTUN, "tunnel", "change", "tk", "key", &key], delay);
        let shown = stdout(ns.exec(&[XTUN, "tunnel", "show", "tk"]).unwrap());
        assert!(
            shown.ends_with(" key 100\n") || shown.ends_with(&format!(" key {key}\n")),
            "old or new key: {shown}"
        );
        kill_after(ns, &[XTUN, "tunnel", "del", "tk"], delay);
        // The next command works, repairs, and leaves the maps consistent.
        let gone = ns.try_exec(&["ip", "link", "show", "tk"]).unwrap();
        let out = if gone.status.success() {
            ns.try_exec(&[XTUN, "tunnel", "del", "tk"]).unwrap()
        } else {
            ns.try_exec(&[XTUN, "tunnel", "change", "tun1", "ttl", "inherit"])
                .unwrap()
        };
        repaired += String::from_utf8_lossy(&out.stderr)
            .matches("repaired")
            .count();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_maps_consistent(ns, &format!("round {k}"));
        assert!(
            ping(ns, "10.10.200.10", 1).contains("1 received"),
            "round {k}"
        );
    }
    eprintln!("{repaired} repairs after killed changes and deletes");

    // Attach and detach of the other side's underlay, killed at many points:
    // the next attach always completes it.
    let ns2 = &topo.ns2;
    for k in 1..=12u32 {
        let delay = Duration::from_micros(700 * k as u64);
        let decap = if k % 2 == 0 { "xdp" } else { "tc" };
        kill_after(ns2, &[XTUN, "attach", "v2", "--decap", decap], delay);
        ns2.exec(&[XTUN, "attach", "v2", "--decap", decap]).unwrap();
        let status: serde_json::Value =
            serde_json::from_str(&stdout(ns2.exec(&[XTUN, "-j", "status"]).unwrap())).unwrap();
        let v2 = status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["ifname"] == "v2")
            .unwrap()
            .clone();
        assert_eq!(v2["decap"], decap, "round {k}: {v2}");
        assert!(
            ping(ns, "10.10.200.10", 1).contains("1 received"),
            "round {k}"
        );
    }

    // A spare interface attached and detached under kills: a detach after
    // either kill leaves nothing of xtun on it.
    ns2.exec(&[
        "ip", "link", "add", "sp0", "type", "veth", "peer", "name", "sp1",
    ])
    .unwrap();
    ns2.exec(&["ip", "link", "set", "sp0", "up"]).unwrap();
    let clean = |what: &str| {
        let link = stdout(ns2.exec(&["ip", "-d", "link", "show", "sp0"]).unwrap());
        assert!(!link.contains("prog/xdp"), "{what}: {link}");
        let filters = stdout(
            ns2.exec(&["tc", "filter", "show", "dev", "sp0", "ingress"])
                .unwrap(),
        );
        assert!(!filters.contains("xtun"), "{what}: {filters}");
    };
    let mut killed = Vec::new();
    for k in 1..=8u32 {
        let delay = Duration::from_micros(900 * k as u64);
        // `ip netns exec` execs xtun, so the pid is xtun's.
        killed.push(kill_after(
            ns2,
            &[XTUN, "attach", "sp0", "--decap", "xdp"],
            delay,
        ));
        let _ = ns2.try_exec(&[XTUN, "detach", "sp0"]).unwrap();
        clean(&format!("killed attach {k}"));
        ns2.exec(&[XTUN, "attach", "sp0", "--decap", "xdp"])
            .unwrap();
        kill_after(ns2, &[XTUN, "detach", "sp0"], delay);
        let _ = ns2.try_exec(&[XTUN, "detach", "sp0"]).unwrap();
        clean(&format!("killed detach {k}"));
        assert!(
            ping(ns, "10.10.200.10", 1).contains("1 received"),
            "round {k}"
        );
    }
    // A load killed halfway leaves an empty mount-point directory (its
    // private bpffs died with it); the next load removes it.
    ns2.exec(&[XTUN, "attach", "sp0", "--decap", "xdp"])
        .unwrap();
    let left: Vec<u32> = killed
        .into_iter()
        .filter(|pid| {
            std::env::temp_dir()
                .join(format!("xtun-bpffs-{pid}"))
                .exists()
        })
        .collect();
    assert_eq!(left, Vec::<u32>::new());
}

/// `rpfilter` with IPv6 inside GRE: the data plane checks the route back
/// to the inner source and drops (and counts) spoofed ones.
#[test]
fn rpfilter_refuses_spoofed_inner_ipv6_sources() {
    let topo = SeedTopology::new("rpf6").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    address_ipv6(&topo, "tun1", "tun2", "fd00:100::10", "fd00:200::10");
    topo.ns2
        .exec(&[XTUN, "tunnel", "change", "tun2", "rpfilter"])
        .unwrap();
    let spoof = r#"
from scapy.all import *
inner = IPv6(src="fd00:99::1", dst="fd00:200::10")/ICMPv6EchoRequest(id=5, seq=1)
send(IP(src="10.10.10.2", dst="10.10.20.2")/GRE(proto=0x86dd)/inner, iface="v1", verbose=0)
"#;
    for _ in 0..3 {
        let out = topo
            .ns1
            .try_exec(&["/usr/bin/python3", "-c", spoof])
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    thread::sleep(Duration::from_millis(300));
    let stats = stdout(topo.ns2.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(stats.contains("\"rx_rpfilter\":3"), "{stats}");
    // The tunnel's own peer passes, with IPv6 and IPv4 alike.
    let out = stdout(
        topo.ns1
            .try_exec(&[
                "ping",
                "-6",
                "-c",
                "2",
                "-i",
                "0.2",
                "-W",
                "2",
                "fd00:200::10",
            ])
            .unwrap(),
    );
    assert!(out.contains("2 received"), "{out}");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let shown = stdout(
        topo.ns2
            .exec(&[XTUN, "-j", "-s", "tunnel", "show", "tun2"])
            .unwrap(),
    );
    let doc: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(doc[0]["stats"]["rx"]["errors"], 3, "{shown}");
    // Without the option, the same packets go through.
    topo.ns2
        .exec(&[XTUN, "tunnel", "change", "tun2", "norpfilter"])
        .unwrap();
    let out = topo
        .ns1
        .try_exec(&["/usr/bin/python3", "-c", spoof])
        .unwrap();
    assert!(out.status.success());
    thread::sleep(Duration::from_millis(300));
    let stats = stdout(topo.ns2.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(stats.contains("\"rx_rpfilter\":3"), "{stats}");
}
