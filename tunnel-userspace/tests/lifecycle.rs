//! A tunnel's life: add, change, delete, attach and detach, underlays that
//! come and go, concurrent commands, and what deleting a namespace frees.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::net::{
    assert_all_answered, attached_program_ids, bpf_object_exists, exec_line, heavy_traffic, ping,
    program_exists, spawn_in, status_of, stdout, succeeded, words, xtun, xtun_json, xtun_line,
    XTUN,
};
use tunnel_userspace::testbed::{Netns, SeedTopology};

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

    xtun_line(&topo.ns1, "tunnel del tun1");
    xtun_line(&topo.ns2, "tunnel del tun2");
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
    xtun_line(&topo.ns2, "detach v2");
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
fn an_xdp_underlay_joins_an_instance_that_had_only_tc() {
    let topo = SeedTopology::new("join").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    let before: serde_json::Value = xtun_json(&topo.ns1, &["status"]);
    assert_eq!(
        before["programs"].as_array().unwrap().len(),
        1,
        "only tc: {before}"
    );
    // A second underlay in ns1, attached with XDP: the XDP program is loaded
    // again, sharing the running instance's maps.
    exec_line(&topo.ns1, "ip link add v9 type veth peer name v9p");
    exec_line(&topo.ns1, "ip link set v9 up");
    let out = stdout(
        topo.ns1
            .exec(&[XTUN, "attach", "v9", "--decap", "xdp"])
            .unwrap(),
    );
    assert_eq!(
        out,
        "attached to v9: decapsulation in XDP native + tc ingress delivery\n"
    );
    let after: serde_json::Value = xtun_json(&topo.ns1, &["status"]);
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
    // The same maps, not new ones; only those no tc program of this
    // instance uses come with the XDP program: the forwarding fast path's,
    // and the IPv6 decapsulation index (xtun_tc6, loaded with the first
    // tunnel over IPv6, then shares it).
    let (before_ids, after_ids) = (shared(&before), shared(&after));
    let mut added: Vec<&str> = after["maps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| !before_ids.contains(&m["id"].as_u64().unwrap()))
        .filter_map(|m| m["name"].as_str())
        .filter(|name| name.starts_with("XTUN_"))
        .collect();
    added.sort();
    assert!(
        before_ids.iter().all(|id| after_ids.contains(id)),
        "the same maps, not new ones"
    );
    assert_eq!(
        added,
        [
            "XTUN_DECAP6",
            "XTUN_FWD_LANS",
            "XTUN_FWD_PORTS",
            "XTUN_FWD_STATE"
        ],
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

    // The first tunnel over IPv6 brings xtun_tc6, which takes the XDP
    // program's IPv6 decapsulation index rather than a second one.
    exec_line(&topo.ns1, "ip -6 addr add fd00:99::1/64 dev v9 nodad");
    topo.ns1
        .exec(&[
            XTUN,
            "-6",
            "tunnel",
            "add",
            "t6",
            "mode",
            "ip6ip6",
            "remote",
            "fd00:99::2",
            "local",
            "fd00:99::1",
            "dev",
            "v9",
        ])
        .unwrap();
    let with_v6: serde_json::Value = xtun_json(&topo.ns1, &["status"]);
    let decap6 = with_v6["maps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "XTUN_DECAP6")
        .count();
    assert_eq!(decap6, 1, "{with_v6}");
    let index = stdout(
        topo.ns1
            .exec(&[XTUN, "map", "dump", "XTUN_DECAP6"])
            .unwrap(),
    );
    assert!(index.contains("fd00:99::2"), "{index}");
    // `map list` lists the IPv6 maps with the rest.
    let listed = xtun_json(&topo.ns1, &["map", "list"]);
    let entries = |name: &str| {
        listed
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not in {listed}"))["entries"]
            .clone()
    };
    assert_eq!(entries("XTUN_TUNNELS6"), 1);
    assert_eq!(entries("XTUN_DECAP6"), 1);
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
    let steady = spawn_in(
        &topo.ns1,
        &["ping", "-c", "300", "-i", "0.005", "-q", "10.10.201.1"],
    );

    let show = |ns: &Netns, name: &str| stdout(ns.exec(&[XTUN, "tunnel", "show", name]).unwrap());
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    // A new okey that ns2 does not expect: its packets are no longer taken.
    xtun_line(&topo.ns1, "tunnel change tun1 okey 7");
    assert_eq!(
        show(&topo.ns1, "tun1"),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit ikey 42 okey 7\n"
    );
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains(" 0 received"));
    xtun_line(&topo.ns2, "tunnel change tun2 ikey 7");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    // TTL, and dropping the keys: the MTU follows the overhead.
    xtun_line(&topo.ns1, "tunnel change tun1 ttl 33 nokey");
    xtun_line(&topo.ns2, "tunnel change tun2 nokey");
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

    assert_all_answered(steady, 300);
}

#[test]
fn concurrent_adds_share_one_data_plane_and_lose_nothing() {
    let topo = SeedTopology::new("conc").unwrap();
    let children: Vec<_> = (1..=8)
        .map(|k| {
            let add = format!(
                "{XTUN} tunnel add tc{k} mode gre remote 10.10.20.2 local 10.10.10.2 key {k}"
            );
            spawn_in(&topo.ns1, &words(&add))
        })
        .collect();
    for child in children {
        succeeded(child.wait_with_output());
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
    let status: serde_json::Value = xtun_json(&topo.ns1, &["status"]);
    assert_eq!(status["programs"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(
        status["interfaces"].as_array().unwrap().len(),
        9,
        "{status}"
    );
}

#[test]
fn an_underlay_that_goes_and_comes_back_is_picked_up_again() {
    let topo = SeedTopology::new("flap").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    // The underlay disappears: its programs go with it, the tunnel stays.
    let ids_before = attached_program_ids(&topo.ns1);
    exec_line(&topo.ns1, "ip link del v1");
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
    exec_line(&topo.ns1, "ip route add 10.10.20.0/24 via 10.10.10.1");
    xtun_line(&topo.ns1, "tunnel change tun1");
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));
    let status: serde_json::Value = xtun_json(&topo.ns1, &["status"]);
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
    xtun_line(&topo.ns1, "attach v1 --decap xdp");
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    let status = stdout(topo.ns1.exec(&[XTUN, "-j", "status"]).unwrap());
    let doc: serde_json::Value = serde_json::from_str(&status).unwrap();
    let ids = |list: &str| -> Vec<u64> {
        let objects = doc[list].as_array().unwrap().iter();
        objects.map(|o| o["id"].as_u64().unwrap()).collect()
    };
    let (programs, maps) = (ids("programs"), ids("maps"));
    assert_eq!(programs.len(), 2, "XDP and tc: {status}");
    assert!(maps.len() >= 8, "{status}");
    let map_exists = |id: u64| bpf_object_exists("map", &id.to_string());
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

/// `attach --decap` switches an underlay between XDP and tc while a
/// continuous flow crosses it: not one packet is lost at any switch.
#[test]
fn switching_where_an_underlay_decapsulates_loses_nothing_under_a_flow() {
    let _heavy = heavy_traffic();
    let topo = SeedTopology::new("swgap").unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "3"]).unwrap();
    // 2,000 pings at 500 per second, every one of them crossing v2.
    let flood = spawn_in(
        &topo.ns1,
        &["ping", "-i", "0.002", "-c", "2000", "-q", "10.10.200.10"],
    );
    thread::sleep(Duration::from_millis(200));
    for decap in ["xdp", "tc", "xdp", "tc", "xdp", "tc"] {
        xtun(&topo.ns2, &["attach", "v2", "--decap", decap]);
        assert_eq!(status_of(&topo.ns2, "v2")["decap"], decap);
        thread::sleep(Duration::from_millis(300));
    }
    assert_all_answered(flood, 2000);
}

/// `detach` is refused, in one line and changing nothing, while a tunnel
/// still leaves by the device; once the tunnel is gone it goes through.
#[test]
fn detach_is_refused_while_a_tunnel_uses_the_device() {
    let topo = SeedTopology::new("inuse").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    xtun(&topo.ns2, &["attach", "v2"]);
    let before = attached_program_ids(&topo.ns2);
    let out = topo.ns2.try_exec(&[XTUN, "detach", "v2"]).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("v2") && err.contains("tun2"), "{err}");
    assert_eq!(attached_program_ids(&topo.ns2), before);
    assert!(ping(&topo.ns1, "10.10.200.10", 2).contains("2 received"));

    xtun(&topo.ns2, &["tunnel", "del", "tun2"]);
    xtun(&topo.ns2, &["detach", "v2"]);
    assert_eq!(attached_program_ids(&topo.ns2), Vec::<String>::new());
}
