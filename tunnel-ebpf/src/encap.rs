//! TC egress on a tunnel interface: push the outer IPv4 (+GRE) header and
//! send the packet to the underlay's next hop.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_GRE, BPF_F_ADJ_ROOM_FIXED_GSO, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::generated::{bpf_get_prandom_u32, bpf_redirect_neigh, bpf_skb_change_head},
    programs::TcContext,
};
use aya_log_ebpf::{debug, trace};
use tunnel_common::{
    maps::*,
    stats::*,
    wire::{self, GreHdr},
};

use crate::maps::{self, TUNNELS};

/// Ethernet + IPv4 as written in front of the inner packet. The Ethernet
/// addresses are placeholders: `bpf_redirect_neigh` fills in the real ones,
/// but it refuses an skb that has no MAC header at all.
#[repr(C)]
struct OuterHeaders {
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    eth_type: [u8; 2],
    ip: [u16; wire::IPV4_HDR_LEN / 2],
}

/// What the encapsulation needs to know about the inner packet.
struct InnerInfo {
    tos: u8,
    ttl: u8,
    gre_protocol: u16,
}

/// None when the packet's device is not a tunnel of ours.
#[inline(always)]
pub fn encap(ctx: &TcContext) -> Option<i32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: the value is copied out right away.
    let cfg = (unsafe { TUNNELS.get(ifindex) }).copied()?;
    Some(match try_encap(ctx, &cfg, ifindex) {
        Ok(action) => action,
        Err(reason) => {
            maps::count(ifindex, reason);
            if maps::log_enabled(LOG_DEBUG) {
                debug!(
                    ctx,
                    "encap on ifindex={} failed: reason={}", ifindex, reason
                );
            }
            maps::tunnel_stats(ifindex, |s| {
                s.tx_errors += 1;
                match reason {
                    TX_NO_BUFS => s.tx_no_bufs += 1,
                    TX_NO_ROUTE => s.tx_no_route += 1,
                    _ => {}
                }
            });
            TC_ACT_SHOT
        }
    })
}

#[inline(always)]
fn inner_info(ctx: &TcContext, mode: u8, l2: usize) -> Result<InnerInfo, u32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let protocol = unsafe { (*ctx.skb.skb).protocol } as u16;
    if protocol == wire::ETH_P_IP.to_be() && mode != MODE_SIT {
        let head: [u8; 10] = ctx.load(l2).map_err(|_| TX_BAD_INNER)?;
        if head[0] >> 4 != 4 {
            return Err(TX_BAD_INNER);
        }
        Ok(InnerInfo {
            tos: head[1],
            ttl: head[8],
            gre_protocol: wire::ETH_P_IP,
        })
    } else if protocol == wire::ETH_P_IPV6.to_be() && mode != MODE_IPIP {
        let head: [u8; 8] = ctx.load(l2).map_err(|_| TX_BAD_INNER)?;
        if head[0] >> 4 != 6 {
            return Err(TX_BAD_INNER);
        }
        Ok(InnerInfo {
            tos: (head[0] << 4) | (head[1] >> 4),
            ttl: head[7],
            gre_protocol: wire::ETH_P_IPV6,
        })
    } else {
        Err(TX_BAD_INNER)
    }
}

#[inline(always)]
fn try_encap(ctx: &TcContext, cfg: &TunnelConfig, ifindex: u32) -> Result<i32, u32> {
    // TUN devices have no link-layer header; an Ethernet device (and
    // BPF_PROG_TEST_RUN, which always builds an Ethernet frame) has one.
    let eth_dev = cfg.flags & TUNNEL_F_ETH_DEV != 0;
    let l2 = if eth_dev { wire::ETH_HDR_LEN } else { 0 };
    let inner = inner_info(ctx, cfg.mode, l2)?;
    let inner_len = ctx.len().saturating_sub(l2 as u32);

    let gre = cfg.mode == MODE_GRE;
    let gre_flags = if cfg.flags & TUNNEL_F_OKEY != 0 {
        wire::GRE_KEY
    } else {
        0
    };
    let overhead = wire::encap_overhead(cfg.mode, gre_flags);
    let proto = match cfg.mode {
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
    let tos = wire::ecn_encapsulate(dscp, inner.tos);
    // pmtudisc (the default) sets DF on every outer header; nopmtudisc
    // clears it, so the path may fragment the outer packet.
    let df = cfg.flags & TUNNEL_F_PMTUDISC != 0;
    // Like the kernel: DF packets carry ID 0, others a random one.
    let id = if df {
        0
    } else {
        // SAFETY: plain helper call.
        (unsafe { bpf_get_prandom_u32() }) as u16
    };
    let tot_len = (inner_len as usize + overhead).min(u16::MAX as usize) as u16;

    let mut flags = (BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4) as u64;
    if gre {
        flags |= BPF_F_ADJ_ROOM_ENCAP_L4_GRE as u64;
    }
    ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| TX_NO_BUFS)?;
    // SAFETY: helper call on our own skb.
    if !eth_dev && unsafe { bpf_skb_change_head(ctx.skb.skb, wire::ETH_HDR_LEN as u32, 0) } != 0 {
        return Err(TX_NO_BUFS);
    }

    let local = cfg.local.to_ne_bytes();
    let remote = cfg.remote.to_ne_bytes();
    let mut ip = [
        u16::from_be_bytes([0x45, tos]),
        tot_len,
        id,
        if df { wire::IP_DF } else { 0 },
        u16::from_be_bytes([ttl, proto]),
        0,
        u16::from_be_bytes([local[0], local[1]]),
        u16::from_be_bytes([local[2], local[3]]),
        u16::from_be_bytes([remote[0], remote[1]]),
        u16::from_be_bytes([remote[2], remote[3]]),
    ];
    ip[5] = wire::ipv4_header_checksum(&ip);
    let mut outer = OuterHeaders {
        eth_dst: [0x02, 0, 0, 0, 0, 0x01],
        eth_src: [0; 6],
        eth_type: wire::ETH_P_IP.to_be_bytes(),
        ip: [0; wire::IPV4_HDR_LEN / 2],
    };
    let mut i = 0;
    while i < ip.len() {
        outer.ip[i] = ip[i].to_be();
        i += 1;
    }
    ctx.store(0, &outer, 0).map_err(|_| TX_NO_BUFS)?;

    if gre {
        let off = wire::ETH_HDR_LEN + wire::IPV4_HDR_LEN;
        let hdr = GreHdr {
            flags_version: gre_flags.to_be_bytes(),
            protocol: inner.gre_protocol.to_be_bytes(),
        };
        ctx.store(off, &hdr, 0).map_err(|_| TX_NO_BUFS)?;
        if gre_flags & wire::GRE_KEY != 0 {
            ctx.store(off + wire::gre_key_offset(gre_flags), &cfg.okey, 0)
                .map_err(|_| TX_NO_BUFS)?;
        }
    }

    // SAFETY: plain helper call; no explicit next hop, the kernel's FIB and
    // neighbour tables resolve it.
    let action =
        unsafe { bpf_redirect_neigh(cfg.underlay_ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    if action != TC_ACT_REDIRECT {
        return Err(TX_NO_ROUTE);
    }
    maps::count(ifindex, TX_ENCAP);
    if maps::log_enabled(LOG_TRACE) {
        trace!(
            ctx,
            "encap ifindex={} to {:i} len={}",
            ifindex,
            u32::from_be(cfg.remote),
            inner_len
        );
    }
    maps::tunnel_stats(ifindex, |s| {
        s.tx_packets += 1;
        s.tx_bytes += inner_len as u64;
    });
    Ok(action)
}
