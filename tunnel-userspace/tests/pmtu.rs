//! Paths with a smaller MTU than the underlay's: ns1 - rt1 - rt2 - ns2 with
//! the routers' link at 1400 bytes. The kernel's tunnels learn the path MTU
//! from ICMP "fragmentation needed" and tell inner senders; so must xtun,
//! or TCP stalls. Needs root; namespaces are removed on drop.

mod common;

use common::net::{self as net, stdout, transfer, XTUN};
use serde_json::Value;
use tunnel_userspace::testbed::{NarrowPath, Netns, SeedTopology};

/// The data plane's counter `name` for interface `dev`, from `xtun -j stats`.
fn stat(ns: &Netns, dev: &str, name: &str) -> u64 {
    let out = net::xtun_line(ns, "-j stats");
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .and_then(|rows| rows.iter().find(|r| r["ifname"] == dev))
        .and_then(|r| r["counters"][name].as_u64())
        .unwrap_or(0)
}

/// `ping -M do -s SIZE` to `dst` through the tunnel, three times: the
/// first learns the path MTU (the router's ICMP to the outer source), the
/// next is answered with the tunnel's MTU on that path.
fn frag_needed_answer_to(ns: &Netns, dst: &str, size: u32) -> String {
    let family = if dst.contains(':') { "-6" } else { "-4" };
    let out = ns
        .try_exec(&[
            "ping",
            family,
            "-M",
            "do",
            "-s",
            &size.to_string(),
            "-c",
            "3",
            "-i",
            "0.3",
            "-W",
            "1",
            dst,
        ])
        .unwrap();
    format!(
        "{}{}",
        stdout(out.clone()),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn frag_needed_answer(ns: &Netns, size: u32) -> String {
    frag_needed_answer_to(ns, "10.10.200.10", size)
}

fn narrow_path(tag: &str, mode: &str, extra: &[&str], expected_mtu: u32) {
    let path = NarrowPath::new(tag, 1400).unwrap();
    path.add_tunnels(XTUN, mode, extra).unwrap();
    // TCP first, both ways, before anything else has taught a sender the
    // path: its own first segments must draw the answers it learns from.
    transfer(&path.ns1, &path.ns2, "10.10.200.10", 16 << 20);
    transfer(&path.ns2, &path.ns1, "10.10.100.10", 16 << 20);
    let answer = frag_needed_answer(&path.ns1, 1440);
    assert!(
        answer.contains(&format!("mtu = {expected_mtu}"))
            || answer.contains(&format!("mtu={expected_mtu}")),
        "{mode} {extra:?}: {answer}"
    );
    assert!(stat(&path.ns1, "v1", "rx_icmp_frag_needed") >= 1);
    let shown = net::xtun_line(&path.ns1, "-j tunnel show tun1");
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let learnt = &shown[0]["path_mtu"][0];
    assert_eq!(
        (&learnt["remote"], &learnt["mtu"]),
        (&Value::from("10.10.20.2"), &Value::from(1400)),
        "{shown}"
    );
    let left = learnt["expires_in"].as_u64().unwrap();
    // Learnt during the transfers, a few seconds ago at most.
    assert!((540..=600).contains(&left), "{left}");
    let details = net::xtun_line(&path.ns1, "-d tunnel show tun1");
    assert!(
        details.contains("\n    underlay v1\n    path mtu 1400 to 10.10.20.2 expires "),
        "{details}"
    );
    let with_stats = net::xtun_line(&path.ns1, "-s tunnel show tun1");
    assert!(
        with_stats.contains("\n    path mtu 1400 to 10.10.20.2 expires "),
        "{with_stats}"
    );
    eprintln!("{mode} {extra:?}: {answer}");
}

xtun_test_support::test_cases! { narrow_path:
    gre_over_a_narrower_path_with_pmtudisc("pgre", "gre", &[], 1376);
    gre_over_a_narrower_path_with_nopmtudisc("pgrn", "gre", &["nopmtudisc"], 1376);
    gre_key_over_a_narrower_path("pkey", "gre", &["key", "7"], 1372);
    ipip_over_a_narrower_path("pipip", "ipip", &[], 1380);
}

#[test]
fn a_host_behind_the_tunnel_is_told_too() {
    let path = NarrowPath::new("plan", 1400).unwrap();
    path.add_tunnels(XTUN, "gre", &[]).unwrap();
    // A LAN host behind ns1, which forwards it through the tunnel.
    let lan = Netns::new(format!("{}-lan", path.ns1.name)).unwrap();
    tunnel_userspace::testbed::run(&[
        "ip",
        "link",
        "add",
        "l0",
        "netns",
        &lan.name,
        "type",
        "veth",
        "peer",
        "name",
        "lan0",
        "netns",
        &path.ns1.name,
    ])
    .unwrap();
    for (ns, cmd) in [
        (&lan, "ip addr add 10.10.70.5/24 dev l0"),
        (&lan, "ip link set l0 up"),
        (&lan, "ip route add default via 10.10.70.1"),
        (&path.ns1, "ip addr add 10.10.70.1/24 dev lan0"),
        (&path.ns1, "ip link set lan0 up"),
        (&path.ns1, "sysctl -qw net.ipv4.ip_forward=1"),
        (&path.ns2, "ip route add 10.10.70.0/24 dev tun2"),
    ] {
        ns.exec(&cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    let answer = frag_needed_answer_to(&lan, "10.10.200.10", 1400);
    // From ns1's address on the LAN, with the tunnel's MTU on the path.
    assert!(
        answer.contains("From 10.10.70.1") && answer.contains("mtu = 1376"),
        "{answer}"
    );
    transfer(&lan, &path.ns2, "10.10.200.10", 4 << 20);
}

/// Sends an ICMP "fragmentation needed" from the first router to ns1,
/// quoting the packet `quoted` (scapy).
fn forge_frag_needed(path: &NarrowPath, mtu: u32, quoted: &str) {
    forge_icmp(path, &format!("type=3, code=4, nexthopmtu={mtu}"), quoted);
}

/// Sends the ICMP error `icmp` (scapy's ICMP fields) from the first router
/// to ns1, quoting the packet `quoted`.
fn forge_icmp(path: &NarrowPath, icmp: &str, quoted: &str) {
    let script = format!(
        r#"
from scapy.all import IP, ICMP, GRE, UDP, send
quoted = {quoted}
send(IP(src="10.10.10.1", dst="10.10.10.2") / ICMP({icmp}) / quoted, verbose=0)
"#
    );
    path.rt1.exec(&["/usr/bin/python3", "-c", &script]).unwrap();
}

#[test]
fn other_icmp_errors_about_tunnel_packets_are_counted() {
    let path = NarrowPath::new("picmp", 1500).unwrap();
    path.add_tunnels(XTUN, "gre", &["key", "7"]).unwrap();
    let ours = r#"IP(src="10.10.10.2", dst="10.10.20.2", len=120) / GRE(key_present=1, key=7, proto=0x0800) / IP(src="10.10.100.10", dst="10.10.200.10")"#;
    let another_key = r#"IP(src="10.10.10.2", dst="10.10.20.2", len=120) / GRE(key_present=1, key=8, proto=0x0800) / IP(src="10.10.100.10", dst="10.10.200.10")"#;
    // Host unreachable and TTL exceeded about what tun1 sent: counted.
    forge_icmp(&path, "type=3, code=1", ours);
    forge_icmp(&path, "type=11, code=0", ours);
    // About a packet no tunnel sent: ignored, as a forged frag-needed is.
    forge_icmp(&path, "type=3, code=1", another_key);
    assert!(net::eventually(|| stat(
        &path.ns1,
        "v1",
        "rx_icmp_errors_not_relayed"
    ) == 2));
    assert!(net::eventually(
        || stat(&path.ns1, "v1", "rx_icmp_ignored") == 1
    ));
    assert_eq!(stat(&path.ns1, "v1", "rx_icmp_frag_needed"), 0);
    // Nothing changed for the tunnel: pings still pass.
    let out = ping_fragmentable(&path.ns1, "10.10.200.10", 56, 2);
    assert!(out.contains("2 received"), "{out}");
}

#[test]
fn forged_frag_needed_changes_nothing() {
    // A 1500-byte path: only ICMP could lower anything.
    let path = NarrowPath::new("pfrg", 1500).unwrap();
    path.add_tunnels(XTUN, "gre", &["key", "7"]).unwrap();
    let gre = |src: &str, dst: &str, key: u32| {
        format!(
            r#"IP(src="{src}", dst="{dst}", flags="DF", len=1492) / GRE(key_present=1, key={key}, proto=0x0800) / IP(src="10.10.100.10", dst="10.10.200.10")"#
        )
    };
    let forged = [
        // Another key, another remote, not our address, below the minimum.
        (1300, gre("10.10.10.2", "10.10.20.2", 8)),
        (1300, gre("10.10.10.2", "10.10.20.99", 7)),
        (1300, gre("10.10.10.9", "10.10.20.2", 7)),
        (68, gre("10.10.10.2", "10.10.20.2", 7)),
        // A packet to another host.
        (
            1300,
            r#"IP(src="10.10.10.2", dst="10.10.30.5", len=1492) / UDP(sport=5000, dport=53)"#
                .to_string(),
        ),
    ];
    for (mtu, quoted) in &forged {
        forge_frag_needed(&path, *mtu, quoted);
    }
    assert!(
        net::eventually(|| stat(&path.ns1, "v1", "rx_icmp_ignored") == 5),
        "{}",
        net::xtun_line(&path.ns1, "stats")
    );
    assert_eq!(stat(&path.ns1, "v1", "rx_icmp_frag_needed"), 0);
    let shown = net::xtun_line(&path.ns1, "-j tunnel show tun1");
    assert!(shown.contains("\"path_mtu\":[]"), "{shown}");
    // Full-size packets still go through.
    let answer = frag_needed_answer(&path.ns1, 1440);
    assert!(answer.contains("3 received"), "{answer}");

    // The same report quoting what tun1 sent (its key) takes effect.
    forge_frag_needed(&path, 1300, &gre("10.10.10.2", "10.10.20.2", 7));
    assert!(net::eventually(|| stat(
        &path.ns1,
        "v1",
        "rx_icmp_frag_needed"
    ) == 1));
    let answer = frag_needed_answer(&path.ns1, 1440);
    assert!(answer.contains("mtu = 1272"), "{answer}");
}

/// IPv6 inside the tunnel: ICMPv6 "packet too big" from the tunnel, then
/// TCP over IPv6 both ways.
fn narrow_path_v6(tag: &str, mode: &str, expected_mtu: u32) {
    // TCP first, as over IPv4.
    let path = ipv6_transfers(tag, mode, 1400);
    let answer = frag_needed_answer_to(&path.ns1, "fd00:200::10", 1400);
    // The tunnel's answer, or (once TCP has taught this host the path)
    // the kernel's own local error carrying the same MTU.
    assert!(
        answer.contains(&format!("mtu={expected_mtu}"))
            || answer.contains(&format!("mtu = {expected_mtu}"))
            || answer.contains(&format!("mtu: {expected_mtu}")),
        "{mode}: {answer}"
    );
    eprintln!("{mode} over IPv6: {answer}");
}

#[test]
fn ipv6_in_gre_over_a_narrower_path() {
    narrow_path_v6("p6gre", "gre", 1376);
}

#[test]
fn sit_over_a_narrower_path() {
    narrow_path_v6("psit", "sit", 1380);
}

#[test]
fn path_mtu_discovery_sees_the_tunnel_mtu() {
    let topo = SeedTopology::new("pmtu").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    // A 1500-byte packet with DF set does not fit the 1476-byte tunnel: the
    // sender learns the tunnel MTU instead of losing packets silently.
    let ping_df = |line: &str| topo.ns1.try_exec(&net::words(line)).unwrap();
    let out = ping_df("ping -c 1 -M do -s 1472 -W 1 10.10.200.10");
    let text = format!(
        "{}{}",
        stdout(out.clone()),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success());
    assert!(
        text.contains("mtu=1476") || text.contains("mtu = 1476"),
        "{text}"
    );
    // What fits the tunnel MTU exactly goes through with DF.
    let fits = stdout(ping_df("ping -c 1 -M do -s 1448 -W 2 10.10.200.10"));
    assert!(fits.contains("1 received"), "{fits}");
}

/// Packets `dev` in `ns` has received, from the kernel's own counters.
fn rx_packets(ns: &Netns, dev: &str) -> u64 {
    let out = stdout(ns.exec(&["ip", "-j", "-s", "link", "show", dev]).unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    v[0]["stats64"]["rx"]["packets"].as_u64().unwrap()
}

/// `ping` without DF through the tunnel: answered, `count` of `count`.
fn ping_fragmentable(ns: &Netns, dst: &str, size: u32, count: u32) -> String {
    let mut args = vec!["ping", "-s"];
    let size = size.to_string();
    let count_text = count.to_string();
    args.push(&size);
    if !dst.contains(':') {
        args.extend(["-M", "dont"]);
    }
    args.extend(["-c", &count_text, "-i", "0.3", "-W", "2", dst]);
    stdout(ns.try_exec(&args).unwrap())
}

/// With `nopmtudisc`, an inner packet without DF leaves without DF and rt1
/// fragments it; the far end puts the outer packet back together before
/// decapsulating, as the kernel does before `ip_gre`, in either hook.
fn fragmented_on_the_path(tag: &str, mode: &str, key: bool, decap: &str) {
    let path = NarrowPath::new(tag, 1400).unwrap();
    let mut extra = vec!["nopmtudisc"];
    if key {
        extra.extend(["key", "7"]);
    }
    path.add_tunnels(XTUN, mode, &extra).unwrap();
    for (ns, dev) in [(&path.ns1, "v1"), (&path.ns2, "v2")] {
        ns.exec(&[XTUN, "attach", dev, "--decap", decap]).unwrap();
    }
    let (dst, size) = if mode == "sit" {
        net::address_tunnels_ipv6(&path.ns1, &path.ns2);
        ("fd00:200::10", 1400)
    } else {
        ("10.10.200.10", 1440)
    };
    // Each request and each reply crosses the narrow link in two pieces.
    let out = ping_fragmentable(&path.ns1, dst, size, 3);
    assert!(out.contains("3 received"), "{mode} {decap}: {out}");
    for (ns, dev) in [(&path.ns2, "v2"), (&path.ns1, "v1")] {
        assert_eq!(stat(ns, dev, "rx_reassembled"), 3, "{mode} {decap} {dev}");
        assert_eq!(
            stat(ns, dev, "rx_fragments_queued"),
            3,
            "{mode} {decap} {dev}"
        );
        assert_eq!(stat(ns, dev, "rx_reassembly_refused"), 0);
    }
    // Bigger than the tunnel: the sender fragments the inner packet, and
    // the path fragments each outer one again.
    let out = ping_fragmentable(&path.ns1, dst, 4000, 2);
    assert!(out.contains("2 received"), "{mode} {decap}: {out}");
}

xtun_test_support::test_cases! { fragmented_on_the_path:
    gre_fragmented_on_the_path_is_reassembled_in_tc("fgre", "gre", false, "tc");
    gre_key_fragmented_on_the_path_is_reassembled_after_xdp("fkey", "gre", true, "xdp");
    ipip_fragmented_on_the_path_is_reassembled("fipip", "ipip", false, "xdp");
    sit_fragmented_on_the_path_is_reassembled("fsit", "sit", false, "tc");
}

/// Runs scapy in rt2 with `frags(id)`: the fragments of a GRE (key 7)
/// packet from ns1's address to ns2 carrying an echo request to tun2's
/// address, 1,200 bytes of payload in 400-byte pieces.
fn send_fragments(path: &NarrowPath, body: &str) {
    let script = format!(
        r#"
from scapy.all import IP, GRE, ICMP, Raw, send, fragment
def frags(ident):
    inner = IP(src="10.10.100.10", dst="10.10.200.10") / ICMP(id=0x4242, seq=ident) / Raw(b"x" * 1200)
    outer = IP(src="10.10.10.2", dst="10.10.20.2", id=ident) / GRE(key_present=1, key=7, proto=0x0800) / inner
    return fragment(outer, fragsize=400)
{body}
"#
    );
    net::python(&path.rt2, &script);
}

#[test]
fn hostile_outer_fragments() {
    let path = NarrowPath::new("fhost", 1500).unwrap();
    path.add_tunnels(XTUN, "gre", &["key", "7"]).unwrap();
    net::xtun_line(&path.ns2, "attach v2 --decap tc");
    let delivered = || rx_packets(&path.ns2, "tun2");
    let counter = |name: &str| stat(&path.ns2, "v2", name);
    let before = delivered();

    // Out of order, one piece twice: one datagram, one duplicate dropped.
    send_fragments(
        &path,
        "f = frags(1001)\nfor p in [f[3], f[1], f[0], f[1], f[2]]: send(p, verbose=0)",
    );
    assert!(net::eventually(|| delivered() == before + 1));
    assert_eq!(counter("rx_reassembled"), 1);
    assert_eq!(counter("rx_fragment_duplicates"), 1);

    // Overlapping pieces: the whole datagram is refused, and what comes
    // after its first piece never completes another.
    send_fragments(
        &path,
        "f = frags(1002)\nover = f[1].copy()\nover.frag = 25\ndel over.chksum\nfor p in [f[0], over, f[1], f[2], f[3]]: send(p, verbose=0)",
    );
    assert!(net::eventually(|| counter("rx_reassembly_refused") == 1));
    // One piece missing: kept, never delivered.
    send_fragments(
        &path,
        "f = frags(1003)\nfor p in [f[0], f[1], f[3]]: send(p, verbose=0)",
    );
    assert!(net::eventually(
        || counter("rx_fragments_queued") == 3 + 4 + 3
    ));
    assert_eq!(delivered(), before + 1);
    assert_eq!(counter("rx_reassembled"), 1);

    // A flood from random sources: 100,000 first fragments (no tunnel's:
    // left to the kernel's own reassembly) and 20,000 later ones, which
    // take the free slots and are then refused. Memory is the fixed slot
    // array; a datagram a first fragment vouches for still gets through.
    let queued = counter("rx_fragments_queued");
    let flood = r#"
import random, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
gre = struct.pack("!HHI", 0x2000, 0x0800, 7) + b"y" * 400
def packet(src, ident, frag):
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(gre), ident, frag, 64, 47, 0,
                       src, socket.inet_aton("10.10.20.2")) + gre
random.seed(7)
for n, frag in [(100000, 0x2000), (20000, 0x2000 | 100)]:
    for i in range(n):
        src = struct.pack("!I", random.randrange(1 << 32) & 0x0AFFFFFF | 0x0A000000)
        s.sendto(packet(src, i & 0xFFFF, frag), ("10.10.20.2", 0))
"#;
    net::python(&path.rt2, flood);
    let taken = counter("rx_fragments_queued") - queued;
    let refused = counter("rx_reassembly_refused") - 1;
    assert!(taken <= 64, "{taken}");
    assert_eq!(taken + refused, 20_000, "{taken} + {refused}");
    // Unfragmented and fragmented traffic alike still pass.
    send_fragments(&path, "for p in frags(1004): send(p, verbose=0)");
    assert!(net::eventually(|| counter("rx_reassembled") == 2));
    let out = path
        .ns1
        .try_exec(&["ping", "-c", "2", "-i", "0.3", "-W", "2", "10.10.200.10"])
        .unwrap();
    assert!(
        stdout(out.clone()).contains("2 received"),
        "{}",
        stdout(out)
    );
}

#[test]
fn an_incomplete_datagram_times_out_after_30_seconds() {
    let path = NarrowPath::new("ftime", 1500).unwrap();
    path.add_tunnels(XTUN, "gre", &["key", "7"]).unwrap();
    net::xtun_line(&path.ns2, "attach v2 --decap tc");
    send_fragments(&path, "f = frags(2001)\nfor p in f[:3]: send(p, verbose=0)");
    let v2 = |name: &str| stat(&path.ns2, "v2", name);
    assert!(net::eventually(|| v2("rx_fragments_queued") == 3));
    // The kernel's ipfrag_time: before it, the last piece completes the
    // datagram; after it, the set is given up and the piece starts anew.
    std::thread::sleep(std::time::Duration::from_secs(31));
    send_fragments(&path, "send(frags(2001)[3], verbose=0)");
    assert!(net::eventually(|| v2("rx_reassembly_timeouts") == 1));
    assert_eq!(v2("rx_reassembled"), 0);
}

/// IPv6 over a path below its minimum MTU once the tunnel's overhead is
/// taken (a 1280-byte link): no "packet too big" can go below 1280, so
/// the packets go in outer fragments without DF, as sit sends them, and
/// the far end reassembles them. TCP completes both ways.
fn ipv6_below_its_minimum_mtu(tag: &str, mode: &str) {
    let path = ipv6_transfers(tag, mode, 1280);
    for (ns, dev) in [(&path.ns2, "v2"), (&path.ns1, "v1")] {
        assert!(stat(ns, dev, "rx_reassembled") > 0, "{mode} {dev}");
    }
}

#[test]
fn ipv6_in_gre_over_a_1280_byte_link() {
    ipv6_below_its_minimum_mtu("p6min", "gre");
}

#[test]
fn sit_over_a_1280_byte_link() {
    ipv6_below_its_minimum_mtu("psmin", "sit");
}

/// A narrow path (`mtu` between the routers) with `mode` tunnels carrying
/// IPv6, and 16 MiB of TCP each way through them.
fn ipv6_transfers(tag: &str, mode: &str, mtu: u32) -> NarrowPath {
    let path = NarrowPath::new(tag, mtu).unwrap();
    path.add_tunnels(XTUN, mode, &[]).unwrap();
    net::address_tunnels_ipv6(&path.ns1, &path.ns2);
    transfer(&path.ns1, &path.ns2, "fd00:200::10", 16 << 20);
    transfer(&path.ns2, &path.ns1, "fd00:100::10", 16 << 20);
    path
}
