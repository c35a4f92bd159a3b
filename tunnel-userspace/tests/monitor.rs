//! `xtun monitor`: what the data plane drops and why, live, with the real
//! binary in the seed topology (unique namespaces, removed on drop). Tunnel
//! packets are crafted with scapy in ns1 and sent at ns2's tunnel. Needs
//! root.

mod common;

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tunnel_userspace::testbed::{Netns, SeedTopology};

use common::net::{exec_line, python, xtun_line, XTUN};

/// A background `xtun` in a namespace, killed (SIGKILL) on drop.
struct Running {
    child: Option<Child>,
}

impl Running {
    fn start(ns: &Netns, args: &[&str]) -> Self {
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, XTUN])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self { child: Some(child) }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for it to exit (it was given `-c N`), with a deadline;
    /// returns its standard output.
    fn finish(mut self, within: Duration) -> String {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > within {
                let _ = child.kill();
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn xtun_json(ns: &Netns, args: &[&str]) -> Value {
    let mut full = vec![XTUN, "-j"];
    full.extend_from_slice(args);
    serde_json::from_slice(&ns.exec(&full).unwrap().stdout).unwrap()
}

/// The settings entry: (log level, monitors word).
fn settings(ns: &Netns) -> (u64, String) {
    let doc = xtun_json(ns, &["map", "dump", "XTUN_SETTINGS"]);
    let entry = &doc["entries"][0];
    (
        entry["log_level"].as_u64().unwrap(),
        entry["monitors"].as_str().unwrap().to_string(),
    )
}

/// Waits until `n` monitors hold a slot.
fn wait_listening(ns: &Netns, n: usize) {
    let start = Instant::now();
    loop {
        let doc = xtun_json(ns, &["map", "dump", "XTUN_SETTINGS"]);
        let slots = doc["entries"][0]["monitor_slots"].as_array().unwrap().len();
        if slots == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{n} monitors never listened: {doc}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Sends scapy packets (`packets`: Python expressions) from ns1's underlay.
fn inject(topo: &SeedTopology, packets: &[&str]) {
    let mut script = String::from(
        "from scapy.all import *\n\
         inner = IP(src='10.10.100.10', dst='10.10.200.10')/ICMP(id=7)/Raw(b'monitor')\n",
    );
    for p in packets {
        script.push_str(&format!("send({p}, iface='v1', verbose=0)\n"));
    }
    python(&topo.ns1, &script);
}

const WRONG_KEY: &str = "IP(src='10.10.10.2', dst='10.10.20.2')/GRE(key_present=1, key=43)/inner";
const SPOOFED: &str = "IP(src='10.10.10.9', dst='10.10.20.2')/GRE(key_present=1, key=42)/inner";
const BAD_VERSION: &str =
    "IP(src='10.10.10.2', dst='10.10.20.2')/GRE(key_present=1, key=42, version=1)/inner";
const NO_TUNNEL: &str = "IP(src='10.10.10.2', dst='10.10.20.2', proto=4)/inner";

fn gre_topology(tag: &str) -> SeedTopology {
    let topo = SeedTopology::new(tag).unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "42"]).unwrap();
    topo
}

#[test]
fn each_fault_shows_its_reason_headers_and_nearest_tunnel_in_text_and_json() {
    let topo = gre_topology("mon");
    // Two monitors at once: each sees every event.
    let text = Running::start(&topo.ns2, &["monitor", "-c", "4"]);
    let json = Running::start(&topo.ns2, &["-j", "monitor", "-c", "4"]);
    wait_listening(&topo.ns2, 2);
    inject(&topo, &[WRONG_KEY, SPOOFED, BAD_VERSION, NO_TUNNEL]);
    let text = text.finish(Duration::from_secs(10));
    let json = json.finish(Duration::from_secs(10));

    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    // What each event's line says, among other things.
    let parts: [&[&str]; 4] = [
        &[
            " v2 rx rx_pass_no_tunnel 10.10.10.2 > 10.10.20.2 gre",
            "key 43",
            "inner 10.10.100.10 > 10.10.200.10 icmp",
            "looked up local 10.10.20.2 remote 10.10.10.2 gre key 43",
            "nearest tun2 (local 10.10.20.2 remote 10.10.10.2 gre key 42): key differs",
        ],
        &[
            "rx_pass_no_tunnel 10.10.10.9 > 10.10.20.2 gre",
            "looked up local 10.10.20.2 remote 10.10.10.9 gre key 42",
            "nearest tun2",
            "remote address differs",
        ],
        &[
            "rx_bad_gre_version 10.10.10.2 > 10.10.20.2 gre flags 0x2001",
            "version 1 key 42",
        ],
        &[
            "rx_pass_no_tunnel 10.10.10.2 > 10.10.20.2 ipip",
            "inner 10.10.100.10 > 10.10.200.10 icmp",
            "looked up local 10.10.20.2 remote 10.10.10.2 ipip no key",
            "nearest tun2",
            "mode differs",
        ],
    ];
    for (line, parts) in lines.iter().zip(parts) {
        for part in parts {
            assert!(line.contains(part), "{part:?} in {line}");
        }
    }

    let events: Vec<Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 4, "{json}");
    for e in &events {
        assert_eq!(e["ifname"], "v2", "{e}");
        assert_eq!(e["direction"], "rx", "{e}");
        assert_eq!(e["inner"]["src"], "10.10.100.10", "{e}");
        assert_eq!(e["inner"]["proto"], "icmp", "{e}");
    }
    let wrong_key = &events[0];
    assert_eq!(wrong_key["reason"], "rx_pass_no_tunnel");
    assert_eq!(wrong_key["outer"]["src"], "10.10.10.2");
    assert_eq!(wrong_key["gre"]["key"], 43);
    assert_eq!(wrong_key["gre"]["flags"], "0x2000");
    assert_eq!(wrong_key["lookup"]["key"], 43);
    assert_eq!(wrong_key["lookup"]["local"], "10.10.20.2");
    assert_eq!(wrong_key["nearest"]["tunnel"], "tun2");
    assert_eq!(wrong_key["nearest"]["key"], 42);
    assert_eq!(wrong_key["nearest"]["differs"], "key");
    let spoofed = &events[1];
    assert_eq!(spoofed["outer"]["src"], "10.10.10.9");
    assert_eq!(spoofed["lookup"]["remote"], "10.10.10.9");
    assert_eq!(spoofed["nearest"]["differs"], "remote");
    let bad_version = &events[2];
    assert_eq!(bad_version["reason"], "rx_bad_gre_version");
    assert_eq!(bad_version["gre"]["version"], 1);
    assert!(bad_version.get("lookup").is_none());
    let no_tunnel = &events[3];
    assert_eq!(no_tunnel["outer"]["proto"], "ipip");
    assert_eq!(no_tunnel["lookup"]["proto"], "ipip");
    assert_eq!(no_tunnel["nearest"]["differs"], "mode");

    // Both gave their slots back on exit; stats kept their counts.
    assert_eq!(settings(&topo.ns2).1, "0x0");
    let stats = xtun_json(&topo.ns2, &["stats"]);
    let monitors: Vec<&Value> = stats
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["role"] == "monitor")
        .collect();
    assert_eq!(monitors.len(), 2, "{stats}");
    for m in monitors {
        assert_eq!(m["counters"]["monitor_events"], 4, "{m}");
    }
}

#[test]
fn all_adds_decapsulated_and_encapsulated_packets_filtered_by_tunnel() {
    let topo = gre_topology("mona");
    let all = Running::start(
        &topo.ns2,
        &["-j", "monitor", "tunnel", "tun2", "--all", "-c", "2"],
    );
    let drops = Running::start(&topo.ns2, &["-j", "monitor", "-c", "1"]);
    wait_listening(&topo.ns2, 2);
    exec_line(&topo.ns1, "ping -c 1 -W 2 10.10.200.10");
    inject(&topo, &[WRONG_KEY]);
    let all = all.finish(Duration::from_secs(10));
    let drops = drops.finish(Duration::from_secs(10));
    let events: Vec<Value> = all
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{all}");
    assert_eq!(events[0]["reason"], "rx_decapsulated");
    assert_eq!(events[0]["tunnel"], "tun2");
    assert_eq!(events[0]["inner"]["src"], "10.10.100.10");
    assert_eq!(events[1]["reason"], "tx_encapsulated");
    assert_eq!(events[1]["direction"], "tx");
    assert_eq!(events[1]["outer"]["src"], "10.10.20.2");
    assert_eq!(events[1]["gre"]["key"], 42);
    assert_eq!(events[1]["inner"]["dst"], "10.10.100.10");
    // The monitor without --all saw the drop only.
    let drop: Value = serde_json::from_str(drops.lines().next().unwrap()).unwrap();
    assert_eq!(drop["reason"], "rx_pass_no_tunnel", "{drops}");
}

#[test]
fn pcap_output_decodes_in_tshark_from_xdp() {
    let topo = gre_topology("monp");
    xtun_line(&topo.ns2, "attach v2 --decap xdp");
    let dir = std::env::temp_dir().join(format!("xtun-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("drops.pcap");
    let path = file.to_str().unwrap();
    let monitor = Running::start(&topo.ns2, &["monitor", "-w", path, "-c", "2"]);
    wait_listening(&topo.ns2, 1);
    inject(&topo, &[WRONG_KEY, BAD_VERSION]);
    monitor.finish(Duration::from_secs(10));
    let out = Command::new("tshark")
        .args(["-r", path, "-T", "fields"])
        .args(["-e", "ip.src", "-e", "gre.key", "-e", "icmp.type"])
        .output()
        .unwrap();
    let fields = String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    let lines: Vec<&str> = fields.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "{fields} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Outer and inner source, the GRE key (43, in hex), ICMP echo request.
    assert_eq!(
        lines[0], "10.10.10.2,10.10.100.10\t0x0000002b\t8",
        "{fields}"
    );
    assert!(lines[1].starts_with("10.10.10.2"), "{fields}");
}

#[test]
fn a_sigkilled_monitor_or_log_leaves_the_data_plane_as_it_found_it() {
    let topo = gre_topology("monk");
    let ns2 = &topo.ns2;
    assert_eq!(settings(ns2), (0, "0x0".to_string()));
    let monitor = Running::start(ns2, &["monitor", "--all"]);
    let log = Running::start(ns2, &["log", "--level", "trace"]);
    wait_listening(ns2, 1);
    let start = Instant::now();
    while settings(ns2).0 != 5 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "log never set its level"
        );
        thread::sleep(Duration::from_millis(50));
    }
    inject(&topo, &[WRONG_KEY]);
    thread::sleep(Duration::from_millis(300));
    let events_of = |ns: &Netns| -> u64 {
        xtun_json(ns, &["map", "dump", "XTUN_MON_STATS"])["entries"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|e| e["per_cpu"].as_array().unwrap().clone())
            .map(|cpu| cpu["events"].as_u64().unwrap())
            .sum()
    };
    let before = events_of(ns2);
    assert!(before >= 1, "no event while listening");
    // SIGKILL through `kill`: `ip netns exec` execs xtun, so the pid is xtun's.
    for pid in [monitor.pid(), log.pid()] {
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    }
    drop(monitor);
    drop(log);
    // Still claimed until the lease (3 s) expires.
    assert_ne!(settings(ns2).1, "0x0");
    thread::sleep(Duration::from_millis(3500));
    let status = xtun_json(ns2, &["status"]);
    assert_eq!(status["monitors"], serde_json::json!([]), "{status}");
    assert_eq!(status["log_level"], "off", "{status}");
    // The first packets to look release the slot and put the level back:
    // no event is written, and the settings are as before.
    inject(&topo, &[WRONG_KEY, WRONG_KEY]);
    exec_line(&topo.ns1, "ping -c 2 -i 0.2 -W 2 10.10.200.10");
    thread::sleep(Duration::from_millis(300));
    assert_eq!(settings(ns2), (0, "0x0".to_string()));
    assert_eq!(events_of(ns2), before);
    inject(&topo, &[WRONG_KEY]);
    assert_eq!(events_of(ns2), before);
}
