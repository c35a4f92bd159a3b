//! Decapsulation of IPv6 outer headers in tc on an underlay (after
//! `xtun_tc`, which leaves IPv6 alone): `ip6gre`, `ip6ip6`, `ipip6` and
//! `any`. The same checks as over IPv4: an exact match of local, remote,
//! protocol and key; GRE's checksum and sequence rules; the inner header
//! what the outer one announced; RFC 6040 ECN. Extension headers are
//! bounded: only destination options that hold nothing but padding and
//! the RFC 2473 encapsulation limit are stepped over; anything else goes to
//! the kernel untouched.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS, TC_ACT_REDIRECT,
        TC_ACT_SHOT, TC_ACT_UNSPEC,
    },
    helpers::generated::{bpf_ktime_get_ns, bpf_redirect},
    programs::TcContext,
};
use tunnel_common::{
    maps::{
        DecapKey6, DecapTarget, Pmtu6Key, PmtuEntry, PMTU_EXPIRES_NS, TUNNEL_F_ICSUM,
        TUNNEL_F_ISEQ, TUNNEL_F_TEB, TUNNEL_MAC,
    },
    stats::*,
    wire::{self, Family},
};

use crate::{
    classify,
    encap6::{DSTOPT_LEN, NEXTHDR_DEST, TLV_ENCAP_LIMIT, TLV_PADN},
    gre,
    maps::{self, DECAP6, PMTU6},
    monitor,
    parse::{read_at, write_at, Frame},
    pmtu::{ICMPV6_PKT_TOOBIG, IPV6_MIN_MTU},
    teb::EthWords,
};

/// Destination-options headers stepped over at most (one is what the
/// kernel and xtun send).
const MAX_DSTOPTS: usize = 2;

/// The linear bytes decapsulation reads: Ethernet, IPv6, the destination
/// options, the longest GRE header and an inner IPv6 header.
const HEADERS: u32 =
    (wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN + MAX_DSTOPTS * DSTOPT_LEN + wire::GRE_MAX_LEN + 40)
        as u32;

/// The fixed IPv6 header as halfwords in memory order.
type Ipv6Words = [u16; wire::IPV6_HDR_LEN / 2];

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel gave us.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Decapsulation in tc for tunnels over IPv6; what is not theirs passes.
// A function of its own (a BPF subprogram) with its own stack frame:
// the two paths' headers do not fit in one 512-byte frame.
#[inline(never)]
pub fn decap(ctx: &TcContext) -> i32 {
    let ifindex = ifindex(ctx);
    match try_decap(ctx, ifindex) {
        Ok(action) => action,
        Err(reason) => {
            // Not IPv6 at all is the IPv4 program's business, counted there.
            if reason != RX_PASS_NOT_IPV4 {
                maps::count(ifindex, reason);
            }
            TC_ACT_UNSPEC
        }
    }
}

#[inline(always)]
fn try_decap(ctx: &TcContext, ifindex: u32) -> Result<i32, u32> {
    let eth_type: u16 = read_at(ctx, 12).map_err(|_| RX_PASS_NOT_IPV4)?;
    if eth_type != wire::ETH_P_IPV6.to_be() {
        return Err(RX_PASS_NOT_IPV4);
    }
    let linear = ctx.len().min(HEADERS);
    if ctx.data() + linear as usize > ctx.data_end() {
        ctx.pull_data(linear).map_err(|_| RX_TRUNCATED)?;
    }
    let ip: Ipv6Words = read_at(ctx, wire::ETH_HDR_LEN).map_err(|_| RX_TRUNCATED)?;
    if u16::from_be(ip[3]) >> 8 == wire::IPPROTO_ICMPV6 as u16 {
        // About what our tunnels sent? It goes on to the kernel either way.
        let local: [u16; 8] = read_at(ctx, wire::ETH_HDR_LEN + 24).map_err(|_| RX_TRUNCATED)?;
        return Err(note_packet_too_big(ctx, wire::bytes_of(local)));
    }
    let (target, inner_off, header, family) = match classify6(ctx)? {
        Verdict6::Decap {
            target,
            inner_off,
            header,
            family,
        } => (target, inner_off, header, family),
        Verdict6::Drop(target, reason) => return drop(ctx, ifindex, &target, reason),
        // Only XDP defers.
        Verdict6::InTc => return Ok(TC_ACT_SHOT),
    };
    let strip = inner_off - wire::ETH_HDR_LEN;
    let l3_flag = match family {
        Some(Family::V6) => BPF_F_ADJ_ROOM_DECAP_L3_IPV6,
        _ => BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
    };
    let flags = (BPF_F_ADJ_ROOM_FIXED_GSO | l3_flag) as u64;
    if ctx
        .adjust_room(-(strip as i32), BPF_ADJ_ROOM_MAC, flags)
        .is_err()
        || write_at(ctx, 0, header).is_err()
    {
        return drop(ctx, ifindex, &target, RX_ADJUST_FAIL);
    }
    let inner_len = ctx.len().saturating_sub(wire::ETH_HDR_LEN as u32) as u64;
    maps::count(ifindex, RX_DECAP);
    monitor::handled(ctx, monitor::MON_HOOK_TC, ifindex, target.ifindex, RX_DECAP);
    maps::tunnel_stats(target.stats_slot, |stats| {
        stats.rx_packets += 1;
        stats.rx_bytes += inner_len;
    });
    Ok(deliver(ctx, ifindex, &target))
}

/// Sends the frame out of the tunnel's port, addressed to the tunnel
/// interface, so that the pair counts it as received there; a tunnel
/// without a port receives it directly. (The IPv4 program's own, not
/// shared: code both programs call is compiled once, as a function call
/// that costs `xtun_tc` verifier budget it does not have.)
#[inline(always)]
fn deliver(ctx: &TcContext, ifindex: u32, target: &DecapTarget) -> i32 {
    let action = if target.port != 0 {
        // An ip6gretap frame keeps its own destination.
        let own = target.flags & TUNNEL_F_TEB != 0;
        if !own && write_at(ctx, 0, wire::words_of::<6, 3>(TUNNEL_MAC)).is_err() {
            maps::count(ifindex, RX_DELIVER_FAIL);
            return TC_ACT_SHOT;
        }
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(target.port, 0) as i32 }
    } else {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(target.ifindex, BPF_F_INGRESS as u64) as i32 }
    };
    let counted = if action == TC_ACT_REDIRECT {
        RX_DELIVERED
    } else {
        RX_DELIVER_FAIL
    };
    maps::count(ifindex, counted);
    action
}

/// An ICMPv6 Packet Too Big (right after the IPv6 header, addressed to
/// `icmp_dst`) that quotes an outer packet one of our tunnels sent (from
/// our local address to its remote, its protocol and key) records the
/// reported MTU for (tunnel, remote), as the kernel's ip6_tnl_err does.
/// Returns the counter reason.
#[inline(always)]
fn note_packet_too_big(ctx: &TcContext, icmp_dst: [u8; 16]) -> u32 {
    let l4 = wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN;
    let Ok(head) = read_at::<[u16; 4], TcContext>(ctx, l4) else {
        return RX_PASS_NOT_TUNNEL;
    };
    if u16::from_be(head[0]) != (ICMPV6_PKT_TOOBIG as u16) << 8 {
        return RX_PASS_NOT_TUNNEL;
    }
    let mtu = u32::from_be(wire::join_words(head[2], head[3]));
    let quoted = l4 + 8;
    let Ok(ip) = read_at::<Ipv6Words, TcContext>(ctx, quoted) else {
        return RX_ICMP_IGNORED;
    };
    let src: [u8; 16] =
        wire::bytes_of::<8, 16>([ip[4], ip[5], ip[6], ip[7], ip[8], ip[9], ip[10], ip[11]]);
    let remote: [u8; 16] = wire::bytes_of::<8, 16>([
        ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19],
    ]);
    let quoted_len = wire::IPV6_HDR_LEN as u32 + u16::from_be(ip[2]) as u32;
    if u16::from_be(ip[0]) >> 12 != 6 || src != icmp_dst {
        return RX_ICMP_IGNORED;
    }
    let [mut proto, _] = u16::from_be(ip[3]).to_be_bytes();
    let mut after = quoted + wire::IPV6_HDR_LEN;
    if proto == NEXTHDR_DEST {
        let Ok(opts) = read_at::<[u8; 2], TcContext>(ctx, after) else {
            return RX_ICMP_IGNORED;
        };
        proto = opts[0];
        after += (opts[1] as usize + 1) * 8;
    }
    if !is_tunnel_proto(proto) {
        return RX_ICMP_IGNORED;
    }
    // The GRE key, which must be quoted whole when the header has one.
    let mut key = None;
    if proto == wire::IPPROTO_GRE {
        let Ok(flags) = ctx.load::<[u8; 2]>(after) else {
            return RX_ICMP_IGNORED;
        };
        let flags = u16::from_be_bytes(flags);
        if flags & wire::GRE_KEY != 0 {
            match ctx.load::<[u8; 4]>(after + wire::gre_key_offset(flags)) {
                Ok(k) => key = Some(u32::from_ne_bytes(k)),
                Err(_) => return RX_ICMP_IGNORED,
            }
        }
    }
    let Some(target) = find_tunnel6(src, remote, proto, key) else {
        return RX_ICMP_IGNORED;
    };
    // Below the IPv6 minimum the path still carries 1280 (RFC 8201); a
    // report not below the packet it quotes is not one a router makes.
    let mtu = mtu.max(IPV6_MIN_MTU);
    if mtu >= quoted_len {
        return RX_ICMP_IGNORED;
    }
    let key = Pmtu6Key {
        ifindex: target.ifindex,
        remote,
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the value is copied out.
    if let Some(known) = unsafe { PMTU6.get(key) } {
        if known.expires_ns > now && known.mtu < mtu {
            return RX_ICMP_IGNORED;
        }
    }
    let entry = PmtuEntry {
        mtu,
        _pad: 0,
        expires_ns: now + PMTU_EXPIRES_NS,
    };
    if PMTU6.insert(key, entry, 0).is_err() {
        return RX_ICMP_IGNORED;
    }
    RX_ICMP_FRAG_NEEDED
}

/// What the outer headers of an IPv6 frame say.
pub enum Verdict6 {
    /// Ours: the inner packet starts at `inner_off`, and leaves with
    /// `header`; `family` where it is IP.
    Decap {
        target: DecapTarget,
        inner_off: usize,
        header: EthWords,
        family: Option<Family>,
    },
    /// Ours, but to be dropped (counted against the tunnel): the reason.
    Drop(DecapTarget, u32),
    /// Ours, with a GRE checksum only tc can judge (XDP only).
    InTc,
}

/// The classifier both receive hooks share for IPv6 outer headers (the
/// frame's headers linear as far as `HEADERS`): the tunnel, GRE's checks,
/// the inner header and its ECN. Err(reason): not ours, pass untouched.
/// Its GRE checks follow `classify::classify`'s for IPv4 rather than share
/// them: code shared with `xtun_tc` changes how that program compiles, and
/// it has no verifier budget to spare.
#[inline(always)]
pub fn classify6<F: Frame>(ctx: &F) -> Result<Verdict6, u32> {
    let ip: Ipv6Words = read_at(ctx, wire::ETH_HDR_LEN).map_err(|_| RX_TRUNCATED)?;
    let first = u16::from_be(ip[0]);
    if first >> 12 != 6 {
        return Err(RX_TRUNCATED);
    }
    let [mut next, _hop_limit] = u16::from_be(ip[3]).to_be_bytes();
    if next != NEXTHDR_DEST && !is_tunnel_proto(next) {
        return Err(RX_PASS_NOT_TUNNEL);
    }
    let payload_len = u16::from_be(ip[2]) as usize;
    let ip_end = wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN + payload_len;
    if ip_end > ctx.total_len() {
        return Err(RX_TRUNCATED);
    }
    let outer_tclass = (first >> 4) as u8;
    let local: [u8; 16] = wire::bytes_of::<8, 16>(
        read_at::<[u16; 8], F>(ctx, wire::ETH_HDR_LEN + 24).map_err(|_| RX_TRUNCATED)?,
    );
    let remote: [u8; 16] = wire::bytes_of::<8, 16>(
        read_at::<[u16; 8], F>(ctx, wire::ETH_HDR_LEN + 8).map_err(|_| RX_TRUNCATED)?,
    );

    // Step over the destination options, bounded, checking each option.
    let mut l4 = wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN;
    let mut i = 0;
    while i < MAX_DSTOPTS && next == NEXTHDR_DEST {
        let opts: [u8; DSTOPT_LEN] = read_at(ctx, l4).map_err(|_| RX_TRUNCATED)?;
        // Only one 8-byte unit, holding options the receiver may skip.
        if opts[1] != 0 || !options_skippable(&opts) {
            return Err(RX_PASS_NOT_TUNNEL);
        }
        next = opts[0];
        l4 += DSTOPT_LEN;
        i += 1;
    }
    if !is_tunnel_proto(next) {
        return Err(RX_PASS_NOT_TUNNEL);
    }
    let gre = if next == wire::IPPROTO_GRE {
        Some(gre::parse(ctx, l4)?)
    } else {
        None
    };
    let (gre_len, inner, key) = match &gre {
        Some(g) => (g.len(), g.family, g.key()),
        None if next == wire::IPPROTO_IPIP => (0, Family::V4, None),
        None => (0, Family::V6, None),
    };
    let target = find_tunnel6(local, remote, next, key).ok_or(RX_PASS_NO_TUNNEL)?;
    let mut inner_off = l4 + gre_len;
    let mut teb = false;
    if let Some(g) = &gre {
        // A frame never goes to an IP tunnel, nor an IP packet to an
        // ip6gretap link (the kernel keeps them apart): left to the kernel.
        teb = target.flags & TUNNEL_F_TEB != 0;
        if g.teb != teb {
            return Err(RX_BAD_PAYLOAD);
        }
        let has_csum = g.flags & wire::GRE_CSUM != 0;
        if has_csum != (target.flags & TUNNEL_F_ICSUM != 0) {
            return Ok(Verdict6::Drop(target, RX_BAD_GRE_CSUM));
        }
        if has_csum {
            // Only an skb can tell a checksum pending offload: XDP defers.
            if !ctx.sees_offload() {
                return Ok(Verdict6::InTc);
            }
            if !gre::checksum_ok(ctx, l4, ip_end, g, false) && !ctx.checksum_pending() {
                return Ok(Verdict6::Drop(target, RX_BAD_GRE_CSUM));
            }
        }
        if target.flags & TUNNEL_F_ISEQ != 0 && !gre::sequence_ok(target.ifindex, g.seq()) {
            return Ok(Verdict6::Drop(target, RX_OUT_OF_SEQ));
        }
    }
    // The Ethernet header the inner packet leaves with: the outer
    // addresses and the inner family, or an ip6gretap frame's own.
    let mut header = EthWords {
        addresses: read_at(ctx, 0).map_err(|_| RX_TRUNCATED)?,
        ether_type: inner.ether_type().to_be(),
    };
    let mut family = Some(inner);
    if teb {
        if !ctx.load(inner_off, (&raw mut header).cast(), wire::ETH_HDR_LEN) {
            return Ok(Verdict6::Drop(target, RX_TRUNCATED));
        }
        inner_off += wire::ETH_HDR_LEN;
        // ECN as for an IP tunnel where the frame carries IP, as the
        // kernel's ip6gretap does; other frames have nothing to mark.
        family = Family::from_ether_type(u16::from_be(header.ether_type));
    }
    if let Some(family) = family {
        if let Err(reason) = classify::check_inner_and_ecn(ctx, inner_off, family, outer_tclass) {
            return Ok(Verdict6::Drop(target, reason));
        }
    }
    Ok(Verdict6::Decap {
        target,
        inner_off,
        header,
        family,
    })
}

#[inline(always)]
fn is_tunnel_proto(proto: u8) -> bool {
    proto == wire::IPPROTO_GRE || proto == wire::IPPROTO_IPIP || proto == wire::IPPROTO_IPV6
}

/// Are the options of an 8-byte destination-options header (from byte 2)
/// all well formed, and each one the receiver skips (RFC 8200 4.2: the
/// type's two high bits 00), as the kernel's stack would?
#[inline(always)]
fn options_skippable(opts: &[u8; DSTOPT_LEN]) -> bool {
    let mut at = 2;
    let mut steps = 0;
    while at < DSTOPT_LEN && steps < DSTOPT_LEN {
        steps += 1;
        let kind = opts[at];
        if kind == 0 {
            // Pad1.
            at += 1;
            continue;
        }
        if at + 1 >= DSTOPT_LEN {
            return false;
        }
        let len = opts[at + 1] as usize;
        let known = kind == TLV_PADN || (kind == TLV_ENCAP_LIMIT && len == 1);
        if !known && kind >> 6 != 0 {
            return false;
        }
        at += 2 + len;
    }
    at == DSTOPT_LEN
}

/// The tunnel a packet belongs to, most specific first: (local, remote),
/// `local any`, `remote any`, both.
#[inline(always)]
pub fn find_tunnel6(
    local: [u8; 16],
    remote: [u8; 16],
    proto: u8,
    key: Option<u32>,
) -> Option<DecapTarget> {
    let mut k = DecapKey6 {
        local,
        remote,
        key: key.unwrap_or(0),
        proto,
        has_key: key.is_some() as u8,
        _pad: [0; 2],
    };
    let mut i = 0;
    while i < 4 {
        k.local = if i & 1 == 0 { local } else { [0; 16] };
        k.remote = if i < 2 { remote } else { [0; 16] };
        // SAFETY: the value is copied out.
        if let Some(target) = unsafe { DECAP6.get(k) } {
            return Some(*target);
        }
        i += 1;
    }
    None
}

/// Drops a packet of the tunnel `target`, counted against it.
#[inline(always)]
fn drop(ctx: &TcContext, ifindex: u32, target: &DecapTarget, reason: u32) -> Result<i32, u32> {
    classify::tunnel_drop(ctx, monitor::MON_HOOK_TC, ifindex, target, reason);
    Ok(TC_ACT_SHOT)
}
