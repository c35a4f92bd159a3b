//! GRE checksums and sequence numbers end to end: on the wire, under TCP,
//! drawn by several CPUs at once, and hostile input dropped and counted.

mod common;

use common::net::{
    assert_shown_with_mtu, counter, eventually, exec_line, ping, scapy, settles_at, spawn_in,
    stdout, transfer_16mib, xtun_json, Capture, XTUN,
};
use serde_json::Value;
use tunnel_userspace::testbed::{Netns, SeedTopology};

/// The receive counters of `xtun -j -s tunnel show NAME`.
fn rx_stats(ns: &Netns, name: &str) -> Value {
    xtun_json(ns, &["-s", "tunnel", "show", name])[0]["stats"]["rx"].clone()
}

/// The router's capture of GRE, decoded with tshark's GRE fields.
const GRE_FIELDS: &[&str] = &[
    "ip.src",
    "gre.flags.checksum",
    "gre.flags.key",
    "gre.flags.sequence_number",
    "gre.checksum.status",
    "gre.key",
    "gre.sequence_number",
    "icmp.type",
];

#[test]
fn gre_checksums_and_sequence_numbers_reach_the_wire_and_carry_tcp() {
    let topo = SeedTopology::new("csq").unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "5", "csum", "seq"])
        .unwrap();
    // 24 bytes of GRE (4 + key + csum + seq) and 20 of IPv4.
    assert_shown_with_mtu(
        &topo.ns1,
        "tun1",
        "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 5\n  Drop packets out of sequence.\n  Checksum in received packet is required.\n  Sequence packets on output.\n  Checksum output packets.\n",
        1464,
    );
    let capture = Capture::start(&topo.router, "r1", "ip proto 47");
    assert!(ping(&topo.ns1, "10.10.200.10", 5).contains("5 received"));
    let lines = capture.decode(10, GRE_FIELDS);
    assert_eq!(lines.len(), 10, "{lines:#?}");
    let mut seqs: Vec<(String, u32)> = Vec::new();
    for line in &lines {
        let f: Vec<&str> = line.split(';').collect();
        assert_eq!(&f[1..4], &["1", "1", "1"], "C, K and S bits: {line}");
        assert_eq!(f[4], "1", "tshark verified the GRE checksum: {line}");
        assert_eq!(f[5], "0x00000005", "{line}");
        let src = f[0].split(',').next().unwrap().to_string();
        seqs.push((src, f[6].parse().unwrap()));
    }
    // Each direction numbers its packets 0, 1, 2, ... in order.
    for side in ["10.10.10.2", "10.10.20.2"] {
        let mine: Vec<u32> = seqs
            .iter()
            .filter(|(s, _)| s == side)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(mine, vec![0, 1, 2, 3, 4], "{side}");
    }
    // TCP (checksums left to offload, segmentation off) arrives intact.
    transfer_16mib(&topo);
    let rx = rx_stats(&topo.ns2, "tun2");
    // No checksum error, and nothing out of sequence: the sender numbers
    // on one CPU in the order it sends, as the kernel's tunnel does under
    // its transmit lock, so a receiver with `iseq` drops nothing.
    assert_eq!(rx["csum_errors"].as_u64(), Some(0), "{rx}");
    assert_eq!(rx["out_of_sequence"].as_u64(), Some(0), "{rx}");
    assert_eq!(rx["errors"].as_u64(), Some(0), "{rx}");
    assert!(rx["packets"].as_u64().unwrap() > 10_000, "{rx}");
    // One packet per GRE header: the tunnel takes no segmentation offload.
    let details = stdout(
        topo.ns1
            .exec(&["ip", "-d", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(details.contains("gso_max_segs 1 "), "{details}");
}

#[test]
fn out_of_sequence_and_bad_checksum_input_is_dropped_and_counted() {
    let topo = SeedTopology::new("oos").unwrap();
    topo.add_tunnels(XTUN, "gre", &["csum", "seq"]).unwrap();
    // Packets crafted by scapy in ns1's underlay, bypassing its tunnel.
    let script = r#"
inner = IP(src="10.10.100.10", dst="10.10.200.10")/ICMP(type=8, id=9, seq=1)/Raw(b"x"*16)
def send_gre(seq, bad_csum=False):
    g = GRE(chksum_present=1, seqnum_present=1, seqence_number=seq, proto=0x0800)
    pkt = IP(src="10.10.10.2", dst="10.10.20.2")/g/inner
    pkt = IP(raw(pkt))
    if bad_csum:
        pkt[GRE].chksum ^= 0x1111
    send(pkt, iface="v1", verbose=0)
send_gre(1000)
send_gre(1001)
send_gre(999)
send_gre(1000)
send_gre(1002, bad_csum=True)
"#;
    scapy(&topo.ns1, script);
    let handled = || {
        let rx = rx_stats(&topo.ns2, "tun2");
        rx["packets"].as_u64().unwrap() + rx["errors"].as_u64().unwrap()
    };
    assert_eq!(settles_at(5, handled), 5);
    let rx = rx_stats(&topo.ns2, "tun2");
    assert_eq!(rx["packets"].as_u64(), Some(2), "{rx}");
    assert_eq!(rx["out_of_sequence"].as_u64(), Some(2), "{rx}");
    assert_eq!(rx["csum_errors"].as_u64(), Some(1), "{rx}");
    assert_eq!(rx["errors"].as_u64(), Some(3), "{rx}");
    let counters = stdout(topo.ns2.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(counters.contains("\"rx_out_of_sequence\":2"), "{counters}");
    assert!(counters.contains("\"rx_bad_gre_checksum\":1"), "{counters}");
}

/// Two CPUs send through one `oseq` tunnel at once: every number is drawn
/// once, none is skipped, and they leave in the order drawn (the port's
/// receive, where the data plane numbers them, is steered to one CPU; with
/// `noseq` it is not any more).
#[test]
fn sequence_numbers_drawn_by_two_cpus_at_once_are_unique_and_dense() {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert!(cpus >= 2, "needs two CPUs, this machine has {cpus}");
    let topo = SeedTopology::new("seq2").unwrap();
    topo.add_tunnels(XTUN, "gre", &["oseq"]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"));
    let capture = Capture::start(&topo.router, "r1", "ip proto 47 and src 10.10.10.2");
    // Each pinned to its own CPU, so both encapsulate at the same time.
    let senders: Vec<_> = ["0", "1"]
        .iter()
        .map(|cpu| {
            spawn_in(
                &topo.ns1,
                &[
                    "taskset",
                    "-c",
                    cpu,
                    "ping",
                    "-q",
                    "-c",
                    "400",
                    "-i",
                    "0.002",
                    "-W",
                    "1",
                    "10.10.200.10",
                ],
            )
        })
        .collect();
    for sender in senders {
        let out = stdout(sender.wait_with_output());
        assert!(out.contains("400 packets transmitted"), "{out}");
    }
    let captured: Vec<u32> = capture
        .decode(800, &["gre.sequence_number"])
        .iter()
        .map(|n| n.parse().unwrap())
        .collect();
    let mut numbers = captured.clone();
    numbers.sort_unstable();
    assert_eq!(captured, numbers, "the numbers left in the order drawn");
    // The ping before the capture drew 0; anything else the host sent
    // through the tunnel meanwhile draws from the same counter.
    assert!(numbers.len() >= 800, "{} captured", numbers.len());
    let first = numbers[0];
    assert_eq!(first, 1);
    assert_eq!(
        numbers,
        (first..first + numbers.len() as u32).collect::<Vec<u32>>()
    );
    // The steering itself: one CPU while numbered, none after `noseq`.
    let steering = || {
        let port_mask =
            "cat /sys/class/net/xtp$(cat /sys/class/net/tun1/ifindex)/queues/rx-0/rps_cpus";
        stdout(topo.ns1.exec(&["sh", "-c", port_mask]).unwrap())
    };
    let mask = u64::from_str_radix(steering().trim().replace(',', "").as_str(), 16).unwrap();
    assert_eq!(mask.count_ones(), 1, "{mask:x}");
    exec_line(&topo.ns1, &format!("{XTUN} tunnel change tun1 noseq"));
    let mask = u64::from_str_radix(steering().trim().replace(',', "").as_str(), 16).unwrap();
    assert_eq!(mask, 0);
}

/// One GRE header per packet: a GSO packet that reaches a `seq` tunnel
/// (tun1's `gso_max_segs 1` raised again, as forwarded GRO traffic would
/// bring one) cannot be sent as it is, so it is dropped and counted.
#[test]
fn gso_packets_on_a_seq_tunnel_are_dropped_and_counted() {
    let topo = SeedTopology::new("gso").unwrap();
    topo.add_tunnels(XTUN, "gre", &["seq"]).unwrap();
    exec_line(&topo.ns1, "ip link set tun1 gso_max_segs 65535");
    let _server = spawn_in(
        &topo.ns2,
        &[
            "python3",
            "-c",
            "import socket, time\ns = socket.socket()\ns.bind(('10.10.200.10', 5900))\ns.listen()\nc, _ = s.accept()\ntime.sleep(20)",
        ],
    );
    let client = r#"
import socket, time
for _ in range(50):
    try:
        s = socket.create_connection(("10.10.200.10", 5900), timeout=2)
        break
    except OSError:
        time.sleep(0.1)
s.settimeout(3)
try:
    s.sendall(b"x" * (4 << 20))
except OSError:
    pass
"#;
    topo.ns1.try_exec(&["python3", "-c", client]).unwrap();
    assert!(
        eventually(|| counter(&topo.ns1, "tx_gso_unsupported") > 0),
        "{}",
        stdout(topo.ns1.exec(&[XTUN, "stats"]).unwrap())
    );
    assert!(counter(&topo.ns1, "tx_encapsulated") > 0);
}
