//! `xtun monitor`: packet outcomes written to the ring buffers of the
//! monitors listening, at most one cheap check per packet when none is.
//!
//! A monitor claims a slot: it sets its bit in `Settings::monitors` and
//! keeps a lease in `XTUN_MON_LEASE` that it renews every second. Here an
//! event first reads that word (in the settings entry the log level is read
//! from); only when some bit is set does it look at the clock, the leases
//! and the per-CPU token buckets. An expired lease is released here (its
//! bits cleared), so a monitor killed by any signal leaves the word as it
//! found it.

use core::intrinsics::{atomic_and, AtomicOrdering};

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::RingBuf};
use tunnel_common::{
    maps::{
        MonitorEvent, Settings, MONITOR_ALL_SHIFT, MONITOR_SLOTS, MONITOR_SLOT_MASK, MONITOR_SNAP,
    },
    stats::{RX_PASS_NOT_IPV4, RX_PASS_NOT_TUNNEL},
};

use crate::{
    maps::{MON_LEASES, MON_RING0, MON_RING1, MON_RING2, MON_RING3, MON_STATS, SETTINGS},
    parse::Frame,
};

pub use tunnel_common::maps::{MON_HOOK_ENCAP, MON_HOOK_TC, MON_HOOK_XDP};

/// A packet dropped, or passed to the kernel as not ours: for every
/// monitor. Packets that are not IPv4 tunnel protocols are never shown,
/// and cost nothing more here than that test.
#[inline(always)]
pub fn dropped<F: Frame>(ctx: &F, hook: u32, ifindex: u32, tunnel: u32, reason: u32) {
    if reason == RX_PASS_NOT_IPV4 || reason == RX_PASS_NOT_TUNNEL {
        return;
    }
    if let Some((settings, slots)) = listening(0) {
        emit(ctx, settings, slots, hook, ifindex, tunnel, reason);
    }
}

/// A packet decapsulated or encapsulated: for monitors given `--all`.
#[inline(always)]
pub fn handled<F: Frame>(ctx: &F, hook: u32, ifindex: u32, tunnel: u32, reason: u32) {
    if let Some((settings, slots)) = listening(MONITOR_ALL_SHIFT) {
        emit(ctx, settings, slots, hook, ifindex, tunnel, reason);
    }
}

/// The settings entry and the claimed slots whose bits at `shift` are set;
/// None (the common case) when there are none.
#[inline(always)]
fn listening(shift: u32) -> Option<(*mut Settings, u32)> {
    let settings = SETTINGS.get_ptr_mut(0)?;
    // SAFETY: map value, valid while the program runs.
    let word = unsafe { core::ptr::read_volatile(&raw const (*settings).monitors) };
    let slots = (word >> shift) & word & MONITOR_SLOT_MASK;
    (slots != 0).then_some((settings, slots))
}

#[inline(always)]
fn ring(slot: u32) -> &'static RingBuf {
    match slot {
        0 => &MON_RING0,
        1 => &MON_RING1,
        2 => &MON_RING2,
        _ => &MON_RING3,
    }
}

/// Writes the event to each slot in `slots` whose lease holds and whose
/// rate allows; releases slots whose lease has expired.
#[inline(always)]
fn emit<F: Frame>(
    ctx: &F,
    settings: *mut Settings,
    slots: u32,
    hook: u32,
    ifindex: u32,
    tunnel: u32,
    reason: u32,
) {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let pkt_len = ctx.total_len();
    let cap = if pkt_len < MONITOR_SNAP {
        pkt_len
    } else {
        MONITOR_SNAP
    };
    let mut slot = 0;
    while slot < MONITOR_SLOTS {
        if slots & (1 << slot) != 0 {
            emit_one(
                ctx, settings, slot, now, hook, ifindex, tunnel, reason, pkt_len, cap,
            );
        }
        slot += 1;
    }
}

#[inline(always)]
#[expect(clippy::too_many_arguments, reason = "one event's fields, inlined")]
fn emit_one<F: Frame>(
    ctx: &F,
    settings: *mut Settings,
    slot: u32,
    now: u64,
    hook: u32,
    ifindex: u32,
    tunnel: u32,
    reason: u32,
    pkt_len: usize,
    cap: usize,
) {
    let (Some(lease), Some(cpu)) = (MON_LEASES.get_ptr(slot), MON_STATS.get_ptr_mut(slot)) else {
        return;
    };
    // SAFETY: map values, valid while the program runs; the lease is
    // written whole by its holder, the per-CPU entry only by this CPU.
    let (lease, cpu) = unsafe { (&*lease, &mut *cpu) };
    if now >= lease.deadline_ns {
        // Its holder is gone: release the slot (both of its bits).
        let bits = (1u32 << slot) | (1u32 << (slot + MONITOR_ALL_SHIFT));
        // SAFETY: an atomic and on an aligned word of the map value.
        unsafe {
            atomic_and::<u32, u32, { AtomicOrdering::Relaxed }>(
                &raw mut (*settings).monitors,
                !bits,
            )
        };
        return;
    }
    // Token bucket: credit grows with time up to the burst, each event
    // spends `cost_ns` of it.
    let credit = cpu
        .credit_ns
        .saturating_add(now.saturating_sub(cpu.last_ns))
        .min(lease.burst_ns);
    cpu.last_ns = now;
    if credit < lease.cost_ns {
        cpu.credit_ns = credit;
        cpu.lost_rate_limit += 1;
        return;
    }
    cpu.credit_ns = credit - lease.cost_ns;
    let Some(mut entry) = ring(slot).reserve::<MonitorEvent>(0) else {
        cpu.lost_ring_full += 1;
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the reserved entry is ours to fill until submitted.
    unsafe {
        (*ev).ktime_ns = now;
        (*ev).ifindex = ifindex;
        (*ev).reason = reason;
        (*ev).tunnel = tunnel;
        (*ev).hook = hook;
        (*ev).pkt_len = pkt_len as u32;
        // Through the stack, so the compiler cannot turn the test into a
        // comparison of packet pointers: the verifier must see the length
        // itself bounded, and not zero.
        let cap = core::ptr::read_volatile(&cap);
        let copied = cap > 0 && cap <= MONITOR_SNAP && ctx.load(0, (*ev).data.as_mut_ptr(), cap);
        (*ev).cap_len = if copied { cap as u32 } else { 0 };
    }
    entry.submit(0);
    cpu.events += 1;
}

/// The receive hook a frame type runs at: only an skb sees offload state.
#[inline(always)]
pub fn rx_hook<F: Frame>(ctx: &F) -> u32 {
    if ctx.sees_offload() {
        MON_HOOK_TC
    } else {
        MON_HOOK_XDP
    }
}
