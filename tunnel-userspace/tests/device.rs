//! The tunnel interface as hosts, routing daemons and monitoring see it:
//! carrier and counters with no xtun process running, NOARP, firewall
//! matches, OSPF from FRR over it, every Ethernet underlay kind this kernel
//! has, GRE checksums left to offload by a Linux sender, and traffic that
//! follows the route when it moves to another uplink. Needs root; every
//! namespace (and process) the tests start is removed on drop.

mod common;

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::net::{
    eventually, exec_line, ping_with, received, spawn_in, status_of, stdout, try_xtun_line, Guard,
    XTUN,
};
use serde_json::Value;
use tunnel_userspace::testbed::{Netns, SeedTopology};

/// `ping -c COUNT -s SIZE` at 5 per second; how many replies came back.
fn ping(ns: &Netns, dst: &str, count: u32, size: u32) -> u32 {
    received(&ping_with(ns, dst, count, &["-s", &size.to_string()]))
}

/// `ip -s -j link show DEV`'s stats64 as (rx packets, rx bytes, tx packets,
/// tx bytes).
fn link_counters(ns: &Netns, dev: &str) -> (u64, u64, u64, u64) {
    let out = stdout(ns.exec(&["ip", "-s", "-j", "link", "show", dev]).unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    let n = |dir: &str, what: &str| s[dir][what].as_u64().expect("counter");
    (
        n("rx", "packets"),
        n("rx", "bytes"),
        n("tx", "packets"),
        n("tx", "bytes"),
    )
}

/// The tunnel's own counters from `xtun -j -s tunnel show NAME`.
fn tunnel_stats(ns: &Netns, name: &str) -> Value {
    let out = stdout(
        ns.exec(&[XTUN, "-j", "-s", "tunnel", "show", name])
            .unwrap(),
    );
    let v: Value = serde_json::from_str(&out).unwrap();
    let tunnel = if v.is_array() { v[0].clone() } else { v };
    tunnel["stats"].clone()
}

#[test]
fn the_interface_has_carrier_counts_packets_and_sends_no_arp() {
    let topo = SeedTopology::new("car").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    // Every xtun process has exited by now: what follows is the kernel's.
    let link = stdout(
        topo.ns1
            .exec(&["ip", "-d", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(link.contains("LOWER_UP"), "{link}");
    assert!(link.contains("NOARP"), "{link}");
    assert!(!link.contains("NO-CARRIER"), "{link}");
    assert!(
        link.contains("state UP") || link.contains("state UNKNOWN"),
        "{link}"
    );
    let routes = stdout(topo.ns1.exec(&["ip", "route"]).unwrap());
    assert!(routes.contains("dev tun1"), "{routes}");
    assert!(!routes.contains("linkdown"), "{routes}");

    // Firewall rules match the interface by name, as on any other.
    exec_line(&topo.ns1, "nft add table inet xtcount");
    for (chain, hook, matcher) in [("in", "input", "iifname"), ("out", "output", "oifname")] {
        let spec = format!("{{ type filter hook {hook} priority 0; }}");
        topo.ns1
            .exec(&["nft", "add", "chain", "inet", "xtcount", chain, &spec])
            .unwrap();
        topo.ns1
            .exec(&[
                "nft", "add", "rule", "inet", "xtcount", chain, matcher, "tun1", "counter",
            ])
            .unwrap();
    }

    let before = (
        link_counters(&topo.ns1, "tun1"),
        link_counters(&topo.ns2, "tun2"),
    );
    const PINGS: u64 = 10;
    const PAYLOAD: u64 = 100;
    assert_eq!(
        ping(&topo.ns1, "10.10.200.10", PINGS as u32, PAYLOAD as u32),
        10
    );
    let after = (
        link_counters(&topo.ns1, "tun1"),
        link_counters(&topo.ns2, "tun2"),
    );
    // Each ping is an inner IPv4 packet of 20 + 8 + PAYLOAD bytes; the
    // pair counts the 14-byte Ethernet header in front of it too. Exactly
    // the pings and their replies: no ARP or neighbour discovery left.
    let frame = 20 + 8 + PAYLOAD + 14;
    for ((rx0, rxb0, tx0, txb0), (rx1, rxb1, tx1, txb1)) in
        [(before.0, after.0), (before.1, after.1)]
    {
        assert_eq!((rx1 - rx0, tx1 - tx0), (PINGS, PINGS));
        assert_eq!((rxb1 - rxb0, txb1 - txb0), (PINGS * frame, PINGS * frame));
    }

    let rules = stdout(
        topo.ns1
            .exec(&["nft", "list", "table", "inet", "xtcount"])
            .unwrap(),
    );
    let counted: Vec<u64> = rules
        .split("packets ")
        .skip(1)
        .map(|rest| rest.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(counted, vec![PINGS, PINGS], "{rules}");

    // tcpdump on the interface shows the inner packets.
    let cap = spawn_in(
        &topo.ns1,
        &["tcpdump", "-c", "2", "-nli", "tun1", "icmp", "-w", "-"],
    );
    thread::sleep(Duration::from_millis(700));
    assert_eq!(ping(&topo.ns1, "10.10.200.10", 1, 56), 1);
    let mut cap = cap;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cap.child().try_wait().unwrap().is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let mut pcap = Vec::new();
    std::io::Read::read_to_end(cap.child().stdout.as_mut().unwrap(), &mut pcap).unwrap();
    let decoded = decode_pcap(&pcap, "ip.src,ip.dst,icmp.type");
    assert_eq!(
        decoded,
        vec![
            "10.10.100.10,10.10.200.10,8".to_string(),
            "10.10.200.10,10.10.100.10,0".to_string()
        ]
    );
}

/// Decodes a pcap with tshark, one line of `fields` per packet.
fn decode_pcap(pcap: &[u8], fields: &str) -> Vec<String> {
    let path = std::env::temp_dir().join(format!("xtun-device-{}.pcap", std::process::id()));
    std::fs::write(&path, pcap).unwrap();
    let mut args = vec![
        "-r".to_string(),
        path.display().to_string(),
        "-T".into(),
        "fields".into(),
    ];
    args.extend(["-E".into(), "separator=,".into()]);
    for f in fields.split(',') {
        args.extend(["-e".into(), f.to_string()]);
    }
    let out = Command::new("tshark").args(&args).output().unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out).lines().map(str::to_string).collect()
}

/// zebra and ospfd of one namespace, stopped on drop.
struct Frr {
    dir: std::path::PathBuf,
    ns: String,
}

impl Frr {
    fn start(ns: &Netns, tunnel: &str, router_id: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtun-frr-{}", ns.name));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // The tunnel and the loopback prefix only this side announces.
        let conf = format!(
            "hostname {router_id}\n\
             interface {tunnel}\n ip ospf area 0\n ip ospf network point-to-point\n \
             ip ospf hello-interval 1\n ip ospf dead-interval 4\n\
             interface lo\n ip ospf area 0\n\
             router ospf\n ospf router-id {router_id}\n"
        );
        std::fs::write(dir.join("frr.conf"), conf).unwrap();
        Command::new("chown")
            .args(["-R", "frr:frr", &dir.display().to_string()])
            .status()
            .unwrap();
        let frr = Self {
            dir,
            ns: ns.name.clone(),
        };
        for daemon in ["zebra", "ospfd"] {
            let d = frr.dir.display().to_string();
            ns.exec(&[
                &format!("/usr/lib/frr/{daemon}"),
                "-d",
                "-f",
                &format!("{d}/frr.conf"),
                "-i",
                &format!("{d}/{daemon}.pid"),
                "--vty_socket",
                &d,
                "-z",
                &format!("{d}/zserv.api"),
                "-u",
                "frr",
                "-g",
                "frr",
            ])
            .unwrap_or_else(|e| panic!("starting {daemon} (Debian's frr package): {e}"));
        }
        frr
    }

    fn vtysh(&self, command: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns, "vtysh", "--vty_socket"])
            .arg(&self.dir)
            .args(["-c", command])
            .output()
            .unwrap();
        stdout(out)
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        for daemon in ["ospfd", "zebra"] {
            if let Ok(pid) = std::fs::read_to_string(self.dir.join(format!("{daemon}.pid"))) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: signalling a daemon this test started.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        thread::sleep(Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn ospf_from_frr_runs_over_the_tunnel_and_routes_through_it() {
    let topo = SeedTopology::new("ospf").unwrap();
    // OSPF's packets have TTL 1: as with the kernel's GRE, the outer TTL
    // must not be inherited from them.
    topo.add_tunnels(XTUN, "gre", &["ttl", "64"]).unwrap();
    exec_line(&topo.ns1, "ip addr add 10.61.1.1/32 dev lo");
    exec_line(&topo.ns2, "ip addr add 10.62.2.1/32 dev lo");
    let frr1 = Frr::start(&topo.ns1, "tun1", "10.61.1.1");
    let frr2 = Frr::start(&topo.ns2, "tun2", "10.62.2.1");

    let deadline = Instant::now() + Duration::from_secs(40);
    let learned =
        |ns: &Netns, prefix: &str| stdout(ns.exec(&["ip", "route", "show", prefix]).unwrap());
    loop {
        let (r1, r2) = (
            learned(&topo.ns1, "10.62.2.1"),
            learned(&topo.ns2, "10.61.1.1"),
        );
        if r1.contains("dev tun1") && r2.contains("dev tun2") {
            assert!(r1.contains("proto ospf"), "{r1}");
            assert!(r2.contains("proto ospf"), "{r2}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no OSPF routes through the tunnel: ns1 {r1:?}, ns2 {r2:?}\n{}\n{}",
            frr1.vtysh("show ip ospf neighbor"),
            frr2.vtysh("show ip ospf interface")
        );
        thread::sleep(Duration::from_millis(500));
    }
    let neighbours = frr1.vtysh("show ip ospf neighbor");
    assert!(
        neighbours.contains("10.62.2.1") && neighbours.contains("Full"),
        "{neighbours}"
    );
    // Traffic to the learned prefix flows through the tunnel.
    let (_, _, tx0, _) = link_counters(&topo.ns2, "tun2");
    let out = stdout(
        topo.ns2
            .try_exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.61.1.1"])
            .unwrap(),
    );
    assert_eq!(received(&out), 3, "{out}");
    let (_, _, tx1, _) = link_counters(&topo.ns2, "tun2");
    assert!(tx1 - tx0 >= 3, "the pings did not leave by tun2");
}

/// Sends one GRE packet with the C bit from the router to ns1 (from
/// 10.10.20.2, so it belongs to tun1), carrying an ICMP echo request
/// 10.10.200.10 -> 10.10.100.10. `how`: "pending" leaves the checksum to
/// offload (a virtio-net header with NEEDS_CSUM over the GRE header, as a
/// Linux sender behind veth or virtio leaves it); "wrong" sends the same
/// bytes from the wire; "right" a correct checksum.
fn send_gre_csum(topo: &SeedTopology, how: &str) {
    let mac = stdout(
        topo.ns1
            .exec(&["cat", "/sys/class/net/v1/address"])
            .unwrap(),
    );
    let script = r#"
import socket, struct, sys
from scapy.all import Ether, IP, GRE, ICMP, raw
dev, mac, how = sys.argv[1:4]
inner = IP(src="10.10.200.10", dst="10.10.100.10") / ICMP(type=8, id=0x4242, seq=7) / (b"x" * 32)
pkt = Ether(dst=mac) / IP(src="10.10.20.2", dst="10.10.10.2", ttl=63, flags="DF") / GRE(chksum_present=1, proto=0x0800) / inner
frame = bytearray(raw(pkt))
gre = 14 + 20
hdr = b""
if how != "right":
    frame[gre + 4:gre + 6] = b"\0\0"
if how == "pending":
    # virtio_net_hdr: NEEDS_CSUM, no GSO, checksum from the GRE header, at 4.
    hdr = struct.pack("<BBHHHH", 1, 0, 0, 0, gre, 4)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
if hdr:
    s.setsockopt(263, 15, 1)  # SOL_PACKET, PACKET_VNET_HDR
s.bind((dev, 0))
s.send(hdr + bytes(frame))
"#;
    topo.router
        .exec(&["/usr/bin/python3", "-c", script, "r1", mac.trim(), how])
        .unwrap();
}

fn counter(stats: &Value, dir: &str, what: &str) -> u64 {
    stats[dir][what]
        .as_u64()
        .unwrap_or_else(|| panic!("{dir}.{what} in {stats}"))
}

fn gre_checksum_offload(decap: &str) {
    let topo = SeedTopology::new(&format!("cs{decap}")).unwrap();
    topo.add_tunnels(XTUN, "gre", &["csum"]).unwrap();
    topo.ns1
        .exec(&[XTUN, "attach", "v1", "--decap", decap])
        .unwrap();
    let start = tunnel_stats(&topo.ns1, "tun1");
    let rx = |s: &Value| counter(s, "rx", "packets");
    let bad = |s: &Value| counter(s, "rx", "csum_errors");

    // Pending offload: accepted, and ns1 answers through the tunnel.
    let (_, _, tun2_tx0, _) = link_counters(&topo.ns2, "tun2");
    let (tun2_rx0, ..) = link_counters(&topo.ns2, "tun2");
    send_gre_csum(&topo, "pending");
    assert!(
        eventually(|| rx(&tunnel_stats(&topo.ns1, "tun1")) == rx(&start) + 1),
        "a checksum pending offload was not accepted ({decap}): {}",
        tunnel_stats(&topo.ns1, "tun1")
    );
    assert!(eventually(
        || link_counters(&topo.ns2, "tun2").0 == tun2_rx0 + 1
    ));
    assert_eq!(link_counters(&topo.ns2, "tun2").2, tun2_tx0);

    // The same bytes from the wire: a wrong checksum, refused and counted.
    send_gre_csum(&topo, "wrong");
    assert!(
        eventually(|| bad(&tunnel_stats(&topo.ns1, "tun1")) == bad(&start) + 1),
        "a wrong checksum was not refused ({decap})"
    );
    // A right one from the wire: accepted.
    send_gre_csum(&topo, "right");
    assert!(eventually(
        || rx(&tunnel_stats(&topo.ns1, "tun1")) == rx(&start) + 2
    ));
    let end = tunnel_stats(&topo.ns1, "tun1");
    assert_eq!(bad(&end), bad(&start) + 1, "{end}");
    assert_eq!(link_counters(&topo.ns2, "tun2").0, tun2_rx0 + 2);
}

#[test]
fn gre_checksums_pending_offload_are_accepted_in_tc() {
    gre_checksum_offload("tc");
}

#[test]
fn gre_checksums_pending_offload_are_accepted_behind_xdp() {
    gre_checksum_offload("xdp");
}

#[test]
fn traffic_follows_the_route_to_another_uplink() {
    let topo = SeedTopology::new("fo").unwrap();
    // A second uplink from ns1 to the router.
    topo.link_ns1_to_router("v3", "r3", "10.10.30").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    assert_eq!(ping(&topo.ns1, "10.10.200.10", 2, 56), 2);

    let r3_before = link_counters(&topo.router, "r3").0;
    let started = Instant::now();
    let flood = spawn_in(
        &topo.ns1,
        &[
            "ping",
            "-q",
            "-c",
            "800",
            "-i",
            "0.005",
            "-W",
            "1",
            "10.10.200.10",
        ],
    );
    thread::sleep(Duration::from_millis(1500));
    let moved_after = started.elapsed();
    exec_line(
        &topo.ns1,
        "ip route replace 10.10.20.0/24 via 10.10.30.1 dev v3",
    );
    let r1_at_move = link_counters(&topo.router, "r1").0;
    let mut flood = flood;
    let status = flood.child().wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(flood.child().stdout.as_mut().unwrap(), &mut out).unwrap();
    let got = received(&out);
    eprintln!(
        "failover: {got} of 800 replies at 200/s; the route moved {moved_after:?} into the flood"
    );
    assert!(status.success() || got > 0, "{out}");
    // Every packet sent after the move leaves by v3: the router sees them
    // arrive on r3, and hardly anything more on r1.
    let r3_after = link_counters(&topo.router, "r3").0;
    let r1_after = link_counters(&topo.router, "r1").0;
    assert!(
        r3_after - r3_before >= 300,
        "only {} on r3",
        r3_after - r3_before
    );
    assert!(
        r1_after - r1_at_move <= 10,
        "{} more on r1",
        r1_after - r1_at_move
    );
    assert!(
        got >= 792,
        "lost {} of 800 across the route change",
        800 - got
    );
    // tunnel show names the underlay in use now.
    let shown = stdout(
        topo.ns1
            .exec(&[XTUN, "-j", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown[0]["underlay"], "v3", "{shown}");
}

/// Relays frames between a tap device in one namespace and one in
/// another, as a VM's hypervisor would: each tap has carrier while the
/// relay holds it. Killed on drop, which removes both taps.
fn tap_relay(ns_a: &Netns, tap_a: &str, ns_b: &Netns, tap_b: &str) -> Guard {
    let script = r#"
import ctypes, fcntl, os, select, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
def tap_in(ns, name):
    fd = os.open("/var/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")
    os.close(fd)
    t = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(t, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000))
    return t
a = tap_in(sys.argv[1], sys.argv[2])
b = tap_in(sys.argv[3], sys.argv[4])
print("ready", flush=True)
while True:
    ready, _, _ = select.select([a, b], [], [])
    for fd in ready:
        frame = os.read(fd, 65536)
        try:
            os.write(b if fd == a else a, frame)
        except OSError:
            pass  # the other tap is not up yet: a dropped frame, as on a wire
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script, &ns_a.name, tap_a, &ns_b.name, tap_b])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "ready");
    Guard::new(child)
}

/// ns1 reaches the router over an underlay of `kind` (its address
/// 10.10.K.2, the router's 10.10.K.1), and the walkthrough's tunnel runs
/// over it. Returns the device's name.
fn underlay_kind(kind: &str) {
    let topo = SeedTopology::new(&format!("k{}", &kind[..3])).unwrap();
    let (ns1, router) = (&topo.ns1, &topo.router);
    let _relay;
    let (dev, local, gateway) = match kind {
        "bridge" => {
            for cmd in [
                "ip link add br0 type bridge",
                "ip link set v1 master br0",
                "ip addr flush dev v1",
                "ip addr add 10.10.10.2/24 dev br0",
                "ip link set br0 up",
            ] {
                ns1.exec(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
            }
            ("br0", "10.10.10.2", "10.10.10.1")
        }
        "macvlan" => {
            for cmd in [
                "ip addr flush dev v1",
                "ip link add mv0 link v1 type macvlan mode bridge",
                "ip addr add 10.10.10.2/24 dev mv0",
                "ip link set mv0 up",
            ] {
                ns1.exec(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
            }
            ("mv0", "10.10.10.2", "10.10.10.1")
        }
        "vxlan" => {
            for (ns, cmds) in [
                (
                    ns1,
                    [
                        "ip link add vx0 type vxlan id 42 local 10.10.10.2 remote 10.10.10.1 dstport 4789 dev v1",
                        "ip addr add 10.10.40.2/24 dev vx0",
                        "ip link set vx0 up",
                    ],
                ),
                (
                    router,
                    [
                        "ip link add vx0 type vxlan id 42 local 10.10.10.1 remote 10.10.10.2 dstport 4789 dev r1",
                        "ip addr add 10.10.40.1/24 dev vx0",
                        "ip link set vx0 up",
                    ],
                ),
            ] {
                for cmd in cmds {
                    ns.exec(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
                }
            }
            ("vx0", "10.10.40.2", "10.10.40.1")
        }
        "tap" => {
            _relay = tap_relay(ns1, "tp0", router, "tpr");
            for (ns, cmd) in [
                (ns1, "ip addr add 10.10.50.2/24 dev tp0"),
                (ns1, "ip link set tp0 up"),
                (router, "ip addr add 10.10.50.1/24 dev tpr"),
                (router, "ip link set tpr up"),
            ] {
                ns.exec(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
            }
            ("tp0", "10.10.50.2", "10.10.50.1")
        }
        other => panic!("no underlay kind {other}"),
    };
    ns1.exec(&[
        "ip",
        "route",
        "replace",
        "10.10.20.0/24",
        "via",
        gateway,
        "dev",
        dev,
    ])
    .unwrap();
    let subnet = format!("{}.0/24", local.rsplit_once('.').unwrap().0);
    if subnet != "10.10.10.0/24" {
        topo.ns2
            .exec(&["ip", "route", "add", &subnet, "via", "10.10.20.1"])
            .unwrap();
    }
    for (ns, name, remote, local) in [
        (ns1, "tun1", "10.10.20.2", local),
        (&topo.ns2, "tun2", local, "10.10.20.2"),
    ] {
        let add = format!("tunnel add {name} mode gre remote {remote} local {local}");
        let mut args = vec![XTUN];
        args.extend(add.split(' '));
        ns.exec(&args).unwrap();
    }
    SeedTopology::bring_up(ns1, "tun1", "10.10.100.10", "10.10.200.10").unwrap();
    SeedTopology::bring_up(&topo.ns2, "tun2", "10.10.200.10", "10.10.100.10").unwrap();
    let shown = stdout(ns1.exec(&[XTUN, "-j", "tunnel", "show", "tun1"]).unwrap());
    assert!(
        shown.contains(&format!("\"{dev}\"")),
        "underlay {dev}: {shown}"
    );
    assert_eq!(ping(ns1, "10.10.200.10", 3, 56), 3, "over {kind}");
    // `tunnel add` attached with `auto`: on anything but a veth that is XDP,
    // natively where the driver has XDP (tap) and generic XDP otherwise.
    let attached = status_of(ns1, dev);
    assert_eq!(attached["decap"], "xdp", "{kind}: {attached}");
    let mode = if kind == "tap" { "native" } else { "generic" };
    assert_eq!(attached["xdp"]["mode"], mode, "{kind}: {attached}");
    // And the decapsulating side of it counted them.
    let (rx, _, tx, _) = link_counters(ns1, "tun1");
    assert!(rx >= 3 && tx >= 3, "{kind}: rx {rx} tx {tx}");
}

#[test]
fn a_bridge_carries_the_tunnel() {
    underlay_kind("bridge");
}

#[test]
fn a_macvlan_carries_the_tunnel() {
    underlay_kind("macvlan");
}

#[test]
fn a_vxlan_overlay_carries_the_tunnel() {
    underlay_kind("vxlan");
}

#[test]
fn a_tap_carries_the_tunnel() {
    underlay_kind("tap");
}

#[test]
fn a_tun_device_underlay_is_refused_with_its_kind() {
    let topo = SeedTopology::new("l3").unwrap();
    for cmd in [
        "ip tuntap add dev l3t mode tun",
        "ip link set l3t up",
        "ip addr add 10.10.60.2/24 dev l3t",
    ] {
        topo.ns1.exec(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    let out = try_xtun_line(
        &topo.ns1,
        "tunnel add tz mode gre remote 10.10.60.9 local 10.10.10.2 dev l3t",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("l3t") && err.contains("tun device") && err.contains("Ethernet"),
        "{err}"
    );
    assert!(!topo
        .ns1
        .try_exec(&["ip", "link", "show", "tz"])
        .unwrap()
        .status
        .success());
    // Nothing else was left either: no pair under a provisional name.
    let links = stdout(topo.ns1.exec(&["ip", "-o", "link"]).unwrap());
    assert!(
        !links.contains("xtnew") && !links.contains("xtp"),
        "{links}"
    );
}
