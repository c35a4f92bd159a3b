//! Ethernet over GRE (`xtun link add ... type gretap`): golden frames
//! through BPF_PROG_TEST_RUN for encapsulation and decapsulation, the
//! grammar and show lines, and two bridges in two namespaces joined by a
//! gretap link across a router. Needs root.

mod common;

use common::{net::*, *};
use etherparse::{IpNumber, Ipv4Header, NetSlice, SlicedPacket};
use tunnel_common::{maps::*, stats::*};
use tunnel_userspace::{
    config::{Tos, TunnelSpec},
    dataplane::TunnelDevice,
    testbed::{run, unique_prefix, Netns, SeedTopology},
};

/// The gretap link that `words` (after `xtun link add`) describe, registered
/// on `ifindex` without a port, as a test run has no veth pair. Returns the
/// XDP tag that names it.
fn add_link(h: &mut Harness, words: &str, ifindex: u32) -> Vec<u8> {
    let words: Vec<&str> = words.split_whitespace().collect();
    let spec = TunnelSpec::parse_link(&words).unwrap();
    let cfg = spec.to_config(spec.local.unwrap(), 1, 1458);
    let cfg =
        h.dp.add_tunnel(ifindex, TunnelDevice::Ethernet, cfg)
            .unwrap();
    [XDP_META_MAGIC, ifindex, cfg.flags, cfg.stats_slot, 0]
        .iter()
        .flat_map(|w| w.to_ne_bytes())
        .collect()
}

/// A frame a host behind a bridge sends: the inner ICMP packet between two
/// hosts' own MAC addresses.
fn host_frame(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x0a, 0, 0, 0, 0, 0xbb, 0x0a, 0, 0, 0, 0, 0xaa];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP request from 10.50.0.1 for 10.50.0.2, broadcast.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0xaa, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0xaa, 10, 50, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 50, 0, 2]);
    f
}

const KEYED: &str = "gtap type gretap remote 10.10.20.2 local 10.10.10.2 key 9";
const TEB_KEYED: [u8; 8] = [0x20, 0x00, 0x65, 0x58, 0, 0, 0, 9];

/// The outer headers the encapsulation must write around `payload_len`
/// bytes of GRE payload with outer TTL `ttl`, as etherparse builds them.
fn outer_header(payload_len: usize, ttl: u8) -> Ipv4Header {
    let mut hdr = Ipv4Header::new(
        (TEB_KEYED.len() + payload_len) as u16,
        ttl,
        IpNumber(47),
        [10, 10, 10, 2],
        [10, 10, 20, 2],
    )
    .unwrap();
    hdr.dont_fragment = true;
    hdr.header_checksum = hdr.calc_header_checksum();
    hdr
}

/// Splits an encapsulated frame: the outer IPv4 header (checked by a
/// packet library), the GRE header and the frame it carries.
fn unwrap_outer(out: &[u8]) -> (Ipv4Header, &[u8], &[u8]) {
    let sliced = SlicedPacket::from_ethernet(out).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("no IPv4 in {out:02x?}")
    };
    let hdr = ip.header().to_header();
    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
    assert_eq!(&out[12..14], &[0x08, 0x00], "outer EtherType");
    let gre = &out[34..34 + TEB_KEYED.len()];
    (hdr, gre, &out[34 + TEB_KEYED.len()..])
}

#[test]
fn golden_encapsulation_of_ip_and_arp_frames() {
    let mut h = Harness::new();
    // BPF_PROG_TEST_RUN runs on the loopback device, ifindex 1.
    add_link(&mut h, KEYED, 1);
    // TTL 33, not the default 64: the outer TTL must be inherited.
    let mut packet = inner_packet(0);
    let mut inner = Ipv4Header::from_slice(&packet).unwrap().0;
    inner.time_to_live = 33;
    inner.header_checksum = inner.calc_header_checksum();
    packet.splice(0..20, inner.to_bytes());
    let ip_frame = host_frame(0x0800, &packet);
    let (verdict, out) = h.tc(&ip_frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (outer, gre, carried) = unwrap_outer(&out);
    // The frame travels whole, its own Ethernet header first; the outer
    // TTL is the inner packet's (ttl inherit), DF from pmtudisc.
    assert_eq!(outer.time_to_live, 33);
    assert_eq!(outer, outer_header(ip_frame.len(), 33));
    assert_eq!(gre, TEB_KEYED);
    assert_eq!(carried, ip_frame);
    assert_eq!(
        &out[..6],
        &[0x02, 0, 0, 0, 0, 0x01],
        "placeholder destination"
    );

    // ARP cannot go through adjust_room: the headers go in front of it.
    let arp = arp_request();
    let (verdict, out) = h.tc(&arp);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (outer, gre, carried) = unwrap_outer(&out);
    // No IP header to inherit from: TTL 64, as the kernel's default.
    assert_eq!(outer, outer_header(arp.len(), 64));
    assert_eq!(gre, TEB_KEYED);
    assert_eq!(carried, arp);
    let inner = etherparse::Ethernet2Header::from_slice(carried).unwrap().0;
    assert_eq!(inner.ether_type, etherparse::EtherType(0x0806));
    assert_eq!(h.dp.tunnel_totals(1).unwrap().tx_packets, 2);
}

#[test]
fn golden_encapsulation_with_checksum_and_sequence_number() {
    let mut h = Harness::new();
    add_link(
        &mut h,
        "gtap type gretap remote 10.10.20.2 local 10.10.10.2 csum seq ttl 30",
        1,
    );
    for frame in [host_frame(0x0800, &inner_packet(0)), arp_request()] {
        let (verdict, out) = h.tc(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let ip = Ipv4Header::from_slice(&out[14..]).unwrap().0;
        assert_eq!(
            (ip.time_to_live, ip.total_len as usize),
            (30, 20 + 12 + frame.len())
        );
        let gre = &out[34..];
        assert_eq!(&gre[..4], &[0x90, 0x00, 0x65, 0x58], "C and S bits, TEB");
        // The checksum covers the GRE header and the whole frame.
        let mut sum: u32 = gre
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "GRE checksum of {gre:02x?}");
        assert_eq!(&gre[12..], frame.as_slice());
    }
}

#[test]
fn golden_decapsulation_in_xdp_and_tc_keeps_the_frame_whole() {
    let mut h = Harness::new();
    let tag = add_link(
        &mut h,
        "gtap type gretap remote 10.10.10.2 local 10.10.20.2 key 9",
        TUN_IFINDEX,
    );
    for inner in [host_frame(0x0800, &inner_packet(0)), arp_request()] {
        let input = frame(47, &TEB_KEYED, &inner, 0);
        let (verdict, out) = h.xdp(&input);
        assert_eq!(verdict, XDP_PASS);
        let mut expected = tag.clone();
        expected.extend_from_slice(&inner);
        assert_eq!(out, expected, "XDP hands tc the inner frame, tagged");

        let (verdict, out) = h.tc(&input);
        assert_eq!(verdict, TC_ACT_REDIRECT, "delivered on the link");
        assert_eq!(out, inner);
    }
    let stats = h.dp.tunnel_totals(TUN_IFINDEX).unwrap();
    assert_eq!((stats.rx_packets, stats.rx_errors), (4, 0));
    // Another key is not this link's: passed untouched.
    let other = frame(47, &[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 8], &arp_request(), 0);
    assert_eq!(h.xdp(&other), (XDP_PASS, other.clone()));
    // A frame too short for its own Ethernet header is never delivered.
    let (verdict, _) = h.xdp(&frame(47, &TEB_KEYED, &[0x0a; 10], 0));
    assert_eq!(verdict, XDP_DROP);
}

#[test]
fn ip_tunnels_and_gretap_links_refuse_each_others_payload() {
    let mut h = Harness::new();
    h.add("tun2 mode gre remote 10.10.10.2 local 10.10.20.2 key 7", 41);
    add_link(
        &mut h,
        "gtap type gretap remote 10.10.10.2 local 10.10.20.2 key 9",
        42,
    );
    let frame_for_gre = frame(47, &[0x20, 0x00, 0x65, 0x58, 0, 0, 0, 7], &arp_request(), 0);
    let ip_for_gretap = frame(
        47,
        &[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 9],
        &inner_packet(0),
        0,
    );
    for (input, tunnel) in [(frame_for_gre, 41), (ip_for_gretap, 42)] {
        let before = h.dp.counter_totals().unwrap()[RX_BAD_PAYLOAD as usize];
        // Left to the kernel untouched (which has no tunnel for it either).
        assert_eq!(h.xdp(&input), (XDP_PASS, input.clone()));
        assert_eq!(h.tc(&input), (TC_ACT_UNSPEC, input.clone()));
        let after = h.dp.counter_totals().unwrap()[RX_BAD_PAYLOAD as usize];
        assert_eq!(
            after - before,
            2,
            "counted as {}",
            COUNTER_NAMES[RX_BAD_PAYLOAD as usize]
        );
        let stats = h.dp.tunnel_totals(tunnel).unwrap();
        assert_eq!(stats.rx_packets, 0);
    }
}

/// `xtun link add` with `words` must fail with one line and create nothing.
fn assert_refused(ns: &Netns, words: &str, says: &str) {
    let mut args = vec![XTUN, "link", "add"];
    args.extend(words.split_whitespace());
    let out = ns.try_exec(&args).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{words}: accepted");
    assert_eq!(err.trim_end().lines().count(), 1, "{words}: {err}");
    assert!(err.contains(says), "{words}: {err}");
    let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
    // Only lo and the underlay: no link, port or provisional pair.
    assert_eq!(links.lines().count(), 2, "{words}: left {links}");
}

#[test]
fn bad_input_is_one_line_and_creates_nothing() {
    let topo = SeedTopology::new("gtbad").unwrap();
    let ns = &topo.ns1;
    let base = "bad type gretap remote 10.10.20.2 local 10.10.10.2";
    for (extra, says) in [
        ("key", "Command line is not complete"),
        (
            "key 1.2.3",
            "an IP address is expected rather than \"1.2.3\"",
        ),
        ("ikey x", "invalid value for \"ikey\": \"x\""),
        ("okey 99999999999", "invalid value for \"okey\""),
        ("ttl 256", "argument \"256\" is wrong: invalid TTL"),
        ("ttl 0x1ff", "invalid TTL"),
        ("tos 0x100", "argument \"0x100\" is wrong: bad TOS value"),
        ("tos inherit/0x10", "bad TOS value"),
        ("tos 0x10/0x20", "bad TOS value"),
        ("dev nosuchdev0", "Cannot find device \"nosuchdev0\""),
        ("local 10.10.10.300", "rather than \"10.10.10.300\""),
        ("bogus", "\"bogus\" is a garbage"),
        ("encap fou", "option \"encap\" is not supported"),
        ("mode gre", "\"mode\" is a garbage"),
        ("rpfilter", "\"rpfilter\" is a garbage"),
    ] {
        assert_refused(ns, &format!("{base} {extra}"), says);
    }
    assert_refused(
        ns,
        "bad type gretap local 10.10.10.2",
        "a gretap link needs remote ADDR",
    );
    assert_refused(
        ns,
        "bad type gretap remote any local 10.10.10.2",
        "a gretap link needs remote ADDR",
    );
    assert_refused(
        ns,
        "bad type vxlan remote 10.10.20.2",
        "unknown link type \"vxlan\"",
    );
    assert_refused(ns, "bad remote 10.10.20.2", "\"remote\" is a garbage");
    assert_refused(ns, "bad", "link type is required");
    // `ip tunnel` has no gretap mode.
    let out = ns
        .try_exec(&[
            XTUN,
            "tunnel",
            "add",
            "bad",
            "mode",
            "gretap",
            "remote",
            "10.10.20.2",
        ])
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err, "Unknown tunnel mode \"gretap\"\n");
    let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
    assert_eq!(links.lines().count(), 2, "left {links}");
}

/// What `ip link`'s gre options take that `ip tunnel` does not, and the
/// reverse.
#[test]
fn link_grammar_differs_from_ip_tunnel_as_iproute2s() {
    let parse = |extra: &str| {
        let line = format!("g type gretap remote 10.10.20.2 {extra}");
        let words: Vec<&str> = line.split_whitespace().collect();
        TunnelSpec::parse_link(&words)
    };
    // The ttl/nopmtudisc conflict is `ip tunnel`'s rule alone.
    let spec = parse("ttl 64 nopmtudisc").unwrap();
    assert_eq!((spec.ttl, spec.pmtudisc), (64, false));
    // One-sided words clear one direction's flag.
    let spec = parse("csum seq noicsum nooseq").unwrap();
    assert_eq!(
        (spec.icsum, spec.ocsum, spec.iseq, spec.oseq),
        (false, true, true, false)
    );
    let spec = parse("csum seq noocsum noiseq").unwrap();
    assert_eq!(
        (spec.icsum, spec.ocsum, spec.iseq, spec.oseq),
        (true, false, false, true)
    );
    assert_eq!(parse("tos inherit").unwrap().tos, Tos::Inherit(0));
    assert!(parse("tos inherit/0x10").is_err());
    // `ip tunnel` keeps its own rules.
    let tunnel = |extra: &str| {
        let line = format!("t mode gre remote 10.10.20.2 {extra}");
        let words: Vec<&str> = line.split_whitespace().collect();
        TunnelSpec::parse(&words)
    };
    assert!(tunnel("ttl 64 nopmtudisc").is_err());
    assert!(tunnel("csum noicsum").is_err());
    assert!(tunnel("tos inherit/0x10").is_ok());
}

#[test]
fn mtus_show_lines_and_tunnel_show_as_iproute2() {
    let topo = SeedTopology::new("gtshow").unwrap();
    let ns = &topo.ns1;
    xtun(
        ns,
        &[
            "link",
            "add",
            "gplain",
            "type",
            "gretap",
            "remote",
            "10.10.20.2",
        ],
    );
    // Abbreviated keywords, as `ip link` reads them.
    xtun(
        ns,
        &[
            "link",
            "add",
            "name",
            "gkey",
            "type",
            "gretap",
            "rem",
            "10.10.20.3",
            "loc",
            "10.10.10.2",
            "k",
            "9",
        ],
    );
    xtun(
        ns,
        &[
            "link",
            "add",
            "gopts",
            "type",
            "gretap",
            "remote",
            "10.10.20.4",
            "local",
            "10.10.10.2",
            "ikey",
            "1.2.3.4",
            "okey",
            "5",
            "csum",
            "oseq",
            "ttl",
            "32",
            "tos",
            "0x10",
            "dev",
            "v1",
        ],
    );
    for (name, mtu, line) in [
        ("gplain", 1462, "gretap remote 10.10.20.2 local any ttl inherit"),
        (
            "gkey",
            1458,
            "gretap remote 10.10.20.3 local 10.10.10.2 ttl inherit ikey 0.0.0.9 okey 0.0.0.9",
        ),
        (
            "gopts",
            1450,
            "gretap remote 10.10.20.4 local 10.10.10.2 dev v1 ttl 32 tos 0x10 ikey 1.2.3.4 okey 0.0.0.5 oseq icsum ocsum",
        ),
    ] {
        let shown = xtun(ns, &["link", "show", name]);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(lines[0].ends_with(&format!(": {name}: mtu {mtu}")), "{shown}");
        assert!(lines[1].starts_with("    link/ether "), "{shown}");
        assert_eq!(lines[2], format!("    {line}"));
        let ip = stdout(ns.exec(&["ip", "-d", "-j", "link", "show", name]).unwrap());
        let ip: serde_json::Value = serde_json::from_str(&ip).unwrap();
        assert_eq!(ip[0]["mtu"], mtu, "{name}");
        assert_eq!(ip[0]["link_type"], "ether", "an Ethernet interface");
        let flags = ip[0]["flags"].to_string();
        assert!(flags.contains("BROADCAST") && flags.contains("MULTICAST"), "{flags}");
        assert!(!flags.contains("NOARP"), "{flags}");
    }
    // The map dump names the flag that makes each of them a gretap link.
    let dump = xtun(ns, &["map", "dump", "XTUN_TUNNELS"]);
    assert_eq!(dump.lines().count(), 3, "{dump}");
    assert!(dump.lines().all(|l| l.ends_with(",teb")), "{dump}");
    let json = xtun_json(ns, &["link", "show", "gkey"]);
    let data = &json[0]["linkinfo"]["info_data"];
    assert_eq!(json[0]["linkinfo"]["info_kind"], "gretap");
    assert_eq!(
        data,
        &serde_json::json!({
            "remote": "10.10.20.3", "local": "10.10.10.2", "ttl": 0, "pmtudisc": true,
            "ikey": "0.0.0.9", "okey": "0.0.0.9",
        })
    );
    assert_eq!(
        xtun_json(ns, &["link", "show"]).as_array().unwrap().len(),
        3
    );
    // `ip tunnel show` lists only ipip, gre and sit devices (ARPHRD_ETHER
    // gretap is not one), nor does `ip tunnel del` take one.
    xtun(
        ns,
        &[
            "tunnel",
            "add",
            "tun1",
            "mode",
            "gre",
            "remote",
            "10.10.20.2",
            "local",
            "10.10.10.2",
        ],
    );
    let tunnels = xtun(ns, &["tunnel", "show"]);
    assert_eq!(tunnels.lines().count(), 1, "{tunnels}");
    assert!(tunnels.starts_with("tun1: gre/ip"), "{tunnels}");
    assert!(!ns
        .try_exec(&[XTUN, "tunnel", "del", "gkey"])
        .unwrap()
        .status
        .success());
    assert!(!ns
        .try_exec(&[XTUN, "link", "del", "tun1"])
        .unwrap()
        .status
        .success());
    for name in ["gplain", "gkey", "gopts"] {
        xtun(ns, &["link", "del", name]);
    }
    assert_eq!(xtun(ns, &["link", "show"]), "");
    assert!(!ns
        .try_exec(&["ip", "link", "show", "gkey"])
        .unwrap()
        .status
        .success());
}

/// A host namespace with `eth0` (`addr`/24, the gretap link's MTU) whose
/// peer `port` is enslaved to `br0` in `ns`.
fn host_on_bridge(ns: &Netns, host: &Netns, port: &str, addr: &str) {
    run(&[
        "ip", "link", "add", "eth0", "netns", &host.name, "type", "veth", "peer", "name", port,
        "netns", &ns.name,
    ])
    .unwrap();
    ns.exec(&["ip", "link", "set", port, "master", "br0", "up"])
        .unwrap();
    host.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", "eth0"])
        .unwrap();
    // A bridge forwards no frame larger than a port's MTU: the hosts'
    // must fit the gretap link's, as with the kernel's gretap.
    host.exec(&["ip", "link", "set", "eth0", "mtu", "1458", "up"])
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

#[test]
fn two_bridges_joined_by_gretap() {
    let topo = SeedTopology::new("gtbr").unwrap();
    let prefix = unique_prefix("gth");
    let host_a = Netns::new(format!("{prefix}-a")).unwrap();
    let host_b = Netns::new(format!("{prefix}-b")).unwrap();
    for (ns, host, remote, local, addr) in [
        (
            &topo.ns1,
            &host_a,
            SeedTopology::NS2_ADDR,
            SeedTopology::NS1_ADDR,
            "10.50.0.1",
        ),
        (
            &topo.ns2,
            &host_b,
            SeedTopology::NS1_ADDR,
            SeedTopology::NS2_ADDR,
            "10.50.0.2",
        ),
    ] {
        xtun(
            ns,
            &[
                "link", "add", "gtap", "type", "gretap", "remote", remote, "local", local, "key",
                "9",
            ],
        );
        ns.exec(&["ip", "link", "add", "br0", "type", "bridge"])
            .unwrap();
        ns.exec(&["ip", "link", "set", "br0", "up"]).unwrap();
        ns.exec(&["ip", "link", "set", "gtap", "master", "br0", "up"])
            .unwrap();
        host_on_bridge(ns, host, "host", addr);
    }
    // Nothing has resolved the underlay neighbours yet: the first frame
    // over the link is the ARP request itself.
    let capture = Capture::start(&topo.ns1, "v1", "ip proto 47");
    let out = ping(&host_a, "10.50.0.2", 3);
    assert_eq!(received(&out), 3, "{out}");
    let lines = capture.decode(
        4,
        &[
            "ip.proto",
            "gre.proto",
            "gre.key",
            "eth.type",
            "arp.opcode",
            "icmp.type",
        ],
    );
    let arp = lines
        .iter()
        .find(|l| l.contains(";1;") || l.ends_with(";1;"))
        .unwrap_or_else(|| panic!("no ARP request in {lines:?}"));
    // Outer then inner EtherType; GRE protocol 0x6558 and the key.
    assert!(
        arp.starts_with("47;0x6558;0x00000009;0x0800,0x0806;1;"),
        "{arp}"
    );
    let echo = lines
        .iter()
        .find(|l| l.ends_with(";8"))
        .unwrap_or_else(|| panic!("no echo request in {lines:?}"));
    // Outer then inner IP protocol: GRE, then ICMP.
    assert_eq!(echo, "47,1;0x6558;0x00000009;0x0800,0x0800;;8");

    // Each bridge learnt the other side's host on its gretap port.
    for (ns, far) in [(&topo.ns1, &host_b), (&topo.ns2, &host_a)] {
        let mac = mac_of(far, "eth0");
        let fdb = stdout(ns.exec(&["bridge", "fdb", "show", "br", "br0"]).unwrap());
        assert!(
            fdb.lines()
                .any(|l| l.starts_with(&format!("{mac} dev gtap"))),
            "{mac} not on gtap:\n{fdb}"
        );
    }
    // And the hosts know each other's real MAC addresses.
    let neigh = stdout(host_a.exec(&["ip", "neigh", "show", "10.50.0.2"]).unwrap());
    assert!(neigh.contains(&mac_of(&host_b, "eth0")), "{neigh}");

    let _heavy = heavy_traffic();
    transfer(&host_a, &host_b, "10.50.0.2", 16 << 20);
    transfer(&host_b, &host_a, "10.50.0.1", 4 << 20);
    assert_eq!(counter(&topo.ns1, COUNTER_NAMES[TX_NO_BUFS as usize]), 0);

    // `-s` counts the link's frames as `tunnel show -s` counts a tunnel's.
    let shown = xtun(&topo.ns1, &["-s", "link", "show", "gtap"]);
    assert!(shown.contains("\nRX: Packets    Bytes"), "{shown}");
    let stats = &xtun_json(&topo.ns1, &["-s", "link", "show", "gtap"])[0]["stats"];
    assert!(stats["tx"]["bytes"].as_u64().unwrap() > 16 << 20, "{stats}");
    assert!(stats["rx"]["bytes"].as_u64().unwrap() > 4 << 20, "{stats}");
    assert_eq!(stats["rx"]["errors"], 0, "{stats}");
}

/// ICMP "fragmentation needed" from a router on the way to 10.10.20.2,
/// quoting a gretap packet this host sent (key 9), reporting `mtu`.
fn frag_needed(mtu: u16) -> Vec<u8> {
    let mut quoted = outer_header(1400, 64);
    quoted.total_len = 1500;
    quoted.header_checksum = quoted.calc_header_checksum();
    let mut payload = quoted.to_bytes().to_vec();
    payload.extend_from_slice(&TEB_KEYED);
    let builder = etherparse::PacketBuilder::ipv4([10, 10, 10, 1], [10, 10, 10, 2], 64).icmpv4(
        etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ),
    );
    let mut f = eth(0x0800);
    builder.write(&mut f, &payload).unwrap();
    f
}

#[test]
fn frames_too_big_for_the_path_are_dropped_and_counted() {
    let mut h = Harness::new();
    add_link(&mut h, KEYED, 1);
    let (verdict, _) = h.xdp(&frag_needed(1000));
    assert_eq!(verdict, XDP_PASS, "the ICMP goes on to the kernel");
    assert_eq!(h.dp.path_mtus(1).first().map(|p| p.1), Some(1000));
    let counted = |h: &Harness| h.dp.counter_totals().unwrap()[TX_TOO_BIG_DROP as usize];
    let big = host_frame(0x0800, &echo_request(1000));
    let (verdict, _) = h.tc(&big);
    // 1000 bytes of IP and 42 of encapsulation do not fit 1000: dropped,
    // never answered (the frame is not the link's to answer).
    assert_eq!((verdict, counted(&h)), (TC_ACT_SHOT, 1));
    let fits = host_frame(0x0800, &echo_request(1000 - 42));
    assert_eq!(h.tc(&fits).0, TC_ACT_REDIRECT);
    assert_eq!(counted(&h), 1);
    assert_eq!(h.tc(&arp_request()).0, TC_ACT_REDIRECT);
}

/// An IPv4 echo request of `len` bytes with DF, as a host sends it.
fn echo_request(len: usize) -> Vec<u8> {
    let builder = etherparse::PacketBuilder::ipv4([10, 50, 0, 1], [10, 50, 0, 2], 64)
        .icmpv4_echo_request(1, 1);
    let mut out = Vec::new();
    builder.write(&mut out, &vec![0x5a; len - 28]).unwrap();
    let mut hdr = Ipv4Header::from_slice(&out).unwrap().0;
    hdr.dont_fragment = true;
    hdr.header_checksum = hdr.calc_header_checksum();
    out.splice(0..20, hdr.to_bytes());
    out
}
