//! The walkthrough in the seed topology (ns1 — router — ns2), as a user
//! follows it: tunnels of each mode carry pings and TCP, and the router's
//! capture, decoded by tshark, shows what reached the wire. Needs root;
//! every namespace is removed on drop.

mod common;

use common::net::{
    add_side, address_ipv6, address_tunnels_ipv6, assert_shown_with_mtu, ping, ping_with,
    status_of, stdout, transfer_16mib, try_xtun_line, xtun_json, Capture, XTUN,
};
use tunnel_userspace::testbed::SeedTopology;

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
    let text = ping_with(&topo.ns1, "10.10.200.10", 4, ping_opts);
    assert!(text.contains("4 received"), "ping through {mode}: {text}");
    let lines = capture.decode(8, FIELDS);
    (topo, lines)
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
    let inner = capture.decode(4, &["ip.src", "ip.dst", "icmp.type"]);
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

    // `ttl inherit` copies whatever TTL the inner packet has, not a
    // default that happens to equal ping's 64.
    let capture = Capture::start(&topo.router, "r1", "ip proto 47");
    let out = ping_with(&topo.ns1, "10.10.200.10", 2, &["-t", "37"]);
    assert!(out.contains("2 received"), "{out}");
    let requests: Vec<String> = capture
        .decode(4, FIELDS)
        .into_iter()
        .filter(|l| field(l, "icmp.type") == "8")
        .collect();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for line in &requests {
        assert_eq!(
            field(line, "ip.ttl"),
            "37,37",
            "outer TTL from the inner: {line}"
        );
    }
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
    let out = ping_with(&topo.ns1, "10.10.200.10", 2, &["-Q", "0xb8"]);
    assert!(out.contains("2 received"), "{out}");
    let lines = capture.decode(4, FIELDS);
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
    let failed = try_xtun_line(
        &topo.ns2,
        "tunnel add tun2 mode gre remote 10.10.10.2 local 10.10.20.2 dev v1",
    );
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
    let v2 = status_of(&topo.ns2, "v2");
    assert_eq!(v2["decap"], "xdp");
    assert_eq!(v2["xdp"]["mode"], "native");
    transfer_16mib(&topo);
    let stats = xtun_json(&topo.ns2, &["stats"]);
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

#[test]
fn ipv6_inside_gre_and_sit() {
    let topo = SeedTopology::new("v6").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    address_tunnels_ipv6(&topo.ns1, &topo.ns2);
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
    address_ipv6([
        (&topo.ns1, "sit1", "fd00:300::1"),
        (&topo.ns2, "sit2", "fd00:300::2"),
    ]);
    assert_shown_with_mtu(
        &topo.ns1,
        "sit1",
        "sit1: ipv6/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit\n",
        1480,
    );

    let capture = Capture::start(&topo.router, "r1", "ip proto 47 or ip proto 41");
    for dst in ["fd00:200::10", "fd00:300::2"] {
        let out = ping_with(&topo.ns1, dst, 2, &["-6"]);
        assert!(out.contains("2 received"), "{dst}: {out}");
    }
    let lines = capture.decode(
        8,
        &[
            "ip.src",
            "ip.proto",
            "gre.proto",
            "ipv6.src",
            "ipv6.dst",
            "icmpv6.type",
            "ip.checksum.status",
        ],
    );
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
    for (seen, expected) in [
        (&gre, "10.10.10.2;47;0x86dd;fd00:100::10;fd00:200::10;128;1"),
        (&gre, "10.10.20.2;47;0x86dd;fd00:200::10;fd00:100::10;129;1"),
        (&sit, "10.10.10.2;41;;fd00:300::1;fd00:300::2;128;1"),
        (&sit, "10.10.20.2;41;;fd00:300::2;fd00:300::1;129;1"),
    ] {
        assert!(seen.contains(&&expected.to_string()), "{seen:#?}");
    }

    // `ttl inherit` takes an inner IPv6 packet's hop limit, whatever it is.
    let capture = Capture::start(&topo.router, "r1", "ip proto 47 or ip proto 41");
    for dst in ["fd00:200::10", "fd00:300::2"] {
        let out = ping_with(&topo.ns1, dst, 1, &["-6", "-t", "45"]);
        assert!(out.contains("1 received"), "{dst}: {out}");
    }
    let lines = capture.decode(4, &["ip.proto", "ip.ttl", "ipv6.hlim", "icmpv6.type"]);
    let requests: Vec<&String> = lines.iter().filter(|l| l.ends_with(";128")).collect();
    assert_eq!(
        requests,
        ["47;45;45;128", "41;45;45;128"]
            .map(String::from)
            .iter()
            .collect::<Vec<_>>(),
        "{lines:#?}"
    );
}
