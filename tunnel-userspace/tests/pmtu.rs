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
    let out = stdout(ns.exec(&[XTUN, "-j", "stats"]).unwrap());
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
    let answer = frag_needed_answer(&path.ns1, 1440);
    assert!(
        answer.contains(&format!("mtu = {expected_mtu}"))
            || answer.contains(&format!("mtu={expected_mtu}")),
        "{mode} {extra:?}: {answer}"
    );
    assert!(stat(&path.ns1, "v1", "rx_icmp_frag_needed") >= 1);
    let shown = stdout(
        path.ns1
            .exec(&[XTUN, "-j", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let shown: Value = serde_json::from_str(&shown).unwrap();
    let learnt = &shown[0]["path_mtu"][0];
    assert_eq!(
        (&learnt["remote"], &learnt["mtu"]),
        (&Value::from("10.10.20.2"), &Value::from(1400)),
        "{shown}"
    );
    let left = learnt["expires_in"].as_u64().unwrap();
    assert!((590..=600).contains(&left), "{left}");
    let details = stdout(
        path.ns1
            .exec(&[XTUN, "-d", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    assert!(
        details.contains("\n    underlay v1\n    path mtu 1400 to 10.10.20.2 expires "),
        "{details}"
    );
    eprintln!("{mode} {extra:?}: {answer}");
    // TCP both ways: the senders lower their segment size and finish.
    transfer(&path.ns1, &path.ns2, "10.10.200.10", 16 << 20);
    transfer(&path.ns2, &path.ns1, "10.10.100.10", 16 << 20);
}

#[test]
fn gre_over_a_narrower_path_with_pmtudisc() {
    narrow_path("pgre", "gre", &[], 1376);
}

#[test]
fn gre_over_a_narrower_path_with_nopmtudisc() {
    narrow_path("pgrn", "gre", &["nopmtudisc"], 1376);
}

#[test]
fn gre_key_over_a_narrower_path() {
    narrow_path("pkey", "gre", &["key", "7"], 1372);
}

#[test]
fn ipip_over_a_narrower_path() {
    narrow_path("pipip", "ipip", &[], 1380);
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
    let script = format!(
        r#"
from scapy.all import IP, ICMP, GRE, UDP, send
quoted = {quoted}
send(IP(src="10.10.10.1", dst="10.10.10.2") / ICMP(type=3, code=4, nexthopmtu={mtu}) / quoted, verbose=0)
"#
    );
    path.rt1.exec(&["/usr/bin/python3", "-c", &script]).unwrap();
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
        stdout(path.ns1.exec(&[XTUN, "stats"]).unwrap())
    );
    assert_eq!(stat(&path.ns1, "v1", "rx_icmp_frag_needed"), 0);
    let shown = stdout(
        path.ns1
            .exec(&[XTUN, "-j", "tunnel", "show", "tun1"])
            .unwrap(),
    );
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
    let path = NarrowPath::new(tag, 1400).unwrap();
    path.add_tunnels(XTUN, mode, &[]).unwrap();
    net::address_ipv6([
        (&path.ns1, "tun1", "fd00:100::10"),
        (&path.ns2, "tun2", "fd00:200::10"),
    ]);
    let answer = frag_needed_answer_to(&path.ns1, "fd00:200::10", 1400);
    assert!(
        answer.contains(&format!("mtu={expected_mtu}"))
            || answer.contains(&format!("mtu = {expected_mtu}")),
        "{mode}: {answer}"
    );
    eprintln!("{mode} over IPv6: {answer}");
    transfer(&path.ns1, &path.ns2, "fd00:200::10", 16 << 20);
    transfer(&path.ns2, &path.ns1, "fd00:100::10", 16 << 20);
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
    let out = topo
        .ns1
        .try_exec(&[
            "ping",
            "-c",
            "1",
            "-M",
            "do",
            "-s",
            "1472",
            "-W",
            "1",
            "10.10.200.10",
        ])
        .unwrap();
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
    let fits = stdout(
        topo.ns1
            .try_exec(&[
                "ping",
                "-c",
                "1",
                "-M",
                "do",
                "-s",
                "1448",
                "-W",
                "2",
                "10.10.200.10",
            ])
            .unwrap(),
    );
    assert!(fits.contains("1 received"), "{fits}");
}
