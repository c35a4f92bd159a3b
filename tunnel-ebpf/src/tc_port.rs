//! tc ingress on a tunnel's port, the other end of its veth pair: what the
//! tunnel interface sends arrives here, is encapsulated (outer IPv4, and
//! GRE for `mode gre`) and goes to the underlay's next hop.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_GRE,
        BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::generated::{bpf_get_prandom_u32, bpf_skb_change_head},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use aya_log_ebpf::{debug, trace};
use tunnel_common::{
    maps::*,
    stats::*,
    wire::{self, Family, Ipv4Fields, Ipv4Words},
};

use crate::{
    csum, fib,
    gre::{self, Gre},
    maps::{self, NEIGH, PORTS, TUNNELS, TUNNELS_BY_IF},
    monitor,
    parse::{read_at, write_at},
    pmtu,
    teb::{self, Room},
};

/// The Ethernet header's destination: a placeholder (`bpf_redirect_neigh`
/// writes the real addresses, but it refuses an skb without a MAC header,
/// or with a multicast destination). The source is left as it is.
const PLACEHOLDER_DST: [u16; 3] = wire::words_of([0x02, 0, 0, 0, 0, 0x01]);

/// The outer TTL for a frame without an IP header to inherit it from, as
/// the kernel's route gives it (`net.ipv4.ip_default_ttl`).
const DEFAULT_TTL: u8 = 64;

/// EtherType and IPv4 header, as written after the Ethernet addresses.
/// Halfwords throughout, so that each is one store.
#[repr(C)]
struct OuterHeaders {
    eth_type: u16,
    ip: Ipv4Words,
}

/// What the encapsulation needs to know about the inner packet.
struct InnerInfo {
    family: Family,
    tos: u8,
    ttl: u8,
    /// IPv4: source address, header length, flags and fragment offset.
    src: u32,
    /// IPv6: source address as halfwords in memory order.
    src6: [u16; 8],
    header_len: usize,
    frag: u16,
    /// Destination address as halfwords in memory order (IPv4 in the
    /// first two).
    dst: [u16; 8],
    /// The whole Ethernet frame travels (gretap).
    ethernet: bool,
}

impl InnerInfo {
    /// A gretap frame that is not IP (ARP...): nothing to inherit; the
    /// outer TTL defaults as the kernel's route does (`ip_default_ttl`).
    #[inline(always)]
    fn opaque() -> Self {
        InnerInfo {
            family: Family::V4,
            tos: 0,
            ttl: DEFAULT_TTL,
            src: 0,
            src6: [0; 8],
            header_len: 0,
            frag: 0,
            dst: [0; 8],
            ethernet: true,
        }
    }

    #[inline(always)]
    fn v6(&self) -> bool {
        self.family == Family::V6
    }

    /// An IPv4 packet that may not be fragmented.
    #[inline(always)]
    fn df(&self) -> bool {
        !self.v6() && self.frag & wire::IP_DF != 0
    }
}

/// Where the outer packet goes: its source, the interface it leaves by,
/// and the next hop where the route lookup found one (without, the kernel
/// routes it through the interface itself).
struct Path {
    local: u32,
    underlay: u32,
    next_hop: Option<u32>,
}

/// The configuration of the tunnel whose data path runs on `ifindex` (its
/// port); None when the device is not one of ours.
#[inline(always)]
pub fn tunnel_config(ifindex: u32) -> Option<&'static TunnelConfig> {
    // SAFETY: map values stay valid while the program runs; userspace
    // replaces a configuration whole, never field by field.
    if ifindex < IF_INDEXED_MAX {
        return TUNNELS_BY_IF
            .get_ptr(ifindex)
            .map(|cfg| unsafe { &*cfg })
            .filter(|cfg| cfg.mode != 0);
    }
    PORTS
        .get_ptr(ifindex)
        .or_else(|| TUNNELS.get_ptr(ifindex))
        .map(|cfg| unsafe { &*cfg })
}

/// Encapsulates a packet the tunnel interface sent (seen on its port).
#[inline(always)]
pub fn encap(ctx: &TcContext, cfg: &TunnelConfig) -> i32 {
    let ifindex = cfg.ifindex;
    match try_encap(ctx, cfg, ifindex) {
        Ok(action) => action,
        Err(reason) => {
            maps::count(ifindex, reason);
            monitor::dropped(ctx, monitor::MON_HOOK_ENCAP, ifindex, ifindex, reason);
            if maps::log_enabled(LOG_DEBUG) {
                debug!(
                    ctx,
                    "encap on ifindex={} failed: reason={}", ifindex, reason
                );
            }
            maps::tunnel_stats(cfg.stats_slot, |s| {
                s.tx_errors += 1;
                match reason {
                    TX_NO_BUFS => s.tx_no_bufs += 1,
                    TX_NO_ROUTE | TX_NO_NEIGH | TX_NO_SOURCE => s.tx_no_route += 1,
                    TX_DEAD_LOOP => s.tx_dead_loop += 1,
                    _ => {}
                }
            });
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_encap(ctx: &TcContext, cfg: &TunnelConfig, ifindex: u32) -> Result<i32, u32> {
    // Read once: each read of map memory is a new unknown to the
    // verifier, and every test of one doubles the paths it walks.
    // SAFETY: a plain read of the configuration the caller holds.
    let ethernet = unsafe { core::ptr::read_volatile(&cfg.mode) } == MODE_GRETAP;
    if ethernet && teb::is_reentry(ctx) {
        let path = path_to(ctx, cfg, cfg.remote)?;
        return send(path);
    }
    // The port sees the tunnel interface's Ethernet frames (as does
    // BPF_PROG_TEST_RUN); an L3 device would have no link-layer header.
    let l2 = if cfg.flags & TUNNEL_F_ETH_DEV != 0 {
        wire::ETH_HDR_LEN
    } else {
        0
    };
    let inner = inner_info(ctx, cfg.mode, ethernet, l2)?;
    let inner_len = ctx.len().saturating_sub(l2 as u32);
    let gre_flags = cfg.gre_output_flags();
    // A checksum or sequence number is per packet: GSO cannot repeat them.
    if gre_flags & (wire::GRE_CSUM | wire::GRE_SEQ) != 0 && gso_segments(ctx) > 1 {
        return Err(TX_GSO_UNSUPPORTED);
    }
    // A gretap link always has its remote.
    let remote = if inner.ethernet || cfg.remote != 0 {
        cfg.remote
    } else {
        remote_for(cfg, ifindex, &inner)?
    };
    let path = path_to(ctx, cfg, remote)?;
    let overhead = wire::encap_overhead(cfg.mode, gre_flags);
    let segment = segment_len(ctx, l2, &inner, inner_len) + overhead;
    let fragmentable = match enforce_path_mtu(ctx, cfg, ifindex, remote, &inner, segment, overhead)?
    {
        PathFit::Answered(action) => return Ok(action),
        PathFit::Fits => false,
        PathFit::Fragmentable => true,
    };
    let (gre, inner_sum) = gre_header(ctx, cfg, gre_flags, &inner, l2, inner_len)?;
    let tot_len = (inner_len as usize + overhead).min(u16::MAX as usize) as u16;
    let outer = outer_ipv4(cfg, &inner, path.local, remote, tot_len, fragmentable);
    // inner_info found an IP header where skb->protocol is IP.
    let ip = inner.header_len != 0;
    let room = push_headers(ctx, cfg, overhead, &outer, &gre, ip, inner_sum)?;
    let action = if room == Room::Prepended {
        teb::send_prepended(ctx, cfg.datapath_ifindex())
    } else {
        send(path)?
    };
    if action != TC_ACT_REDIRECT {
        return Err(TX_NO_ROUTE);
    }
    count_sent(ctx, cfg, ifindex, remote, inner_len);
    Ok(action)
}

/// Sends the encapsulated packet on its way along `path`. With the next hop
/// the route lookup found, the kernel only resolves its neighbour; without,
/// it routes through the underlay itself.
#[inline(always)]
fn send(path: Path) -> Result<i32, u32> {
    let action = match path.next_hop {
        Some(next_hop) => fib::redirect_neigh(path.underlay, fib::next_hop_v4(next_hop)),
        None => fib::redirect_routed(path.underlay),
    };
    if action != TC_ACT_REDIRECT {
        return Err(TX_NO_ROUTE);
    }
    Ok(action)
}

/// The inner packet's headers, at `l2`; Err when the mode cannot carry it.
#[inline(always)]
fn inner_info(ctx: &TcContext, mode: u8, ethernet: bool, l2: usize) -> Result<InnerInfo, u32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let protocol = unsafe { (*ctx.skb.skb).protocol } as u16;
    let carries_v4 = ethernet || mode == MODE_GRE || mode == MODE_IPIP;
    let carries_v6 = mode != MODE_IPIP;
    if protocol == wire::ETH_P_IP.to_be() && carries_v4 {
        let ip: Ipv4Words = read_head(ctx, l2)?;
        if ip.version() != 4 {
            return Err(TX_BAD_INNER);
        }
        Ok(InnerInfo {
            family: Family::V4,
            tos: ip.tos(),
            ttl: ip.ttl(),
            src: ip.src(),
            src6: [0; 8],
            header_len: ip.header_len(),
            frag: ip.frag(),
            dst: [ip.0[8], ip.0[9], 0, 0, 0, 0, 0, 0],
            ethernet,
        })
    } else if protocol == wire::ETH_P_IPV6.to_be() && carries_v6 {
        let head: [u16; wire::IPV6_HDR_LEN / 2] = read_head(ctx, l2)?;
        let first = u16::from_be(head[0]);
        if first >> 12 != 6 {
            return Err(TX_BAD_INNER);
        }
        let mut dst = [0u16; 8];
        dst.copy_from_slice(&head[12..20]);
        let mut src6 = [0u16; 8];
        src6.copy_from_slice(&head[4..12]);
        Ok(InnerInfo {
            family: Family::V6,
            tos: (first >> 4) as u8,
            ttl: u16::from_be(head[3]) as u8,
            src: 0,
            src6,
            header_len: wire::IPV6_HDR_LEN,
            frag: 0,
            dst,
            ethernet,
        })
    } else if ethernet {
        Ok(InnerInfo::opaque())
    } else {
        Err(TX_BAD_INNER)
    }
}

#[inline(always)]
fn gso_segments(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel gave us.
    unsafe { (*ctx.skb.skb).gso_segs }
}

/// The size of the inner packets that will be on the wire: the packet's
/// own, or for a GSO packet one segment's (its headers and `gso_size`).
#[inline(always)]
fn segment_len(ctx: &TcContext, l2: usize, inner: &InnerInfo, inner_len: u32) -> usize {
    // SAFETY: reading a field of the context the kernel gave us.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size } as usize;
    if gso_segments(ctx) <= 1 || gso_size == 0 {
        return inner_len as usize;
    }
    // TCP's header length is in its data offset; anything else (UDP) has
    // an 8-byte header.
    let l4 = l2 + inner.header_len;
    let l4_len = match read_head::<[u8; 13]>(ctx, l4) {
        Ok(tcp) => ((tcp[12] >> 4) as usize * 4).max(8),
        Err(_) => 8,
    };
    inner.header_len + l4_len + gso_size
}

/// The first bytes of the inner packet: straight from the linear part,
/// where they nearly always are, or copied.
#[inline(always)]
fn read_head<T: Copy>(ctx: &TcContext, off: usize) -> Result<T, u32> {
    match read_at::<T, TcContext>(ctx, off) {
        Ok(head) => Ok(head),
        Err(()) => ctx.load(off).map_err(|_| TX_BAD_INNER),
    }
}

/// The outer destination of a tunnel whose remote is decided per packet:
/// ISATAP's address embedded in the inner destination, the longest
/// matching multipoint neighbour, or the ISATAP default router.
#[inline(always)]
fn remote_for(cfg: &TunnelConfig, ifindex: u32, inner: &InnerInfo) -> Result<u32, u32> {
    let dst: [u8; 16] = wire::bytes_of(inner.dst);
    if cfg.mode == MODE_ISATAP && inner.v6() {
        if let Some(v4) = wire::isatap_ipv4(&dst) {
            return Ok(u32::from_ne_bytes(v4));
        }
    }
    let (family, bits) = if inner.v6() { (6, 128) } else { (4, 32) };
    let key = Key::new(
        NEIGH_KEY_FIXED_BITS + bits,
        NeighKey {
            ifindex,
            family,
            addr: dst,
        },
    );
    if let Some(neigh) = NEIGH.get(&key) {
        return Ok(neigh.remote);
    }
    if cfg.mode == MODE_ISATAP && cfg.prl_default != 0 {
        return Ok(cfg.prl_default);
    }
    Err(TX_NO_NEIGH)
}

/// The way to `remote`. The route is looked up per packet, as the kernel's
/// tunnels do: the way out follows route changes. A tunnel bound to `dev`
/// leaves by it, and bpf_redirect_neigh routes through it; its route is
/// looked up only for the source of `local any`.
#[inline(always)]
fn path_to(ctx: &TcContext, cfg: &TunnelConfig, remote: u32) -> Result<Path, u32> {
    let bound = cfg.flags & TUNNEL_F_BOUND_DEV != 0;
    if bound && cfg.local != 0 {
        return Ok(Path {
            local: cfg.local,
            underlay: cfg.underlay_ifindex,
            next_hop: None,
        });
    }
    match route_to(ctx, cfg, remote) {
        Ok(route) => {
            let local = if cfg.local != 0 { cfg.local } else { route.src };
            Ok(if bound {
                Path {
                    local,
                    underlay: cfg.underlay_ifindex,
                    next_hop: None,
                }
            } else {
                Path {
                    local,
                    underlay: route.oif,
                    next_hop: Some(route.next_hop),
                }
            })
        }
        Err(Some(reason)) => Err(reason),
        // No route lookup here: what the configuration says.
        Err(None) => {
            let local = if cfg.local != 0 {
                cfg.local
            } else if cfg.default_src != 0 {
                cfg.default_src
            } else {
                return Err(TX_NO_SOURCE);
            };
            Ok(Path {
                local,
                underlay: cfg.underlay_ifindex,
                next_hop: None,
            })
        }
    }
}

/// Where the route to `remote` leads, looked up per packet as the kernel's
/// tunnels route each packet, so traffic follows route changes.
struct Route {
    src: u32,
    oif: u32,
    /// The next hop (the gateway, or `remote` itself on link).
    next_hop: u32,
}

/// The route to `remote`, looked up as if the packet arrived on the port
/// (userspace enables forwarding there, which bpf_fib_lookup requires; the
/// port receives nothing but what the tunnel interface sends, so nothing
/// else is forwarded). Err(None) where it cannot be looked up here (a
/// tunnel without a port): the caller falls back to the configuration.
#[inline(always)]
fn route_to(ctx: &TcContext, cfg: &TunnelConfig, remote: u32) -> Result<Route, Option<u32>> {
    let mut params = fib::request(fib::AF_INET, cfg.datapath_ifindex());
    params.__bindgen_anon_4.ipv4_dst = remote;
    // A configured local address is the flow's source, as the kernel's
    // tunnels route with it (policy rules `from` match); only `local any`
    // asks the helper to pick one.
    params.__bindgen_anon_3.ipv4_src = cfg.local;
    let flags = if cfg.local != 0 {
        BPF_FIB_LOOKUP_SKIP_NEIGH
    } else {
        BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC
    };
    let ret = fib::lookup(ctx, &mut params, flags);
    if ret == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // An outer packet routed into the tunnel itself would come back
        // here: drop it instead of looping (the kernel's DeadLoop).
        if params.ifindex == cfg.ifindex {
            return Err(Some(TX_DEAD_LOOP));
        }
        // SAFETY: the helper filled in the source and next hop.
        let (src, next_hop) = unsafe {
            (
                params.__bindgen_anon_3.ipv4_src,
                params.__bindgen_anon_4.ipv4_dst,
            )
        };
        if src != 0 {
            return Ok(Route {
                src,
                oif: params.ifindex,
                next_hop,
            });
        }
    }
    match ret as u32 {
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            Err(Some(TX_NO_ROUTE))
        }
        _ => Err(None),
    }
}

/// A path MTU learnt from ICMP: what does not fit and may not be
/// fragmented (IPv4 with DF, IPv6) is answered, as the kernel's
/// tnl_update_pmtu answers it; Ok(Some(action)) then. Nothing smaller than
/// the least path MTU a report may set needs the lookup.
#[inline(always)]
fn enforce_path_mtu(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    ifindex: u32,
    remote: u32,
    inner: &InnerInfo,
    segment: usize,
    overhead: usize,
) -> Result<PathFit, u32> {
    if segment as u32 <= MIN_PMTU {
        return Ok(PathFit::Fits);
    }
    let Some(path) = pmtu::path_mtu(ifindex, remote) else {
        return Ok(PathFit::Fits);
    };
    if segment as u32 <= path {
        return Ok(PathFit::Fits);
    }
    // A bridged frame is not the tunnel's to answer, as with the
    // kernel's gretap: too big, it is dropped.
    if inner.ethernet {
        return Err(TX_TOO_BIG_DROP);
    }
    let fit = path.saturating_sub(overhead as u32);
    let answered = if inner.v6() && fit >= pmtu::IPV6_MIN_MTU {
        Some(pmtu::answer_too_big_v6(
            ctx, cfg, inner.src6, inner.dst, fit,
        )?)
    } else if inner.df() {
        let v4 = pmtu::InnerV4 {
            src: inner.src,
            dst: wire::join_words(inner.dst[0], inner.dst[1]),
            header_len: inner.header_len,
            later_fragment: inner.frag & wire::IP_OFFSET != 0,
        };
        Some(pmtu::answer_too_big(ctx, cfg, &v4, fit)?)
    } else {
        None
    };
    // Otherwise sent as it is: the path may fragment it (DF as configured).
    let reason = if answered.is_some() {
        TX_TOO_BIG
    } else {
        TX_FRAGMENTABLE
    };
    maps::count(ifindex, reason);
    Ok(match answered {
        Some(action) => PathFit::Answered(action),
        // IPv6 below its minimum MTU on this path can only get through in
        // outer fragments, as sit sends it; the far end reassembles them.
        None if inner.v6() => PathFit::Fragmentable,
        None => PathFit::Fits,
    })
}

/// What the path MTU makes of a packet.
enum PathFit {
    /// It fits (or no path MTU is known): sent with DF as configured.
    Fits,
    /// Too big and answered with an ICMP error: the answer's verdict.
    Answered(i32),
    /// Too big, and may only go in outer fragments: sent without DF.
    Fragmentable,
}

/// The GRE header a `mode gre` tunnel sends (`flags` are none for other
/// modes), and the sum of the inner packet its checksum covers: taken now,
/// before any header is pushed in front.
#[inline(always)]
fn gre_header(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    flags: u16,
    inner: &InnerInfo,
    l2: usize,
    inner_len: u32,
) -> Result<(Gre, u32), u32> {
    let inner_sum = if flags & wire::GRE_CSUM != 0 {
        // A frame that is not IP has no inner header to sum from.
        let known = match inner.header_len {
            0 => None,
            _ => csum::inner_sum(ctx, l2, inner.v6()),
        };
        let sum = match known {
            Some(s) => s.sum,
            None => csum::sum_bytes(ctx, l2, inner_len as usize).ok_or(TX_BAD_INNER)?,
        };
        // A gretap frame's Ethernet header is part of the GRE payload.
        if inner.ethernet {
            csum::add(
                sum,
                csum::sum_array(&read_head::<[u8; wire::ETH_HDR_LEN]>(ctx, 0)?),
            )
        } else {
            sum
        }
    } else {
        0
    };
    let seq = if flags & wire::GRE_SEQ != 0 {
        gre::next_sequence(cfg.ifindex).ok_or(TX_NO_BUFS)?
    } else {
        0
    };
    let gre = Gre {
        flags,
        family: inner.family,
        teb: inner.ethernet,
        key: cfg.okey,
        seq,
    };
    Ok((gre, inner_sum))
}

/// The outer IPv4 header's fields, as the kernel's tunnels set them.
#[inline(always)]
fn outer_ipv4(
    cfg: &TunnelConfig,
    inner: &InnerInfo,
    local: u32,
    remote: u32,
    tot_len: u16,
    fragmentable: bool,
) -> Ipv4Fields {
    let proto = match cfg.mode {
        _ if inner.ethernet => wire::IPPROTO_GRE,
        MODE_GRE => wire::IPPROTO_GRE,
        MODE_IPIP => wire::IPPROTO_IPIP,
        _ => wire::IPPROTO_IPV6,
    };
    let ttl = if cfg.ttl != 0 { cfg.ttl } else { inner.ttl };
    let dscp = if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
        inner.tos
    } else {
        cfg.tos
    };
    // DF always with `pmtudisc`, else the inner IPv4 packet's own; never
    // on IPv6 that the path can carry only in fragments.
    let df = !fragmentable && (cfg.flags & TUNNEL_F_PMTUDISC != 0 || inner.df());
    // Like the kernel: DF packets carry ID 0, others a random one.
    let id = if df {
        0
    } else {
        // SAFETY: plain helper call.
        (unsafe { bpf_get_prandom_u32() }) as u16
    };
    Ipv4Fields {
        tos: wire::ecn_encapsulate(dscp, inner.tos),
        tot_len,
        id,
        frag: if df { wire::IP_DF } else { 0 },
        ttl,
        proto,
        src: local,
        dst: remote,
    }
}

/// Makes room for `overhead` bytes of outer headers (and an Ethernet
/// header where the device had none), then writes them.
#[inline(always)]
fn push_headers(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    overhead: usize,
    outer: &Ipv4Fields,
    gre: &Gre,
    ip: bool,
    inner_sum: u32,
) -> Result<Room, u32> {
    let is_gre = gre.teb || cfg.mode == MODE_GRE;
    let room = if gre.teb {
        teb::make_room(ctx, overhead, ip)?
    } else {
        let mut flags = (BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) as u64;
        if is_gre {
            flags |= BPF_F_ADJ_ROOM_ENCAP_L4_GRE as u64;
        }
        ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
            .map_err(|_| TX_NO_BUFS)?;
        Room::Adjusted
    };
    let eth_dev = cfg.flags & TUNNEL_F_ETH_DEV != 0;
    // SAFETY: helper call on our own skb.
    if !eth_dev && unsafe { bpf_skb_change_head(ctx.skb.skb, wire::ETH_HDR_LEN as u32, 0) } != 0 {
        return Err(TX_NO_BUFS);
    }
    let headers = OuterHeaders {
        eth_type: wire::ETH_P_IP.to_be(),
        ip: Ipv4Words::from_fields(outer),
    };
    // Written in place: adjust_room left the new headers linear.
    write_at(ctx, 0, PLACEHOLDER_DST).map_err(|_| TX_NO_BUFS)?;
    write_at(ctx, 12, headers).map_err(|_| TX_NO_BUFS)?;
    if is_gre {
        let off = wire::ETH_HDR_LEN + wire::IPV4_HDR_LEN;
        gre::write(ctx, off, gre, inner_sum).map_err(|_| TX_NO_BUFS)?;
    }
    Ok(room)
}

/// Counts (and at trace level logs) an encapsulated packet.
#[inline(always)]
fn count_sent(ctx: &TcContext, cfg: &TunnelConfig, ifindex: u32, remote: u32, inner_len: u32) {
    maps::count(ifindex, TX_ENCAP);
    monitor::handled(ctx, monitor::MON_HOOK_ENCAP, ifindex, ifindex, TX_ENCAP);
    if maps::log_enabled(LOG_TRACE) {
        trace!(
            ctx,
            "encap ifindex={} to {:i} len={}",
            ifindex,
            u32::from_be(remote),
            inner_len
        );
    }
    maps::tunnel_stats(cfg.stats_slot, |s| {
        s.tx_packets += 1;
        s.tx_bytes += inner_len as u64;
    });
}
