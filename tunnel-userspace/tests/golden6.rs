//! Golden packets for tunnels over an IPv6 underlay (`xtun_tc6`) through
//! BPF_PROG_TEST_RUN: encapsulation for each mode and option, checked with
//! etherparse; decapsulation of what the kernel's ip6_gre/ip6_tunnel send;
//! and malformed outer headers and extension-header chains that must pass
//! untouched. Needs root.

mod common;

use std::net::Ipv6Addr;

use common::*;
use etherparse::{
    IpNumber, Ipv6Extensions, Ipv6Header, Ipv6RawExtHeader, NetSlice, PacketBuilder, SlicedPacket,
};
use tunnel_common::maps::*;

const LOCAL: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x10, 0, 0, 0, 0, 0, 2);
const REMOTE: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 2);

/// An ICMPv6 echo request fd00:100::10 -> fd00:200::10.
fn inner_packet6(tclass: u8) -> Vec<u8> {
    let src = Ipv6Addr::new(0xfd00, 0x100, 0, 0, 0, 0, 0, 0x10).octets();
    let dst = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 0x10).octets();
    let builder = PacketBuilder::ipv6(src, dst, 64).icmpv6_echo_request(7, 1);
    let mut out = Vec::new();
    builder.write(&mut out, &[0xcd; 56]).unwrap();
    out[0] = 0x60 | (tclass >> 4);
    out[1] = (out[1] & 0x0f) | (tclass << 4);
    out
}

/// The destination-options header the kernel's ip6 tunnels send: the
/// encapsulation limit `limit`, then PadN.
fn encap_limit_option(next: u8, limit: u8) -> Vec<u8> {
    vec![next, 0, 4, 1, limit, 1, 1, 0]
}

/// A frame as a kernel ip6 tunnel at `REMOTE` sends it to `LOCAL`:
/// Ethernet, IPv6 with `next`, `ext` (extension headers), `tunnel` (GRE
/// header or nothing), `inner`.
fn frame6(next: u8, ext: &[u8], tunnel: &[u8], inner: &[u8], tclass: u8) -> Vec<u8> {
    let payload = ext.len() + tunnel.len() + inner.len();
    let hdr = Ipv6Header {
        traffic_class: tclass,
        flow_label: etherparse::Ipv6FlowLabel::try_new(0x12345).unwrap(),
        payload_length: payload as u16,
        next_header: IpNumber(next),
        hop_limit: 63,
        source: REMOTE.octets(),
        destination: LOCAL.octets(),
    };
    let mut f = eth(0x86DD);
    f.extend(hdr.to_bytes());
    f.extend_from_slice(ext);
    f.extend_from_slice(tunnel);
    f.extend_from_slice(inner);
    f
}

fn with_eth(ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut f = eth(ether_type);
    f.extend_from_slice(inner);
    f
}

/// Encapsulates `inner` (EtherType `ether_type`) on a tunnel of `mode` on
/// the loopback device (where BPF_PROG_TEST_RUN runs), and returns the
/// verdict, the output and the data plane.
fn encap6(mode: u8, flags: u32, key: Option<u32>, ether_type: u16, inner: &[u8]) -> (u32, Vec<u8>) {
    let mut h = Harness::new();
    h.add6(1, mode, LOCAL, REMOTE, flags, key);
    h.tc6(&with_eth(ether_type, inner))
}

/// The outer IPv6 header and extension headers of `out`, decoded by
/// etherparse, and the bytes after them.
fn decode(out: &[u8]) -> (Ipv6Header, Ipv6Extensions, Vec<u8>) {
    assert_eq!(&out[12..14], &[0x86, 0xdd], "outer EtherType");
    let (hdr, rest) = Ipv6Header::from_slice(&out[14..]).unwrap();
    let (ext, _next, payload) = Ipv6Extensions::from_slice(hdr.next_header, rest).unwrap();
    (hdr, ext, payload.to_vec())
}

#[test]
fn ip6gre_encapsulates_both_families_with_the_encapsulation_limit() {
    for (ether_type, inner, proto) in [
        (0x0800u16, inner_packet(0), [0x08, 0x00]),
        (0x86DD, inner_packet6(0), [0x86, 0xdd]),
    ] {
        let (verdict, out) = encap6(MODE_IP6GRE, 0, None, ether_type, &inner);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (hdr, ext, payload) = decode(&out);
        assert_eq!(hdr.source, LOCAL.octets());
        assert_eq!(hdr.destination, REMOTE.octets());
        assert_eq!(hdr.hop_limit, 64);
        assert_eq!(hdr.traffic_class, 0);
        assert_eq!(hdr.next_header, IpNumber(60), "destination options first");
        assert_eq!(hdr.payload_length as usize, 8 + 4 + inner.len());
        let opts = ext.destination_options.expect("destination options");
        assert_eq!(opts.next_header, IpNumber(47));
        // Option 4 (tunnel encapsulation limit), length 1, value 4; PadN.
        assert_eq!(opts.payload(), &[4, 1, 4, 1, 1, 0]);
        assert_eq!(&payload[..4], &[0, 0, proto[0], proto[1]]);
        assert_eq!(&payload[4..], &inner[..]);
    }
}

#[test]
fn ip6ip6_ipip6_and_any_carry_what_their_mode_says() {
    let v4 = inner_packet(0);
    let v6 = inner_packet6(0);
    let cases = [
        (MODE_IP6IP6, 0x86DDu16, &v6, Some(41u8)),
        (MODE_IP6IP6, 0x0800, &v4, None),
        (MODE_IPIP6, 0x0800, &v4, Some(4)),
        (MODE_IPIP6, 0x86DD, &v6, None),
        (MODE_ANY6, 0x0800, &v4, Some(4)),
        (MODE_ANY6, 0x86DD, &v6, Some(41)),
    ];
    for (mode, ether_type, inner, proto) in cases {
        let input = with_eth(ether_type, inner);
        let (verdict, out) = encap6(mode, 0, None, ether_type, inner);
        let Some(proto) = proto else {
            assert_eq!(verdict, TC_ACT_SHOT, "mode {mode} refuses {ether_type:#x}");
            assert_eq!(out, input);
            continue;
        };
        assert_eq!(verdict, TC_ACT_REDIRECT, "mode {mode}");
        let (hdr, ext, payload) = decode(&out);
        assert_eq!(hdr.next_header, IpNumber(60));
        assert_eq!(
            ext.destination_options.unwrap().next_header,
            IpNumber(proto)
        );
        assert_eq!(&payload, inner);
        // And the whole packet parses, down to the inner ICMP.
        let sliced = SlicedPacket::from_ethernet(&out).unwrap();
        assert!(matches!(sliced.net, Some(NetSlice::Ipv6(_))));
    }
}

#[test]
fn encaplimit_none_key_csum_seq_hoplimit_tclass_and_flowlabel() {
    let inner = inner_packet(0x02); // ECT(0)
    let mut h = Harness::new();
    let flags =
        TUNNEL_F_IGN_ENCAP_LIMIT | TUNNEL_F_OCSUM | TUNNEL_F_ICSUM | TUNNEL_F_OSEQ | TUNNEL_F_ISEQ;
    h.add6(1, MODE_IP6GRE, LOCAL, REMOTE, flags, Some(5));
    let (verdict, out) = h.tc6(&with_eth(0x0800, &inner));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (hdr, ext, payload) = decode(&out);
    assert!(ext.destination_options.is_none(), "encaplimit none");
    assert_eq!(hdr.next_header, IpNumber(47));
    // ECN copied from the inner packet (RFC 6040), DSCP from tclass 0.
    assert_eq!(hdr.traffic_class, 0x02);
    // C, K and S; the sum over the GRE header and payload is zero.
    assert_eq!(&payload[..4], &[0xb0, 0x00, 0x08, 0x00]);
    assert_eq!(&payload[8..12], &5u32.to_be_bytes(), "key");
    assert_eq!(
        &payload[12..16],
        &0u32.to_be_bytes(),
        "first sequence number, as the kernel counts"
    );
    let mut sum: u32 = payload
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff, "GRE checksum");
    assert_eq!(&payload[16..], &inner[..]);

    // hoplimit 0 inherits; tclass inherit; a configured flow label.
    let mut h = Harness::new();
    let mut cfg = h.add6(1, MODE_IP6IP6, LOCAL, REMOTE, TUNNEL_F_TOS_INHERIT, None);
    cfg.ttl = 0;
    let cfg6 = Tunnel6Config {
        local: LOCAL.octets(),
        remote: REMOTE.octets(),
        flowlabel: 0x12345,
        encap_limit: 0,
        ..Default::default()
    };
    h.dp.change_tunnel6(1, cfg, cfg6).unwrap();
    let inner = inner_packet6(0xb8);
    let (verdict, out) = h.tc6(&with_eth(0x86DD, &inner));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (hdr, ext, _) = decode(&out);
    assert_eq!(hdr.hop_limit, 64, "inherited from the inner packet");
    assert_eq!(hdr.traffic_class, 0xb8);
    assert_eq!(hdr.flow_label.value(), 0x12345);
    assert_eq!(
        ext.destination_options.unwrap().payload(),
        &[4, 1, 0, 1, 1, 0]
    );
}

#[test]
fn decapsulates_what_a_kernel_ip6_tunnel_sends() {
    let mut h = Harness::new();
    h.add6(61, MODE_IP6GRE, LOCAL, REMOTE, 0, None);
    h.add6(62, MODE_IP6GRE, LOCAL, REMOTE, 0, Some(9));
    h.add6(63, MODE_ANY6, LOCAL, REMOTE, 0, None);
    let v4 = inner_packet(0);
    let v6 = inner_packet6(0);
    let cases: Vec<(Vec<u8>, u32, u16, &Vec<u8>)> = vec![
        (
            frame6(60, &encap_limit_option(47, 4), &[0, 0, 8, 0], &v4, 0),
            61,
            0x0800,
            &v4,
        ),
        (
            frame6(47, &[], &[0, 0, 0x86, 0xdd], &v6, 0),
            61,
            0x86DD,
            &v6,
        ),
        (
            frame6(
                60,
                &encap_limit_option(47, 4),
                &[0x20, 0, 8, 0, 0, 0, 0, 9],
                &v4,
                0,
            ),
            62,
            0x0800,
            &v4,
        ),
        (
            frame6(60, &encap_limit_option(4, 4), &[], &v4, 0),
            63,
            0x0800,
            &v4,
        ),
        (frame6(41, &[], &[], &v6, 0), 63, 0x86DD, &v6),
    ];
    for (i, (input, tunnel, ether_type, inner)) in cases.iter().enumerate() {
        let before = h.dp.tunnel_totals(*tunnel).unwrap().rx_packets;
        let (verdict, out) = h.tc6(input);
        assert_eq!(verdict, TC_ACT_REDIRECT, "case {i}");
        assert_eq!(out, with_eth(*ether_type, inner), "case {i}");
        let after = h.dp.tunnel_totals(*tunnel).unwrap().rx_packets;
        assert_eq!(after, before + 1, "case {i} counted on its tunnel");
    }
}

#[test]
fn ecn_ce_on_the_outer_header_marks_the_inner_or_drops_not_ect() {
    let mut h = Harness::new();
    h.add6(71, MODE_IP6IP6, LOCAL, REMOTE, 0, None);
    let ect = inner_packet6(0x02);
    let (verdict, out) = h.tc6(&frame6(41, &[], &[], &ect, 0x03));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let (hdr, _) = Ipv6Header::from_slice(&out[14..]).unwrap();
    assert_eq!(hdr.traffic_class & 3, 3, "CE copied in");
    let not_ect = inner_packet6(0);
    let (verdict, _) = h.tc6(&frame6(41, &[], &[], &not_ect, 0x03));
    assert_eq!(verdict, TC_ACT_SHOT);
}

#[test]
fn malformed_or_unmatched_ipv6_outer_headers_pass_untouched() {
    let mut h = Harness::new();
    h.add6(81, MODE_IP6GRE, LOCAL, REMOTE, 0, Some(9));
    h.add6(82, MODE_IP6IP6, LOCAL, REMOTE, 0, None);
    let v4 = inner_packet(0);
    let v6 = inner_packet6(0);
    let keyed = [0x20, 0, 8, 0, 0, 0, 0, 9];
    let opt = encap_limit_option(47, 4);
    let mut wrong_version = frame6(41, &[], &[], &v6, 0);
    wrong_version[14] = 0x40;
    let mut long_payload = frame6(41, &[], &[], &v6, 0);
    long_payload[18] = 0xff;
    let mut unknown_source = frame6(41, &[], &[], &v6, 0);
    unknown_source[14 + 8 + 15] = 9;
    let hop_by_hop = {
        let hbh = Ipv6RawExtHeader::new_raw(IpNumber(41), &[1, 4, 0, 0, 0, 0]).unwrap();
        frame6(0, &hbh.to_bytes(), &[], &v6, 0)
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("IPv4 version in the outer header", wrong_version),
        ("payload length past the end", long_payload),
        ("unknown source", unknown_source),
        (
            "gre without the key",
            frame6(47, &[], &[0, 0, 8, 0], &v4, 0),
        ),
        (
            "gre with a wrong key",
            frame6(47, &[], &[0x20, 0, 8, 0, 0, 0, 0, 8], &v4, 0),
        ),
        (
            "gre version 1",
            frame6(47, &[], &[0x20, 1, 8, 0, 0, 0, 0, 9], &v4, 0),
        ),
        (
            "gre routing bit",
            frame6(47, &[], &[0x60, 0, 8, 0, 0, 0, 0, 9], &v4, 0),
        ),
        (
            "ethernet in gre",
            frame6(47, &[], &[0x20, 0, 0x65, 0x58, 0, 0, 0, 9], &v4, 0),
        ),
        ("ipip without an ipip6 tunnel", frame6(4, &[], &[], &v4, 0)),
        (
            "destination options longer than one unit",
            frame6(
                60,
                &[47, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                &keyed,
                &v4,
                0,
            ),
        ),
        (
            "an option that must not be skipped",
            frame6(60, &[47, 0, 0x80, 1, 0, 1, 1, 0], &keyed, &v4, 0),
        ),
        (
            "an option running past its header",
            frame6(60, &[47, 0, 4, 1, 4, 1, 5, 0], &keyed, &v4, 0),
        ),
        ("three destination-options headers", {
            let mut ext = encap_limit_option(60, 4);
            ext.extend(encap_limit_option(60, 4));
            ext.extend(opt.clone());
            frame6(60, &ext, &keyed, &v4, 0)
        }),
        ("hop-by-hop options", hop_by_hop),
        (
            "a fragment header",
            frame6(44, &[47, 0, 0, 1, 0, 0, 0, 1], &keyed, &v4, 0),
        ),
        ("udp", frame6(17, &[], &[0; 8], &v4, 0)),
        ("truncated gre", {
            let mut f = frame6(60, &opt, &keyed, &[], 0);
            f.truncate(f.len() - 2);
            f
        }),
        ("ipv4", frame(47, &[0, 0, 8, 0], &v4, 0)),
    ];
    for (what, input) in cases {
        let (verdict, out) = h.tc6(&input);
        assert_eq!(verdict, TC_ACT_UNSPEC, "{what}");
        assert_eq!(out, input, "{what}: must pass untouched");
    }
    for ifindex in [81, 82] {
        assert_eq!(h.dp.tunnel_totals(ifindex).unwrap().rx_packets, 0);
    }
    // Ours, but not the IPv6 packet the outer header announced: dropped
    // and counted against the tunnel, as the kernel would refuse it.
    let (verdict, _) = h.tc6(&frame6(41, &[], &[], &v4, 0));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(h.dp.tunnel_totals(82).unwrap().rx_errors, 1);
}

/// BPF_PROG_TEST_RUN refuses an skb shorter than the Ethernet and IPv6
/// headers its EtherType announces.
fn wire_min() -> usize {
    14 + 40
}

#[test]
fn truncation_at_every_byte_offset_is_never_decapsulated() {
    let mut h = Harness::new();
    h.add6(91, MODE_IP6GRE, LOCAL, REMOTE, 0, Some(9));
    let full = frame6(
        60,
        &encap_limit_option(47, 4),
        &[0x20, 0, 8, 0, 0, 0, 0, 9],
        &inner_packet(0),
        0,
    );
    for len in wire_min()..full.len() {
        let input = &full[..len];
        let (verdict, _) = h.tc6(input);
        assert_ne!(verdict, TC_ACT_REDIRECT, "truncated at {len}");
    }
    assert_eq!(h.dp.tunnel_totals(91).unwrap().rx_packets, 0);
}

/// An ICMPv6 Packet Too Big from a router on the path, quoting `quoted`
/// (an outer packet as sent, from its IPv6 header), addressed to `LOCAL`.
fn packet_too_big(mtu: u32, quoted: &[u8]) -> Vec<u8> {
    let router = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 1).octets();
    let builder = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 0x22], [2, 0, 0, 0, 0, 0x11])
        .ipv6(router, LOCAL.octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu });
    let mut out = Vec::new();
    builder.write(&mut out, quoted).unwrap();
    out
}

/// An outer packet as the tunnel sends it: `LOCAL` -> `REMOTE`, the
/// encapsulation limit, GRE with key 9, a 1400-byte inner packet.
fn sent_outer() -> Vec<u8> {
    let inner = vec![0x60; 1400];
    let mut ext = encap_limit_option(47, 4);
    ext.extend([0x20, 0, 0x86, 0xdd, 0, 0, 0, 9]);
    let hdr = Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: (ext.len() + inner.len()) as u16,
        next_header: IpNumber(60),
        hop_limit: 64,
        source: LOCAL.octets(),
        destination: REMOTE.octets(),
    };
    let mut out = hdr.to_bytes().to_vec();
    out.extend(ext);
    out.extend(inner);
    out
}

#[test]
fn packet_too_big_about_what_a_tunnel_sent_lowers_its_path_mtu() {
    let mut h = Harness::new();
    h.add6(101, MODE_IP6GRE, LOCAL, REMOTE, 0, Some(9));
    let outer = sent_outer();
    // Reports that are not about what the tunnel sent change nothing: a
    // wrong key, another remote, an MTU not below the quoted packet.
    let mut wrong_key = outer.clone();
    wrong_key[40 + 8 + 7] ^= 1;
    let mut other_remote = outer.clone();
    other_remote[39] ^= 1;
    for (what, report) in [
        ("wrong key", packet_too_big(1400, &wrong_key)),
        ("other remote", packet_too_big(1400, &other_remote)),
        ("not smaller", packet_too_big(outer.len() as u32, &outer)),
    ] {
        let (verdict, out) = h.tc6(&report);
        assert_eq!((verdict, &out), (TC_ACT_UNSPEC, &report), "{what}");
        assert!(h.dp.path_mtus6(101).is_empty(), "{what}");
    }
    // A report quoting it: the path MTU drops; the ICMP goes on untouched.
    // Below the IPv6 minimum, it is the minimum (RFC 8201).
    for (reported, learnt) in [(1400, 1400), (1000, 1280)] {
        let report = packet_too_big(reported, &outer);
        let (verdict, out) = h.tc6(&report);
        assert_eq!((verdict, out), (TC_ACT_UNSPEC, report));
        let known = h.dp.path_mtus6(101);
        assert_eq!(known.len(), 1);
        assert_eq!((known[0].0, known[0].1), (REMOTE.octets(), learnt));
    }
}

/// A frame a host behind a bridge sends: `payload` between two hosts' own
/// MAC addresses.
fn host_frame(ether_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x0a, 0, 0, 0, 0, 0xbb, 0x0a, 0, 0, 0, 0, 0xaa];
    f.extend_from_slice(&ether_type.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An ARP request from 10.50.0.1 for 10.50.0.2, broadcast.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0xaa, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x0a, 0, 0, 0, 0, 0xaa, 10, 50, 0, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 50, 0, 2]);
    f
}

#[test]
fn ip6gretap_encapsulates_whole_frames_ip_or_not() {
    let mut h = Harness::new();
    h.add6(1, MODE_IP6GRETAP, LOCAL, REMOTE, TUNNEL_F_TEB, Some(9));
    for frame in [host_frame(0x0800, &inner_packet(0)), arp_request()] {
        let (verdict, out) = h.tap6(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (hdr, ext, payload) = decode(&out);
        assert_eq!(hdr.destination, REMOTE.octets());
        assert_eq!(hdr.payload_length as usize, 8 + 8 + frame.len());
        assert_eq!(ext.destination_options.unwrap().next_header, IpNumber(47));
        // K bit, transparent Ethernet bridging, key 9, then the frame.
        assert_eq!(&payload[..8], &[0x20, 0, 0x65, 0x58, 0, 0, 0, 9]);
        assert_eq!(&payload[8..], &frame[..]);
        let carried = etherparse::Ethernet2Header::from_slice(&payload[8..])
            .unwrap()
            .0;
        assert_eq!(carried.source, [0x0a, 0, 0, 0, 0, 0xaa]);
    }
    assert_eq!(h.dp.tunnel_totals(1).unwrap().tx_packets, 2);
    // xtun_tc6 leaves the link's frames alone (here, without a port's
    // role, they pass on untouched); xtun_tap6 takes nothing else.
    let frame = host_frame(0x0800, &inner_packet(0));
    assert_eq!(h.tc6(&frame), (TC_ACT_UNSPEC, frame.clone()));
    let mut h = Harness::new();
    h.add6(1, MODE_IP6GRE, LOCAL, REMOTE, 0, None);
    let ip = with_eth(0x0800, &inner_packet(0));
    h.dp.test_run_tap6(&ip, 1)
        .expect_err("xtun_tap6 is loaded for ip6gretap links only");
}

#[test]
fn ip6gretap_delivers_frames_with_their_own_header_and_refuses_ip_in_gre() {
    let mut h = Harness::new();
    h.add6(111, MODE_IP6GRETAP, LOCAL, REMOTE, TUNNEL_F_TEB, None);
    let teb = [0u8, 0, 0x65, 0x58];
    for frame in [host_frame(0x0800, &inner_packet(0)), arp_request()] {
        let input = frame6(60, &encap_limit_option(47, 4), &teb, &frame, 0);
        let (verdict, out) = h.tc6(&input);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(out, frame, "delivered whole, its own header first");
    }
    assert_eq!(h.dp.tunnel_totals(111).unwrap().rx_packets, 2);
    // An IP packet in GRE is not the link's: left to the kernel.
    let ip = frame6(47, &[], &[0, 0, 8, 0], &inner_packet(0), 0);
    assert_eq!(h.tc6(&ip), (TC_ACT_UNSPEC, ip.clone()));
}

#[test]
fn ip6gretap_checksum_covers_the_whole_frame() {
    let mut h = Harness::new();
    let flags = TUNNEL_F_TEB | TUNNEL_F_OCSUM | TUNNEL_F_ICSUM;
    h.add6(1, MODE_IP6GRETAP, LOCAL, REMOTE, flags, None);
    for frame in [host_frame(0x0800, &inner_packet(0)), arp_request()] {
        let (verdict, out) = h.tap6(&frame);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let (_, _, payload) = decode(&out);
        assert_eq!(&payload[..4], &[0x80, 0, 0x65, 0x58]);
        let mut sum: u32 = payload
            .chunks(2)
            .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(sum, 0xffff, "GRE checksum over the header and the frame");
        assert_eq!(&payload[8..], &frame[..]);
    }
}

#[test]
fn xdp_decapsulates_over_ipv6_and_leaves_checksums_and_the_rest_to_tc() {
    let mut h = Harness::new();
    h.add6(121, MODE_IP6GRE, LOCAL, REMOTE, 0, Some(9));
    h.add6(122, MODE_ANY6, LOCAL, REMOTE, 0, None);
    h.add6(
        123,
        MODE_IP6GRETAP,
        LOCAL,
        Ipv6Addr::new(0xfd00, 0x20, 0, 0, 0, 0, 0, 3),
        TUNNEL_F_TEB,
        None,
    );
    let v4 = inner_packet(0);
    let v6 = inner_packet6(0);
    let keyed = [0x20, 0, 8, 0, 0, 0, 0, 9];
    for (input, tunnel, expected) in [
        (
            frame6(60, &encap_limit_option(47, 4), &keyed, &v4, 0),
            121,
            with_eth(0x0800, &v4),
        ),
        (frame6(41, &[], &[], &v6, 0), 122, with_eth(0x86DD, &v6)),
    ] {
        let (verdict, out) = h.xdp(&input);
        assert_eq!(verdict, XDP_PASS);
        let mut tagged = h.tag(tunnel);
        tagged.extend(expected);
        assert_eq!(out, tagged, "stripped and tagged for tunnel {tunnel}");
        assert_eq!(h.dp.tunnel_totals(tunnel).unwrap().rx_packets, 1);
    }
    // An ip6gretap frame keeps its own header.
    let frame = host_frame(0x0800, &v4);
    let mut from_tap = frame6(47, &[], &[0, 0, 0x65, 0x58], &frame, 0);
    from_tap[14 + 8 + 15] = 3;
    let (verdict, out) = h.xdp(&from_tap);
    assert_eq!(verdict, XDP_PASS);
    let mut tagged = h.tag(123);
    tagged.extend(&frame);
    assert_eq!(out, tagged);
    // A GRE checksum (only tc can tell one pending offload), a Packet Too
    // Big, and what is not ours pass untouched, for xtun_tc6 or the kernel.
    let mut h = Harness::new();
    h.add6(124, MODE_IP6GRE, LOCAL, REMOTE, TUNNEL_F_ICSUM, None);
    let with_csum = frame6(47, &[], &[0x80, 0, 8, 0, 0, 0, 0, 0], &v4, 0);
    let too_big = packet_too_big(1400, &sent_outer());
    let unknown = frame6(41, &[], &[], &v6, 0);
    for input in [with_csum, too_big, unknown] {
        assert_eq!(h.xdp(&input), (XDP_PASS, input));
    }
}

/// `inner_packet6` with extension headers `ext` (whose first next-header
/// byte says what follows them) between its IPv6 header and its ICMPv6.
fn inner_with_ext(first: u8, ext: &[u8]) -> Vec<u8> {
    let plain = inner_packet6(0);
    let mut p = plain[..40].to_vec();
    p[6] = first;
    let payload = (plain.len() - 40 + ext.len()) as u16;
    p[4..6].copy_from_slice(&payload.to_be_bytes());
    p.extend_from_slice(ext);
    p.extend_from_slice(&plain[40..]);
    p
}

/// RFC 2473 4.1.1, as the kernel's ip6 tunnels: an inner packet's own
/// encapsulation limit, found behind a hop-by-hop header too, is sent less
/// one (with `encaplimit none` as well, which then adds the option); a
/// limit of 0 is never encapsulated and is counted.
#[test]
fn an_inner_encapsulation_limit_is_sent_less_one_and_zero_is_refused() {
    let dest = |limit: u8| vec![58, 0, 4, 1, limit, 1, 1, 0];
    // Hop-by-hop (PadN over 6 bytes), then the destination options.
    let mut behind_hbh = vec![60, 0, 1, 4, 0, 0, 0, 0];
    behind_hbh.extend(dest(3));
    for (what, flags, first, ext, sent) in [
        ("limit 3", 0, 60, dest(3), 2),
        ("limit 1", 0, 60, dest(1), 0),
        ("behind hop-by-hop", 0, 0, behind_hbh, 2),
        ("encaplimit none", TUNNEL_F_IGN_ENCAP_LIMIT, 60, dest(9), 8),
    ] {
        let inner = inner_with_ext(first, &ext);
        let (verdict, out) = encap6(MODE_IP6IP6, flags, None, 0x86DD, &inner);
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        let (hdr, ext, payload) = decode(&out);
        assert_eq!(hdr.payload_length as usize, 8 + inner.len(), "{what}");
        let opts = ext.destination_options.expect("destination options");
        assert_eq!(opts.next_header, IpNumber(41), "{what}");
        assert_eq!(opts.payload(), &[4, 1, sent, 1, 1, 0], "{what}");
        assert_eq!(payload, inner, "{what}");
    }
    // A limit of 0: answered with Parameter Problem where a route back
    // exists (end to end in ip6tnl.rs); here, on loopback, none does, so
    // it is dropped. Counted either way, never encapsulated.
    let mut h = Harness::new();
    h.add6(1, MODE_IP6GRE, LOCAL, REMOTE, 0, None);
    let input = with_eth(0x86DD, &inner_with_ext(60, &dest(0)));
    let (verdict, out) = h.tc6(&input);
    assert_eq!((verdict, out), (TC_ACT_SHOT, input));
    let totals = h.dp.counter_totals().unwrap();
    assert_eq!(totals[tunnel_common::stats::TX_ENCAP_LIMIT as usize], 1);
}
