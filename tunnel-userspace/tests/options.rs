//! Golden packets for the options of issue 3 through BPF_PROG_TEST_RUN:
//! GRE checksums and sequence numbers, multipoint neighbours and ISATAP.
//! Checksums are checked with etherparse's one's complement sum, not ours.
//! Needs root (CAP_BPF, CAP_NET_ADMIN).

mod common;

use std::net::Ipv4Addr;

use common::*;
use etherparse::{checksum::Sum16BitWords, PacketBuilder, SlicedPacket, TransportSlice};
use tunnel_common::stats::*;
use tunnel_userspace::{config::Prefix, dataplane::PrlEdit};

/// Offset of the GRE header in an encapsulated test frame.
const GRE_OFF: usize = 14 + 20;
/// BPF_PROG_TEST_RUN runs on the loopback device, ifindex 1.
const LO: u32 = 1;

fn with_eth(ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut f = eth(ether_type);
    f.extend_from_slice(inner);
    f
}

fn sum_is_valid(bytes: &[u8]) -> bool {
    Sum16BitWords::new().add_slice(bytes).ones_complement() == 0
}

/// A GRE header with the C bit (and `extra` key/seq words) whose checksum
/// covers `inner`, computed by etherparse.
fn gre_with_csum(flags: u16, extra: &[u8], inner: &[u8]) -> Vec<u8> {
    let mut gre = (flags | 0x8000).to_be_bytes().to_vec();
    gre.extend([0x08, 0x00, 0, 0, 0, 0]);
    gre.extend_from_slice(extra);
    let mut all = gre.clone();
    all.extend_from_slice(inner);
    let check = Sum16BitWords::new().add_slice(&all).ones_complement();
    gre[4..6].copy_from_slice(&check.to_ne_bytes());
    gre
}

fn tcp_packet() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4([10, 10, 100, 10], [10, 10, 200, 10], 64)
        .tcp(40000, 5201, 1, 65535)
        .write(&mut out, &[0x5a; 301])
        .unwrap();
    out
}

fn udp_without_checksum() -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4([10, 10, 100, 10], [10, 10, 200, 10], 64)
        .udp(5000, 6000)
        .write(&mut out, &[0x11; 77])
        .unwrap();
    out[20 + 6..20 + 8].copy_from_slice(&[0, 0]);
    out
}

#[test]
fn ocsum_checksums_every_inner_kind_as_a_peer_verifies_it() {
    let mut h = Harness::new();
    h.add("c mode gre remote 10.10.20.2 local 10.10.10.2 csum", LO);
    let tcp = tcp_packet();
    // Local TCP leaves the stack with its checksum to be filled in by the
    // NIC: the field holds the folded pseudo-header sum (not complemented).
    let mut partial = tcp.clone();
    let pseudo = Sum16BitWords::new()
        .add_slice(&tcp[12..20])
        .add_2bytes([0, 6])
        .add_2bytes(((tcp.len() - 20) as u16).to_be_bytes())
        .ones_complement();
    partial[20 + 16..20 + 18].copy_from_slice(&(!pseudo).to_ne_bytes());
    let cases = [
        ("icmp", inner_packet(0)),
        ("tcp", tcp.clone()),
        (
            "udp without checksum (summed byte by byte)",
            udp_without_checksum(),
        ),
        ("tcp with checksum offload", partial),
    ];
    for (what, inner) in cases {
        let (verdict, out) = h.tc(&with_eth(0x0800, &inner));
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        assert_eq!(out.len(), GRE_OFF + 8 + inner.len(), "{what}");
        assert_eq!(&out[GRE_OFF..GRE_OFF + 4], &[0x80, 0, 0x08, 0], "{what}");
        assert_eq!(&out[GRE_OFF + 6..GRE_OFF + 8], &[0, 0], "{what}: reserved1");
        // What the peer sees once the NIC has filled in the TCP checksum.
        let mut on_wire = out[GRE_OFF..].to_vec();
        on_wire[8 + 36..8 + 38].copy_from_slice(if what.contains("offload") {
            &tcp[36..38]
        } else {
            &inner[36..38]
        });
        assert!(sum_is_valid(&on_wire), "{what}: GRE checksum");
        assert_eq!(&on_wire[8..], &tcp_or(&inner, &tcp, what)[..], "{what}");
    }
}

fn tcp_or(inner: &[u8], tcp: &[u8], what: &str) -> Vec<u8> {
    if what.contains("offload") {
        tcp.to_vec()
    } else {
        inner.to_vec()
    }
}

#[test]
fn oseq_numbers_packets_from_zero_after_key_and_checksum() {
    let mut h = Harness::new();
    h.add(
        "s mode gre remote 10.10.20.2 local 10.10.10.2 key 9 csum seq",
        LO,
    );
    let inner = inner_packet(0);
    for n in 0u32..3 {
        let (verdict, out) = h.tc(&with_eth(0x0800, &inner));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let gre = &out[GRE_OFF..GRE_OFF + 16];
        assert_eq!(&gre[..4], &[0xb0, 0, 0x08, 0]);
        assert_eq!(&gre[8..12], &9u32.to_be_bytes(), "key after the checksum");
        assert_eq!(&gre[12..16], &n.to_be_bytes(), "sequence number");
        assert!(sum_is_valid(&out[GRE_OFF..]));
    }
    let seq = h.dp.sequence(LO).unwrap();
    assert_eq!(seq.o_seq, 3);
}

#[test]
fn icsum_accepts_good_checksums_and_drops_bad_or_missing_ones() {
    let mut h = Harness::new();
    h.add("c mode gre remote 10.10.10.2 local 10.10.20.2 csum", 61);
    let inner = inner_packet(0);
    let good = gre_with_csum(0, &[], &inner);
    let (verdict, out) = h.xdp(&frame(47, &good, &inner, 0));
    assert_eq!(
        (verdict, out),
        (XDP_PASS, decapsulated_as(h.tag(61), 0x0800, &inner))
    );
    let (verdict, _) = h.tc(&frame(47, &good, &inner, 0));
    assert_eq!(verdict, TC_ACT_REDIRECT, "tc decap");

    let mut corrupt_inner = inner.clone();
    corrupt_inner[30] ^= 0x01;
    let mut bad_field = good.clone();
    bad_field[5] ^= 0xff;
    let cases = [
        ("payload changed", frame(47, &good, &corrupt_inner, 0)),
        ("checksum changed", frame(47, &bad_field, &inner, 0)),
        ("no checksum", frame(47, &[0, 0, 8, 0], &inner, 0)),
    ];
    for (i, (what, input)) in cases.iter().enumerate() {
        let (verdict, out) = h.xdp(input);
        if i < 2 {
            // A checksum that does not add up may be pending offload, which
            // only tc can see: XDP hands the frame on whole, tagged.
            let mut deferred = checksum_in_tc_tag();
            deferred.extend_from_slice(input);
            assert_eq!((verdict, out), (XDP_PASS, deferred), "xdp: {what}");
        } else {
            assert_eq!(verdict, XDP_DROP, "xdp: {what}");
        }
        let (verdict, _) = h.tc(input);
        assert_eq!(verdict, TC_ACT_SHOT, "tc: {what}");
    }
    let stats = h.dp.tunnel_totals(61).unwrap();
    assert_eq!((stats.rx_packets, stats.rx_csum_errors), (2, 4));
    assert_eq!(h.dp.counter_totals().unwrap()[RX_BAD_GRE_CSUM as usize], 4);

    // A checksum the tunnel did not ask for is dropped too, as the kernel does.
    h.add("p mode gre remote 10.10.10.2 local 10.10.20.9", 62);
    let mut to_plain = frame(47, &good, &inner, 0);
    to_plain[14 + 16..14 + 20].copy_from_slice(&[10, 10, 20, 9]);
    fix_outer_checksum(&mut to_plain);
    assert_eq!(h.xdp(&to_plain).0, XDP_DROP);
    assert_eq!(h.dp.tunnel_totals(62).unwrap().rx_csum_errors, 1);
}

#[test]
fn iseq_drops_missing_and_older_sequence_numbers() {
    let mut h = Harness::new();
    h.add("s mode gre remote 10.10.10.2 local 10.10.20.2 seq", 71);
    let inner = inner_packet(0);
    let with_seq = |n: u32| {
        let mut gre = vec![0x10, 0, 0x08, 0];
        gre.extend(n.to_be_bytes());
        frame(47, &gre, &inner, 0)
    };
    let expect = [
        (with_seq(5), XDP_PASS),
        (with_seq(6), XDP_PASS),
        (with_seq(4), XDP_DROP),
        (with_seq(6), XDP_DROP),
        (frame(47, &[0, 0, 8, 0], &inner, 0), XDP_DROP),
        (with_seq(100), XDP_PASS),
        (with_seq(7), XDP_DROP),
    ];
    for (i, (input, verdict)) in expect.iter().enumerate() {
        assert_eq!(h.xdp(input).0, *verdict, "packet {i}");
    }
    let stats = h.dp.tunnel_totals(71).unwrap();
    assert_eq!((stats.rx_packets, stats.rx_out_of_seq), (3, 4));
    assert_eq!(h.dp.sequence(71).unwrap().i_seq, 101);
    assert_eq!(h.dp.counter_totals().unwrap()[RX_OUT_OF_SEQ as usize], 4);
}

fn add_neigh(h: &mut Harness, ifindex: u32, prefix: [u8; 4], len: u32, remote: [u8; 4]) {
    let prefix = Prefix {
        addr: Ipv4Addr::from(prefix).into(),
        len: len as u8,
    };
    h.dp.add_neighbour(ifindex, &prefix, Ipv4Addr::from(remote))
        .unwrap();
}

#[test]
fn multipoint_picks_the_longest_matching_neighbour_and_drops_the_rest() {
    let mut h = Harness::new();
    h.add("m mode gre remote any local 10.10.10.2 key 3 dev lo", LO);
    add_neigh(&mut h, LO, [10, 20, 0, 0], 16, [192, 0, 2, 20]);
    add_neigh(&mut h, LO, [10, 20, 5, 0], 24, [192, 0, 2, 25]);
    add_neigh(&mut h, LO, [10, 30, 0, 0], 16, [192, 0, 2, 30]);
    // Another tunnel's entry for the same prefix must not be used.
    add_neigh(&mut h, 99, [10, 40, 0, 0], 16, [192, 0, 2, 99]);
    let to = |dst: [u8; 4]| {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 10, 100, 10], dst, 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut out, &[0; 8])
            .unwrap();
        with_eth(0x0800, &out)
    };
    for (dst, remote) in [
        ([10, 20, 1, 1], [192, 0, 2, 20]),
        ([10, 20, 5, 9], [192, 0, 2, 25]),
        ([10, 30, 255, 1], [192, 0, 2, 30]),
    ] {
        let (verdict, out) = h.tc(&to(dst));
        assert_eq!(verdict, TC_ACT_REDIRECT, "{dst:?}");
        let sliced = SlicedPacket::from_ethernet(&out).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            panic!("no IPv4")
        };
        assert_eq!(ip.header().destination(), remote, "{dst:?}");
        assert_eq!(ip.header().source(), [10, 10, 10, 2]);
    }
    for dst in [[10, 40, 0, 1], [10, 21, 0, 1]] {
        let (verdict, _) = h.tc(&to(dst));
        assert_eq!(verdict, TC_ACT_SHOT, "{dst:?} has no neighbour");
    }
    // lo has no per-interface counters here: the shared slots count.
    assert_eq!(h.dp.counter_totals().unwrap()[TX_NO_NEIGH as usize], 2);
    let stats = h.dp.tunnel_totals(LO).unwrap();
    assert_eq!((stats.tx_packets, stats.tx_errors), (3, 2));

    // Any remote may send to a multipoint tunnel (as the kernel's NBMA GRE).
    let inner = inner_packet(0);
    let mut input = frame(47, &[0x20, 0, 8, 0, 0, 0, 0, 3], &inner, 0);
    input[14 + 12..14 + 20].copy_from_slice(&[192, 0, 2, 77, 10, 10, 10, 2]);
    fix_outer_checksum(&mut input);
    let (verdict, out) = h.xdp(&input);
    assert_eq!(
        (verdict, out),
        (XDP_PASS, decapsulated_as(h.tag(LO), 0x0800, &inner))
    );
}

fn icmpv6(src: [u8; 16], dst: [u8; 16]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(src, dst, 64)
        .icmpv6_echo_request(1, 1)
        .write(&mut out, &[0; 8])
        .unwrap();
    out
}

fn isatap_addr(v4: [u8; 4]) -> [u8; 16] {
    let mut a = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0x5e, 0xfe, 0, 0, 0, 0];
    a[12..].copy_from_slice(&v4);
    a
}

#[test]
fn isatap_takes_remotes_from_addresses_and_the_router_list() {
    let mut h = Harness::new();
    h.add("is0 mode isatap local 10.10.20.2 dev lo", LO);
    let router = Ipv4Addr::new(10, 10, 10, 1);
    h.dp.edit_prl(LO, &[PrlEdit::Default(router)]).unwrap();

    let me = isatap_addr([10, 10, 20, 2]);
    let outer_dst = |out: &[u8]| -> [u8; 4] { out[14 + 16..14 + 20].try_into().unwrap() };
    // An ISATAP destination: its embedded IPv4 address.
    let (verdict, out) = h.tc(&with_eth(0x86dd, &icmpv6(me, isatap_addr([10, 10, 10, 2]))));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[14 + 9], 41);
    assert_eq!(outer_dst(&out), [10, 10, 10, 2]);
    // Anything else: the default router.
    let mut global = [0u8; 16];
    global[..2].copy_from_slice(&[0xfd, 0x00]);
    global[15] = 1;
    let (verdict, out) = h.tc(&with_eth(0x86dd, &icmpv6(me, global)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(outer_dst(&out), [10, 10, 10, 1]);
    // IPv4 is not carried.
    assert_eq!(h.tc(&with_eth(0x0800, &inner_packet(0))).0, TC_ACT_SHOT);

    // Receive: the inner source must embed the outer one, unless the outer
    // source is a listed router.
    let from = |outer_src: [u8; 4], inner_src: [u8; 16]| {
        let inner = icmpv6(inner_src, me);
        let mut f = frame(41, &[], &inner, 0);
        f[14 + 12..14 + 16].copy_from_slice(&outer_src);
        fix_outer_checksum(&mut f);
        (f, inner)
    };
    let (ok, inner) = from([10, 10, 10, 2], isatap_addr([10, 10, 10, 2]));
    assert_eq!(
        h.xdp(&ok),
        (XDP_PASS, decapsulated_as(h.tag(LO), 0x86dd, &inner))
    );
    let (from_router, _) = from([10, 10, 10, 1], global);
    assert_eq!(h.xdp(&from_router).0, XDP_PASS);
    let (spoofed, _) = from([10, 10, 10, 3], isatap_addr([10, 10, 10, 2]));
    assert_eq!(h.xdp(&spoofed).0, XDP_DROP);
    let (not_isatap, _) = from([10, 10, 10, 3], global);
    assert_eq!(h.xdp(&not_isatap).0, XDP_DROP);
    let stats = h.dp.tunnel_totals(LO).unwrap();
    assert_eq!((stats.rx_packets, stats.rx_errors), (2, 2));
}

#[test]
fn tcp_payload_survives_checksummed_gre_both_ways() {
    // Encapsulate with csum, then decapsulate the result: the same bytes.
    let mut tx = Harness::new();
    tx.add("c mode gre remote 10.10.20.2 local 10.10.10.2 csum", LO);
    let tcp = tcp_packet();
    let (_, out) = tx.tc(&with_eth(0x0800, &tcp));
    let mut rx = Harness::new();
    rx.add("c mode gre remote 10.10.10.2 local 10.10.20.2 csum", 81);
    let mut input = out.clone();
    input[..14].copy_from_slice(&eth(0x0800));
    input[14 + 12..14 + 20].copy_from_slice(&[10, 10, 10, 2, 10, 10, 20, 2]);
    fix_outer_checksum(&mut input);
    let (verdict, decapped) = rx.xdp(&input);
    assert_eq!(verdict, XDP_PASS);
    let frame = &decapped[XDP_META_LEN..];
    let sliced = SlicedPacket::from_ethernet(frame).unwrap();
    assert!(matches!(sliced.transport, Some(TransportSlice::Tcp(_))));
    assert_eq!(&frame[14..], &tcp[..]);
}

#[test]
fn one_multipoint_tunnel_holds_a_hundred_thousand_remotes() {
    let mut h = Harness::new();
    h.add("m mode gre remote any local 10.10.10.2 dev lo", LO);
    // 100,000 /32 sites in 11.0.0.0/8, each its own remote in 172.16/12.
    const SITES: u32 = 100_000;
    for i in 0..SITES {
        let site = 0x0b00_0000 + i;
        let remote = 0xac10_0000 + i;
        add_neigh(&mut h, LO, site.to_be_bytes(), 32, remote.to_be_bytes());
    }
    let to = |dst: u32| {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 10, 100, 10], dst.to_be_bytes(), 64)
            .icmpv4_echo_request(1, 1)
            .write(&mut out, &[0; 8])
            .unwrap();
        with_eth(0x0800, &out)
    };
    for i in [0, 1, 54_321, SITES - 1] {
        let (verdict, out) = h.tc(&to(0x0b00_0000 + i));
        assert_eq!(verdict, TC_ACT_REDIRECT, "site {i}");
        assert_eq!(&out[30..34], &(0xac10_0000 + i).to_be_bytes(), "site {i}");
    }
    assert_eq!(
        h.tc(&to(0x0b00_0000 + SITES)).0,
        TC_ACT_SHOT,
        "one past the last"
    );
}
