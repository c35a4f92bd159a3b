//! XDP on an underlay: recognise our tunnels' packets, strip their outer
//! headers and tag each frame with its tunnel for `tc_ingress` to deliver,
//! or forward it to a LAN (`forward`). On a LAN with the fast path, other
//! packets go to `forward` too.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_meta},
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use network_types::eth::EthHdr;
use tunnel_common::{
    maps::{DecapTarget, XdpMeta, LOG_DEBUG, XDP_META_CSUM_IN_TC, XDP_META_MAGIC},
    stats::*,
    wire,
};

use crate::{
    classify::{self, Matched, Verdict},
    decap6::{self, Verdict6},
    forward, maps, monitor,
    parse::{ptr_at, ptr_at_mut},
    teb::{self, EthWords},
};

/// Ok(action) for packets we handled (decapsulated or dropped, already
/// counted); Err(reason) for packets passed to the kernel untouched.
#[inline(always)]
pub fn try_xdp(ctx: &XdpContext) -> Result<u32, u32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let verdict = match classify::classify(ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            return if forward::is_lan(ifindex) {
                Ok(forward::towards_tunnel(ctx, ifindex))
            } else {
                Err(reason)
            };
        }
    };
    let m = match verdict {
        Verdict::Decap(m) => m,
        // XDP cannot tell a checksum pending offload from a wrong one, nor
        // reassemble fragments: tc decides.
        Verdict::DecapInTc => {
            tag(ctx, XDP_META_CSUM_IN_TC, &DecapTarget::default()).map_err(|_| RX_ADJUST_FAIL)?;
            return Ok(xdp_action::XDP_PASS);
        }
        Verdict::Drop(tunnel, reason) => {
            classify::tunnel_drop(ctx, monitor::MON_HOOK_XDP, ifindex, &tunnel, reason);
            if maps::log_enabled(LOG_DEBUG) {
                debug!(
                    ctx,
                    "drop for tunnel ifindex={} reason={}", tunnel.ifindex, reason
                );
            }
            return Ok(xdp_action::XDP_DROP);
        }
    };
    strip_outer(ctx, &m).map_err(|_| RX_ADJUST_FAIL)?;
    let inner_len = (ctx.data_end() - ctx.data()).saturating_sub(EthHdr::LEN) as u64;
    classify::decapsulated(ctx, ifindex, &m, inner_len);
    Ok(forward::from_tunnel(ctx, &m.target).unwrap_or(xdp_action::XDP_PASS))
}

/// Decapsulation of IPv6 outer headers (`xtun -6 tunnel`): Some(action)
/// for frames handled here; None for the rest, which go on as before (a
/// GRE checksum or a Packet Too Big to tc's `xtun_tc6`, other IPv6 to the
/// LAN fast path or the kernel). A subprogram with its own stack frame.
#[inline(never)]
pub fn try_xdp6(ctx: &XdpContext) -> Option<u32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let eth: *const EthWords = ptr_at(ctx, 0).ok()?;
    // SAFETY: bounds checked.
    if unsafe { (*eth).ether_type } != wire::ETH_P_IPV6.to_be() {
        return None;
    }
    let (target, inner_off, header) = match decap6::classify6(ctx).ok()? {
        Verdict6::Decap {
            target,
            inner_off,
            header,
            ..
        } => (target, inner_off, header),
        Verdict6::Drop(target, reason) => {
            classify::tunnel_drop(ctx, monitor::MON_HOOK_XDP, ifindex, &target, reason);
            return Some(xdp_action::XDP_DROP);
        }
        Verdict6::InTc => return None,
    };
    let strip = (inner_off - EthHdr::LEN) as i32;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip) } != 0 {
        maps::count(ifindex, RX_ADJUST_FAIL);
        return Some(xdp_action::XDP_DROP);
    }
    let Ok(eth) = ptr_at_mut::<EthWords, XdpContext>(ctx, 0) else {
        maps::count(ifindex, RX_ADJUST_FAIL);
        return Some(xdp_action::XDP_DROP);
    };
    // SAFETY: bounds re-checked after adjust_head.
    unsafe { eth.write(header) };
    if tag(ctx, XDP_META_MAGIC, &target).is_err() {
        maps::count(ifindex, RX_ADJUST_FAIL);
        return Some(xdp_action::XDP_DROP);
    }
    let inner_len = (ctx.data_end() - ctx.data()).saturating_sub(EthHdr::LEN) as u64;
    maps::count(ifindex, RX_DECAP);
    monitor::handled(
        ctx,
        monitor::MON_HOOK_XDP,
        ifindex,
        target.ifindex,
        RX_DECAP,
    );
    maps::tunnel_stats(target.stats_slot, |stats| {
        stats.rx_packets += 1;
        stats.rx_bytes += inner_len;
    });
    Some(xdp_action::XDP_PASS)
}

/// Removes `m.strip` bytes after the Ethernet header, rewrites the Ethernet
/// header for the inner packet and tags the frame for delivery.
#[inline(always)]
fn strip_outer(ctx: &XdpContext, m: &Matched) -> Result<(), ()> {
    let header = teb::decapsulated_header(ctx, m)?;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, m.strip as i32) } != 0 {
        return Err(());
    }
    let eth: *mut EthWords = ptr_at_mut(ctx, 0)?;
    // SAFETY: bounds re-checked after adjust_head; aligned as read_at says.
    unsafe { eth.write(header) };

    tag(ctx, XDP_META_MAGIC, &m.target)
}

/// Puts `magic` and what the decapsulation index said for the frame in
/// front of it, for the tc program.
#[inline(always)]
fn tag(ctx: &XdpContext, magic: u32, target: &DecapTarget) -> Result<(), ()> {
    let meta_len = core::mem::size_of::<XdpMeta>() as i32;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -meta_len) } != 0 {
        return Err(());
    }
    let meta = ctx.metadata();
    if meta + meta_len as usize > ctx.data() {
        return Err(());
    }
    // SAFETY: bounds checked against data, which ends the metadata area.
    unsafe { *(meta as *mut XdpMeta) = XdpMeta::new(magic, target) };
    Ok(())
}
