//! Paths with a smaller MTU than the underlay's: ns1 - rt1 - rt2 - ns2 with
//! the routers' link at 1400 bytes. The kernel's tunnels learn the path MTU
//! from ICMP "fragmentation needed" and tell inner senders; so must xtun,
//! or TCP stalls. Needs root; namespaces are removed on drop.

mod net;

use net::{stdout, transfer, XTUN};
use serde_json::Value;
use tunnel_userspace::testbed::{NarrowPath, Netns};

/// The data plane's counter `name` for interface `dev`, from `xtun -j stats`.
fn stat(ns: &Netns, dev: &str, name: &str) -> u64 {
    let out = stdout(ns.exec(&[XTUN, "-j", "stats"]).unwrap());
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .and_then(|rows| rows.iter().find(|r| r["ifname"] == dev))
        .and_then(|r| r["counters"][name].as_u64())
        .unwrap_or(0)
}

/// `ping -M do -s SIZE` through the tunnel, twice: the first learns the
/// path MTU (the router's ICMP to the outer source), the second is answered
/// with the tunnel's MTU on that path.
fn frag_needed_answer(ns: &Netns, size: u32) -> String {
    let out = ns
        .try_exec(&[
            "ping",
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
            "10.10.200.10",
        ])
        .unwrap();
    format!(
        "{}{}",
        stdout(out.clone()),
        String::from_utf8_lossy(&out.stderr)
    )
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
