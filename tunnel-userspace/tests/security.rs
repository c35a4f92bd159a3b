//! What xtun lets through and what it refuses: inner sources under
//! `rpfilter` (IPv4 and IPv6), callers without the capabilities, and the
//! permissions of the files it creates.

mod common;

use common::net::{
    address_tunnels_ipv6, counter, exec_line, ping, ping_with, scapy, settles_at, snmp, stdout,
    xtun, xtun_json, XTUN,
};
use tunnel_userspace::testbed::SeedTopology;

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
/// `rpfilter`: inner IPv4 sources must be ones the tunnel's routes lead
/// back to, as rp_filter decides (the kernel counts its drops as
/// IPReversePathFilter).
#[test]
fn rpfilter_refuses_inner_sources_the_tunnel_does_not_route() {
    let topo = SeedTopology::new("rpf").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    // Only the tunnel's own setting counts here.
    exec_line(&topo.ns2, "sysctl -qw net.ipv4.conf.all.rp_filter=0");
    let rp_drops = || snmp(&topo.ns2, "TcpExt:", "IPReversePathFilter");
    // Echo requests that reached ns2's ICMP: delivered.
    let echoes = || snmp(&topo.ns2, "Icmp:", "InEchos");
    let spoof = r#"
inner = IP(src="10.99.0.1", dst="10.10.200.10")/ICMP(type=8, id=7, seq=1)
send(IP(src="10.10.10.2", dst="10.10.20.2")/GRE(proto=0x0800)/inner, iface="v1", verbose=0)
"#;
    let (drops, delivered) = (rp_drops(), echoes());
    scapy(&topo.ns1, spoof);
    assert_eq!(
        settles_at(delivered + 1, echoes),
        delivered + 1,
        "without rpfilter the spoofed packet goes through"
    );
    assert_eq!(
        rp_drops(),
        drops,
        "without rpfilter the source is not checked"
    );

    xtun(&topo.ns2, &["tunnel", "change", "tun2", "rpfilter"]);
    let shown = xtun(&topo.ns2, &["tunnel", "show", "tun2"]);
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
    scapy(&topo.ns1, spoof);
    assert_eq!(
        settles_at(drops + 1, rp_drops),
        drops + 1,
        "the spoofed source is refused"
    );
    assert_eq!(echoes(), delivered + 1, "and not delivered");
    // The tunnel's own peer still gets through.
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    assert_eq!(rp_drops(), drops + 1);
    assert_eq!(echoes(), delivered + 3);
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

/// `rpfilter` with IPv6 inside GRE: the data plane checks the route back
/// to the inner source and drops (and counts) spoofed ones.
#[test]
fn rpfilter_refuses_spoofed_inner_ipv6_sources() {
    let topo = SeedTopology::new("rpf6").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    address_tunnels_ipv6(&topo.ns1, &topo.ns2);
    xtun(&topo.ns2, &["tunnel", "change", "tun2", "rpfilter"]);
    let echoes = || snmp(&topo.ns2, "snmp6", "Icmp6InEchos");
    let spoof = r#"
inner = IPv6(src="fd00:99::1", dst="fd00:200::10")/ICMPv6EchoRequest(id=5, seq=1)
send(IP(src="10.10.10.2", dst="10.10.20.2")/GRE(proto=0x86dd)/inner, iface="v1", verbose=0)
"#;
    let delivered = echoes();
    for _ in 0..3 {
        scapy(&topo.ns1, spoof);
    }
    let rpfilter = || counter(&topo.ns2, "rx_rpfilter");
    assert_eq!(settles_at(3, rpfilter), 3);
    assert_eq!(echoes(), delivered, "refused, not delivered");
    // The tunnel's own peer passes, with IPv6 and IPv4 alike.
    let out = ping_with(&topo.ns1, "fd00:200::10", 2, &["-6"]);
    assert!(out.contains("2 received"), "{out}");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let doc = xtun_json(&topo.ns2, &["-s", "tunnel", "show", "tun2"]);
    assert_eq!(doc[0]["stats"]["rx"]["errors"], 3, "{doc}");
    // Without the option, the same packets go through.
    xtun(&topo.ns2, &["tunnel", "change", "tun2", "norpfilter"]);
    let delivered = echoes();
    scapy(&topo.ns1, spoof);
    assert_eq!(
        settles_at(delivered + 1, echoes),
        delivered + 1,
        "without rpfilter the spoofed packet goes through"
    );
    assert_eq!(rpfilter(), 3);
}
