//! The XDP forwarding fast path (`xtun attach LAN --forward xdp`), run by
//! `xtun_decap` on a LAN and after decapsulation on an underlay:
//!
//! - towards a tunnel: a packet from a LAN whose route leads into one of
//!   our tunnels is encapsulated here and redirected to the underlay;
//! - from a tunnel: a decapsulated packet whose route leads out of a LAN
//!   with the fast path is redirected straight there.
//!
//! Only plain unicast that the kernel would forward as it is takes it;
//! anything that needs the kernel (ICMP answers, fragmentation, options,
//! neighbour resolution) is passed to it unchanged. The fast path skips
//! netfilter's FORWARD chain and the tunnel interface's own counters.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{
        xdp_action, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_PROHIBIT, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_FIB_LKUP_RET_UNREACHABLE, BPF_FIB_LOOKUP_SKIP_NEIGH, BPF_FIB_LOOKUP_SRC,
    },
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use tunnel_common::{
    maps::{
        DecapTarget, TunnelConfig, MIN_PMTU, MODE_GRE, MODE_GRETAP, TUNNEL_F_BOUND_DEV,
        TUNNEL_F_RPFILTER,
    },
    stats::*,
    wire::{self, Family, Ipv4Words},
};

use crate::{
    encap::{self, InnerInfo},
    fib,
    maps::{self, FORWARD_LANS, FORWARD_PORTS, FORWARD_STATE, TUNNELS},
    parse::{ptr_at_mut, read_at, write_at},
    pmtu,
};

/// The IP header's offset: frames on the fast path are plain Ethernet.
const L3: usize = wire::ETH_HDR_LEN;

/// The loopback device's ifindex, which the kernel's source validation
/// asks its route back as coming from.
const LOOPBACK_IFINDEX: u32 = 1;

/// IPv6 next headers the fast path leaves to the kernel: options, and
/// the extension headers before the transport header policy routing
/// matches on (the kernel's flow dissector walks them).
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DEST_OPTIONS: u8 = 60;

/// Transport protocols whose ports (or SPI) the kernel's flow dissector
/// hands to policy routing, as its `proto_ports_offset` lists them.
const IPPROTO_DCCP: u8 = 33;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_AH: u8 = 51;
const IPPROTO_SCTP: u8 = 132;
const IPPROTO_UDPLITE: u8 = 136;

/// Why a packet stays off the fast path: Some(counter) for a packet the
/// kernel forwards instead (counted), None for one that is not forwarded
/// traffic of ours at all.
type Pass = Option<u32>;

/// What the kernel's routing of a forwarded packet matches besides its
/// addresses and TOS: `ip rule ... ipproto P sport S dport D`, which it
/// fills from the flow dissector (`fib4_rules_early_flow_dissect`, and
/// fib6's). Ports in network order; 0 where the protocol has none.
#[derive(Clone, Copy)]
struct Flow {
    proto: u8,
    sport: u16,
    dport: u16,
}

/// Whether LAN `ifindex` has the fast path.
#[inline(always)]
pub fn is_lan(ifindex: u32) -> bool {
    // SAFETY: only the entry's presence is read.
    unsafe { FORWARD_LANS.get(ifindex) }.is_some()
}

/// A packet from a LAN with the fast path: its action, having counted a
/// packet left to the kernel on the LAN.
#[inline(always)]
pub fn towards_tunnel(ctx: &XdpContext, lan_ifindex: u32) -> u32 {
    match try_towards_tunnel(ctx, lan_ifindex) {
        Ok(action) => action,
        Err(pass) => {
            if let Some(reason) = pass {
                maps::count(lan_ifindex, reason);
            }
            xdp_action::XDP_PASS
        }
    }
}

#[inline(always)]
fn try_towards_tunnel(ctx: &XdpContext, lan_ifindex: u32) -> Result<u32, Pass> {
    let (mut inner, len, flow) = forwardable(ctx)?;
    let hop = inner_route(ctx, &inner, &flow, lan_ifindex, len, false)?;
    // Routed elsewhere than into one of our tunnels: the kernel's.
    // SAFETY: map values stay valid while the program runs.
    let cfg: &TunnelConfig = unsafe { &*TUNNELS.get_ptr(hop.oif).ok_or(None)? };
    // A gretap link bridges frames: the kernel's (its port adds them).
    if cfg.mode == MODE_GRETAP || !encap::carries(cfg.mode, inner.family) {
        return Err(None);
    }
    // The kernel's rp_filter on the LAN covers IPv4 only.
    if !source_leads_back(ctx, &inner, &flow, lan_ifindex, false) {
        return Err(Some(FWD_PASS_RPFILTER));
    }
    let remote = encap::remote(cfg, &inner).map_err(|_| Some(FWD_PASS_NO_ROUTE))?;
    let is_gre = cfg.mode == MODE_GRE;
    let gre_flags = cfg.gre_output_flags();
    let overhead = wire::encap_overhead(cfg.mode, gre_flags);
    let outer_len = len as usize + overhead;
    // No learnt path MTU is below MIN_PMTU: a packet that fits that needs
    // no look in XTUN_PMTU (as tc's `enforce_path_mtu`).
    if outer_len > MIN_PMTU as usize {
        let path_mtu = pmtu::path_mtu(cfg.ifindex, remote).unwrap_or(u16::MAX as u32);
        if outer_len > path_mtu as usize {
            return Err(Some(FWD_PASS_TOO_BIG));
        }
    }
    let route = outer_route(ctx, cfg, remote, outer_len as u16)?;
    let bound = cfg.flags & TUNNEL_F_BOUND_DEV != 0;
    if (bound && route.oif != cfg.underlay_ifindex) || FORWARD_PORTS.get(route.oif).is_none() {
        return Err(Some(FWD_PASS_NO_ROUTE));
    }
    let local = if cfg.local != 0 { cfg.local } else { route.src };

    // Committed: forwarded as the kernel forwards it, then encapsulated as
    // the tunnel's port would.
    trim_to(ctx, len).map_err(|_| None)?;
    decrement_ttl(ctx, &inner).map_err(|_| None)?;
    inner.ttl -= 1;
    let Ok((gre, inner_sum)) = encap::gre_header(ctx, cfg, gre_flags, &inner, L3, len) else {
        return Ok(dropped_in_tunnel(cfg, TX_BAD_INNER));
    };
    let outer = encap::outer_ipv4(cfg, &inner, local, remote, outer_len as u16, false);
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(overhead as i32)) } != 0 {
        return Ok(dropped_in_tunnel(cfg, TX_NO_BUFS));
    }
    let written = write_macs(ctx, route.dmac, route.smac)
        .map_err(|_| TX_NO_BUFS)
        .and_then(|()| encap::write_outer(ctx, is_gre, &outer, &gre, inner_sum));
    if let Err(reason) = written {
        return Ok(dropped_in_tunnel(cfg, reason));
    }
    let Ok(action) = FORWARD_PORTS.redirect(route.oif, 0) else {
        return Ok(dropped_in_tunnel(cfg, TX_NO_ROUTE));
    };
    maps::count(cfg.ifindex, TX_FORWARD_XDP);
    encap::count_tunnel_sent(cfg, len);
    Ok(action)
}

/// The route to the tunnel's `remote` for an outer packet of `tot_len`
/// bytes, with the next hop's MAC: the lookup `encap::route_to` makes for
/// the port (the source as the tunnel routes with it, and no route back
/// into the tunnel itself), with its request made in place, without a
/// `memset` call. Not through `route_to`, so that tc's code stays as the
/// verifier has room for. Anything but a complete answer is the kernel's.
#[inline(always)]
fn outer_route(
    ctx: &XdpContext,
    cfg: &TunnelConfig,
    remote: u32,
    tot_len: u16,
) -> Result<encap::Route, Pass> {
    let mut slot = MaybeUninit::uninit();
    let params = fib::request_in(&mut slot, fib::AF_INET, cfg.datapath_ifindex());
    params.__bindgen_anon_4.ipv4_dst = remote;
    params.__bindgen_anon_1.tot_len = tot_len;
    params.__bindgen_anon_3.ipv4_src = cfg.local;
    let flags = if cfg.local == 0 {
        BPF_FIB_LOOKUP_SRC
    } else {
        0
    };
    match fib::lookup(ctx, params, flags) as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => {
            // SAFETY: the helper filled in the source and next hop.
            let (src, next_hop) = unsafe {
                (
                    params.__bindgen_anon_3.ipv4_src,
                    params.__bindgen_anon_4.ipv4_dst,
                )
            };
            // Into the tunnel itself (tc's TX_DEAD_LOOP), or no source.
            if params.ifindex == cfg.ifindex || src == 0 {
                return Err(Some(FWD_PASS_NO_ROUTE));
            }
            Ok(encap::Route {
                src,
                oif: params.ifindex,
                next_hop,
                smac: params.smac,
                dmac: params.dmac,
            })
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Some(FWD_PASS_TOO_BIG)),
        _ => Err(Some(FWD_PASS_NO_ROUTE)),
    }
}

/// A packet lost after the fast path took it on: counted as the tunnel's
/// port counts its failures.
#[inline(always)]
fn dropped_in_tunnel(cfg: &TunnelConfig, reason: u32) -> u32 {
    maps::count(cfg.ifindex, reason);
    maps::tunnel_stats(cfg.stats_slot, |s| s.tx_errors += 1);
    xdp_action::XDP_DROP
}

/// A packet just decapsulated for tunnel `target`: Some(action) when the
/// fast path sent it straight to a LAN, None to deliver it as usual.
#[inline(always)]
pub fn from_tunnel(ctx: &XdpContext, target: &DecapTarget) -> Option<u32> {
    let state = FORWARD_STATE.get(0)?;
    if state.lans == 0 {
        return None;
    }
    // `rpfilter` checks IPv6 sources too (as tc does), where the kernel
    // has no rp_filter.
    let rpfilter_ipv6 = target.flags & TUNNEL_F_RPFILTER != 0;
    match try_from_tunnel(ctx, target.ifindex, rpfilter_ipv6) {
        Ok(action) => Some(action),
        Err(pass) => {
            if let Some(reason) = pass {
                maps::count(target.ifindex, reason);
            }
            None
        }
    }
}

#[inline(always)]
fn try_from_tunnel(ctx: &XdpContext, tunnel: u32, rpfilter_ipv6: bool) -> Result<u32, Pass> {
    let (inner, len, flow) = forwardable(ctx)?;
    if !source_leads_back(ctx, &inner, &flow, tunnel, rpfilter_ipv6) {
        return Err(Some(FWD_PASS_RPFILTER));
    }
    let hop = inner_route(ctx, &inner, &flow, tunnel, len, true)?;
    if !is_lan(hop.oif) {
        return Err(None);
    }
    if FORWARD_PORTS.get(hop.oif).is_none() {
        return Err(Some(FWD_PASS_NO_ROUTE));
    }
    trim_to(ctx, len).map_err(|_| None)?;
    decrement_ttl(ctx, &inner).map_err(|_| None)?;
    write_macs(ctx, hop.dmac, hop.smac).map_err(|_| None)?;
    let action = FORWARD_PORTS
        .redirect(hop.oif, 0)
        .unwrap_or(xdp_action::XDP_DROP);
    maps::count(tunnel, RX_FORWARD_XDP);
    Ok(action)
}

/// The IP packet after the Ethernet header, if it is one the fast path may
/// forward: unicast, no options or fragmentation, a TTL left after this
/// hop. With its length (the frame may carry Ethernet padding after it)
/// and the transport fields policy routing matches.
#[inline(always)]
fn forwardable(ctx: &XdpContext) -> Result<(InnerInfo, u32, Flow), Pass> {
    let eth: [u16; 7] = read_at(ctx, 0).map_err(|_| None)?;
    let frame_len = (ctx.data_end() - ctx.data()).saturating_sub(L3) as u32;
    let ip = eth[6] == wire::ETH_P_IP.to_be() || eth[6] == wire::ETH_P_IPV6.to_be();
    if !ip {
        return Err(None);
    }
    // The group bit of the destination MAC's first byte.
    if u16::from_be(eth[0]) & 0x0100 != 0 {
        return Err(Some(FWD_PASS_MULTICAST));
    }
    let (inner, len, proto) = if eth[6] == wire::ETH_P_IP.to_be() {
        let ip: Ipv4Words = read_at(ctx, L3).map_err(|_| None)?;
        let inner = InnerInfo::v4(&ip, false).map_err(|_| None)?;
        if inner.header_len != wire::IPV4_HDR_LEN {
            return Err(Some(FWD_PASS_OPTIONS));
        }
        if inner.frag & (wire::IP_MF | wire::IP_OFFSET) != 0 {
            return Err(Some(FWD_PASS_FRAGMENT));
        }
        // Class D and E, and the limited broadcast.
        if u16::from_be(ip.0[8]) >> 8 >= 224 {
            return Err(Some(FWD_PASS_MULTICAST));
        }
        if martian_v4(&ip) {
            return Err(Some(FWD_PASS_MARTIAN));
        }
        (inner, ip.tot_len() as u32, ip.proto())
    } else if eth[6] == wire::ETH_P_IPV6.to_be() {
        let head: [u16; wire::IPV6_HDR_LEN / 2] = read_at(ctx, L3).map_err(|_| None)?;
        let inner = InnerInfo::v6(&head, false).map_err(|_| None)?;
        let next = (u16::from_be(head[3]) >> 8) as u8;
        match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTIONS => {
                return Err(Some(FWD_PASS_OPTIONS))
            }
            IPV6_FRAGMENT => return Err(Some(FWD_PASS_FRAGMENT)),
            _ => {}
        }
        if u16::from_be(inner.dst[0]) >> 8 == 0xff {
            return Err(Some(FWD_PASS_MULTICAST));
        }
        if martian_v6(&inner) {
            return Err(Some(FWD_PASS_MARTIAN));
        }
        // Link-local addresses are never forwarded.
        let link_local = |first: u16| u16::from_be(first) & 0xffc0 == 0xfe80;
        if link_local(inner.src6[0]) || link_local(inner.dst[0]) {
            return Err(None);
        }
        (
            inner,
            u16::from_be(head[2]) as u32 + wire::IPV6_HDR_LEN as u32,
            next,
        )
    } else {
        return Err(None);
    };
    if len > frame_len || len < inner.header_len as u32 {
        return Err(None);
    }
    if inner.ttl <= 1 {
        return Err(Some(FWD_PASS_TTL));
    }
    let flow = flow_of(ctx, proto, inner.header_len, len);
    Ok((inner, len, flow))
}

/// Addresses `ip_route_input_slow` drops as martian, whatever the route:
/// a multicast, broadcast, 0.0.0.0 or loopback source (`route_localnet`
/// would let 127/8 through: the kernel decides that), 0.0.0.0 as the
/// destination. The rest of 0/8 is unicast since Linux 5.3.
#[inline(always)]
fn martian_v4(ip: &Ipv4Words) -> bool {
    let src_first = u16::from_be(ip.0[6]) >> 8;
    let src_zero = ip.0[6] | ip.0[7] == 0;
    let broadcast = ip.0[6] & ip.0[7] == 0xffff;
    src_zero
        || src_first == 127
        || (224..240).contains(&src_first)
        || broadcast
        || ip.0[8] | ip.0[9] == 0
}

/// Addresses `ip6_rcv_core` drops on any interface but loopback (RFC 4291:
/// a multicast source, the loopback address, an IPv4-mapped source).
#[inline(always)]
fn martian_v6(inner: &InnerInfo) -> bool {
    let (s, d) = (&inner.src6, &inner.dst);
    let loopback = |a: &[u16; 8]| {
        a[0] | a[1] | a[2] | a[3] | a[4] | a[5] | a[6] == 0 && u16::from_be(a[7]) == 1
    };
    let v4_mapped = s[0] | s[1] | s[2] | s[3] | s[4] == 0 && s[5] == 0xffff;
    // `ip6_forward` drops the unspecified source too.
    let unspecified = s[0] | s[1] | s[2] | s[3] | s[4] | s[5] | s[6] | s[7] == 0;
    u16::from_be(s[0]) >> 8 == 0xff || loopback(s) || loopback(d) || v4_mapped || unspecified
}

/// The protocol and ports of a packet whose transport header starts
/// `header_len` bytes into its `len`: where the kernel's flow dissector
/// finds ports (`proto_ports_offset`: an SPI for ESP and AH), and 0 for a
/// protocol without them or a packet too short to hold them.
#[inline(always)]
fn flow_of(ctx: &XdpContext, proto: u8, header_len: usize, len: u32) -> Flow {
    let offset = match proto {
        wire::IPPROTO_TCP
        | wire::IPPROTO_UDP
        | IPPROTO_DCCP
        | IPPROTO_ESP
        | IPPROTO_SCTP
        | IPPROTO_UDPLITE => Some(0),
        IPPROTO_AH => Some(4),
        _ => None,
    };
    let ports = offset
        .filter(|off| header_len + off + 4 <= len as usize)
        .and_then(|off| read_at::<[u16; 2], _>(ctx, L3 + header_len + off).ok());
    let [sport, dport] = ports.unwrap_or([0, 0]);
    Flow {
        proto,
        sport,
        dport,
    }
}

/// Where the route for the inner packet leads.
struct Hop {
    oif: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// The route the kernel would forward the inner packet of `len` bytes by,
/// as received on `ifindex` (whose forwarding setting the helper checks),
/// with the next hop's MAC when `neigh`.
#[inline(always)]
fn inner_route(
    ctx: &XdpContext,
    inner: &InnerInfo,
    flow: &Flow,
    ifindex: u32,
    len: u32,
    neigh: bool,
) -> Result<Hop, Pass> {
    let mut slot = MaybeUninit::uninit();
    let params = inner_request(&mut slot, inner, flow, ifindex, false);
    params.__bindgen_anon_1.tot_len = len as u16;
    let flags = if neigh { 0 } else { BPF_FIB_LOOKUP_SKIP_NEIGH };
    let ret = fib::lookup(ctx, params, flags) as u32;
    match ret {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(Hop {
            oif: params.ifindex,
            smac: params.smac,
            dmac: params.dmac,
        }),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(Some(FWD_PASS_TOO_BIG)),
        BPF_FIB_LKUP_RET_BLACKHOLE
        | BPF_FIB_LKUP_RET_UNREACHABLE
        | BPF_FIB_LKUP_RET_PROHIBIT
        | BPF_FIB_LKUP_RET_NO_NEIGH => Err(Some(FWD_PASS_NO_ROUTE)),
        // Local, broadcast, forwarding off: not forwarded traffic.
        _ => Err(None),
    }
}

/// A route request for the inner packet's destination (or, `reverse`, its
/// source, with the ports swapped as `fib_validate_source` swaps them) as
/// received on `ifindex`, made in `slot`.
#[inline(always)]
fn inner_request<'a>(
    slot: &'a mut MaybeUninit<fib::FibParams>,
    inner: &InnerInfo,
    flow: &Flow,
    ifindex: u32,
    reverse: bool,
) -> &'a mut fib::FibParams {
    let params = request_for(slot, inner, ifindex, reverse);
    params.l4_protocol = flow.proto;
    (params.sport, params.dport) = if reverse {
        (flow.dport, flow.sport)
    } else {
        (flow.sport, flow.dport)
    };
    params
}

/// `inner_request`'s addresses.
#[inline(always)]
fn request_for<'a>(
    slot: &'a mut MaybeUninit<fib::FibParams>,
    inner: &InnerInfo,
    ifindex: u32,
    reverse: bool,
) -> &'a mut fib::FibParams {
    match inner.family {
        Family::V4 => {
            let params = fib::request_in(slot, fib::AF_INET, ifindex);
            let dst = wire::join_words(inner.dst[0], inner.dst[1]);
            let (src, dst) = if reverse {
                (dst, inner.src)
            } else {
                (inner.src, dst)
            };
            params.__bindgen_anon_2.tos = inner.tos;
            params.__bindgen_anon_3.ipv4_src = src;
            params.__bindgen_anon_4.ipv4_dst = dst;
            params
        }
        Family::V6 => {
            let params = fib::request_in(slot, fib::AF_INET6, ifindex);
            let (src, dst) = if reverse {
                (inner.dst, inner.src6)
            } else {
                (inner.src6, inner.dst)
            };
            params.__bindgen_anon_3.ipv6_src = fib::v6_words(src);
            params.__bindgen_anon_4.ipv6_dst = fib::v6_words(dst);
            params
        }
    }
}

/// Whether the route back to the packet's source leaves by `ifindex`,
/// the interface it arrived on. For IPv4 asked as the kernel's
/// `fib_validate_source` asks it (from the loopback device, so that `ip
/// rule iif` matches as there, ports swapped): that is strict rp_filter's
/// check, and what passes it passes loose and no rp_filter too, so the
/// fast path needs no copy of the sysctls and obeys one changed at any
/// time. Everything else (an asymmetric route back, one of the gateway's
/// own addresses, no route back) goes to the kernel, which decides with
/// its rp_filter as it stands. IPv6 has no rp_filter: only `rpfilter_ipv6`
/// (the tunnel's `rpfilter`) asks, as tc asks it (from the tunnel,
/// without source or ports).
#[inline(always)]
fn source_leads_back(
    ctx: &XdpContext,
    inner: &InnerInfo,
    flow: &Flow,
    ifindex: u32,
    rpfilter_ipv6: bool,
) -> bool {
    let mut slot = MaybeUninit::uninit();
    let params = if inner.is_v6() {
        if !rpfilter_ipv6 {
            return true;
        }
        let params = fib::request_in(&mut slot, fib::AF_INET6, ifindex);
        params.__bindgen_anon_4.ipv6_dst = fib::v6_words(inner.src6);
        params
    } else {
        inner_request(&mut slot, inner, flow, LOOPBACK_IFINDEX, true)
    };
    let ret = fib::lookup(ctx, params, BPF_FIB_LOOKUP_SKIP_NEIGH);
    ret == BPF_FIB_LKUP_RET_SUCCESS as i64 && params.ifindex == ifindex
}

/// Drops Ethernet padding after the IP packet's `len` bytes.
#[inline(always)]
fn trim_to(ctx: &XdpContext, len: u32) -> Result<(), ()> {
    let frame_len = (ctx.data_end() - ctx.data()).saturating_sub(L3) as u32;
    if frame_len <= len {
        return Ok(());
    }
    // SAFETY: helper call on our own context.
    match unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((frame_len - len) as i32)) } {
        0 => Ok(()),
        _ => Err(()),
    }
}

/// Takes this hop off the TTL (IPv4, with the header checksum updated as
/// the kernel's ip_decrease_ttl does) or the hop limit (IPv6).
#[inline(always)]
fn decrement_ttl(ctx: &XdpContext, inner: &InnerInfo) -> Result<(), ()> {
    let words: *mut [u16; 6] = ptr_at_mut(ctx, L3)?;
    // SAFETY: bounds checked; halfwords at an even offset.
    unsafe {
        if inner.is_v6() {
            // Next header and hop limit.
            (*words)[3] = (u16::from_be((*words)[3]) - 1).to_be();
        } else {
            (*words)[4] = (u16::from_be((*words)[4]) - 0x0100).to_be();
            let check = (*words)[5] as u32 + 0x0100u16.to_be() as u32;
            (*words)[5] = (check + (check >= 0xFFFF) as u32) as u16;
        }
    }
    Ok(())
}

/// Addresses the frame to the next hop.
#[inline(always)]
fn write_macs(ctx: &XdpContext, dmac: [u8; 6], smac: [u8; 6]) -> Result<(), ()> {
    let dst: [u16; 3] = wire::words_of(dmac);
    let src: [u16; 3] = wire::words_of(smac);
    write_at(ctx, 0, [dst, src])
}
