//! The data plane's maps. Userspace finds them again by name through the
//! programs attached in a network namespace, so no pins are needed.

use aya_ebpf::{
    macros::map,
    maps::{Array, DevMapHash, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf},
};
use tunnel_common::{
    maps::{
        DecapKey, DecapKey6, DecapTarget, ForwardLan, ForwardState, IfCounters, MonitorCpu,
        MonitorLease, NeighEntry, NeighKey, Pmtu6Key, PmtuEntry, PmtuKey, PrlEntry, PrlKey,
        SeqState, Settings, Tunnel6Config, TunnelConfig, TunnelStats, IF_INDEXED_MAX,
        LOG_LEASE_SLOT, MAX_FORWARD_PORTS, MAX_NEIGHBOURS, MAX_PRL, MAX_TUNNELS,
        MONITOR_RING_BYTES, MONITOR_SLOTS,
    },
    stats::COUNTER_COUNT,
};

/// Tunnel interface ifindex -> how to encapsulate.
#[map(name = "XTUN_TUNNELS")]
pub static TUNNELS: HashMap<u32, TunnelConfig> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// Port ifindex (below `IF_INDEXED_MAX`; the tunnel interface's own where
/// it has no port) -> the configuration it has in `TUNNELS`; mode 0 where
/// there is no tunnel. Encapsulation finds its tunnel here without hashing.
#[map(name = "XTUN_TUN_BY_IF")]
pub static TUNNELS_BY_IF: Array<TunnelConfig> = Array::with_max_entries(IF_INDEXED_MAX, 0);

/// Port ifindex (at least `IF_INDEXED_MAX`) -> the configuration of the
/// tunnel the port belongs to. Below that, `TUNNELS_BY_IF` holds them.
#[map(name = "XTUN_PORTS")]
pub static PORTS: HashMap<u32, TunnelConfig> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// (tunnel, remote) -> path MTU learnt from ICMP, with its expiry. LRU: a
/// flood of reports for many remotes evicts the oldest, never fails.
#[map(name = "XTUN_PMTU")]
pub static PMTU: LruHashMap<PmtuKey, PmtuEntry> = LruHashMap::with_max_entries(MAX_TUNNELS, 0);

/// (local, remote, protocol, key) -> tunnel interface to deliver on.
#[map(name = "XTUN_DECAP")]
pub static DECAP: HashMap<DecapKey, DecapTarget> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// Tunnel interface ifindex -> the IPv6 part of a tunnel over IPv6.
#[map(name = "XTUN_TUNNELS6")]
pub static TUNNELS6: HashMap<u32, Tunnel6Config> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// (local, remote, protocol, key) over IPv6 -> tunnel interface.
#[map(name = "XTUN_DECAP6")]
pub static DECAP6: HashMap<DecapKey6, DecapTarget> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// (tunnel, IPv6 remote) -> path MTU learnt from ICMPv6 Packet Too Big.
#[map(name = "XTUN_PMTU6")]
pub static PMTU6: LruHashMap<Pmtu6Key, PmtuEntry> = LruHashMap::with_max_entries(MAX_TUNNELS, 0);

/// Tunnel's `stats_slot` -> per-CPU RX/TX counters. An array, so that a
/// lookup costs a few instructions rather than a hash.
#[map(name = "XTUN_TUN_STATS")]
pub static TUNNEL_STATS: PerCpuArray<TunnelStats> = PerCpuArray::with_max_entries(MAX_TUNNELS, 0);

/// Per-CPU counters, one slot per `tunnel_common::stats` reason, for
/// interfaces that have no entry in `IF_COUNTERS`.
#[map(name = "XTUN_COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Interface ifindex (at least `IF_INDEXED_MAX`) -> per-CPU counters by
/// reason. Userspace creates an entry for each such underlay and tunnel
/// interface it attaches to.
#[map(name = "XTUN_IF_COUNTER")]
pub static IF_COUNTERS: PerCpuHashMap<u32, IfCounters> =
    PerCpuHashMap::with_max_entries(MAX_TUNNELS, 0);

/// Interface ifindex (below `IF_INDEXED_MAX`) -> per-CPU counters by
/// reason, counted while userspace marks the entry tracked.
#[map(name = "XTUN_IF_INDEXED")]
pub static IF_INDEXED: PerCpuArray<IfCounters> = PerCpuArray::with_max_entries(IF_INDEXED_MAX, 0);

/// Slot 0: run-time settings (log level, build id).
#[map(name = "XTUN_SETTINGS")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// (tunnel, family, inner prefix) -> outer destination, for multipoint
/// (`remote any`) tunnels. Longest prefix wins.
#[map(name = "XTUN_NEIGH")]
pub static NEIGH: LpmTrie<NeighKey, NeighEntry> = LpmTrie::with_max_entries(MAX_NEIGHBOURS, 0);

/// (ISATAP tunnel, router) -> flags: the potential-router list.
#[map(name = "XTUN_PRL")]
pub static PRL: HashMap<PrlKey, PrlEntry> = HashMap::with_max_entries(MAX_PRL, 0);

/// Tunnel interface ifindex -> GRE sequence numbers (shared by all CPUs).
#[map(name = "XTUN_SEQ")]
pub static SEQ: HashMap<u32, SeqState> = HashMap::with_max_entries(MAX_TUNNELS, 0);

/// LAN ifindex -> its fast-path settings: the LANs forwarded in XDP.
#[map(name = "XTUN_FWD_LANS")]
pub static FORWARD_LANS: HashMap<u32, ForwardLan> = HashMap::with_max_entries(MAX_FORWARD_PORTS, 0);

/// Slot 0: the fast path's namespace-wide state.
#[map(name = "XTUN_FWD_STATE")]
pub static FORWARD_STATE: Array<ForwardState> = Array::with_max_entries(1, 0);

/// ifindex -> itself: the interfaces the fast path may redirect to (every
/// attached underlay and LAN).
#[map(name = "XTUN_FWD_PORTS")]
pub static FORWARD_PORTS: DevMapHash = DevMapHash::with_max_entries(MAX_FORWARD_PORTS, 0);

/// Monitor slot -> its lease; then `xtun log`'s lease (`LOG_LEASE_SLOT`).
#[map(name = "XTUN_MON_LEASE")]
pub static MON_LEASES: Array<MonitorLease> = Array::with_max_entries(MONITOR_SLOTS + 1, 0);

/// Monitor slot -> per-CPU token bucket and event counts.
#[map(name = "XTUN_MON_STATS")]
pub static MON_STATS: PerCpuArray<MonitorCpu> = PerCpuArray::with_max_entries(MONITOR_SLOTS, 0);

/// Each monitor slot's events (`tunnel_common::maps::MonitorEvent`).
#[map(name = "XTUN_MON_RING0")]
pub static MON_RING0: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
#[map(name = "XTUN_MON_RING1")]
pub static MON_RING1: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
#[map(name = "XTUN_MON_RING2")]
pub static MON_RING2: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);
#[map(name = "XTUN_MON_RING3")]
pub static MON_RING3: RingBuf = RingBuf::with_byte_size(MONITOR_RING_BYTES, 0);

/// Counts one packet handled for `reason` on interface `ifindex`.
#[inline(always)]
pub fn count(ifindex: u32, reason: u32) {
    let counters = if ifindex < IF_INDEXED_MAX {
        // SAFETY: per-CPU value, only read here.
        IF_INDEXED
            .get_ptr_mut(ifindex)
            .filter(|c| unsafe { (**c).tracked != 0 })
    } else {
        IF_COUNTERS.get_ptr_mut(ifindex)
    };
    if let Some(counters) = counters {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        if let Some(slot) = unsafe { (*counters).counts.get_mut(reason as usize) } {
            *slot += 1;
        }
    } else if let Some(counter) = COUNTERS.get_ptr_mut(reason) {
        // SAFETY: per-CPU slot, nothing else on this CPU touches it concurrently.
        unsafe { *counter += 1 };
    }
}

/// Is aya-log output at `level` (a `tunnel_common::maps::LOG_*`) wanted?
/// Read per call so `xtun log --level` takes effect without reloading.
#[inline(always)]
pub fn log_enabled(level: u32) -> bool {
    SETTINGS
        .get_ptr_mut(0)
        // SAFETY: map value, valid while the program runs.
        .is_some_and(|s| unsafe { (*s).log_level } >= level && log_lease_holds(s, level))
}

/// A level above `off` set by `xtun log` holds while its lease does; once
/// the lease expires (its holder died without putting the level back),
/// the first packet to look puts back the level it replaced.
#[inline(always)]
fn log_lease_holds(settings: *mut Settings, level: u32) -> bool {
    let Some(lease) = MON_LEASES.get_ptr_mut(LOG_LEASE_SLOT) else {
        return true;
    };
    // SAFETY: map values, valid while the program runs; racing writers
    // store whole aligned words.
    unsafe {
        let deadline = (*lease).deadline_ns;
        if deadline == 0 || aya_ebpf::helpers::bpf_ktime_get_ns() < deadline {
            return true;
        }
        let fallback = (*lease).fallback_level;
        (*settings).log_level = fallback;
        (*lease).deadline_ns = 0;
        fallback >= level
    }
}

/// Applies `update` to this CPU's counters of the tunnel whose counters
/// are at `slot`.
#[inline(always)]
pub fn tunnel_stats(slot: u32, update: impl FnOnce(&mut TunnelStats)) {
    if let Some(stats) = TUNNEL_STATS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, only this CPU writes it while we run.
        update(unsafe { &mut *stats });
    }
}
