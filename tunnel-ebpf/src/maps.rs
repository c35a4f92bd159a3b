//! The data plane's maps. Userspace finds them again by name through the
//! programs attached in a network namespace, so no pins are needed.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use tunnel_common::{
    maps::{DecapKey, DecapTarget, TunnelConfig, TunnelStats, MAX_TUNNELS},
    stats::COUNTER_COUNT,
};

/// Tunnel interface ifindex -> how to encapsulate.
#[map(name = "XTUN_TUNNELS")]
pub static TUNNELS: HashMap<u32, TunnelConfig> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// (local, remote, protocol, key) -> tunnel interface to deliver on.
#[map(name = "XTUN_DECAP")]
pub static DECAP: HashMap<DecapKey, DecapTarget> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// Tunnel interface ifindex -> per-CPU RX/TX counters.
#[map(name = "XTUN_TUN_STATS")]
pub static TUNNEL_STATS: PerCpuHashMap<u32, TunnelStats> =
    PerCpuHashMap::with_max_entries(MAX_TUNNELS, 0);

/// Per-CPU counters, one slot per `tunnel_common::stats` reason.
#[map(name = "XTUN_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

#[inline(always)]
pub fn count(slot: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, nothing else on this CPU touches it concurrently.
        unsafe { *counter += 1 };
    }
}

/// Applies `update` to this CPU's counters of the tunnel on `ifindex`.
#[inline(always)]
pub fn tunnel_stats(ifindex: u32, update: impl FnOnce(&mut TunnelStats)) {
    if let Some(stats) = TUNNEL_STATS.get_ptr_mut(ifindex) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        update(unsafe { &mut *stats });
    }
}
