//! Ethernet over GRE over IPv6 (`xtun link add ... type ip6gretap`, issue
//! 17): the grammar, bad input, the show lines and MTUs, and two bridges
//! in two namespaces joined by an ip6gretap link across an IPv6-only
//! router: ARP, pings, a 16 MiB TCP transfer and the bridges' learning.
//! Needs root; every namespace is removed on drop.

mod common;

use common::net::{
    eventually, heavy_traffic, ping, received, stdout, transfer, xtun, xtun_json, XTUN,
};
use tunnel_userspace::testbed::{run, unique_prefix, Netns};

/// ns1 (v1 fd00:10::2/64) — an IPv6-only router (fd00:10::1, fd00:20::1,
/// forwarding) — ns2 (v2 fd00:20::2/64), routed through the router.
struct V6Path {
    ns1: Netns,
    ns2: Netns,
    _router: Netns,
}

impl V6Path {
    const NS1: &'static str = "fd00:10::2";
    const NS2: &'static str = "fd00:20::2";

    fn new(tag: &str) -> Self {
        let prefix = unique_prefix(tag);
        let ns1 = Netns::new(format!("{prefix}-ns1")).unwrap();
        let ns2 = Netns::new(format!("{prefix}-ns2")).unwrap();
        let router = Netns::new(format!("{prefix}-rt")).unwrap();
        for (ns, dev, peer, net, other) in [
            (&ns1, "v1", "r1", "10", "fd00:20::/64"),
            (&ns2, "v2", "r2", "20", "fd00:10::/64"),
        ] {
            run(&[
                "ip",
                "link",
                "add",
                dev,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                peer,
                "netns",
                &router.name,
            ])
            .unwrap();
            let host = format!("fd00:{net}::2/64");
            let gw = format!("fd00:{net}::1");
            ns.exec(&["ip", "-6", "addr", "add", &host, "dev", dev, "nodad"])
                .unwrap();
            ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
            ns.exec(&["ip", "-6", "route", "add", other, "via", &gw])
                .unwrap();
            router
                .exec(&[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{gw}/64"),
                    "dev",
                    peer,
                    "nodad",
                ])
                .unwrap();
            router.exec(&["ip", "link", "set", peer, "up"]).unwrap();
        }
        router
            .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
            .unwrap();
        // Neighbour discovery takes a moment on fresh links.
        assert!(
            eventually(|| ns1
                .try_exec(&["ping", "-6", "-c", "1", "-W", "1", Self::NS2])
                .is_ok_and(|o| o.status.success())),
            "the underlay does not carry IPv6"
        );
        Self {
            ns1,
            ns2,
            _router: router,
        }
    }
}

/// `xtun link add` with `words` must fail with one line containing
/// `says`, and leave no interface but lo and the underlay.
fn assert_refused(ns: &Netns, words: &str, says: &str) {
    let mut args = vec![XTUN, "link", "add"];
    args.extend(words.split_whitespace());
    let out = ns.try_exec(&args).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{words}: accepted");
    assert_eq!(err.trim_end().lines().count(), 1, "{words}: {err}");
    assert!(err.contains(says), "{words}: {err}");
    let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
    assert_eq!(links.lines().count(), 2, "{words}: left {links}");
}

#[test]
fn bad_input_is_one_line_and_creates_nothing() {
    let path = V6Path::new("g6bad");
    let ns = &path.ns1;
    let base = "bad type ip6gretap remote fd00:20::2 local fd00:10::2";
    for (extra, says) in [
        ("key", "Command line is not complete"),
        ("ikey x", "invalid value for \"ikey\": \"x\""),
        ("hoplimit 256", "argument \"256\" is wrong: invalid HLIM"),
        (
            "tclass 0x100",
            "argument \"0x100\" is wrong: invalid TClass",
        ),
        ("flowlabel 0x100000", "invalid Flowlabel"),
        ("encaplimit 256", "argument \"256\" is wrong: invalid ELIM"),
        ("encaplimit", "Command line is not complete"),
        ("dev nosuchdev0", "Cannot find device \"nosuchdev0\""),
        ("bogus", "\"bogus\" is a garbage"),
        ("external", "option \"external\" is not supported"),
        ("pmtudisc", "\"pmtudisc\" is a garbage"),
    ] {
        assert_refused(ns, &format!("{base} {extra}"), says);
    }
    assert_refused(
        ns,
        "bad type ip6gretap remote 10.10.20.2",
        "inet6 address is expected rather than \"10.10.20.2\"",
    );
    assert_refused(
        ns,
        "bad type ip6gretap local fd00:10::2",
        "an ip6gretap link needs remote ADDR",
    );
    // `ip -6 tunnel` has no ip6gretap mode.
    let out = ns
        .try_exec(&[
            XTUN,
            "-6",
            "tunnel",
            "add",
            "bad",
            "mode",
            "ip6gretap",
            "remote",
            "fd00:20::2",
        ])
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "Unknown tunnel mode \"ip6gretap\"\n"
    );
}

/// A host namespace with `eth0` (`addr`/24, MTU `mtu`) whose peer `port`
/// is enslaved to `br0` in `ns`.
fn host_on_bridge(ns: &Netns, host: &Netns, port: &str, addr: &str, mtu: u32) {
    run(&[
        "ip", "link", "add", "eth0", "netns", &host.name, "type", "veth", "peer", "name", port,
        "netns", &ns.name,
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", port, "master", "br0", "up"])
        .unwrap();
    host.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"])
        .unwrap();
    // A bridge forwards no frame larger than a port's MTU.
    host.exec(&["ip", "link", "set", "eth0", "mtu", &mtu.to_string(), "up"])
        .unwrap();
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    stdout(
        ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])
            .unwrap(),
    )
    .trim()
    .to_string()
}

/// Two bridges joined by `g6tap` (with `extra` options), hosts 10.50.0.1
/// and 10.50.0.2 behind them; checks the MTU, the show lines, ARP, ping,
/// learning and a 16 MiB transfer, then `link del`.
fn bridges_end_to_end(tag: &str, extra: &[&str], mtu: u32, shown_tail: &str) {
    let path = V6Path::new(tag);
    let prefix = unique_prefix(&format!("{tag}h"));
    let host_a = Netns::new(format!("{prefix}-a")).unwrap();
    let host_b = Netns::new(format!("{prefix}-b")).unwrap();
    for (ns, host, remote, local, addr) in [
        (&path.ns1, &host_a, V6Path::NS2, V6Path::NS1, "10.50.0.1"),
        (&path.ns2, &host_b, V6Path::NS1, V6Path::NS2, "10.50.0.2"),
    ] {
        let mut args = vec![
            "link",
            "add",
            "g6tap",
            "type",
            "ip6gretap",
            "remote",
            remote,
            "local",
            local,
        ];
        args.extend_from_slice(extra);
        xtun(ns, &args);

        let link = stdout(ns.exec(&["ip", "-o", "link", "show", "g6tap"]).unwrap());
        assert!(link.contains(&format!("mtu {mtu} ")), "{link}");
        assert!(link.contains("link/ether"), "an Ethernet interface: {link}");
        assert!(!link.contains("NOARP"), "{link}");

        let shown = xtun(ns, &["-d", "link", "show", "g6tap"]);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(
            lines[0].ends_with(&format!(": g6tap: mtu {mtu}")),
            "{shown}"
        );
        assert_eq!(
            lines[2],
            format!("    ip6gretap remote {remote} local {local} {shown_tail}")
        );
        // Listed by `link show`, not by either `tunnel show`.
        assert!(xtun(ns, &["link", "show"]).contains(": g6tap: "));
        assert_eq!(xtun(ns, &["-6", "tunnel", "show"]), "");
        assert_eq!(xtun(ns, &["tunnel", "show"]), "");
        let json = xtun_json(ns, &["link", "show", "g6tap"]);
        assert_eq!(json[0]["linkinfo"]["info_kind"], "ip6gretap", "{json}");
        assert_eq!(json[0]["linkinfo"]["info_data"]["remote"], remote, "{json}");

        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"])
            .unwrap();
        ns.exec(&["ip", "link", "set", "br0", "up"]).unwrap();
        ns.exec(&["ip", "link", "set", "g6tap", "master", "br0", "up"])
            .unwrap();
        host_on_bridge(ns, host, "host", addr, mtu);
    }

    let out = ping(&host_a, "10.50.0.2", 3);
    assert_eq!(received(&out), 3, "{out}");
    // Each bridge learnt the other side's host on its ip6gretap port.
    for (ns, far) in [(&path.ns1, &host_b), (&path.ns2, &host_a)] {
        let mac = mac_of(far, "eth0");
        let fdb = stdout(ns.exec(&["bridge", "fdb", "show", "br", "br0"]).unwrap());
        assert!(
            fdb.lines()
                .any(|l| l.starts_with(&format!("{mac} dev g6tap"))),
            "{mac} not on g6tap:\n{fdb}"
        );
    }
    // The hosts resolved each other's real MAC addresses by ARP.
    let neigh = stdout(host_a.exec(&["ip", "neigh", "show", "10.50.0.2"]).unwrap());
    assert!(neigh.contains(&mac_of(&host_b, "eth0")), "{neigh}");

    {
        let _heavy = heavy_traffic();
        transfer(&host_a, &host_b, "10.50.0.2", 16 << 20);
    }

    xtun(&path.ns1, &["link", "del", "g6tap"]);
    let links = stdout(path.ns1.exec(&["ip", "-o", "link", "show"]).unwrap());
    assert!(!links.contains(": g6tap"), "{links}");
    assert_eq!(xtun(&path.ns1, &["link", "show"]), "");
}

#[test]
fn two_bridges_joined_by_ip6gretap() {
    bridges_end_to_end(
        "g6br",
        &[],
        1434,
        "hoplimit 64 encaplimit 4 tclass 0x00 flowlabel 0x00000",
    );
}

#[test]
fn two_bridges_joined_by_ip6gretap_with_a_key() {
    // The kernel counts the key's 4 bytes (ip6gre_calc_hlen): 1434 - 4.
    bridges_end_to_end(
        "g6brk",
        &["key", "9"],
        1430,
        "hoplimit 64 encaplimit 4 tclass 0x00 flowlabel 0x00000 ikey 0.0.0.9 okey 0.0.0.9",
    );
}

#[test]
fn two_bridges_joined_by_ip6gretap_with_key_checksums_and_sequence_numbers() {
    // 40 + GRE 16 + 14, no destination-options header: 1500 - 70.
    bridges_end_to_end(
        "g6brc",
        &[
            "key",
            "9",
            "csum",
            "seq",
            "encaplimit",
            "none",
            "tclass",
            "inherit",
        ],
        1430,
        "hoplimit 64 encaplimit none tclass inherit flowlabel 0x00000 ikey 0.0.0.9 okey 0.0.0.9 iseq oseq icsum ocsum",
    );
}
