//! Encapsulation over an IPv6 underlay (`xtun -6 tunnel`), on a tunnel's
//! port as `tc_port` does it over IPv4: an outer IPv6 header, the RFC 2473
//! destination-options header carrying the tunnel encapsulation limit
//! (unless `encaplimit none`), then GRE for `ip6gre`.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_GRE,
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::generated::{bpf_get_hash_recalc, bpf_ktime_get_ns},
    programs::TcContext,
};
use aya_log_ebpf::debug;
use tunnel_common::{
    maps::*,
    stats::*,
    wire::{self, Family},
};

use crate::{
    encap::{self, InnerInfo},
    fib, gre,
    maps::{self, PMTU6, TUNNELS6},
    monitor,
    parse::{read_at, write_at},
    pmtu::{self, IPV6_MIN_MTU},
    tc_port::PLACEHOLDER_DST,
    teb::{self, Room},
};

/// The destination-options header's length, as sent: one 8-byte unit.
pub const DSTOPT_LEN: usize = 8;
/// IPv6 next-header value of a destination-options header.
pub const NEXTHDR_DEST: u8 = 60;
/// RFC 2473's tunnel encapsulation limit option type.
pub const TLV_ENCAP_LIMIT: u8 = 4;
/// The PadN option type.
pub const TLV_PADN: u8 = 1;

/// The IPv6 header's fixed part after the Ethernet addresses, as halfwords
/// in memory order: EtherType, version/class/label, payload length, next
/// header and hop limit, source, destination.
#[repr(C)]
struct OuterHeaders6 {
    eth_type: u16,
    first: [u16; 2],
    payload_len: u16,
    next_hop_limit: u16,
    src: [u16; 8],
    dst: [u16; 8],
}

/// Does a tunnel of `mode` over IPv6 carry inner `family`?
#[inline(always)]
fn carries6(mode: u8, family: Family) -> bool {
    match family {
        Family::V4 => mode != MODE_IP6IP6,
        Family::V6 => mode != MODE_IPIP6,
    }
}

/// Sends a packet the tunnel interface of an IP tunnel sent (seen on its
/// port; `xtun_tc6`): answered if the path cannot carry it, else
/// encapsulated. Each step a subprogram called from here, so that their
/// stack frames never add up.
#[inline(always)]
pub fn send(ctx: &TcContext, cfg: &TunnelConfig) -> i32 {
    // As the kernel's ip6 tunnels: the inner encapsulation limit first,
    // then the path MTU.
    let limit = check_encap_limit(ctx, cfg);
    if limit == LIMIT_ANSWERED {
        return TC_ACT_REDIRECT;
    }
    if limit == LIMIT_DROPPED {
        return TC_ACT_SHOT;
    }
    match enforce_path_mtu(ctx, cfg) {
        PATH_FITS => encap::<false>(ctx, cfg, limit),
        PATH_ANSWERED => TC_ACT_REDIRECT,
        _ => TC_ACT_SHOT,
    }
}

/// `check_encap_limit`: the inner packet has no encapsulation limit.
const LIMIT_NONE: u32 = 0;
/// `check_encap_limit`: it has one, in the low byte.
const LIMIT_FOUND: u32 = 0x100;
/// `check_encap_limit`: it was 0, and the Parameter Problem was sent.
const LIMIT_ANSWERED: u32 = 0x200;
/// `check_encap_limit`: it was 0, and no answer could be sent.
const LIMIT_DROPPED: u32 = 0x400;
/// Extension headers walked to find an inner encapsulation limit.
const INNER_EXT_HEADERS: usize = 4;
/// Options looked at in each destination-options header walked.
const INNER_OPTIONS: usize = 8;

/// RFC 2473 4.1.1 at the tunnel entry, as the kernel's ip6 tunnels do it:
/// an inner IPv6 packet that carries a tunnel encapsulation limit of 0 is
/// answered with ICMPv6 Parameter Problem pointing at it and dropped; one
/// that carries any other limit is sent with that limit less one (whatever
/// the tunnel's `encaplimit`). `LIMIT_FOUND | limit`, `LIMIT_NONE`,
/// `LIMIT_ANSWERED` or `LIMIT_DROPPED`. A subprogram of its own, for its
/// answer's stack frame, as `enforce_path_mtu`.
#[inline(never)]
fn check_encap_limit(ctx: &TcContext, cfg: &TunnelConfig) -> u32 {
    // SAFETY: reading a field of the context the kernel gave us.
    let protocol = unsafe { (*ctx.skb.skb).protocol } as u16;
    if protocol != wire::ETH_P_IPV6.to_be() || !carries6(cfg.mode, Family::V6) {
        return LIMIT_NONE;
    }
    let l3 = wire::ETH_HDR_LEN;
    let Some((offset, limit)) = inner_encap_limit(ctx, l3) else {
        return LIMIT_NONE;
    };
    if limit != 0 {
        return LIMIT_FOUND | limit as u32;
    }
    let (Ok(src), Ok(dst)) = (
        read_at::<[u16; 8], _>(ctx, l3 + 8),
        read_at::<[u16; 8], _>(ctx, l3 + 24),
    ) else {
        return LIMIT_DROPPED;
    };
    // The pointer names the limit's own byte, after the option's type and
    // length.
    let pointer = offset as u32 + 2;
    match pmtu::answer_v6(ctx, cfg, src, dst, pmtu::ICMPV6_PARAMPROB, pointer) {
        Ok(_) => {
            maps::count(cfg.ifindex, TX_ENCAP_LIMIT);
            LIMIT_ANSWERED
        }
        Err(_) => {
            count_failure(ctx, cfg, TX_ENCAP_LIMIT);
            LIMIT_DROPPED
        }
    }
}

/// The tunnel encapsulation limit option of the inner IPv6 packet at `l3`,
/// found as the kernel's `ip6_tnl_parse_tlv_enc_lim` finds it: in a
/// destination-options header among the extension headers (hop-by-hop,
/// routing, authentication, destination options, a first fragment), the
/// first option of type 4 and length 1. Its offset from the inner header,
/// and its value. Bounded: `INNER_EXT_HEADERS` headers, `INNER_OPTIONS`
/// options in each.
#[inline(always)]
fn inner_encap_limit(ctx: &TcContext, l3: usize) -> Option<(usize, u8)> {
    let mut next: u8 = ctx.load(l3 + 6).ok()?;
    let mut off = l3 + wire::IPV6_HDR_LEN;
    for _ in 0..INNER_EXT_HEADERS {
        let len = match next {
            // Hop-by-hop, routing and destination options: 8-byte units.
            0 | 43 | NEXTHDR_DEST => (ctx.load::<u8>(off + 1).ok()? as usize + 1) * 8,
            // Fragment: only a first fragment is walked over.
            44 => {
                let frag_off: u16 = ctx.load(off + 2).ok()?;
                if frag_off != 0 {
                    return None;
                }
                8
            }
            // Authentication: 4-byte units, less two.
            51 => (ctx.load::<u8>(off + 1).ok()? as usize + 2) * 4,
            _ => return None,
        };
        if next == NEXTHDR_DEST {
            let mut i = 2;
            for _ in 0..INNER_OPTIONS {
                if i + 3 > len {
                    break;
                }
                let option: [u8; 3] = ctx.load(off + i).ok()?;
                if option[0] == TLV_ENCAP_LIMIT && option[1] == 1 {
                    return Some((off + i - l3, option[2]));
                }
                // Pad1 is a single byte; every other option has a length.
                i += if option[0] == 0 {
                    1
                } else {
                    option[1] as usize + 2
                };
            }
        }
        next = ctx.load(off).ok()?;
        off += len;
    }
    None
}

/// Sends a frame an ip6gretap link sent (seen on its port; `xtun_tap6`,
/// a program of its own: whole frames double the paths the verifier
/// walks). A frame the path cannot carry is dropped, as the kernel's
/// ip6gretap drops it: a bridged frame is not the link's to answer.
#[inline(always)]
pub fn send_frames(ctx: &TcContext, cfg: &TunnelConfig) -> i32 {
    // The path MTU is checked inside: counting a drop here would put its
    // monitor event on this frame's stack, on top of encap's.
    encap::<true>(ctx, cfg, LIMIT_NONE)
}

/// Does the frame fit the path MTU learnt for the link's remote?
#[inline(always)]
fn frame_fits(ctx: &TcContext, cfg: &TunnelConfig) -> bool {
    let segment = segment_len(ctx) + overhead(cfg) as u32;
    path_mtu6(cfg).is_none_or(|mtu| segment <= mtu)
}

/// The inner packets that will be on the wire: the packet's own length,
/// or for a GSO packet one segment's: its IP and transport headers (TCP's
/// data offset; anything else has UDP's 8 bytes) and gso_size. An
/// overestimate would answer every segment of a flow that already fits.
#[inline(always)]
fn segment_len(ctx: &TcContext) -> u32 {
    let l3 = wire::ETH_HDR_LEN;
    let inner_len = ctx.len().saturating_sub(l3 as u32);
    // SAFETY: reading fields of the context the kernel gave us.
    let (gso_segs, gso_size) = unsafe { ((*ctx.skb.skb).gso_segs, (*ctx.skb.skb).gso_size) };
    if gso_segs <= 1 || gso_size == 0 {
        return inner_len;
    }
    let first: u8 = ctx.load(l3).unwrap_or(0);
    let (ip_len, proto_at) = if first >> 4 == 6 {
        (wire::IPV6_HDR_LEN as u32, 6)
    } else {
        ((first & 0x0f) as u32 * 4, 9)
    };
    let proto: u8 = ctx.load(l3 + proto_at).unwrap_or(0);
    let l4_len = if proto == wire::IPPROTO_TCP {
        let offset: u8 = ctx.load(l3 + ip_len as usize + 12).unwrap_or(0);
        ((offset >> 4) as u32 * 4).max(20)
    } else {
        8
    };
    ip_len + l4_len + gso_size
}

/// The path MTU learnt for the tunnel's remote, while it holds.
#[inline(always)]
fn path_mtu6(cfg: &TunnelConfig) -> Option<u32> {
    // SAFETY: map value, valid while the program runs.
    let cfg6 = unsafe { TUNNELS6.get(cfg.ifindex) }?;
    let key = Pmtu6Key {
        ifindex: cfg.ifindex,
        remote: cfg6.remote,
    };
    // SAFETY: the value is copied out.
    let known = (unsafe { PMTU6.get(key) }).copied()?;
    // SAFETY: plain helper call.
    (known.expires_ns > unsafe { bpf_ktime_get_ns() }).then_some(known.mtu)
}

/// Bytes the tunnel puts in front of an inner packet.
#[inline(always)]
fn overhead(cfg: &TunnelConfig) -> usize {
    let dstopt = if cfg.flags & TUNNEL_F_IGN_ENCAP_LIMIT == 0 {
        DSTOPT_LEN
    } else {
        0
    };
    let gre = match cfg.mode {
        MODE_IP6GRE => wire::gre_header_len(gre_output_flags(cfg)),
        // The frame's own Ethernet header travels too.
        MODE_IP6GRETAP => wire::gre_header_len(gre_output_flags(cfg)) + wire::ETH_HDR_LEN,
        _ => 0,
    };
    wire::IPV6_HDR_LEN + dstopt + gre
}

/// Marks a frame encapsulated here and sent back into its port's ingress
/// (`teb::Room::Prepended`): its second pass only routes it.
const REENTRY_TC_INDEX: u32 = 0x86dd;

/// Is this an ip6gretap frame encapsulated and sent back into the port?
#[inline(always)]
fn is_reentry(ctx: &TcContext) -> bool {
    // SAFETY: reading fields tc programs may access.
    unsafe {
        let skb = ctx.skb.skb;
        (*skb).tc_index == REENTRY_TC_INDEX && (*skb).protocol == wire::ETH_P_IPV6.to_be() as u32
    }
}

/// Encapsulates a packet the tunnel interface sent (seen on its port).
// A function of its own (a BPF subprogram) with its own stack frame:
// the two paths' headers do not fit in one 512-byte frame.
#[inline(never)]
// One function for IP packets and one for whole frames (`ETHERNET`):
// their paths never mix, and the verifier walks each on its own.
fn encap<const ETHERNET: bool>(ctx: &TcContext, cfg: &TunnelConfig, limit: u32) -> i32 {
    let ifindex = cfg.ifindex;
    match try_encap::<ETHERNET>(ctx, cfg, ifindex, limit) {
        Ok(action) => action,
        Err(reason) => {
            count_failure(ctx, cfg, reason);
            if maps::log_enabled(LOG_DEBUG) {
                debug!(
                    ctx,
                    "encap6 on ifindex={} failed: reason={}", ifindex, reason
                );
            }
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_encap<const ETHERNET: bool>(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    ifindex: u32,
    limit: u32,
) -> Result<i32, u32> {
    // SAFETY: map value, valid while the program runs; userspace replaces
    // it whole.
    let cfg6 = unsafe { TUNNELS6.get(ifindex) }.ok_or(TX_NO_ROUTE)?;
    let l2 = if cfg.flags & TUNNEL_F_ETH_DEV != 0 {
        wire::ETH_HDR_LEN
    } else {
        return Err(TX_BAD_INNER);
    };
    let ethernet = ETHERNET;
    if cfg6.remote == [0; 16] {
        return Err(TX_NO_NEIGH);
    }
    let path = route_to(ctx, cfg, cfg6)?;
    if ethernet && is_reentry(ctx) {
        // SAFETY: tc_index is writable from tc programs.
        unsafe { (*ctx.skb.skb).tc_index = 0 };
        return redirect(&path);
    }
    if ethernet && !frame_fits(ctx, cfg) {
        return Err(TX_TOO_BIG_DROP);
    }
    let inner = inner_info::<ETHERNET>(ctx, cfg.mode, l2)?;
    let inner_len = ctx.len().saturating_sub(l2 as u32);
    let is_gre = cfg.mode == MODE_IP6GRE || ethernet;
    let gre_flags = if is_gre { gre_output_flags(cfg) } else { 0 };
    // A checksum or sequence number is per packet: GSO cannot repeat them.
    // SAFETY: reading a field of the context the kernel gave us.
    let gso_segs = unsafe { (*ctx.skb.skb).gso_segs };
    if gre_flags & (wire::GRE_CSUM | wire::GRE_SEQ) != 0 && gso_segs > 1 {
        return Err(TX_GSO_UNSUPPORTED);
    }
    // The limit sent: the inner packet's less one if it has one, else the
    // tunnel's, if it has one (`check_encap_limit`).
    let configured = cfg.flags & TUNNEL_F_IGN_ENCAP_LIMIT == 0;
    let inner_limit = !ETHERNET && limit & LIMIT_FOUND != 0;
    let encap_limit = configured || inner_limit;
    let limit_sent = if inner_limit {
        (limit as u8).wrapping_sub(1)
    } else {
        cfg6.encap_limit
    };
    // With `encaplimit none`, an inner limit still adds the option.
    let added = if inner_limit && !configured {
        DSTOPT_LEN
    } else {
        0
    };
    let overhead = overhead(cfg) + added;
    let (gre, inner_sum) = encap::gre_header(ctx, cfg, gre_flags, &inner, l2, inner_len)?;

    let room = if ethernet {
        // inner_info found an IP header where skb->protocol is IP.
        teb::make_room(
            ctx,
            overhead,
            inner.header_len != 0,
            BPF_F_ADJ_ROOM_ENCAP_L3_IPV6,
        )?
    } else {
        let mut flags = (BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV6) as u64;
        if is_gre {
            flags |= BPF_F_ADJ_ROOM_ENCAP_L4_GRE as u64;
        }
        ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
            .map_err(|_| TX_NO_BUFS)?;
        Room::Adjusted
    };

    let proto = match cfg.mode {
        MODE_IP6GRE | MODE_IP6GRETAP => wire::IPPROTO_GRE,
        _ if inner.is_v6() => wire::IPPROTO_IPV6,
        _ => wire::IPPROTO_IPIP,
    };
    let next = if encap_limit { NEXTHDR_DEST } else { proto };
    let hop_limit = if cfg.ttl != 0 { cfg.ttl } else { inner.ttl };
    let dscp = if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
        inner.tos
    } else {
        cfg.tos
    };
    let tclass = wire::ecn_encapsulate(dscp, inner.tos);
    let label = flow_label(ctx, cfg, cfg6, &inner, l2);
    let first = (6u32 << 28) | ((tclass as u32) << 20) | (label & 0xF_FFFF);
    // Everything after the outer IPv6 header, as the packet now stands.
    let payload_len = ctx
        .len()
        .saturating_sub((wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN) as u32)
        .min(u16::MAX as u32) as u16;
    let headers = OuterHeaders6 {
        eth_type: wire::ETH_P_IPV6.to_be(),
        first: wire::split_words(first.to_be()),
        payload_len: payload_len.to_be(),
        next_hop_limit: u16::from_be_bytes([next, hop_limit]).to_be(),
        src: wire::words_of(path.local),
        dst: wire::words_of(cfg6.remote),
    };
    write_at(ctx, 0, PLACEHOLDER_DST).map_err(|_| TX_NO_BUFS)?;
    write_at(ctx, 12, headers).map_err(|_| TX_NO_BUFS)?;
    let mut off = wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN;
    if encap_limit {
        // Next header, length 0 (8 bytes), the limit option, then PadN
        // over the last three bytes, as the kernel's ip6_tnl sends it.
        let option: [u16; 4] =
            wire::words_of([proto, 0, TLV_ENCAP_LIMIT, 1, limit_sent, TLV_PADN, 1, 0]);
        write_at(ctx, off, option).map_err(|_| TX_NO_BUFS)?;
        off += DSTOPT_LEN;
    }
    if is_gre {
        gre::write(ctx, off, &gre, inner_sum).map_err(|_| TX_NO_BUFS)?;
    }
    let action = if room == Room::Prepended {
        teb::send_prepended(ctx, cfg.datapath_ifindex(), REENTRY_TC_INDEX)
    } else {
        redirect(&path)?
    };
    if action != TC_ACT_REDIRECT {
        return Err(TX_NO_ROUTE);
    }
    maps::count(ifindex, TX_ENCAP);
    monitor::handled(ctx, monitor::MON_HOOK_ENCAP, ifindex, ifindex, TX_ENCAP);
    encap::count_tunnel_sent(cfg, inner_len);
    Ok(action)
}

/// `enforce_path_mtu`: the packet goes on as it is.
const PATH_FITS: u32 = 0;
/// `enforce_path_mtu`: it was answered, and the answer sent.
const PATH_ANSWERED: u32 = 1;
/// `enforce_path_mtu`: it could not be answered, and was dropped (and
/// counted).
const PATH_DROPPED: u32 = 2;

/// A path MTU learnt from ICMPv6 Packet Too Big: an inner packet that
/// does not fit is answered to its sender with the tunnel's MTU on this
/// path, as the kernel's ip6_tnl_xmit does (IPv4 even without DF).
/// `PATH_FITS`, `PATH_ANSWERED` or `PATH_DROPPED`. A subprogram of
/// its own, with few arguments and its own stack frame: the answers'
/// headers and route lookups would not fit in the encapsulation's.
#[inline(never)]
fn enforce_path_mtu(ctx: &TcContext, cfg: &TunnelConfig) -> u32 {
    let overhead = overhead(cfg) as u32;
    let segment = segment_len(ctx) + overhead;
    if segment <= IPV6_MIN_MTU {
        return PATH_FITS;
    }
    let Some(mtu) = path_mtu6(cfg).filter(|&mtu| segment > mtu) else {
        return PATH_FITS;
    };
    let Ok(inner) = inner_info::<false>(ctx, cfg.mode, wire::ETH_HDR_LEN) else {
        return PATH_FITS;
    };
    let fit = mtu.saturating_sub(overhead);
    // IPv4 is answered with or without DF: routers cannot fragment the
    // outer IPv6 packet, and the kernel's ip6 tunnels answer it alike.
    let answer = if inner.is_v6() {
        pmtu::answer_too_big_v6(ctx, cfg, inner.src6, inner.dst, fit.max(IPV6_MIN_MTU))
    } else {
        let v4 = pmtu::InnerV4 {
            src: inner.src,
            dst: wire::join_words(inner.dst[0], inner.dst[1]),
            header_len: inner.header_len,
            later_fragment: inner.frag & wire::IP_OFFSET != 0,
        };
        pmtu::answer_too_big(ctx, cfg, &v4, fit)
    };
    match answer {
        Ok(_) => {
            maps::count(cfg.ifindex, TX_TOO_BIG);
            PATH_ANSWERED
        }
        Err(reason) => {
            count_failure(ctx, cfg, reason);
            PATH_DROPPED
        }
    }
}

/// Sends the outer packet along `path`.
#[inline(always)]
fn redirect(path: &Path6) -> Result<i32, u32> {
    let action = match path.next_hop {
        Some(nh) => fib::redirect_neigh(path.oif, fib::next_hop_v6(nh)),
        None => fib::redirect_routed(path.oif),
    };
    if action != TC_ACT_REDIRECT {
        return Err(TX_NO_ROUTE);
    }
    Ok(action)
}

/// The GRE flags an `ip6gre` and `ip6gretap` tunnel sends.
#[inline(always)]
fn gre_output_flags(cfg: &TunnelConfig) -> u16 {
    let mut flags = 0;
    if cfg.flags & TUNNEL_F_OKEY != 0 {
        flags |= wire::GRE_KEY;
    }
    if cfg.flags & TUNNEL_F_OCSUM != 0 {
        flags |= wire::GRE_CSUM;
    }
    if cfg.flags & TUNNEL_F_OSEQ != 0 {
        flags |= wire::GRE_SEQ;
    }
    flags
}

/// The inner packet's headers, at `l2`; Err when the mode cannot carry it.
#[inline(always)]
fn inner_info<const ETHERNET: bool>(
    ctx: &TcContext,
    mode: u8,
    l2: usize,
) -> Result<InnerInfo, u32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let protocol = unsafe { (*ctx.skb.skb).protocol } as u16;
    // An ip6gretap link carries whole frames, IP or not.
    let ethernet = ETHERNET;
    if protocol == wire::ETH_P_IP.to_be() && carries6(mode, Family::V4) {
        InnerInfo::v4(&read_head(ctx, l2)?, ethernet)
    } else if protocol == wire::ETH_P_IPV6.to_be() && carries6(mode, Family::V6) {
        InnerInfo::v6(&read_head(ctx, l2)?, ethernet)
    } else if ethernet {
        Ok(InnerInfo::opaque())
    } else {
        Err(TX_BAD_INNER)
    }
}

#[inline(always)]
fn read_head<T: Copy>(ctx: &TcContext, off: usize) -> Result<T, u32> {
    match read_at::<T, TcContext>(ctx, off) {
        Ok(head) => Ok(head),
        Err(()) => ctx.load(off).map_err(|_| TX_BAD_INNER),
    }
}

/// The outer flow label: the configured one; the inner IPv6 packet's with
/// `flowlabel inherit`; and where that leaves 0, one from the flow's hash,
/// as the kernel's `ip6_make_flowlabel` makes with auto flow labels.
#[inline(always)]
fn flow_label(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    cfg6: &Tunnel6Config,
    inner: &InnerInfo,
    l2: usize,
) -> u32 {
    let mut label = cfg6.flowlabel & 0xF_FFFF;
    if cfg.flags & TUNNEL_F_FLOWLABEL_INHERIT != 0 && inner.is_v6() {
        label = read_at::<[u16; 2], TcContext>(ctx, l2)
            .map(|w| u32::from_be(wire::join_words(w[0], w[1])) & 0xF_FFFF)
            .unwrap_or(0);
    }
    if label == 0 {
        // SAFETY: helper call on our own skb.
        let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
        label = hash.rotate_left(16) & 0xF_FFFF;
    }
    label
}

/// Where the outer packet goes: its source, the interface it leaves by,
/// and the next hop where the route lookup found one (without, the kernel
/// routes it through the interface itself).
struct Path6 {
    local: [u8; 16],
    oif: u32,
    next_hop: Option<[u32; 4]>,
}

/// The route to the tunnel's remote, looked up per packet from the port
/// (which has IPv6 forwarding on): the source (the configured local, or
/// the route's), the interface, and the next hop. Without an answer here,
/// the configuration's underlay and `local`/`default_src`, routed by the
/// kernel.
#[inline(always)]
fn route_to(ctx: &TcContext, cfg: &TunnelConfig, cfg6: &Tunnel6Config) -> Result<Path6, u32> {
    let configured = if cfg6.local != [0; 16] {
        cfg6.local
    } else {
        cfg6.default_src
    };
    if cfg.flags & TUNNEL_F_BOUND_DEV != 0 && configured != [0; 16] {
        return Ok(Path6 {
            local: configured,
            oif: cfg.underlay_ifindex,
            next_hop: None,
        });
    }
    let mut params = fib::request(fib::AF_INET6, cfg.datapath_ifindex());
    params.__bindgen_anon_4.ipv6_dst = fib::v6_words(wire::words_of(cfg6.remote));
    let mut flags = BPF_FIB_LOOKUP_SKIP_NEIGH;
    if cfg6.local != [0; 16] {
        params.__bindgen_anon_3.ipv6_src = fib::v6_words(wire::words_of(cfg6.local));
    } else {
        flags |= BPF_FIB_LOOKUP_SRC;
    }
    let ret = fib::lookup(ctx, &mut params, flags);
    if ret == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        if params.ifindex == cfg.ifindex {
            return Err(TX_DEAD_LOOP);
        }
        // SAFETY: the helper filled in the source and next hop.
        let (src, nh) = unsafe {
            (
                params.__bindgen_anon_3.ipv6_src,
                params.__bindgen_anon_4.ipv6_dst,
            )
        };
        let src: [u8; 16] = wire::bytes_of(fib::v6_halfwords(src));
        let local = if cfg6.local != [0; 16] {
            cfg6.local
        } else {
            src
        };
        if local != [0; 16] {
            let bound = cfg.flags & TUNNEL_F_BOUND_DEV != 0;
            return Ok(Path6 {
                local,
                oif: if bound {
                    cfg.underlay_ifindex
                } else {
                    params.ifindex
                },
                next_hop: (!bound).then_some(nh),
            });
        }
    }
    match ret as u32 {
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            Err(TX_NO_ROUTE)
        }
        _ if configured != [0; 16] => Ok(Path6 {
            local: configured,
            oif: cfg.underlay_ifindex,
            next_hop: None,
        }),
        _ => Err(TX_NO_SOURCE),
    }
}

/// Counts a packet the tunnel could not send, for `reason`: on the
/// interface, in the tunnel's TX error counters, and to monitors. (Like
/// `tc_port`'s; sharing it would change how `xtun_tc` compiles, and that
/// program has no verifier budget to spare.)
#[inline(always)]
fn count_failure(ctx: &TcContext, cfg: &TunnelConfig, reason: u32) {
    let ifindex = cfg.ifindex;
    maps::count(ifindex, reason);
    monitor::dropped(ctx, monitor::MON_HOOK_ENCAP, ifindex, ifindex, reason);
    let Some(stats) = maps::TUNNEL_STATS.get_ptr_mut(cfg.stats_slot) else {
        return;
    };
    // SAFETY: per-CPU value, only this CPU writes it while we run.
    let s = unsafe { &mut *stats };
    s.tx_errors += 1;
    match reason {
        TX_NO_BUFS => s.tx_no_bufs += 1,
        TX_NO_ROUTE | TX_NO_NEIGH | TX_NO_SOURCE => s.tx_no_route += 1,
        TX_DEAD_LOOP => s.tx_dead_loop += 1,
        _ => {}
    }
}
