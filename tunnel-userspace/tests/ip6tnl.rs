//! Tunnels over an IPv6 underlay end to end, as a user sets them up with
//! `xtun -6 tunnel add`: ns1 (fd00:10::2) — an IPv6-only router — ns2
//! (fd00:20::2). Each mode carries pings and a 16 MiB TCP transfer in the
//! inner families it carries; the router's capture, decoded by tshark,
//! shows the outer IPv6 header, the encapsulation-limit option and the GRE
//! key. Needs root; every namespace is removed on drop.

mod common;

use common::net::{
    address_ipv6, assert_all_answered, eventually, heavy_traffic, ping, ping_with, python,
    spawn_in, stdout, transfer, xtun_json, Capture, XTUN,
};
use tunnel_userspace::testbed::{run, unique_prefix, Netns};

/// ns1 — router — ns2 with IPv6 addresses only on the underlay (and, for
/// `narrow`, a second router behind a link with a smaller MTU).
struct V6Path {
    ns1: Netns,
    ns2: Netns,
    router: Netns,
    _rt2: Option<Netns>,
}

impl V6Path {
    fn new(tag: &str) -> Self {
        let prefix = unique_prefix(tag);
        let path = Self {
            ns1: Netns::new(format!("{prefix}-ns1")).unwrap(),
            ns2: Netns::new(format!("{prefix}-ns2")).unwrap(),
            router: Netns::new(format!("{prefix}-rt")).unwrap(),
            _rt2: None,
        };
        let r = path.router.name.as_str();
        for (ns, dev, peer, net) in [(&path.ns1, "v1", "r1", "10"), (&path.ns2, "v2", "r2", "20")] {
            run(&[
                "ip", "link", "add", dev, "netns", &ns.name, "type", "veth", "peer", "name", peer,
                "netns", r,
            ])
            .unwrap();
            let host = format!("fd00:{net}::2/64");
            let gw = format!("fd00:{net}::1/64");
            ns.exec(&["ip", "-6", "addr", "add", &host, "dev", dev, "nodad"])
                .unwrap();
            ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
            let other = if net == "10" {
                "fd00:20::/64"
            } else {
                "fd00:10::/64"
            };
            ns.exec(&[
                "ip",
                "-6",
                "route",
                "add",
                other,
                "via",
                &format!("fd00:{net}::1"),
            ])
            .unwrap();
            path.router
                .exec(&["ip", "-6", "addr", "add", &gw, "dev", peer, "nodad"])
                .unwrap();
            path.router
                .exec(&["ip", "link", "set", peer, "up"])
                .unwrap();
        }
        path.router
            .exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
            .unwrap();
        path.wait_for_underlay();
        path
    }

    /// ns1 — rt1 — rt2 — ns2, the rt1–rt2 link (fd00:15::/64) with MTU
    /// `mtu`, as a real path often has.
    fn narrow(tag: &str, mtu: u32) -> Self {
        let prefix = unique_prefix(tag);
        let path = Self {
            ns1: Netns::new(format!("{prefix}-ns1")).unwrap(),
            ns2: Netns::new(format!("{prefix}-ns2")).unwrap(),
            router: Netns::new(format!("{prefix}-r1")).unwrap(),
            _rt2: Some(Netns::new(format!("{prefix}-r2")).unwrap()),
        };
        let rt2 = path._rt2.as_ref().unwrap();
        let mtu = mtu.to_string();
        let links = [
            (
                &path.ns1,
                "v1",
                "fd00:10::2",
                &path.router,
                "r1",
                "fd00:10::1",
                "1500",
            ),
            (
                &path.router,
                "n1",
                "fd00:15::1",
                rt2,
                "n2",
                "fd00:15::2",
                mtu.as_str(),
            ),
            (
                rt2,
                "r2",
                "fd00:20::1",
                &path.ns2,
                "v2",
                "fd00:20::2",
                "1500",
            ),
        ];
        for (a, a_dev, a_addr, b, b_dev, b_addr, link_mtu) in links {
            run(&[
                "ip", "link", "add", a_dev, "netns", &a.name, "mtu", link_mtu, "type", "veth",
                "peer", "name", b_dev, "netns", &b.name, "mtu", link_mtu,
            ])
            .unwrap();
            for (ns, dev, addr) in [(a, a_dev, a_addr), (b, b_dev, b_addr)] {
                let cidr = format!("{addr}/64");
                ns.exec(&["ip", "-6", "addr", "add", &cidr, "dev", dev, "nodad"])
                    .unwrap();
                ns.exec(&["ip", "link", "set", dev, "up"]).unwrap();
            }
        }
        for (ns, via) in [
            (&path.ns1, "fd00:10::1"),
            (&path.router, "fd00:15::2"),
            (rt2, "fd00:15::1"),
            (&path.ns2, "fd00:20::1"),
        ] {
            ns.exec(&["ip", "-6", "route", "add", "default", "via", via])
                .unwrap();
        }
        for r in [&path.router, rt2] {
            r.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])
                .unwrap();
        }
        path.wait_for_underlay();
        path
    }

    fn wait_for_underlay(&self) {
        let path = self;
        // Neighbour discovery takes a moment on fresh links.
        assert!(
            eventually(|| path
                .ns1
                .try_exec(&["ping", "-6", "-c", "1", "-W", "1", "fd00:20::2"])
                .is_ok_and(|o| o.status.success())),
            "the underlay does not carry IPv6"
        );
    }

    /// `xtun -6 tunnel add` on both sides, with `extra` options; tun1 in
    /// ns1, tun2 in ns2, up, with the inner addresses of the families the
    /// mode carries.
    fn add_tunnels(&self, mode: &str, extra: &[&str]) {
        for (ns, name, remote, local) in [
            (&self.ns1, "tun1", "fd00:20::2", "fd00:10::2"),
            (&self.ns2, "tun2", "fd00:10::2", "fd00:20::2"),
        ] {
            let mut args = vec![
                XTUN, "-6", "tunnel", "add", name, "mode", mode, "remote", remote, "local", local,
            ];
            args.extend_from_slice(extra);
            ns.exec(&args).unwrap();
            ns.exec(&["ip", "link", "set", name, "up"]).unwrap();
            if carries_v4(mode) {
                let (addr, peer) = if name == "tun1" {
                    ("10.10.100.10", "10.10.200.10")
                } else {
                    ("10.10.200.10", "10.10.100.10")
                };
                ns.exec(&["ip", "addr", "add", addr, "peer", peer, "dev", name])
                    .unwrap();
            }
        }
        if carries_v6(mode) {
            address_ipv6([
                (&self.ns1, "tun1", "fd00:100::10"),
                (&self.ns2, "tun2", "fd00:200::10"),
            ]);
        }
    }
}

fn carries_v4(mode: &str) -> bool {
    mode != "ip6ip6"
}

fn carries_v6(mode: &str) -> bool {
    mode != "ipip6"
}

const FIELDS: &[&str] = &[
    "ipv6.src",
    "ipv6.dst",
    "ipv6.nxt",
    "ipv6.dstopts.nxt",
    "ipv6.opt.tel",
    "gre.key",
    "ip.src",
    "icmp.type",
    "icmpv6.type",
];

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let i = FIELDS.iter().position(|f| *f == name).unwrap();
    line.split(';').nth(i).unwrap_or("")
}

/// Pings both ways in each family the mode carries, checks the wire, the
/// MTU and moves 16 MiB over TCP in each family.
fn mode_end_to_end(tag: &str, mode: &str, extra: &[&str], mtu: u32, key: Option<&str>) {
    let path = V6Path::new(tag);
    path.add_tunnels(mode, extra);
    let link = stdout(
        path.ns1
            .exec(&["ip", "-o", "link", "show", "tun1"])
            .unwrap(),
    );
    assert!(link.contains(&format!("mtu {mtu} ")), "{mode}: {link}");

    let capture = Capture::start(&path.router, "r1", "ip6 and not icmp6");
    let mut expected = 0;
    if carries_v4(mode) {
        let out = ping(&path.ns1, "10.10.200.10", 3);
        assert!(out.contains("3 received"), "{mode} IPv4 inside: {out}");
        expected += 6;
    }
    if carries_v6(mode) {
        let out = ping(&path.ns1, "fd00:200::10", 3);
        assert!(out.contains("3 received"), "{mode} IPv6 inside: {out}");
        expected += 6;
    }
    let lines = capture.decode(expected, FIELDS);
    let limited = !extra.contains(&"none");
    assert_eq!(lines.len(), expected, "{mode}: {lines:#?}");
    for line in &lines {
        let request = field(line, "icmp.type") == "8" || field(line, "icmpv6.type") == "128";
        let (src, dst) = if request {
            ("fd00:10::2", "fd00:20::2")
        } else {
            ("fd00:20::2", "fd00:10::2")
        };
        assert!(field(line, "ipv6.src").starts_with(src), "{mode}: {line}");
        assert!(field(line, "ipv6.dst").starts_with(dst), "{mode}: {line}");
        // The outer header's next header (the inner IPv6 header's follows).
        let nxt = field(line, "ipv6.nxt").split(',').next().unwrap();
        let carried = if limited {
            // Destination options (60) first, holding the encapsulation
            // limit 4 (the kernel's default), then the tunnel protocol.
            assert_eq!(nxt, "60", "{mode}: {line}");
            assert!(
                field(line, "ipv6.opt.tel").starts_with('4'),
                "{mode}: {line}"
            );
            field(line, "ipv6.dstopts.nxt")
        } else {
            assert_eq!(field(line, "ipv6.opt.tel"), "", "{mode}: {line}");
            nxt
        };
        let inner_v6 = !field(line, "icmpv6.type").is_empty();
        let expected = match mode {
            "ip6gre" => "47",
            _ if inner_v6 => "41",
            _ => "4",
        };
        assert_eq!(carried, expected, "{mode}: {line}");
        assert_eq!(field(line, "gre.key"), key.unwrap_or(""), "{mode}: {line}");
    }

    let _heavy = heavy_traffic();
    if carries_v4(mode) {
        transfer(&path.ns1, &path.ns2, "10.10.200.10", 16 << 20);
    }
    if carries_v6(mode) {
        transfer(&path.ns1, &path.ns2, "fd00:200::10", 16 << 20);
    }
    // Counted on the tunnel, as `ip -s tunnel show` counts.
    let shown = stdout(
        path.ns1
            .exec(&[XTUN, "-6", "-s", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let rx: Vec<&str> = shown
        .lines()
        .nth(2)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let packets: u64 = rx.first().and_then(|p| p.parse().ok()).unwrap_or(0);
    assert!(packets >= 6, "{mode}: {shown}");
}

#[test]
fn ip6gre_carries_both_families() {
    mode_end_to_end("g6", "ip6gre", &[], 1448, None);
}

#[test]
fn ip6gre_with_key_and_encaplimit_none() {
    mode_end_to_end(
        "g6k",
        "ip6gre",
        &["key", "5", "encaplimit", "none"],
        1452,
        Some("0x00000005"),
    );
}

#[test]
fn ip6ip6_carries_ipv6() {
    mode_end_to_end("66", "ip6ip6", &[], 1452, None);
}

#[test]
fn ipip6_carries_ipv4() {
    mode_end_to_end("46", "ipip6", &[], 1452, None);
}

#[test]
fn any_carries_both_families() {
    mode_end_to_end("a6", "any", &[], 1452, None);
}

#[test]
fn del_removes_the_tunnel_and_its_traffic_stops() {
    let path = V6Path::new("d6");
    path.add_tunnels("ip6ip6", &[]);
    assert!(ping(&path.ns1, "fd00:200::10", 1).contains("1 received"));
    path.ns2
        .exec(&[XTUN, "-6", "tunnel", "del", "tun2"])
        .unwrap();
    let gone = path.ns2.try_exec(&["ip", "link", "show", "tun2"]).unwrap();
    assert!(!gone.status.success(), "tun2 still exists");
    let out = path
        .ns1
        .try_exec(&["ping", "-6", "-c", "1", "-W", "1", "fd00:200::10"])
        .unwrap();
    assert!(!out.status.success(), "answered after del");
    assert_eq!(
        stdout(path.ns2.exec(&[XTUN, "-6", "tunnel", "show"]).unwrap()),
        ""
    );
}

#[test]
fn packet_too_big_from_a_narrow_path_lowers_the_path_mtu_and_tcp_gets_through() {
    let path = V6Path::narrow("pm6", 1400);
    path.add_tunnels("ip6gre", &[]);
    let _heavy = heavy_traffic();
    // IPv4 that may be fragmented is answered too, as the kernel's ip6
    // tunnels do (no router may fragment the outer IPv6 packet): the first
    // echo meets the router's Packet Too Big, which the tunnel learns; the
    // next is answered with the MTU left, and the sender fragments the
    // rest to fit. The replies learn the same way on the way back (two
    // more lost), then every echo is answered.
    let out = ping_with(&path.ns1, "10.10.200.10", 8, &["-M", "dont", "-s", "1400"]);
    let received: u32 = out
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!(received >= 4, "{out}");
    assert!(out.contains("Frag needed and DF set (mtu = 1348)"), "{out}");
    // Full-sized segments do not fit the 1400-byte link: its router says
    // so in ICMPv6 Packet Too Big, the tunnel learns the path MTU and tells
    // the inner senders, whose TCP then sends smaller segments.
    transfer(&path.ns1, &path.ns2, "10.10.200.10", 4 << 20);
    transfer(&path.ns1, &path.ns2, "fd00:200::10", 4 << 20);
    let shown = stdout(
        path.ns1
            .exec(&[XTUN, "-6", "-d", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    assert!(
        shown.contains("path mtu 1400 to fd00:20::2"),
        "learnt path MTU: {shown}"
    );
    // An unfragmentable ping too big for the path is answered with the
    // MTU left for it (1400 - 40 - 8 - 4), by the tunnel.
    let out = path
        .ns1
        .try_exec(&[
            "ping",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1400",
            "10.10.200.10",
        ])
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("mtu = 1348") || text.contains("mtu=1348"),
        "{text}"
    );
}

#[test]
fn xdp_decapsulation_over_ipv6_carries_pings_and_tcp() {
    let path = V6Path::new("x6");
    path.add_tunnels("ip6gre", &["key", "7"]);
    for (ns, dev) in [(&path.ns1, "v1"), (&path.ns2, "v2")] {
        ns.exec(&[XTUN, "attach", dev, "--decap", "xdp"]).unwrap();
        let link = stdout(ns.exec(&["ip", "-o", "link", "show", dev]).unwrap());
        assert!(link.contains("xdp"), "{dev}: {link}");
    }
    let out = ping(&path.ns1, "10.10.200.10", 3);
    assert!(out.contains("3 received"), "IPv4 inside: {out}");
    let out = ping(&path.ns1, "fd00:200::10", 3);
    assert!(out.contains("3 received"), "IPv6 inside: {out}");
    let _heavy = heavy_traffic();
    transfer(&path.ns1, &path.ns2, "10.10.200.10", 16 << 20);
    transfer(&path.ns1, &path.ns2, "fd00:200::10", 16 << 20);
    // And back to tc: the IPv6 filter is still there.
    path.ns2
        .exec(&[XTUN, "attach", "v2", "--decap", "tc"])
        .unwrap();
    let out = ping(&path.ns1, "fd00:200::10", 3);
    assert!(out.contains("3 received"), "after switching to tc: {out}");
}

/// `xtun apply` of a file with a tunnel over IPv6 (mode ip6gre) brings it
/// up with its addresses on both sides; applying again, or what `export`
/// wrote, changes nothing; a changed option is a `-6 tunnel change`, a
/// mode of the other driver a delete and add, and a tunnel left out of
/// the file is deleted.
#[test]
fn apply_and_export_handle_tunnels_over_ipv6() {
    let path = V6Path::new("ap6");
    let dir = std::env::temp_dir().join(unique_prefix("ap6"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, text: &str| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        f.to_string_lossy().into_owned()
    };
    let side = |name: &str, remote: &str, local: &str, addr: &str, peer: &str, extra: &str| {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nmode = \"ip6gre\"\nremote = \"{remote}\"\nlocal = \"{local}\"\nkey = 7\nencaplimit = \"none\"\n{extra}\nup = true\naddresses = [\"{addr} peer {peer}\"]\n"
        )
    };
    let tun1 = |extra: &str| {
        side(
            "tun1",
            "fd00:20::2",
            "fd00:10::2",
            "10.10.100.10",
            "10.10.200.10",
            extra,
        )
    };
    let f1 = file("ns1.toml", &tun1(""));
    let f2 = file(
        "ns2.toml",
        &side(
            "tun2",
            "fd00:10::2",
            "fd00:20::2",
            "10.10.200.10",
            "10.10.100.10",
            "",
        ),
    );
    let plan = stdout(
        path.ns1
            .exec(&[XTUN, "apply", "-f", &f1, "--dry-run"])
            .unwrap(),
    );
    assert_eq!(
        plan,
        "would: -6 tunnel add tun1 mode ip6gre remote fd00:20::2 local fd00:10::2 encaplimit none hoplimit 64 tclass 0x00 flowlabel 0x00000 key 7\nwould: link set tun1 up\nwould: addr add 10.10.100.10/32 peer 10.10.200.10 dev tun1\n"
    );
    path.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap();
    path.ns2.exec(&[XTUN, "apply", "-f", &f2]).unwrap();
    let shown = stdout(path.ns1.exec(&[XTUN, "-6", "tunnel", "show"]).unwrap());
    assert_eq!(
        shown,
        "tun1: gre/ipv6 remote fd00:20::2 local fd00:10::2 encaplimit none hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000) key 7\n"
    );
    let out = ping(&path.ns1, "10.10.200.10", 3);
    assert!(out.contains("3 received"), "{out}");
    let again = stdout(path.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap());
    assert_eq!(
        again,
        format!("no changes: the namespace already matches {f1}\n")
    );
    let exported = stdout(path.ns1.exec(&[XTUN, "export"]).unwrap());
    let f_export = file("export.toml", &exported);
    let round = stdout(path.ns1.exec(&[XTUN, "apply", "-f", &f_export]).unwrap());
    assert!(round.starts_with("no changes"), "{round}\n{exported}");

    // One option: changed in place, the tunnel still carries traffic.
    let f_label = file("label.toml", &tun1("flowlabel = 0x12345"));
    let out = stdout(path.ns1.exec(&[XTUN, "apply", "-f", &f_label]).unwrap());
    assert_eq!(
        out,
        format!("done: -6 tunnel change tun1 mode ip6gre remote fd00:20::2 local fd00:10::2 encaplimit none hoplimit 64 tclass 0x00 flowlabel 0x12345 key 7\napplied 1 changes from {f_label}\n")
    );
    let out = ping(&path.ns1, "10.10.200.10", 2);
    assert!(out.contains("2 received"), "{out}");

    // ip6gre to ip6ip6 crosses drivers: deleted and added again.
    let ip6ip6 = tun1("")
        .replace("ip6gre", "ip6ip6")
        .replace("key = 7\n", "");
    let f_mode = file("mode.toml", &ip6ip6);
    let out = stdout(path.ns1.exec(&[XTUN, "apply", "-f", &f_mode]).unwrap());
    assert!(
        out.starts_with("done: -6 tunnel del tun1; -6 tunnel add tun1 mode ip6ip6 "),
        "{out}"
    );
    let shown = stdout(path.ns1.exec(&[XTUN, "-6", "tunnel", "show"]).unwrap());
    assert!(
        shown.starts_with("tun1: ipv6/ipv6 remote fd00:20::2 "),
        "{shown}"
    );

    // Left out of the file: deleted.
    let f_empty = file("empty.toml", "");
    let out = stdout(path.ns1.exec(&[XTUN, "apply", "-f", &f_empty]).unwrap());
    assert!(out.starts_with("done: tunnel del tun1\n"), "{out}");
    assert!(stdout(path.ns1.exec(&[XTUN, "-6", "tunnel", "show"]).unwrap()).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `xtun upgrade` swaps `xtun_tc6` (on the port and the underlay) and
/// `xtun_tap6` (on an ip6gretap port) with the rest, atomically: a ping
/// flood through an ip6gre tunnel loses nothing while both sides upgrade,
/// and afterwards every program is new and the filters run the new ones.
#[test]
fn upgrade_swaps_the_ipv6_programs_without_loss() {
    let _heavy = heavy_traffic();
    let path = V6Path::new("up6");
    path.add_tunnels("ip6gre", &[]);
    let tap = "g6up";
    path.ns1
        .exec(&[
            XTUN,
            "link",
            "add",
            tap,
            "type",
            "ip6gretap",
            "remote",
            "fd00:20::9",
            "local",
            "fd00:10::2",
        ])
        .unwrap();
    let programs = |ns: &Netns| -> Vec<(String, u64)> {
        xtun_json(ns, &["status"])["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["id"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let before = programs(&path.ns1);
    let names: Vec<&str> = before.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"xtun_tc6") && names.contains(&"xtun_tap6"),
        "{before:?}"
    );
    let flood = spawn_in(
        &path.ns1,
        &["ping", "-i", "0.002", "-c", "1500", "-q", "10.10.200.10"],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    for ns in [&path.ns1, &path.ns2] {
        let out = stdout(ns.exec(&[XTUN, "upgrade"]).unwrap());
        assert!(
            out.starts_with("upgraded ") && out.contains("tc6 "),
            "{out}"
        );
    }
    assert_all_answered(flood, 1500);
    let after = programs(&path.ns1);
    assert_eq!(after.len(), before.len(), "{before:?} -> {after:?}");
    for (name, id) in &after {
        assert!(
            !before.iter().any(|(_, old)| old == id),
            "{name} {id} is not new: {before:?} -> {after:?}"
        );
    }
    let id_of = |name: &str| after.iter().find(|(n, _)| n == name).unwrap().1;
    let filters = |dev: &str| {
        stdout(
            path.ns1
                .exec(&["tc", "filter", "show", "dev", dev, "ingress"])
                .unwrap(),
        )
    };
    let underlay = filters("v1");
    assert!(
        underlay.contains(&format!("id {} name xtun_tc6 ", id_of("xtun_tc6"))),
        "{underlay}"
    );
    let tap_index = stdout(
        path.ns1
            .exec(&["cat", &format!("/sys/class/net/{tap}/ifindex")])
            .unwrap(),
    );
    let tap_port = filters(&format!("xtp{}", tap_index.trim()));
    assert!(
        tap_port.contains(&format!("id {} name xtun_tap6 ", id_of("xtun_tap6"))),
        "{tap_port}"
    );
    let out = ping(&path.ns1, "10.10.200.10", 2);
    assert!(out.contains("2 received"), "{out}");
}

/// RFC 2473 end to end: an inner IPv6 packet with its own encapsulation
/// limit of 3 crosses an ip6ip6 tunnel with 2 on the outer header (tshark
/// reads both), and is answered; one with a limit of 0 is answered by the
/// tunnel with ICMPv6 Parameter Problem pointing at the limit (44: the
/// option at 40 + 2, then its type and length) and never crosses.
#[test]
fn inner_encapsulation_limits_are_honoured_end_to_end() {
    let path = V6Path::new("tel");
    path.add_tunnels("ip6ip6", &[]);
    let capture = Capture::start(&path.router, "r1", "ip6 and not icmp6");
    let script = r#"
from scapy.all import *
def probe(limit, seq):
    tel = [HBHOptUnknown(otype=4, optdata=bytes([limit])), PadN(optdata=b"\x00")]
    return IPv6(dst="fd00:200::10")/IPv6ExtHdrDestOpt(autopad=0, options=tel)/ICMPv6EchoRequest(id=7, seq=seq)
send(probe(3, 1), verbose=0)
ans = sr1(probe(0, 2), timeout=5, verbose=0)
if ans is not None and ICMPv6ParamProblem in ans:
    print("problem", ans[ICMPv6ParamProblem].code, ans[ICMPv6ParamProblem].ptr)
else:
    print("problem none", ans)
"#;
    let out = python(&path.ns1, script);
    assert!(out.contains("problem 0 44"), "{out}");
    // (scapy's own neighbour solicitations cross too.)
    let lines = capture.decode(2, &["ipv6.src", "ipv6.opt.tel", "icmpv6.type"]);
    let echo = |ty: &str| {
        lines
            .iter()
            .filter(|l| l.ends_with(&format!(";{ty}")))
            .count()
    };
    // One request, with 2 outside and 3 inside, and its reply: the limit-0
    // probe never crossed.
    assert_eq!((echo("128"), echo("129")), (1, 1), "{lines:?}");
    assert!(
        lines.iter().any(|l| l == "fd00:10::2,fd00:100::10;2,3;128"),
        "{lines:?}"
    );
    let counters = stdout(path.ns1.exec(&[XTUN, "-j", "stats"]).unwrap());
    assert!(
        counters.contains("\"tx_encap_limit_exceeded\":1"),
        "{counters}"
    );
}

/// The data plane's counter `name` on interface `dev` in `ns`.
fn if_counter(ns: &Netns, dev: &str, name: &str) -> u64 {
    let v = xtun_json(ns, &["stats"]);
    v.as_array()
        .and_then(|rows| rows.iter().find(|r| r["ifname"] == dev))
        .and_then(|r| r["counters"][name].as_u64())
        .unwrap_or(0)
}

/// Outer IPv6 fragments, as a kernel's ip6 tunnel or a router's
/// fragmentation leaves them (scapy's `fragment6` in the router: an ip6gre
/// packet from ns1 to ns2, encapsulation limit and key 7, carrying a
/// 1,200-byte echo request, in 400-byte pieces): put back together before
/// decapsulation, in any order, a duplicate dropped, with `--decap tc`
/// and `xdp` alike; the echo is answered.
fn ipv6_outer_fragments(tag: &str, decap: &str) {
    let path = V6Path::new(tag);
    path.add_tunnels("ip6gre", &["key", "7"]);
    path.ns2
        .exec(&[XTUN, "attach", "v2", "--decap", decap])
        .unwrap();
    let delivered = || {
        let out = stdout(
            path.ns2
                .exec(&["cat", "/sys/class/net/tun2/statistics/rx_packets"])
                .unwrap(),
        );
        out.trim().parse::<u64>().unwrap()
    };
    let before = delivered();
    let script = r#"
from scapy.all import *
inner = IP(src="10.10.100.10", dst="10.10.200.10")/ICMP(id=0x4243, seq=1)/Raw(b"x" * 1200)
tel = [HBHOptUnknown(otype=4, optdata=b"\x04"), PadN(optdata=b"\x00")]
outer = (IPv6(src="fd00:10::2", dst="fd00:20::2")/IPv6ExtHdrFragment(id=0x1234)
         /IPv6ExtHdrDestOpt(autopad=0, options=tel)/GRE(key_present=1, key=7, proto=0x0800)/inner)
f = fragment6(outer, 400)
assert len(f) == 4, len(f)
for p in [f[3], f[1], f[0], f[1], f[2]]:
    sendp(Ether(dst=getmacbyip6("fd00:20::2"))/p, iface="r2", verbose=0)
"#;
    python(&path.router, script);
    assert!(
        eventually(|| delivered() == before + 1),
        "{decap}: not delivered"
    );
    assert_eq!(if_counter(&path.ns2, "v2", "rx_reassembled"), 1, "{decap}");
    assert_eq!(
        if_counter(&path.ns2, "v2", "rx_fragments_queued"),
        3,
        "{decap}"
    );
    assert_eq!(
        if_counter(&path.ns2, "v2", "rx_fragment_duplicates"),
        1,
        "{decap}"
    );
    // And the tunnel still carries ordinary traffic.
    let out = ping(&path.ns1, "10.10.200.10", 2);
    assert!(out.contains("2 received"), "{decap}: {out}");
}

#[test]
fn ipv6_outer_fragments_are_reassembled_in_tc() {
    ipv6_outer_fragments("f6tc", "tc");
}

#[test]
fn ipv6_outer_fragments_are_reassembled_after_xdp() {
    ipv6_outer_fragments("f6xd", "xdp");
}
