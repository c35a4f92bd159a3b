//! xtun data plane. One module per hook, over shared protocol modules:
//!
//! - `xdp`: `xtun_decap` (XDP, on underlay NICs) strips the outer IPv4
//!   (+GRE) header of packets that match a configured tunnel and tags the
//!   frame with its tunnel in XDP metadata.
//! - `tc_ingress`: `xtun_tc` on an underlay's tc ingress delivers tagged
//!   frames to their tunnel interface, or decapsulates itself on underlays
//!   without XDP.
//! - `tc_port`: `xtun_tc` on a tunnel port's tc ingress (the other end of
//!   the tunnel interface's veth pair) encapsulates what the tunnel
//!   interface sends and sends it to the underlay neighbour.
//! - `forward`: the XDP forwarding fast path, run by `xtun_decap` on LANs
//!   (`xtun attach LAN --forward xdp`) and after decapsulation.
//! - `defrag`: `xtun_defrag`, a second tc program on each underlay's
//!   ingress before `xtun_tc`, reassembles outer IPv4 fragments of tunnel
//!   packets.
//! - Shared: `classify` (the outer-header classifier both receive hooks
//!   use), `encap` (the encapsulation steps tc and XDP share), `gre`
//!   (GRE parser, builder, header sum, sequence numbers),
//!   `csum`, `fib` (routes and next hops), `pmtu`, `parse`, `maps`,
//!   `monitor`, `teb` (Ethernet over GRE).
#![no_std]
#![no_main]
// Atomic read-modify-write on map memory: the BPF target declares no CAS,
// so core's atomic types lack it, but the ISA (v3) has it.
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod classify;
mod csum;
mod decap6;
mod defrag;
mod encap;
mod encap6;
mod fib;
mod forward;
mod gre;
mod maps;
mod monitor;
mod parse;
mod pmtu;
mod tc_ingress;
mod tc_port;
mod teb;
mod xdp;

use aya_ebpf::{
    bindings::{xdp_action, TC_ACT_SHOT, TC_ACT_UNSPEC},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::trace;
use tunnel_common::maps::{
    is_ipv6_underlay, CLASSID_TC_UNDERLAY, CLASSID_TUNNEL, CLASSID_XDP_UNDERLAY, LOG_TRACE,
    MODE_IP6GRETAP,
};

#[xdp]
pub fn xtun_decap(ctx: XdpContext) -> u32 {
    // Each family's path a subprogram of its own: their stack frames
    // would not fit in one.
    if let Some(action) = xdp::try_xdp6(&ctx) {
        return action;
    }
    xdp_v4(&ctx)
}

#[inline(never)]
fn xdp_v4(ctx: &XdpContext) -> u32 {
    match xdp::try_xdp(ctx) {
        Ok(action) => action,
        Err(reason) => {
            // SAFETY: reading a field of the context the kernel gave us.
            let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
            maps::count(ifindex, reason);
            monitor::dropped(ctx, monitor::MON_HOOK_XDP, ifindex, 0, reason);
            if maps::log_enabled(LOG_TRACE) {
                trace!(ctx, "pass ifindex={} reason={}", ifindex, reason);
            }
            xdp_action::XDP_PASS
        }
    }
}

/// One tc program for every hook, so one program id finds the whole data
/// plane again. The filter's classid says where it runs.
#[classifier]
pub fn xtun_tc(ctx: TcContext) -> i32 {
    try_tc(&ctx)
}

/// Picks the hook's path: underlay delivery or decapsulation
/// (`tc_ingress`), or a port's encapsulation (`tc_port`). Each path is
/// reached from one place only, so the verifier walks it once.
#[inline(always)]
fn try_tc(ctx: &TcContext) -> i32 {
    // SAFETY: reading fields of the context the kernel gave us.
    let (classid, ifindex) = unsafe { ((*ctx.skb.skb).tc_classid, (*ctx.skb.skb).ifindex) };
    let mut decap_here = false;
    if classid != CLASSID_TUNNEL {
        // Underlays deliver what XDP decapsulated whatever their classid:
        // it changes while an underlay switches between XDP and tc.
        match tc_ingress::deliver_tagged(ctx) {
            tc_ingress::Tagged::Delivered(action) => return action,
            tc_ingress::Tagged::DecapHere => decap_here = true,
            // XDP has seen (and counted) this packet already.
            tc_ingress::Tagged::No if classid == CLASSID_XDP_UNDERLAY => return TC_ACT_UNSPEC,
            tc_ingress::Tagged::No => {}
        }
    }
    // A filter attached without a role (earlier versions, and
    // BPF_PROG_TEST_RUN) is a tunnel's if the device has a configuration.
    if classid != CLASSID_TC_UNDERLAY && !decap_here {
        if let Some(cfg) = tc_port::tunnel_config(ifindex) {
            return tc_port::encap(ctx, cfg);
        }
        // A port whose tunnel is not configured (yet): what its tunnel
        // interface sends goes nowhere, as on a tunnel without a route.
        if classid == CLASSID_TUNNEL {
            return TC_ACT_SHOT;
        }
    }
    tc_ingress::decap(ctx)
}

/// The IPv6 underlay's program (`xtun -6 tunnel`): encapsulation on the
/// ports of tunnels over IPv6, and decapsulation of IPv6 outer headers as
/// a filter after `xtun_tc` on underlays. A program of its own, so that
/// the verifier walks it on its own budget.
#[classifier]
pub fn xtun_tc6(ctx: TcContext) -> i32 {
    // SAFETY: reading fields of the context the kernel gave us.
    let (classid, ifindex) = unsafe { ((*ctx.skb.skb).tc_classid, (*ctx.skb.skb).ifindex) };
    // As in `try_tc`: a filter without a role (BPF_PROG_TEST_RUN) is a
    // tunnel's if the device has a configuration.
    if classid != CLASSID_TC_UNDERLAY {
        match tc_port::tunnel_config(ifindex) {
            Some(cfg) if is_ipv6_underlay(cfg.mode) && cfg.mode != MODE_IP6GRETAP => {
                return encap6::send(&ctx, cfg)
            }
            _ if classid == CLASSID_TUNNEL => return TC_ACT_SHOT,
            _ => {}
        }
    }
    decap6::decap(&ctx)
}

/// Encapsulation on the ports of ip6gretap links: whole frames over
/// IPv6. Its own program, for its own verifier budget.
#[classifier]
pub fn xtun_tap6(ctx: TcContext) -> i32 {
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match tc_port::tunnel_config(ifindex) {
        Some(cfg) if cfg.mode == MODE_IP6GRETAP => encap6::send_frames(&ctx, cfg),
        _ => TC_ACT_SHOT,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
