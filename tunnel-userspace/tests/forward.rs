//! The XDP forwarding fast path (`xtun attach LAN --forward xdp`) between
//! two site gateways: client — gw1 (xtun) — router — gw2 (xtun) — server,
//! all veth. Forwarded traffic is encapsulated and decapsulated in XDP
//! (the fast-path counters say so), and whatever needs the kernel takes
//! its path as before. Needs root; every namespace is removed on drop.
//!
//! XDP_REDIRECT into a veth is dropped unless the receiving end has NAPI
//! (an XDP program, or GRO on): every end that receives a redirected
//! frame gets `gro on` here, the others have xtun's XDP program. And the
//! ends that send into a gateway's XDP have checksum offload off, as a
//! wire delivers packets: a checksum a veth leaves to offload is never
//! filled in once XDP redirects the frame (XDP cannot see that it is
//! pending).

mod common;

use std::{thread, time::Duration};

use common::net::{
    counter, eventually, exec_line, heavy_traffic, ping, ping_with, python, received, scapy, snmp,
    spawn_in, stdout, transfer, xtun, xtun_line, XTUN,
};
use tunnel_userspace::testbed::{run, unique_prefix, Netns};

/// The five namespaces, with a tunnel between the gateways and the fast
/// path on both LANs (`l1` in gw1, `l2` in gw2).
struct Gateways {
    client: Netns,
    gw1: Netns,
    router: Netns,
    gw2: Netns,
    server: Netns,
}

const SERVER: &str = "10.30.2.2";
const SERVER6: &str = "fd00:30:2::2";
const CLIENT: &str = "10.30.1.2";

fn veth(a: (&Netns, &str), b: (&Netns, &str)) {
    run(&[
        "ip", "link", "add", a.1, "netns", &a.0.name, "type", "veth", "peer", "name", b.1, "netns",
        &b.0.name,
    ])
    .unwrap();
}

/// Each line's words run in `ns`, which must succeed.
fn sh(ns: &Netns, lines: &[&str]) {
    for line in lines {
        exec_line(ns, line);
    }
}

impl Gateways {
    /// The topology with a `mode` tunnel (`extra` options on both ends,
    /// `{underlay}` standing for each gateway's underlay) carrying the LANs' IPv4 (IPv6 for sit) subnets.
    fn new(tag: &str, mode: &str, extra: &str) -> Self {
        Self::with_gw1_remote(tag, mode, extra, "10.31.2.2")
    }

    /// The same, with gw1's tunnel sending to `gw1_remote` (`any`: the
    /// caller adds its neighbours).
    fn with_gw1_remote(tag: &str, mode: &str, extra: &str, gw1_remote: &str) -> Self {
        let prefix = unique_prefix(tag);
        let ns = |n: &str| Netns::new(format!("{prefix}-{n}")).unwrap();
        let g = Self {
            client: ns("cl"),
            gw1: ns("g1"),
            router: ns("rt"),
            gw2: ns("g2"),
            server: ns("sv"),
        };
        veth((&g.client, "c0"), (&g.gw1, "l1"));
        veth((&g.gw1, "u1"), (&g.router, "r1"));
        veth((&g.router, "r2"), (&g.gw2, "u2"));
        veth((&g.gw2, "l2"), (&g.server, "s0"));
        sh(
            &g.client,
            &[
                "ip addr add 10.30.1.2/24 dev c0",
                "ip addr add fd00:30:1::2/64 dev c0 nodad",
                "ip link set c0 up",
                "ip route add default via 10.30.1.1",
                "ip -6 route add default via fd00:30:1::1",
            ],
        );
        sh(
            &g.server,
            &[
                "ip addr add 10.30.2.2/24 dev s0",
                "ip addr add fd00:30:2::2/64 dev s0 nodad",
                "ip link set s0 up",
                "ip route add default via 10.30.2.1",
                "ip -6 route add default via fd00:30:2::1",
            ],
        );
        sh(
            &g.router,
            &[
                "ip addr add 10.31.1.1/24 dev r1",
                "ip addr add 10.31.2.1/24 dev r2",
                "ip link set r1 up",
                "ip link set r2 up",
                "sysctl -qw net.ipv4.ip_forward=1",
            ],
        );
        // Receiving ends of redirected frames: NAPI by GRO; and complete
        // checksums into the gateways.
        sh(
            &g.router,
            &["ethtool -K r1 gro on tx off", "ethtool -K r2 gro on tx off"],
        );
        sh(&g.client, &["ethtool -K c0 gro on tx off"]);
        sh(&g.server, &["ethtool -K s0 gro on tx off"]);
        let sides = [
            (
                &g.gw1,
                "1",
                "2",
                "10.31.1.2",
                gw1_remote,
                "10.31.2.0",
                "10.31.1.1",
            ),
            (
                &g.gw2,
                "2",
                "1",
                "10.31.2.2",
                "10.31.1.2",
                "10.31.1.0",
                "10.31.2.1",
            ),
        ];
        for (gw, me, peer, local, remote, far_net, router) in sides {
            sh(
                gw,
                &[
                    "sysctl -qw net.ipv4.ip_forward=1",
                    "sysctl -qw net.ipv6.conf.all.forwarding=1",
                    "sysctl -qw net.ipv4.conf.all.rp_filter=1",
                    &format!("ip addr add 10.30.{me}.1/24 dev l{me}"),
                    &format!("ip addr add fd00:30:{me}::1/64 dev l{me} nodad"),
                    &format!("ip link set l{me} up"),
                    &format!("ip addr add {local}/24 dev u{me}"),
                    &format!("ip link set u{me} up"),
                    &format!("ip route add {far_net}/24 via {router}"),
                    &format!("{XTUN} attach u{me} --decap xdp"),
                    &format!(
                        "{XTUN} tunnel add xt{me} mode {mode} {} local {local} ttl 64 {}",
                        // ISATAP takes its remotes from the inner destinations.
                        if mode == "isatap" {
                            String::new()
                        } else {
                            format!("remote {remote}")
                        },
                        extra.replace("{underlay}", &format!("u{me}"))
                    ),
                    &format!("ip link set xt{me} up"),
                    &format!("ip addr add 10.32.0.{me} peer 10.32.0.{peer} dev xt{me}"),
                ],
            );
            let route = if mode == "sit" || mode == "isatap" {
                format!("ip -6 route add fd00:30:{peer}::/64 dev xt{me}")
            } else {
                format!("ip route add 10.30.{peer}.0/24 dev xt{me}")
            };
            sh(gw, &[&route, &format!("{XTUN} attach l{me} --forward xdp")]);
        }
        g
    }

    /// Turns the fast path on or off on both LANs.
    fn forward(&self, on: &str) {
        xtun(&self.gw1, &["attach", "l1", "--forward", on]);
        xtun(&self.gw2, &["attach", "l2", "--forward", on]);
    }
}

/// The fast path's counters of both gateways, in both directions:
/// [gw1 tx, gw1 rx, gw2 tx, gw2 rx].
fn forwarded(g: &Gateways) -> [u64; 4] {
    [
        counter(&g.gw1, "tx_forwarded_xdp"),
        counter(&g.gw1, "rx_forwarded_xdp"),
        counter(&g.gw2, "tx_forwarded_xdp"),
        counter(&g.gw2, "rx_forwarded_xdp"),
    ]
}

/// A TCP transfer client -> server through the gateways is intact, and
/// the fast path carried packets into the tunnel at both gateways (data
/// one way, ACKs the other); with `rx_in_xdp`, out of it as well.
fn tcp_takes_the_fast_path(g: &Gateways, server: &str, rx_in_xdp: bool) {
    // Neighbours and path MTUs settle first (the kernel's path does that).
    assert_eq!(received(&ping_with(&g.client, server, 2, &[])), 2);
    let before = forwarded(g);
    {
        let _heavy = heavy_traffic();
        transfer(&g.client, &g.server, server, 4 << 20);
    }
    let after = forwarded(g);
    let rose: Vec<bool> = before.iter().zip(&after).map(|(b, a)| a > b).collect();
    let stats = || {
        let gw1 = xtun(&g.gw1, &["stats"]);
        let gw2 = xtun(&g.gw2, &["stats"]);
        format!("{before:?} -> {after:?}\ngw1:\n{gw1}\ngw2:\n{gw2}")
    };
    assert!(rose[0] && rose[2], "tx fast path, {}", stats());
    if rx_in_xdp {
        assert!(rose[1] && rose[3], "rx fast path, {}", stats());
    }
    // The tunnel's own counters count the fast path's packets too.
    let shown = stdout(g.gw1.exec(&[XTUN, "-s", "tunnel", "show", "xt1"]).unwrap());
    assert!(shown.contains("TX: Packets"), "{shown}");
}

#[test]
fn gre_forwards_tcp_ping_and_traceroute_in_xdp() {
    let g = Gateways::new("fwgre", "gre", "");
    tcp_takes_the_fast_path(&g, SERVER, true);
    let before = forwarded(&g);
    assert_eq!(received(&ping(&g.client, SERVER, 3)), 3);
    let after = forwarded(&g);
    assert!(
        after[0] >= before[0] + 3 && after[3] >= before[3] + 3,
        "{before:?} -> {after:?}"
    );
    assert!(
        after[2] >= before[2] + 3 && after[1] >= before[1] + 3,
        "{before:?} -> {after:?}"
    );

    // traceroute: each gateway answers the TTL it would let expire, on the
    // kernel's path.
    let ttl = |ns: &Netns| counter(ns, "fwd_pass_ttl_expiring");
    let (ttl1, ttl2) = (ttl(&g.gw1), ttl(&g.gw2));
    let script = format!(
        "from scapy.all import *\nhops=[]\nfor t in (1,2,3):\n r=sr1(IP(dst='{SERVER}',ttl=t)/ICMP(id=77,seq=t),timeout=2,verbose=0)\n hops.append(r.src if r else '*')\nprint(' '.join(hops))"
    );
    let hops = python(&g.client, &script);
    let hops: Vec<&str> = hops.split_whitespace().collect();
    assert_eq!(hops.len(), 3, "{hops:?}");
    assert_eq!(hops[0], "10.30.1.1", "{hops:?}");
    assert!(hops[1].starts_with("10."), "gw2 answers: {hops:?}");
    assert_eq!(hops[2], SERVER, "{hops:?}");
    assert!(ttl(&g.gw1) > ttl1, "gw1 left TTL 1 to the kernel");
    assert!(ttl(&g.gw2) > ttl2, "gw2 left TTL 1 to the kernel");

    let status = xtun(&g.gw1, &["status"]);
    assert!(
        status.contains("forwarding fast path (XDP) on: l1 (bypasses netfilter FORWARD"),
        "{status}"
    );
}

#[test]
fn gre_key_and_sequence_numbers_forward_tcp_in_xdp() {
    let g = Gateways::new("fwseq", "gre", "key 7 seq");
    tcp_takes_the_fast_path(&g, SERVER, true);
}

#[test]
fn gre_checksums_are_sent_from_xdp_and_checked_in_tc() {
    // XDP cannot tell a checksum pending offload from a wrong one, so the
    // receiving side verifies (and delivers) in tc: only tx is fast.
    let g = Gateways::new("fwcsum", "gre", "csum");
    tcp_takes_the_fast_path(&g, SERVER, false);
}

#[test]
fn isatap_forwards_ipv6_tcp_in_xdp() {
    let g = Gateways::new("fwisa", "isatap", "");
    // Each gateway is the other's potential router: the LANs' addresses
    // are not ISATAP ones, so their packets go to (and come from) it.
    xtun_line(&g.gw1, "tunnel prl prl-default 10.31.2.2 dev xt1");
    xtun_line(&g.gw2, "tunnel prl prl-default 10.31.1.2 dev xt2");
    tcp_takes_the_fast_path(&g, SERVER6, true);
}

#[test]
fn gre_bound_to_its_underlay_forwards_tcp_in_xdp() {
    let g = Gateways::new("fwdev", "gre", "dev {underlay}");
    tcp_takes_the_fast_path(&g, SERVER, true);
}

#[test]
fn ipip_forwards_tcp_in_xdp() {
    let g = Gateways::new("fwipip", "ipip", "");
    tcp_takes_the_fast_path(&g, SERVER, true);
}

#[test]
fn multipoint_gre_finds_its_neighbour_in_xdp() {
    let g = Gateways::with_gw1_remote("fwmp", "gre", "", "any");
    xtun(
        &g.gw1,
        &[
            "neigh",
            "add",
            "10.30.2.0/24",
            "lladdr",
            "10.31.2.2",
            "dev",
            "xt1",
        ],
    );
    tcp_takes_the_fast_path(&g, SERVER, true);
}

#[test]
fn sit_forwards_ipv6_tcp_in_xdp() {
    let g = Gateways::new("fwsit", "sit", "");
    tcp_takes_the_fast_path(&g, SERVER6, true);
}

/// `name` on `ns` rises by at least `by` while `f` runs.
fn rises<T>(ns: &Netns, name: &str, by: u64, f: impl FnOnce() -> T) -> T {
    let before = counter(ns, name);
    let out = f();
    let after = counter(ns, name);
    assert!(after >= before + by, "{name}: {before} -> {after}");
    out
}

#[test]
fn what_needs_the_kernel_takes_its_path() {
    let g = Gateways::new("fwkern", "gre", "");
    assert_eq!(received(&ping(&g.client, SERVER, 1)), 1);
    // No route answer: an unreachable route at gw1, no neighbour at gw2.
    g.gw1
        .exec(&["ip", "route", "add", "unreachable", "10.30.9.0/24"])
        .unwrap();
    let out = rises(&g.gw1, "fwd_pass_no_route", 1, || {
        ping(&g.client, "10.30.9.1", 1)
    });
    assert!(out.contains("Unreachable"), "the kernel answers: {out}");
    let out = rises(&g.gw2, "fwd_pass_no_route", 1, || {
        ping(&g.client, "10.30.2.99", 1)
    });
    assert_eq!(received(&out), 0);
    // Too big for the tunnel with DF: the kernel answers "fragmentation needed".
    let out = rises(&g.gw1, "fwd_pass_too_big", 1, || {
        ping_with(&g.client, SERVER, 1, &["-M", "do", "-s", "1472"])
    });
    assert!(out.contains("mtu = 1476"), "{out}");
    // IPv4 options (record route), both ways.
    let out = rises(&g.gw2, "fwd_pass_ip_options", 2, || {
        rises(&g.gw1, "fwd_pass_ip_options", 2, || {
            ping_with(&g.client, SERVER, 2, &["-R"])
        })
    });
    assert_eq!(received(&out), 2, "{out}");
    // Fragments: 3000 bytes leave the client in two.
    let out = rises(&g.gw1, "fwd_pass_fragment", 2, || {
        ping_with(&g.client, SERVER, 1, &["-s", "3000"])
    });
    assert_eq!(received(&out), 1, "{out}");
}

#[test]
fn what_needs_the_kernel_takes_its_path_over_sit() {
    let g = Gateways::new("fwkern6", "sit", "");
    assert_eq!(received(&ping(&g.client, SERVER6, 1)), 1);
    // Too big for the tunnel (1,480 bytes): the kernel answers Packet Too
    // Big, and the client learns the path MTU.
    let out = rises(&g.gw1, "fwd_pass_too_big", 1, || {
        ping_with(&g.client, SERVER6, 1, &["-M", "do", "-s", "1450"])
    });
    assert!(out.contains("mtu=1480"), "{out}");
    // Fragments (sized to that MTU by the client), both ways. The first
    // reply is the server's to lose: its 1,500-byte fragments meet the
    // tunnel's MTU at gw2's kernel, which answers Packet Too Big.
    let out = rises(&g.gw2, "fwd_pass_fragment", 2, || {
        rises(&g.gw1, "fwd_pass_fragment", 2, || {
            ping_with(&g.client, SERVER6, 3, &["-s", "3000"])
        })
    });
    assert!(received(&out) >= 2, "{out}");
    // Hop limit 1: the kernel answers Time Exceeded.
    let out = rises(&g.gw1, "fwd_pass_ttl_expiring", 1, || {
        ping_with(&g.client, SERVER6, 1, &["-t", "1"])
    });
    assert!(out.to_lowercase().contains("time exceeded"), "{out}");
    // A hop-by-hop header is the kernel's to read; it forwards the packet.
    let closed = || snmp(&g.server, "snmp6", "Udp6NoPorts");
    let start = closed();
    rises(&g.gw1, "fwd_pass_ip_options", 1, || {
        scapy(
            &g.client,
            &format!(
                "send(IPv6(dst='{SERVER6}')/IPv6ExtHdrHopByHop()/UDP(sport=4000,dport=5999),verbose=0)"
            ),
        )
    });
    assert!(
        eventually(|| closed() == start + 1),
        "the hop-by-hop datagram did not arrive"
    );
    // A loopback source is martian: the kernel drops it.
    let crossed = || counter(&g.gw2, "rx_decapsulated");
    let before = crossed();
    rises(&g.gw1, "fwd_pass_martian", 1, || {
        scapy(
            &g.client,
            &format!("send(IPv6(src='::1',dst='{SERVER6}')/UDP(sport=4000,dport=5999),verbose=0)"),
        )
    });
    thread::sleep(Duration::from_millis(300));
    assert_eq!(crossed(), before, "a loopback source crossed the tunnel");
}

/// Sends a UDP datagram from `src` (spoofed or not) to a closed port of
/// the server.
fn udp_from(g: &Gateways, src: &str) {
    udp_ports(g, src, 4000, 5999);
}

/// The same, between the given ports.
fn udp_ports(g: &Gateways, src: &str, sport: u16, dport: u16) {
    let packet = format!("IP(src='{src}',dst='{SERVER}')/UDP(sport={sport},dport={dport})/b'x'");
    scapy(&g.client, &format!("send({packet},verbose=0)"));
}

#[test]
fn policy_routing_on_ports_is_obeyed_as_by_the_kernel() {
    let g = Gateways::new("fwrule", "gre", "");
    assert_eq!(received(&ping(&g.client, SERVER, 1)), 1);
    // At gw1, UDP for port 5999 is blackholed, and the route back to the
    // client's LAN for datagrams from port 4001 (the reverse lookup swaps
    // the ports) leaves by the underlay, so strict rp_filter refuses them.
    sh(
        &g.gw1,
        &[
            "ip rule add ipproto udp dport 5999 table 100",
            "ip route add blackhole 10.30.2.0/24 table 100",
            "ip rule add ipproto udp dport 4001 table 101",
            "ip route add 10.30.1.0/24 via 10.31.1.1 table 101",
        ],
    );
    let arrived = || snmp(&g.server, "Udp:", "NoPorts");
    let settle = || thread::sleep(Duration::from_millis(300));
    // The kernel's path first, then the fast path: the same outcome.
    for fast in [false, true] {
        g.forward(if fast { "xdp" } else { "off" });
        let by = u64::from(fast);
        let start = arrived();
        rises(&g.gw1, "fwd_pass_no_route", by, || {
            udp_ports(&g, CLIENT, 4000, 5999)
        });
        settle();
        assert_eq!(arrived(), start, "port 5999 passed gw1 (fast path {fast})");
        rises(&g.gw1, "fwd_pass_rpfilter", by, || {
            udp_ports(&g, CLIENT, 4001, 5998)
        });
        settle();
        assert_eq!(arrived(), start, "port 4001 passed gw1 (fast path {fast})");
        rises(&g.gw1, "tx_forwarded_xdp", by, || {
            udp_ports(&g, CLIENT, 4000, 5998)
        });
        assert!(
            eventually(|| arrived() == start + 1),
            "other ports did not arrive (fast path {fast})"
        );
    }
}

/// Turns rp_filter off at gw1 (`all` and the LAN's), with the fast path
/// left on. The spoofed sources' subnet gets a route back through the
/// LAN, so that they pass the fast path's reverse-path check (whose
/// route back must lead to the interface a packet came in by, whatever
/// the sysctls).
fn gw1_without_rp_filter(g: &Gateways) {
    sh(
        &g.gw1,
        &[
            "sysctl -qw net.ipv4.conf.all.rp_filter=0",
            "sysctl -qw net.ipv4.conf.l1.rp_filter=0",
            "ip route add 10.30.7.0/24 via 10.30.1.2 dev l1",
        ],
    );
}

/// A spoofed source that gw1's fast path forwards is refused by gw2's
/// (and then by gw2's kernel), while the genuine source gets through on
/// the fast path.
fn gw2_refuses_a_spoofed_source(g: &Gateways) {
    let arrived = || snmp(&g.server, "Udp:", "NoPorts");
    let start = arrived();
    rises(&g.gw1, "tx_forwarded_xdp", 1, || {
        rises(&g.gw2, "fwd_pass_rpfilter", 1, || udp_from(g, "10.30.7.7"))
    });
    thread::sleep(Duration::from_millis(300));
    assert_eq!(arrived(), start, "a spoofed source passed gw2");
    rises(&g.gw2, "rx_forwarded_xdp", 1, || udp_from(g, CLIENT));
    assert!(
        eventually(|| arrived() == start + 1),
        "the genuine datagram did not arrive"
    );
}

#[test]
fn rpfilter_still_refuses_a_spoofed_inner_source() {
    let g = Gateways::new("fwrpf", "gre", "rpfilter");
    assert_eq!(received(&ping(&g.client, SERVER, 1)), 1);
    let arrived = || snmp(&g.server, "Udp:", "NoPorts");
    let start = arrived();
    // gw1's LAN has rp_filter strict: the fast path leaves the spoofed
    // packet to the kernel, which drops it.
    rises(&g.gw1, "fwd_pass_rpfilter", 1, || udp_from(&g, "10.30.7.7"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(arrived(), start, "a spoofed source passed gw1");
    // Without rp_filter at gw1 it is forwarded; gw2's tunnel has
    // `rpfilter`, and refuses it.
    gw1_without_rp_filter(&g);
    gw2_refuses_a_spoofed_source(&g);
}

#[test]
fn martians_and_a_tunnels_own_rp_filter_are_left_to_the_kernel() {
    let g = Gateways::new("fwmart", "gre", "");
    assert_eq!(received(&ping(&g.client, SERVER, 1)), 1);
    // No rp_filter at gw1: only the martian check keeps these off the
    // fast path, and gw1's kernel drops them, so none crosses the tunnel.
    gw1_without_rp_filter(&g);
    let crossed = || counter(&g.gw2, "rx_decapsulated");
    let start = crossed();
    rises(&g.gw1, "fwd_pass_martian", 3, || {
        for src in ["127.0.0.9", "0.0.0.0", "224.0.0.9"] {
            udp_from(&g, src);
        }
    });
    // Nor does one of gw1's own addresses, which the kernel refuses as a
    // source even without rp_filter.
    rises(&g.gw1, "fwd_pass_rpfilter", 1, || udp_from(&g, "10.31.1.2"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        crossed(),
        start,
        "a martian or local source crossed the tunnel"
    );

    // gw2: `all` off, but the tunnel interface's own rp_filter strict, as
    // the kernel applies it (the larger of the two): the fast path leaves
    // the source without a route back into the tunnel to the kernel.
    sh(
        &g.gw2,
        &[
            "sysctl -qw net.ipv4.conf.all.rp_filter=0",
            "sysctl -qw net.ipv4.conf.xt2.rp_filter=1",
        ],
    );
    gw2_refuses_a_spoofed_source(&g);
}

/// The fast path keeps no copy of rp_filter: it forwards only sources
/// whose route back leads to the interface they came in by, and leaves
/// the rest to the kernel, which forwards them without rp_filter and
/// refuses them once strict rp_filter is set, the fast path having been
/// switched on while rp_filter was off (a copy of the sysctls taken then
/// let the fast path forward them).
#[test]
fn rp_filter_set_while_the_fast_path_is_on_is_obeyed() {
    let g = Gateways::new("fwrpl", "gre", "");
    assert_eq!(received(&ping(&g.client, SERVER, 1)), 1);
    // The fast path switched on while rp_filter is off.
    gw1_without_rp_filter(&g);
    g.forward("off");
    g.forward("xdp");
    // The route back to 10.30.8.0/24 leaves by gw1's underlay.
    sh(&g.gw1, &["ip route add 10.30.8.0/24 via 10.31.1.1"]);
    let crossed = || counter(&g.gw2, "rx_decapsulated");
    let start = crossed();
    rises(&g.gw1, "fwd_pass_rpfilter", 1, || udp_from(&g, "10.30.8.8"));
    assert!(
        eventually(|| crossed() == start + 1),
        "without rp_filter gw1's kernel did not forward an asymmetric source"
    );
    sh(&g.gw1, &["sysctl -qw net.ipv4.conf.all.rp_filter=1"]);
    rises(&g.gw1, "fwd_pass_rpfilter", 1, || udp_from(&g, "10.30.8.8"));
    thread::sleep(Duration::from_millis(300));
    assert_eq!(
        crossed(),
        start + 1,
        "strict rp_filter set after switch-on did not stop an asymmetric source"
    );
    rises(&g.gw1, "tx_forwarded_xdp", 1, || udp_from(&g, CLIENT));
}

#[test]
fn switching_the_fast_path_off_and_on_loses_nothing() {
    let g = Gateways::new("fwflip", "gre", "");
    assert_eq!(received(&ping(&g.client, SERVER, 2)), 2);
    let _heavy = heavy_traffic();
    let count = 3000;
    let receiver = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('{SERVER}',5300))\ns.settimeout(3)\nseen=set()\ntry:\n while True:\n  d,_=s.recvfrom(64);seen.add(int.from_bytes(d,'big'))\nexcept socket.timeout: pass\nprint(len(seen))"
    );
    let sender = format!(
        "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nt=time.monotonic()\nfor i in range({count}):\n s.sendto(i.to_bytes(4,'big'),('{SERVER}',5300))\n t+=0.001\n d=t-time.monotonic()\n if d>0: time.sleep(d)\nprint({count})"
    );
    let srv = spawn_in(&g.server, &["/usr/bin/python3", "-c", &receiver]);
    thread::sleep(Duration::from_millis(500));
    let before = forwarded(&g);
    let client = spawn_in(&g.client, &["/usr/bin/python3", "-c", &sender]);
    for _ in 0..3 {
        thread::sleep(Duration::from_millis(400));
        g.forward("off");
        thread::sleep(Duration::from_millis(400));
        g.forward("xdp");
    }
    assert_eq!(stdout(client.wait_with_output()).trim(), count.to_string());
    let after = forwarded(&g);
    assert_eq!(
        stdout(srv.wait_with_output()).trim(),
        count.to_string(),
        "datagrams lost"
    );
    assert!(
        after[0] > before[0],
        "the fast path carried some: {before:?} -> {after:?}"
    );
    assert!(
        after[3] > before[3],
        "the fast path carried some: {before:?} -> {after:?}"
    );
}
