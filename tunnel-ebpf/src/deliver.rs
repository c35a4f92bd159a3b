//! TC ingress on the underlay: hand frames that XDP decapsulated to their
//! tunnel interface, so they are received there as on a kernel tunnel.

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_REDIRECT},
    helpers::generated::bpf_redirect,
    programs::TcContext,
};
use aya_log_ebpf::debug;
use tunnel_common::{
    maps::{XdpMeta, LOG_DEBUG, XDP_META_MAGIC},
    stats::{RX_DELIVERED, RX_DELIVER_FAIL},
};

use crate::maps;

/// Some(action) when the frame carries our XDP tag; None otherwise.
#[inline(always)]
pub fn try_deliver(ctx: &TcContext) -> Option<i32> {
    // SAFETY: reading fields of the context the kernel gave us.
    let (meta, data) = unsafe {
        (
            (*ctx.skb.skb).data_meta as usize,
            (*ctx.skb.skb).data as usize,
        )
    };
    if meta + core::mem::size_of::<XdpMeta>() > data {
        return None;
    }
    // SAFETY: bounds checked against data, which ends the metadata area.
    let tag = unsafe { *(meta as *const XdpMeta) };
    if tag.magic != XDP_META_MAGIC {
        return None;
    }
    // SAFETY: plain helper call.
    let action = unsafe { bpf_redirect(tag.ifindex, BPF_F_INGRESS as u64) } as i32;
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if action == TC_ACT_REDIRECT {
        maps::count(ifindex, RX_DELIVERED);
    } else {
        maps::count(ifindex, RX_DELIVER_FAIL);
        if maps::log_enabled(LOG_DEBUG) {
            debug!(ctx, "delivery to tunnel ifindex={} failed", tag.ifindex);
        }
    }
    Some(action)
}
