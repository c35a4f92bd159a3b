//! Golden packets through BPF_PROG_TEST_RUN: the real programs, loaded into
//! the kernel, fed exact bytes; the verdict and the output bytes are checked.
//! Needs root (CAP_BPF, CAP_NET_ADMIN).

mod common;

use common::*;
use etherparse::{IpNumber, Ipv4Header, NetSlice, PacketBuilder, SlicedPacket};
use tunnel_common::maps::IF_INDEXED_MAX;
use tunnel_userspace::bpf_sys::prog_test_run;

const SEED_GRE: &str = "tun2 mode gre remote 10.10.10.2 local 10.10.20.2";

#[test]
fn xdp_decapsulates_plain_gre() {
    let mut h = Harness::new();
    h.add(SEED_GRE, TUN_IFINDEX);
    let inner = inner_packet(0);
    let (verdict, out) = h.xdp(&frame(47, &[0x00, 0x00, 0x08, 0x00], &inner, 0));
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(out, decapsulated_as(h.tag(TUN_IFINDEX), 0x0800, &inner));
    let stats = h.dp.tunnel_totals(TUN_IFINDEX).unwrap();
    assert_eq!((stats.rx_packets, stats.rx_bytes), (1, inner.len() as u64));
}

/// A data plane with GRE key 42 on `keyed` and IPIP on `ipip`, both from
/// 10.10.10.2 to 10.10.20.2.
fn keyed_gre_and_ipip(keyed: u32, ipip: u32) -> Harness {
    let mut h = Harness::new();
    h.add(
        "k mode gre remote 10.10.10.2 local 10.10.20.2 key 42",
        keyed,
    );
    h.add("i mode ipip remote 10.10.10.2 local 10.10.20.2", ipip);
    h
}

#[test]
fn xdp_decapsulates_keyed_gre_and_ipip() {
    let h = keyed_gre_and_ipip(11, 12);
    let inner = inner_packet(0);
    let gre_key = [0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42];
    let (verdict, out) = h.xdp(&frame(47, &gre_key, &inner, 0));
    assert_eq!(
        (verdict, &out),
        (XDP_PASS, &decapsulated_as(h.tag(11), 0x0800, &inner))
    );
    let (verdict, out) = h.xdp(&frame(4, &[], &inner, 0));
    assert_eq!(
        (verdict, &out),
        (XDP_PASS, &decapsulated_as(h.tag(12), 0x0800, &inner))
    );
    assert_eq!(h.dp.tunnel_totals(11).unwrap().rx_packets, 1);
    assert_eq!(h.dp.tunnel_totals(12).unwrap().rx_packets, 1);
}

#[test]
fn xdp_passes_malformed_and_unmatched_packets_untouched() {
    let mut h = Harness::new();
    h.add(SEED_GRE, 21);
    h.add("k mode gre remote 10.10.10.2 local 10.10.20.2 key 42", 22);
    let inner = inner_packet(0);
    let truncated = {
        let mut f = frame(47, &[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42], &inner, 0);
        f.truncate(14 + 20 + 6);
        f
    };
    let mut unknown_source = frame(47, &[0, 0, 8, 0], &inner, 0);
    unknown_source[14 + 12..14 + 16].copy_from_slice(&[10, 9, 9, 9]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("version 1", frame(47, &[0x00, 0x01, 0x08, 0x00], &inner, 0)),
        (
            "routing bit",
            frame(47, &[0x40, 0x00, 0x08, 0x00], &inner, 0),
        ),
        (
            "strict source route",
            frame(47, &[0x08, 0x00, 0x08, 0x00], &inner, 0),
        ),
        (
            "wrong key",
            frame(47, &[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 43], &inner, 0),
        ),
        (
            "key on a keyless match only",
            frame(47, &[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 7], &inner, 0),
        ),
        ("truncated key", truncated),
        ("unknown source", unknown_source),
        (
            "transparent ethernet bridging",
            frame(47, &[0x00, 0x00, 0x65, 0x58], &inner, 0),
        ),
        ("ipip without an ipip tunnel", frame(4, &[], &inner, 0)),
        ("udp", frame(17, &[0; 8], &inner, 0)),
        ("arp", {
            let mut f = eth(0x0806);
            f.extend([0u8; 28]);
            f
        }),
    ];
    for (what, input) in cases {
        let (verdict, out) = h.xdp(&input);
        assert_eq!(verdict, XDP_PASS, "{what}");
        assert_eq!(out, input, "{what}: must pass untouched");
    }
    for ifindex in [21, 22] {
        assert_eq!(h.dp.tunnel_totals(ifindex).unwrap().rx_packets, 0);
    }
}

#[test]
fn outer_checksum_and_options_are_handled_as_the_kernel_does() {
    let mut h = Harness::new();
    h.add(SEED_GRE, 51);
    let inner = inner_packet(0);
    // A wrong outer header checksum: the kernel drops such a packet, so it
    // is never decapsulated; it passes untouched to the kernel.
    let mut bad = frame(47, &[0, 0, 8, 0], &inner, 0);
    bad[14 + 10] ^= 0x5a;
    let (verdict, out) = h.xdp(&bad);
    assert_eq!((verdict, &out), (XDP_PASS, &bad));
    let (verdict, out) = h.tc(&bad);
    assert_eq!((verdict, &out), (TC_ACT_UNSPEC, &bad));
    assert_eq!(h.dp.tunnel_totals(51).unwrap().rx_packets, 0);

    // Outer IPv4 options (here four NOPs) are skipped like the kernel does.
    let gre = [0u8, 0, 8, 0];
    let mut hdr = Ipv4Header::new(
        (gre.len() + inner.len()) as u16,
        63,
        IpNumber(47),
        [10, 10, 10, 2],
        [10, 10, 20, 2],
    )
    .unwrap();
    hdr.options = etherparse::Ipv4Options::try_from(&[1u8, 1, 1, 1][..]).unwrap();
    hdr.set_payload_len(gre.len() + inner.len()).unwrap();
    hdr.header_checksum = hdr.calc_header_checksum();
    let mut with_options = eth(0x0800);
    with_options.extend(hdr.to_bytes());
    with_options.extend_from_slice(&gre);
    with_options.extend_from_slice(&inner);
    let (verdict, out) = h.xdp(&with_options);
    assert_eq!(
        (verdict, &out),
        (XDP_PASS, &decapsulated_as(h.tag(51), 0x0800, &inner))
    );
}

#[test]
fn truncation_at_every_byte_offset_is_never_decapsulated() {
    let mut h = Harness::new();
    h.add("k mode gre remote 10.10.10.2 local 10.10.20.2 key 42", 61);
    let full = frame(47, &[0x20, 0, 8, 0, 0, 0, 0, 42], &inner_packet(0), 0);
    for len in 14..full.len() {
        let cut = &full[..len];
        let (verdict, out) = h.xdp(cut);
        assert_eq!(
            (verdict, out.as_slice()),
            (XDP_PASS, cut),
            "XDP, {len} bytes"
        );
        // BPF_PROG_TEST_RUN builds no skb shorter than Ethernet + IPv4.
        if len >= 14 + 20 {
            let (verdict, out) = h.tc(cut);
            assert_eq!(
                (verdict, out.as_slice()),
                (TC_ACT_UNSPEC, cut),
                "tc, {len} bytes"
            );
        }
    }
    assert_eq!(h.dp.tunnel_totals(61).unwrap().rx_packets, 0);
    let (verdict, _) = h.xdp(&full);
    assert_eq!(verdict, XDP_PASS);
    assert_eq!(h.dp.tunnel_totals(61).unwrap().rx_packets, 1);
}

#[test]
fn xdp_applies_rfc6040_ecn_on_decapsulation() {
    let mut h = Harness::new();
    h.add(SEED_GRE, 31);
    // Outer CE over ECT(0): the inner packet becomes CE, checksum fixed.
    let (verdict, out) = h.xdp(&frame(47, &[0, 0, 8, 0], &inner_packet(2), 3));
    assert_eq!(verdict, XDP_PASS);
    let inner = Ipv4Header::from_slice(&out[XDP_META_LEN + 14..]).unwrap().0;
    assert_eq!(inner.ecn.value(), 3);
    assert_eq!(inner.header_checksum, inner.calc_header_checksum());
    // Outer CE over not-ECT: dropped, as RFC 6040 and the kernel do.
    let (verdict, _) = h.xdp(&frame(47, &[0, 0, 8, 0], &inner_packet(0), 3));
    assert_eq!(verdict, XDP_DROP);
    assert_eq!(h.dp.tunnel_totals(31).unwrap().rx_errors, 1);
}

#[test]
fn tc_decapsulates_where_the_underlay_has_no_xdp() {
    let h = keyed_gre_and_ipip(41, 42);
    let inner = inner_packet(0);
    let mut expected = eth(0x0800);
    expected.extend_from_slice(&inner);
    for (input, tunnel) in [
        (
            frame(47, &[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 42], &inner, 0),
            41,
        ),
        (frame(4, &[], &inner, 0), 42),
    ] {
        let (verdict, out) = h.tc(&input);
        assert_eq!(verdict, TC_ACT_REDIRECT, "delivered on the tunnel");
        assert_eq!(out, expected);
        assert_eq!(h.dp.tunnel_totals(tunnel).unwrap().rx_packets, 1);
    }
    // Malformed or unmatched: untouched, and the next filter decides.
    for input in [
        frame(47, &[0x00, 0x01, 0x08, 0x00], &inner, 0),
        frame(47, &[0x20, 0x00, 0x08, 0x00, 0, 0, 0, 43], &inner, 0),
        frame(47, &[0x00, 0x00, 0x08, 0x00], &inner, 0),
    ] {
        let (verdict, out) = h.tc(&input);
        assert_eq!((verdict, out), (TC_ACT_UNSPEC, input));
    }
}

/// Runs the TC program as the egress of a tunnel device and decodes the
/// result with etherparse.
fn encap(args: &str, inner: &[u8]) -> (u32, Vec<u8>) {
    let mut h = Harness::new();
    // BPF_PROG_TEST_RUN runs on the loopback device, ifindex 1.
    h.add(args, 1);
    let mut input = eth(0x0800);
    input.extend_from_slice(inner);
    h.tc(&input)
}

fn expected_outer(proto: u8, payload_len: usize, ttl: u8, tos: u8) -> Ipv4Header {
    let mut hdr = Ipv4Header::new(
        payload_len as u16,
        ttl,
        IpNumber(proto),
        [10, 10, 10, 2],
        [10, 10, 20, 2],
    )
    .unwrap();
    hdr.dont_fragment = true;
    hdr.dscp = etherparse::Ipv4Dscp::try_new(tos >> 2).unwrap();
    hdr.ecn = etherparse::Ipv4Ecn::try_new(tos & 3).unwrap();
    hdr.header_checksum = hdr.calc_header_checksum();
    hdr
}

#[test]
fn tc_encapsulates_gre_gre_with_key_and_ipip() {
    let inner = inner_packet(0);
    let cases: [(&str, u8, Vec<u8>); 4] = [
        (
            "tun1 mode gre remote 10.10.20.2 local 10.10.10.2",
            47,
            vec![0, 0, 8, 0],
        ),
        (
            "tun1 mode gre remote 10.10.20.2 local 10.10.10.2 key 42",
            47,
            vec![0x20, 0, 8, 0, 0, 0, 0, 42],
        ),
        (
            "tun1 mode gre remote 10.10.20.2 local 10.10.10.2 ikey 7 okey 1.2.3.4",
            47,
            vec![0x20, 0, 8, 0, 1, 2, 3, 4],
        ),
        (
            "tun1 mode ipip remote 10.10.20.2 local 10.10.10.2",
            4,
            vec![],
        ),
    ];
    for (args, proto, tunnel) in cases {
        let (verdict, out) = encap(args, &inner);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{args}");
        let outer = expected_outer(proto, tunnel.len() + inner.len(), 64, 0);
        // A placeholder destination; the source stays the inner frame's
        // (bpf_redirect_neigh writes both addresses on the way out).
        let mut expected = vec![0x02, 0, 0, 0, 0, 0x01];
        expected.extend_from_slice(&eth(0x0800)[6..12]);
        expected.extend_from_slice(&[0x08, 0x00]);
        expected.extend(outer.to_bytes());
        expected.extend_from_slice(&tunnel);
        expected.extend_from_slice(&inner);
        assert_eq!(out, expected, "{args}");

        // And a packet library agrees on every field.
        let sliced = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("no IPv4")
        };
        let h = ip.header().to_header();
        assert_eq!(h.source, [10, 10, 10, 2]);
        assert_eq!(h.destination, [10, 10, 20, 2]);
        assert_eq!(h.protocol, IpNumber(proto));
        assert_eq!(h.header_checksum, h.calc_header_checksum());
        assert!(h.dont_fragment);
    }
}

/// Tunnels on interfaces below `IF_INDEXED_MAX` are found in an array
/// indexed by ifindex, the rest in the hash. A device with a high ifindex
/// in a namespace of the test's own lets BPF_PROG_TEST_RUN take the second
/// path (it runs the skb on the device the context names, looked up in the
/// caller's namespace).
#[test]
fn encap_finds_tunnels_on_either_side_of_the_indexed_range() {
    use std::os::fd::AsRawFd as _;
    let ns =
        tunnel_userspace::testbed::Netns::new(tunnel_userspace::testbed::unique_prefix("hiidx"))
            .unwrap();
    let high = IF_INDEXED_MAX + 977;
    ns.exec(&[
        "ip",
        "link",
        "add",
        "name",
        "hi0",
        "index",
        &high.to_string(),
        "type",
        "veth",
        "peer",
        "name",
        "hi1",
    ])
    .unwrap();
    let mut h = Harness::new();
    h.add("hi mode gre remote 10.10.20.2 local 10.10.10.2 key 9", high);
    h.add("lo mode ipip remote 10.10.20.2 local 10.10.10.2", 1);
    let mut input = eth(0x0800);
    input.extend_from_slice(&inner_packet(0));
    let tc_fd = h.dp.tc_fd().as_raw_fd();
    let run_on = |ifindex: u32| {
        // struct __sk_buff up to and including `ifindex` (offset 40).
        let mut ctx = [0u8; 44];
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let input = &input;
        let path = format!("/run/netns/{}", ns.name);
        std::thread::scope(|s| {
            s.spawn(move || {
                let netns = std::fs::File::open(path).unwrap();
                // SAFETY: joins a namespace on this thread only.
                assert_eq!(
                    unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) },
                    0
                );
                prog_test_run(tc_fd, input, Some(&ctx), 1).unwrap()
            })
            .join()
            .unwrap()
        })
    };
    let high_run = run_on(high);
    assert_eq!(high_run.retval, TC_ACT_REDIRECT);
    let sliced = SlicedPacket::from_ethernet(&high_run.data).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("no IPv4")
    };
    assert_eq!(ip.header().protocol(), IpNumber(47));
    // GRE with the key bit and key 9, then the inner packet.
    assert_eq!(&ip.payload().payload[..8], &[0x20, 0, 8, 0, 0, 0, 0, 9]);
    let lo_run = run_on(1);
    assert_eq!(lo_run.retval, TC_ACT_REDIRECT);
    let sliced = SlicedPacket::from_ethernet(&lo_run.data).unwrap();
    let Some(NetSlice::Ipv4(ip)) = sliced.net else {
        panic!("no IPv4")
    };
    assert_eq!(ip.header().protocol(), IpNumber(4));

    // Removed tunnels are gone from both: the device's traffic passes
    // untouched.
    h.remove(high);
    h.remove(1);
    for ifindex in [high, 1] {
        let run = run_on(ifindex);
        assert_eq!(run.retval, TC_ACT_UNSPEC, "ifindex {ifindex}");
        assert_eq!(run.data, input, "ifindex {ifindex}");
    }
}

#[test]
fn tc_ttl_tos_and_ecn_follow_the_kernel() {
    // Fixed TTL and TOS; inner ECT(0) is copied into the outer ECN field.
    let (verdict, out) = encap(
        "tun1 mode ipip remote 10.10.20.2 local 10.10.10.2 ttl 17 tos 0x10",
        &inner_packet(2),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let outer = Ipv4Header::from_slice(&out[14..]).unwrap().0;
    assert_eq!(
        (
            outer.time_to_live,
            outer.dscp.value() << 2,
            outer.ecn.value()
        ),
        (17, 0x10, 2)
    );
    assert_eq!(outer.header_checksum, outer.calc_header_checksum());

    // tos inherit copies the inner TOS; an inner CE becomes ECT(0) outside.
    let mut inner = inner_packet(3);
    let mut hdr = Ipv4Header::from_slice(&inner).unwrap().0;
    hdr.dscp = etherparse::Ipv4Dscp::try_new(0x28 >> 2).unwrap();
    // Not 64, the TTL every other test packet has.
    hdr.time_to_live = 37;
    hdr.header_checksum = hdr.calc_header_checksum();
    inner.splice(0..20, hdr.to_bytes());
    let (_, out) = encap(
        "tun1 mode gre remote 10.10.20.2 local 10.10.10.2 tos inherit",
        &inner,
    );
    let outer = Ipv4Header::from_slice(&out[14..]).unwrap().0;
    assert_eq!((outer.dscp.value() << 2, outer.ecn.value()), (0x28, 2));
    assert_eq!(outer.time_to_live, 37, "ttl inherit copies the inner TTL");

    // ttl inherit takes an inner IPv6 packet's hop limit.
    let mut inner6 = Vec::new();
    let fd00 = |last: u8| {
        let mut a = [0u8; 16];
        (a[0], a[15]) = (0xfd, last);
        a
    };
    PacketBuilder::ipv6(fd00(1), fd00(2), 45)
        .icmpv6_echo_request(7, 1)
        .write(&mut inner6, &[0xab; 16])
        .unwrap();
    let mut h = Harness::new();
    h.add("tun1 mode gre remote 10.10.20.2 local 10.10.10.2", 1);
    let mut input = eth(0x86dd);
    input.extend_from_slice(&inner6);
    let (verdict, out) = h.tc(&input);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let outer = Ipv4Header::from_slice(&out[14..]).unwrap().0;
    assert_eq!(outer.time_to_live, 45, "ttl inherit copies the hop limit");

    // nopmtudisc: the outer DF is the inner packet's, as the kernel's
    // ip_tunnel_xmit copies it.
    let nopmtudisc = "tun1 mode gre remote 10.10.20.2 local 10.10.10.2 nopmtudisc";
    let with_df = inner_packet(0);
    assert!(Ipv4Header::from_slice(&with_df).unwrap().0.dont_fragment);
    let (_, out) = encap(nopmtudisc, &with_df);
    let outer = Ipv4Header::from_slice(&out[14..]).unwrap().0;
    assert!(outer.dont_fragment, "the inner DF is copied");
    let mut without_df = with_df.clone();
    let mut hdr = Ipv4Header::from_slice(&without_df).unwrap().0;
    hdr.dont_fragment = false;
    hdr.header_checksum = hdr.calc_header_checksum();
    without_df.splice(0..20, hdr.to_bytes());
    let (_, out) = encap(nopmtudisc, &without_df);
    let outer = Ipv4Header::from_slice(&out[14..]).unwrap().0;
    assert!(!outer.dont_fragment, "no DF inside, none outside");
    assert_ne!(outer.identification, 0, "fragmentable packets carry an ID");
    assert_eq!(outer.header_checksum, outer.calc_header_checksum());
}

#[test]
fn tc_refuses_what_the_mode_cannot_carry_and_ignores_other_devices() {
    // An IPv6 packet on an ipip tunnel is dropped and counted.
    let v6 = {
        let builder = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64).udp(1, 2);
        let mut out = Vec::new();
        builder.write(&mut out, &[1, 2, 3]).unwrap();
        out
    };
    let (verdict, _) = encap("tun1 mode ipip remote 10.10.20.2 local 10.10.10.2", &v6);
    assert_eq!(verdict, 2, "TC_ACT_SHOT");

    // No tunnel on the device: not ours, the next filter decides.
    let h = Harness::new();
    let mut input = eth(0x0800);
    input.extend(inner_packet(0));
    let (verdict, out) = h.tc(&input);
    assert_eq!(verdict, TC_ACT_UNSPEC);
    assert_eq!(out, input);
}

#[test]
fn each_tunnel_counts_at_its_own_slot_and_a_freed_slot_starts_from_zero() {
    let mut h = Harness::new();
    let plain = h.add("p mode gre remote 10.10.10.2 local 10.10.20.2", 11);
    let keyed = h.add("k mode gre remote 10.10.10.2 local 10.10.20.2 key 42", 12);
    assert_ne!(plain.stats_slot, keyed.stats_slot);
    let inner = inner_packet(0);
    let plain_frame = frame(47, &[0, 0, 8, 0], &inner, 0);
    for _ in 0..3 {
        assert_eq!(h.xdp(&plain_frame).0, XDP_PASS);
    }
    assert_eq!(h.dp.tunnel_totals(11).unwrap().rx_packets, 3);
    assert_eq!(h.dp.tunnel_totals(12).unwrap().rx_packets, 0);

    // The plain tunnel goes; a new one takes its slot, with nothing counted.
    h.remove(11);
    let next = h.add("n mode ipip remote 10.10.10.2 local 10.10.20.2", 13);
    assert_eq!(next.stats_slot, plain.stats_slot);
    assert_eq!(h.dp.tunnel_totals(13).unwrap().rx_packets, 0);
    assert_eq!(h.xdp(&frame(4, &[], &inner, 0)).0, XDP_PASS);
    assert_eq!(h.dp.tunnel_totals(13).unwrap().rx_packets, 1);
    assert_eq!(h.dp.tunnel_totals(12).unwrap().rx_packets, 0);
}
