//! Observability commands against known state in the seed topology: exact
//! text and JSON, and counters that match the traffic sent, to the packet.
//! Needs root.

mod common;

use std::{thread, time::Duration};

use serde_json::{json, Value};
use tunnel_common::maps::CLASSID_TUNNEL;
use tunnel_userspace::testbed::{Netns, SeedTopology};

use common::net::{exec_line, spawn_in, xtun_line, XTUN};

fn out(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec![XTUN];
    full.extend_from_slice(args);
    String::from_utf8(ns.exec(&full).unwrap().stdout).unwrap()
}

fn json_of(ns: &Netns, args: &[&str]) -> Value {
    serde_json::from_str(&out(ns, args)).unwrap()
}

fn ifindex(ns: &Netns, dev: &str) -> u64 {
    let links: Value =
        serde_json::from_slice(&ns.exec(&["ip", "-j", "link", "show", dev]).unwrap().stdout)
            .unwrap();
    links[0]["ifindex"].as_u64().unwrap()
}

fn err_of(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec![XTUN];
    full.extend_from_slice(args);
    let o = ns.try_exec(&full).unwrap();
    assert!(!o.status.success(), "{args:?} must fail");
    String::from_utf8(o.stderr).unwrap()
}

/// The walkthrough with key 42, then exactly 100 pings.
fn topology_after_100_pings(tag: &str) -> SeedTopology {
    let topo = SeedTopology::new(tag).unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "42"]).unwrap();
    let text = exec_line(&topo.ns1, "ping -c 100 -i 0.005 -q 10.10.200.10");
    assert!(text.contains("100 received"), "{text}");
    topo
}

#[test]
fn tunnel_show_text_json_and_exact_counters() {
    let topo = topology_after_100_pings("show");
    let ns1 = &topo.ns1;
    assert_eq!(
        out(ns1, &["tunnel", "show"]),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 42\n"
    );
    // 100 echo requests out and 100 replies in, 84 bytes each (IPv4 + ICMP).
    assert_eq!(
        out(ns1, &["-s", "tunnel", "show", "tun1"]),
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 42\n\
         RX: Packets    Bytes        Errors CsumErrs OutOfSeq Mcasts\n    \
         100        8400         0      0        0        0       \n\
         TX: Packets    Bytes        Errors DeadLoop NoRoute  NoBufs\n    \
         100        8400         0      0        0        0     \n"
    );
    // ip -j tunnel show's fields (no ttl or tos: inherit and 0 are not
    // printed; flags for GRE), then xtun's own.
    let expected = json!([{
        "ifname": "tun1",
        "mode": "gre/ip",
        "remote": "10.10.20.2",
        "local": "10.10.10.2",
        "key": 42,
        "flags": [],
        "ifindex": ifindex(ns1, "tun1"),
        "underlay": "v1",
        "mtu": 1472,
        "path_mtu": [],
        "rpfilter": false,
        "stats": {
            "rx": {"packets": 100, "bytes": 8400, "errors": 0, "csum_errors": 0, "out_of_sequence": 0, "multicast": 0},
            "tx": {"packets": 100, "bytes": 8400, "errors": 0, "dead_loop": 0, "no_route": 0, "no_buffers": 0},
        },
    }]);
    assert_eq!(json_of(ns1, &["-s", "-j", "tunnel", "show"]), expected);
    // -p changes the layout, not the document.
    let pretty = out(ns1, &["-s", "-j", "-p", "tunnel", "show", "tun1"]);
    assert!(pretty.lines().count() > 10);
    assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), expected);
    // Without -s there is no stats object.
    assert!(json_of(ns1, &["-j", "tunnel", "show"])[0]
        .get("stats")
        .is_none());
}

#[test]
fn stats_count_by_reason_per_interface() {
    let topo = topology_after_100_pings("stats");
    let text = out(&topo.ns1, &["stats"]);
    assert!(
        text.starts_with("tun1 (tunnel):\n    tx_encapsulated              100\nv1 (underlay):\n"),
        "{text}"
    );
    assert!(
        text.contains("\n    rx_decapsulated              100\n"),
        "{text}"
    );
    assert!(
        text.contains("\n    rx_delivered                 100\n"),
        "{text}"
    );
    let doc = json_of(&topo.ns1, &["-j", "stats"]);
    let rows = doc.as_array().unwrap();
    let row = |name: &str| rows.iter().find(|r| r["ifname"] == name).unwrap().clone();
    assert_eq!(row("tun1")["role"], "tunnel");
    assert_eq!(row("tun1")["counters"]["tx_encapsulated"], 100);
    assert_eq!(row("tun1")["counters"]["tx_no_route"], 0);
    assert_eq!(row("v1")["role"], "underlay");
    assert_eq!(row("v1")["counters"]["rx_decapsulated"], 100);
    assert_eq!(row("v1")["counters"]["rx_delivered"], 100);
    assert_eq!(row("v1")["counters"]["rx_pass_no_tunnel"], 0);
    assert_eq!(rows.last().unwrap()["role"], "other");

    // A GRE packet with the wrong key is passed, not decapsulated, and counted.
    xtun_line(
        &topo.ns2,
        "tunnel add tun9 mode gre remote 10.10.10.2 local 10.10.20.2 key 7",
    );
    exec_line(&topo.ns2, "ip link set tun9 up");
    exec_line(
        &topo.ns2,
        "ip addr add 10.10.209.1 peer 10.10.109.1 dev tun9",
    );
    let _ = topo
        .ns2
        .try_exec(&["ping", "-c", "3", "-i", "0.05", "-W", "0.2", "10.10.109.1"]);
    let rows = json_of(&topo.ns1, &["-j", "stats"]);
    let v1 = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ifname"] == "v1")
        .unwrap();
    assert_eq!(v1["counters"]["rx_pass_no_tunnel"], 3);
}

#[test]
fn map_list_and_dump_decode_every_entry() {
    let topo = topology_after_100_pings("maps");
    let ns1 = &topo.ns1;
    let (tun1, v1) = (ifindex(ns1, "tun1"), ifindex(ns1, "v1"));
    let port = ifindex(ns1, &format!("xtp{tun1}"));
    let list = out(ns1, &["map", "list"]);
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "TYPE", "KEY", "VALUE", "MAX", "ENTRIES", "ID"]
    );
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("{name}: {list}"))[..6]
            .to_vec()
    };
    // Name, type, key and value sizes, capacity, entries. v1 and tun1 have
    // small ifindexes: counted in the indexed array. The neighbour trie
    // (prefix length + tunnel + family + address), the router list and
    // the sequence numbers, one entry for tun1.
    for expected in [
        "XTUN_TUNNELS hash 4 52 65536 1",
        "XTUN_DECAP hash 16 16 65536 1",
        "XTUN_TUN_STATS percpu_array 4 96 65536 1",
        "XTUN_IF_COUNTER percpu_hash 4 400 65536 0",
        "XTUN_IF_INDEXED percpu_array 4 400 1024 2",
        "XTUN_COUNTERS percpu_array 4 8 49 49",
        "XTUN_SETTINGS array 4 16 1 1",
        "XTUN_NEIGH lpm_trie 28 4 2097152 0",
        "XTUN_PRL hash 8 4 4096 0",
        "XTUN_SEQ hash 4 16 65536 1",
    ] {
        let expected: Vec<&str> = expected.split(' ').collect();
        assert_eq!(row(expected[0]), expected);
    }
    let listed: Value = json_of(ns1, &["-j", "map", "list"]);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["name"] == "XTUN_TUNNELS" && m["entries"] == 1));

    assert_eq!(
        out(ns1, &["map", "dump", "XTUN_TUNNELS"]),
        format!("tun1 ({tun1}): mode gre local 10.10.10.2 remote 10.10.20.2 ikey 42 okey 42 ttl inherit tos 0x00 mtu 1472 underlay v1 ({v1}) port xtp{tun1} ({port}) flags ikey,okey,pmtudisc,eth-dev\n")
    );
    assert_eq!(
        out(ns1, &["map", "dump", "XTUN_DECAP", "--raw"]),
        format!(
            "local 10.10.10.2 remote 10.10.20.2 proto gre key 42 -> tun1 ({tun1})\n    \
             key: 0a 0a 0a 02 0a 0a 14 02 00 00 00 2a 2f 01 00 00\n    \
             value: {:02x} 00 00 00 43 02 00 00 00 00 00 00 {:02x} 00 00 00\n",
            tun1, port
        )
    );
    let stats = json_of(ns1, &["-j", "map", "dump", "XTUN_TUN_STATS"]);
    let per_cpu = stats["entries"][0]["per_cpu"].as_array().unwrap();
    let sum = |field: &str| {
        per_cpu
            .iter()
            .map(|c| c[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (sum("rx_packets"), sum("tx_packets"), sum("tx_bytes")),
        (100, 100, 8400)
    );
    assert_eq!(stats["entries"][0]["key"]["ifname"], "tun1");
    let decap = json_of(ns1, &["-j", "map", "dump", "XTUN_DECAP", "--raw"]);
    assert_eq!(decap["entries"][0]["proto"], "gre");
    assert_eq!(decap["entries"][0]["key"], 42);
    assert_eq!(
        decap["entries"][0]["raw"]["key"],
        "0a 0a 0a 02 0a 0a 14 02 00 00 00 2a 2f 01 00 00"
    );

    assert_eq!(
        err_of(ns1, &["map", "dump", "NOPE"]),
        "xtun: no map named \"NOPE\" (see `xtun map list`)\n"
    );
    assert_eq!(
        err_of(ns1, &["map", "dump", "AYA_LOGS"]),
        "xtun: AYA_LOGS is a ring buffer of log records: stream it with `xtun log`\n"
    );
}

#[test]
fn status_names_programs_hooks_and_build() {
    // v1 decapsulates in XDP (asked for explicitly); v2 in tc (auto on veth).
    let topo = SeedTopology::new("status").unwrap();
    xtun_line(&topo.ns1, "attach v1 --decap xdp");
    topo.add_tunnels(XTUN, "gre", &["key", "42"]).unwrap();
    let ns1 = &topo.ns1;
    let doc = json_of(ns1, &["-j", "status"]);
    let links: Value = serde_json::from_slice(
        &ns1.exec(&["ip", "-j", "-d", "link", "show", "v1"])
            .unwrap()
            .stdout,
    )
    .unwrap();
    let xdp_id = links[0]["xdp"]["prog"]["id"].as_u64().unwrap();
    let ifaces = doc["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 2, "{doc}");
    let v1 = ifaces.iter().find(|i| i["ifname"] == "v1").unwrap();
    assert_eq!(v1["role"], "underlay");
    assert_eq!(v1["xdp"], json!({"id": xdp_id, "mode": "native"}));
    assert_eq!(v1["decap"], "xdp");
    let tc_id = v1["tc_ingress"]["id"].as_u64().unwrap();
    assert_eq!(v1["tc_ingress"]["filter"], "xtun_underlay");
    assert_eq!(v1["tc_egress"], Value::Null);
    let tun1 = ifaces.iter().find(|i| i["ifname"] == "tun1").unwrap();
    assert_eq!(tun1["decap"], Value::Null);
    // Encapsulation runs on the tunnel's port, the other end of its pair.
    let port = ifindex(ns1, &format!("xtp{}", ifindex(ns1, "tun1")));
    assert_eq!(
        tun1["port"],
        json!({"ifname": format!("xtp{}", ifindex(ns1, "tun1")), "ifindex": port,
               "tc_ingress": {"id": tc_id, "filter": "xtun_tunnel", "classid": CLASSID_TUNNEL},
               "tc_egress": null})
    );
    assert_eq!(tun1["tc_egress"], Value::Null);
    let ns2 = json_of(&topo.ns2, &["-j", "status"]);
    let v2 = ns2["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ifname"] == "v2")
        .unwrap()
        .clone();
    assert_eq!(
        (v2["decap"].clone(), v2["xdp"].clone()),
        (json!("tc"), Value::Null)
    );
    assert_eq!(v2["tc_ingress"]["filter"], "xtun_underlay_auto");
    assert_eq!(doc["build_matches"], true);
    assert_eq!(doc["log_level"], "off");
    let names: Vec<&str> = doc["programs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2);
    assert!(names.contains(&"xtun_decap") && names.contains(&"xtun_tc"));

    let text = out(ns1, &["status"]);
    let first: Vec<&str> = text.lines().take(2).collect();
    assert!(
        first.contains(
            &format!(
                "v1 (underlay): decap xdp, xdp native id {xdp_id}, tc ingress id {tc_id} (xtun_underlay)"
            )
            .as_str()
        ),
        "{text}"
    );
    assert!(
        first.contains(
            &format!(
                "tun1 (tunnel): port xtp{}: tc ingress id {tc_id} (xtun_tunnel)",
                ifindex(ns1, "tun1")
            )
            .as_str()
        ),
        "{text}"
    );
    assert!(text.contains("(same as this xtun)"), "{text}");

    // Objects from another build: status says so, on stdout and as a warning.
    let settings_id = doc["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "XTUN_SETTINGS")
        .unwrap()["id"]
        .to_string();
    ns1.exec(&[
        "bpftool",
        "map",
        "update",
        "id",
        &settings_id,
        "key",
        "0",
        "0",
        "0",
        "0",
        "value",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "0",
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "7",
        "8",
    ])
    .unwrap();
    let o = ns1.exec(&[XTUN, "status"]).unwrap();
    let (text, warning) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        text.contains("build: 0807060504030201 (DIFFERS from this xtun)"),
        "{text}"
    );
    assert!(warning.starts_with("xtun: warning: the running data plane was loaded from another build (0807060504030201)"), "{warning}");
    assert_eq!(json_of(ns1, &["-j", "status"])["build_matches"], false);
}

#[test]
fn log_streams_events_at_a_run_time_level_and_restores_it() {
    let topo = topology_after_100_pings("log");
    let ns2 = &topo.ns2;
    let tun2 = ifindex(ns2, "tun2");
    let mut child = spawn_in(ns2, &[XTUN, "log", "--level", "trace"]);
    // Wait until the level is switched, then send exactly 3 pings.
    for _ in 0..50 {
        if out(ns2, &["-j", "status"]).contains("\"log_level\":\"trace\"") {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    exec_line(&topo.ns1, "ping -c 3 -i 0.1 -q 10.10.200.10");
    thread::sleep(Duration::from_millis(500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.child().id() as i32, libc::SIGINT) };
    let output = child.wait_with_output();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = String::from_utf8(output.stdout).unwrap();
    let decaps = log
        .lines()
        .filter(|l| *l == format!("TRACE decap from 10.10.10.2 to tunnel ifindex={tun2} len=84"))
        .count();
    let encaps = log
        .lines()
        .filter(|l| *l == format!("TRACE encap ifindex={tun2} to 10.10.10.2 len=84"))
        .count();
    assert_eq!((decaps, encaps), (3, 3), "{log}");
    // Back to the default (off): nothing is emitted per packet any more.
    assert_eq!(json_of(ns2, &["-j", "status"])["log_level"], "off");
}

#[test]
fn commands_fail_cleanly_where_xtun_is_not_attached() {
    let ns = Netns::new(format!(
        "{}-empty",
        tunnel_userspace::testbed::unique_prefix("obs")
    ))
    .unwrap();
    for args in [&["stats"][..], &["map", "list"], &["status"], &["log"]] {
        assert_eq!(
            err_of(&ns, args),
            "xtun: xtun is not attached in this network namespace\n",
            "{args:?}"
        );
    }
    // As ip tunnel show: a name whose mode is known (implied, as gre*)
    // must exist; any other name only selects, here nothing.
    assert_eq!(
        err_of(&ns, &["tunnel", "show", "grenope"]),
        "get tunnel \"grenope\" failed: No such device\n"
    );
    assert_eq!(out(&ns, &["tunnel", "show", "nope"]), "");
    assert_eq!(out(&ns, &["tunnel", "show"]), "");
    assert_eq!(out(&ns, &["-j", "tunnel", "show"]), "[]\n");
}

#[test]
fn map_dump_names_each_flag_of_a_tunnel_once() {
    let topo = SeedTopology::new("flags").unwrap();
    let ns1 = &topo.ns1;
    xtun_line(
        ns1,
        "tunnel add tunf mode gre remote 10.10.20.2 local 10.10.10.2 key 7 \
         csum seq nopmtudisc tos inherit rpfilter dev v1",
    );
    // Every flag a GRE tunnel can have, in the table's order, each once.
    let words = [
        "ikey",
        "okey",
        "icsum",
        "ocsum",
        "iseq",
        "oseq",
        "tos-inherit",
        "bound-dev",
        "eth-dev",
        "rpfilter",
    ];
    let text = out(ns1, &["map", "dump", "XTUN_TUNNELS"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    let (_, flags) = text.trim_end().rsplit_once(" flags ").unwrap();
    assert_eq!(flags, words.join(","), "{text}");
    let doc = json_of(ns1, &["-j", "map", "dump", "XTUN_TUNNELS"]);
    assert_eq!(doc["entries"][0]["flags"], json!(words), "{doc}");
    // The decapsulation entry carries the same flags.
    let decap = json_of(ns1, &["-j", "map", "dump", "XTUN_DECAP"]);
    assert_eq!(decap["entries"][0]["flags"], json!(words), "{decap}");
}

/// Runs xtun in `ns` under `setpriv` with `cap` out of every set.
fn without_cap(ns: &Netns, cap: &str, args: &[&str]) -> std::process::Output {
    let inh = format!("--inh-caps=-{cap}");
    let bounding = format!("--bounding-set=-{cap}");
    let mut full = vec!["setpriv", inh.as_str(), bounding.as_str(), XTUN];
    full.extend_from_slice(args);
    ns.try_exec(&full).unwrap()
}

#[test]
fn without_cap_sys_admin_read_only_commands_say_so_in_one_line() {
    let topo = SeedTopology::new("rocap").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    let ns1 = &topo.ns1;
    // Root less CAP_SYS_ADMIN still has CAP_BPF and CAP_NET_ADMIN, which do
    // not let the kernel open programs and maps by id.
    let read_only: [&[&str]; 6] = [
        &["stats"],
        &["stats", "--prometheus"],
        &["status"],
        &["map", "dump", "XTUN_TUNNELS"],
        &["-s", "tunnel", "show"],
        &["metrics", "--listen", "127.0.0.1:1"],
    ];
    for args in read_only {
        let o = without_cap(ns1, "sys_admin", args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stderr),
            "xtun: permission denied: this needs CAP_SYS_ADMIN (run xtun as root)\n",
            "{args:?}"
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    // CAP_SYS_ADMIN is all they need.
    for args in read_only.iter().take(5) {
        let o = without_cap(ns1, "net_admin", args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    // A change names only what is missing.
    let o = without_cap(ns1, "net_admin", &["tunnel", "del", "tun1"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "xtun: permission denied: this needs CAP_NET_ADMIN (run xtun as root)\n"
    );
    assert!(out(ns1, &["tunnel", "show"]).contains("tun1"));
}
