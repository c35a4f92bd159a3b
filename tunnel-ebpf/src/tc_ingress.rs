//! tc ingress on an underlay: deliver what XDP decapsulated, or, where the
//! underlay has no XDP program (`--decap tc`), decapsulate here. Either way
//! the inner packet is received on its tunnel interface, as on a kernel
//! tunnel.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_FIXED_GSO,
        BPF_F_INGRESS, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC,
    },
    helpers::generated::bpf_redirect,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};
use tunnel_common::{
    maps::{
        DecapTarget, XdpMeta, LOG_DEBUG, TUNNEL_F_RPFILTER, TUNNEL_F_TEB, TUNNEL_MAC,
        XDP_META_CSUM_IN_TC, XDP_META_MAGIC,
    },
    stats::*,
    wire::{self, Family, Ipv4Words},
};

use crate::{
    classify::{self, Verdict},
    fib, maps, monitor,
    parse::{ptr_at, ptr_at_mut, read_at, write_at},
    teb,
};

/// Longest outer header we may need to read: Ethernet, IPv4 with options,
/// then an ICMP header quoting an IPv4 header with options and a GRE header
/// with every option (longer than GRE and an inner IPv6 header).
const MAX_HEADERS: u32 = (wire::ETH_HDR_LEN + 60 + 8 + 60 + wire::GRE_MAX_LEN) as u32;

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel gave us.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// What XDP said about a frame, in its metadata.
pub enum Tagged {
    /// Decapsulated: delivered with this action.
    Delivered(i32),
    /// A tunnel packet whose GRE checksum XDP could not verify: tc
    /// decapsulates it.
    DecapHere,
    /// Not tagged.
    No,
}

/// Delivers a frame XDP decapsulated, if XDP tagged it so.
#[inline(always)]
pub fn deliver_tagged(ctx: &TcContext) -> Tagged {
    // SAFETY: reading fields of the context the kernel gave us.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + core::mem::size_of::<XdpMeta>() > data {
        return Tagged::No;
    }
    // SAFETY: bounds checked against data, which ends the metadata area.
    let tag = unsafe { *(meta as *const XdpMeta) };
    match tag.magic {
        XDP_META_MAGIC => Tagged::Delivered(deliver(ctx, &tag.target())),
        XDP_META_CSUM_IN_TC => Tagged::DecapHere,
        _ => Tagged::No,
    }
}

/// Decapsulation in tc, for underlays without XDP.
#[inline(always)]
pub fn decap(ctx: &TcContext) -> i32 {
    let ifindex = ifindex(ctx);
    match try_decap(ctx, ifindex) {
        Ok(action) => action,
        Err(reason) => {
            maps::count(ifindex, reason);
            monitor::dropped(ctx, monitor::MON_HOOK_TC, ifindex, 0, reason);
            TC_ACT_UNSPEC
        }
    }
}

#[inline(always)]
fn try_decap(ctx: &TcContext, ifindex: u32) -> Result<i32, u32> {
    make_headers_linear(ctx)?;
    let m = match classify::classify(ctx)? {
        Verdict::Decap(m) => m,
        Verdict::Drop(tunnel, reason) => {
            classify::tunnel_drop(ctx, monitor::MON_HOOK_TC, ifindex, &tunnel, reason);
            return Ok(TC_ACT_SHOT);
        }
        // Only XDP defers.
        Verdict::DecapInTc => return Ok(TC_ACT_SHOT),
    };
    let l3_flag = match m.inner {
        Family::V4 => BPF_F_ADJ_ROOM_DECAP_L3_IPV4,
        Family::V6 => BPF_F_ADJ_ROOM_DECAP_L3_IPV6,
    };
    let flags = (BPF_F_ADJ_ROOM_FIXED_GSO | l3_flag) as u64;
    let stripped = teb::decapsulated_header(ctx, &m).ok().filter(|header| {
        ctx.adjust_room(-(m.strip as i32), BPF_ADJ_ROOM_MAC, flags)
            .is_ok()
            && write_at(ctx, 0, *header).is_ok()
    });
    if stripped.is_none() {
        classify::count_tunnel_drop(ifindex, m.target.stats_slot, RX_ADJUST_FAIL);
        return Ok(TC_ACT_SHOT);
    }
    let inner_len = ctx.len().saturating_sub(EthHdr::LEN as u32) as u64;
    classify::decapsulated(ctx, ifindex, &m, inner_len);
    Ok(deliver(ctx, &m.target))
}

/// Makes every header `classify` reads (and the ECN fix-up writes) linear:
/// the outer IPv4 header, the longest GRE header, and the inner header of
/// the larger family the outer one allows. No more, so that TCP's large
/// packets, whose payload sits in page fragments, keep it there. Writes to
/// a cloned skb are made safe by the verifier's prologue. Err(reason): not
/// a tunnel packet, pass it untouched.
#[inline(always)]
fn make_headers_linear(ctx: &TcContext) -> Result<(), u32> {
    // Cheap look first, so other traffic is not made writable for nothing.
    classify::is_ipv4(ctx)?;
    let linear = |len: u32| ctx.data() + len as usize <= ctx.data_end();
    let ip_end = (EthHdr::LEN + Ipv4Hdr::LEN) as u32;
    if !linear(ip_end) && ctx.len() >= ip_end {
        let _ = ctx.pull_data(ip_end);
    }
    let ip: Ipv4Words = read_at(ctx, EthHdr::LEN).map_err(|_| RX_TRUNCATED)?;
    let proto = classify::tunnel_protocol(&ip)?;
    let ihl = ip.header_len() as u32;
    let after_outer = match proto {
        // A gretap frame's Ethernet header comes first.
        wire::IPPROTO_GRE => wire::GRE_MAX_LEN + wire::ETH_HDR_LEN + wire::IPV6_HDR_LEN,
        wire::IPPROTO_IPIP => wire::IPV4_HDR_LEN,
        // The ICMP header, and the outer header and GRE header it quotes.
        wire::IPPROTO_ICMP => 8 + 60 + wire::GRE_MAX_LEN,
        _ => wire::IPV6_HDR_LEN,
    } as u32;
    let headers = ctx
        .len()
        .min(EthHdr::LEN as u32 + ihl + after_outer)
        .min(MAX_HEADERS);
    if !linear(headers) {
        ctx.pull_data(headers).map_err(|_| RX_TRUNCATED)?;
    }
    Ok(())
}

/// Hands a decapsulated frame to its tunnel interface, after the inner
/// IPv6 source check of `rpfilter` tunnels (inner IPv4 sources are the
/// kernel's rp_filter's, on the tunnel interface).
#[inline(always)]
fn deliver(ctx: &TcContext, target: &DecapTarget) -> i32 {
    if target.flags & TUNNEL_F_RPFILTER != 0 && !inner_v6_source_allowed(ctx, target.ifindex) {
        classify::tunnel_drop(ctx, monitor::MON_HOOK_TC, ifindex(ctx), target, RX_RPFILTER);
        return TC_ACT_SHOT;
    }
    redirect_to_tunnel(ctx, target)
}

/// For an inner IPv6 packet: does the route back to the inner source leave
/// by this tunnel (strict reverse path)?
#[inline(always)]
fn inner_v6_source_allowed(ctx: &TcContext, tunnel: u32) -> bool {
    let Ok(eth) = ptr_at::<EthHdr, TcContext>(ctx, 0) else {
        return true;
    };
    // SAFETY: bounds checked.
    if unsafe { (*eth).ether_type } != wire::ETH_P_IPV6.to_be() {
        return true;
    }
    let Ok(src) = ctx.load::<[u32; 4]>(EthHdr::LEN + 8) else {
        return false;
    };
    let mut params = fib::request(fib::AF_INET6, tunnel);
    params.__bindgen_anon_4.ipv6_dst = src;
    let ret = fib::lookup(ctx, &mut params, BPF_FIB_LOOKUP_SKIP_NEIGH);
    ret == BPF_FIB_LKUP_RET_SUCCESS as i64 && params.ifindex == tunnel
}

/// Sends the frame out of the tunnel's port, addressed to the tunnel
/// interface, so that the pair counts it as received there; a tunnel
/// without a port receives it directly.
#[inline(always)]
fn redirect_to_tunnel(ctx: &TcContext, target: &DecapTarget) -> i32 {
    let tunnel = target.ifindex;
    let action = if target.port != 0 {
        // Written in place: the Ethernet header is linear here. A gretap
        // frame keeps its own destination.
        let Ok(dst) = ptr_at_mut::<[u16; 3], TcContext>(ctx, 0) else {
            maps::count(ifindex(ctx), RX_DELIVER_FAIL);
            return TC_ACT_SHOT;
        };
        if target.flags & TUNNEL_F_TEB == 0 {
            // SAFETY: bounds checked.
            unsafe { dst.write(wire::words_of(TUNNEL_MAC)) };
        }
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(target.port, 0) as i32 }
    } else {
        // SAFETY: plain helper call.
        unsafe { bpf_redirect(tunnel, BPF_F_INGRESS as u64) as i32 }
    };
    if action == TC_ACT_REDIRECT {
        maps::count(ifindex(ctx), RX_DELIVERED);
    } else {
        maps::count(ifindex(ctx), RX_DELIVER_FAIL);
        if maps::log_enabled(LOG_DEBUG) {
            debug!(ctx, "delivery to tunnel ifindex={} failed", tunnel);
        }
    }
    action
}
