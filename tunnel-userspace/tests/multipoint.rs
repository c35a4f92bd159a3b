//! One interface, many remotes: multipoint GRE with neighbours, ISATAP
//! with its router list, and `local any` routed per packet (and a route back
//! into the tunnel dropped as a dead loop).

mod common;

use common::net::{add_side, exec_line, ping, ping_with, stdout, xtun_line, Capture, XTUN};
use serde_json::Value;
use tunnel_userspace::testbed::{Lan, SeedTopology};

/// Multipoint GRE: a hub with one `remote any` tunnel reaches three sites,
/// each on a point-to-point tunnel with `local any`.
#[test]
fn multipoint_gre_reaches_three_sites_by_longest_prefix() {
    let lan = Lan::new("mp", 4, "10.77.0").unwrap();
    let hub = &lan.hosts[0];
    xtun_line(
        hub,
        "tunnel add mgre0 mode gre remote any local 10.77.0.1 key 7 dev eth0",
    );
    exec_line(hub, "ip link set mgre0 up");
    exec_line(hub, "ip addr add 10.200.0.1/32 dev mgre0");
    exec_line(hub, "ip route add 10.0.0.0/8 dev mgre0");
    let mut batch = String::new();
    for site in 1..=3 {
        let host = &lan.hosts[site];
        xtun_line(host, "tunnel add gre1 mode gre remote 10.77.0.1 key 7");
        exec_line(host, "ip link set gre1 up");
        let inner = format!("10.{}.0.1/32", 200 + site);
        host.exec(&["ip", "addr", "add", &inner, "dev", "gre1"])
            .unwrap();
        exec_line(host, "ip route add 10.200.0.0/16 dev gre1");
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
    xtun_line(hub, "neigh del 10.250.0.0/16 dev mgre0");
    // A longer prefix inside site 1's range points at site 3.
    batch.push_str("neigh add 10.201.9.0/24 lladdr 10.77.0.4 dev mgre0\n");
    let file = std::env::temp_dir().join(format!("{}-neigh.batch", hub.name));
    std::fs::write(&file, &batch).unwrap();
    hub.exec(&[XTUN, "-batch", file.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&file);
    exec_line(&lan.hosts[3], "ip addr add 10.201.9.1/32 dev gre1");

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
    let lines = capture.decode(16, &["ip.src", "ip.dst", "gre.key"]);
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
    xtun_line(hub, "neigh del 10.202.0.0/16 dev mgre0");
    assert!(ping(hub, "10.202.0.1", 1).contains(" 0 received"));
    // Deleting the tunnel takes its neighbours along (another tunnel keeps
    // the data plane, and its maps, alive to look).
    xtun_line(
        hub,
        "tunnel add keep0 mode ipip remote 10.77.0.2 local 10.77.0.1",
    );
    xtun_line(hub, "tunnel del mgre0");
    let left = stdout(
        hub.exec(&[XTUN, "-j", "map", "dump", "XTUN_NEIGH"])
            .unwrap(),
    );
    let doc: Value = serde_json::from_str(&left).unwrap();
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
        exec_line(host, "ip link set is0 up");
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
    exec_line(router, "sysctl -qw net.ipv6.conf.all.forwarding=1");
    exec_line(router, "ip -6 addr add fd00:99::1/128 dev lo");
    let host = &lan.hosts[0];
    xtun_line(host, "tunnel prl prl-default 10.78.0.3 dev is0");
    exec_line(host, "ip -6 route add fd00:99::/64 dev is0");

    let capture = Capture::start(&lan.switch, "br0", "ip proto 41");
    let ping6 = |dst: &str| ping_with(host, dst, 2, &["-6"]);
    assert!(ping6("fd00:78::5efe:10.78.0.2").contains("2 received"));
    assert!(ping6("fe80::5efe:10.78.0.2%is0").contains("2 received"));
    assert!(
        ping6("fd00:99::1").contains("2 received"),
        "via the PRL router"
    );
    let lines = capture.decode(12, &["ip.src", "ip.dst", "ipv6.dst"]);
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
    xtun_line(host, "tunnel prl prl-delete 10.78.0.3 dev is0");
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
        exec_line(ns, "sysctl -qw net.ipv4.conf.all.forwarding=1");
    }
    xtun_line(&topo.ns1, "tunnel add tun1 mode gre remote 10.10.20.2");
    SeedTopology::bring_up(&topo.ns1, "tun1", "10.10.100.10", "10.10.200.10").unwrap();
    add_side(&topo.ns2, "tun2", "10.10.10.2", "10.10.20.2", &[]);
    let capture = Capture::start(&topo.router, "r1", "ip proto 47");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let lines = capture.decode(4, &["ip.src"]);
    assert!(
        lines.iter().any(|l| l.starts_with("10.10.10.2,")),
        "the route's source, looked up per packet: {lines:#?}"
    );

    // The remote now routed into tun1 itself.
    exec_line(&topo.ns1, "ip route add 10.10.20.2/32 dev tun1");
    assert!(ping(&topo.ns1, "10.10.200.10", 3).contains(" 0 received"));
    let shown = stdout(
        topo.ns1
            .exec(&[XTUN, "-j", "-s", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let doc: Value = serde_json::from_str(&shown).unwrap();
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
    exec_line(&topo.ns1, "ip route del 10.10.20.2/32 dev tun1");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
}
