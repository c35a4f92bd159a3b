//! `xtun monitor`'s slots and `xtun log`'s lease: claimed, renewed and
//! released through leases the data plane lets lapse by itself.

use aya::maps::{Array, Map, MapData, PerCpuArray, PerCpuValues, RingBuf};
use tunnel_common::maps::*;

use super::{monotonic_ns, Dataplane, DataplaneError, Result};

/// The maps behind `xtun monitor` (and `xtun log`'s lease).
pub(super) struct MonitorMaps {
    leases: Array<MapData, MonitorLease>,
    stats: PerCpuArray<MapData, MonitorCpu>,
    /// One per slot, until a monitor takes it.
    rings: Vec<Option<MapData>>,
}

impl MonitorMaps {
    pub(super) fn take(mut take: impl FnMut(&'static str) -> Result<Map>) -> Result<Self> {
        let leases = Array::try_from(take(MAP_MON_LEASES)?)?;
        let stats = PerCpuArray::try_from(take(MAP_MON_STATS)?)?;
        let mut rings = Vec::new();
        for name in MAP_MON_RINGS {
            match take(name)? {
                Map::RingBuf(data) => rings.push(Some(data)),
                _ => return Err(DataplaneError::OtherVersion(name)),
            }
        }
        Ok(Self {
            leases,
            stats,
            rings,
        })
    }
}

/// A monitor slot this process holds: its ring buffer of events.
pub struct MonitorClaim {
    pub slot: u32,
    pub ring: RingBuf<MapData>,
    all: bool,
}

/// A monitor slot as `status`/`stats` show it.
#[derive(Clone, Copy, Debug)]
pub struct MonitorSlot {
    pub slot: u32,
    /// Claimed, with a lease that has not expired.
    pub active: bool,
    pub all: bool,
    pub pid: u32,
    /// The lease's time left (ns); 0 once expired.
    pub remaining_ns: u64,
    pub events: u64,
    pub lost_rate_limit: u64,
    pub lost_ring_full: u64,
}

/// The settings word with a claim's bits: its slot, and its `all` bit as
/// claimed.
fn claim_bits(all: bool, slot: u32, monitors: u32) -> u32 {
    let bit = 1 << slot;
    let all_bit = bit << MONITOR_ALL_SHIFT;
    (monitors & !all_bit) | bit | if all { all_bit } else { 0 }
}

/// The monitor and log-lease side of the data plane: every access `xtun
/// monitor` and `xtun log` make goes through these.
impl Dataplane {
    fn monitor_maps(&mut self) -> Result<&mut MonitorMaps> {
        self.monitor.as_mut().ok_or(DataplaneError::Incomplete(
            "no monitor maps: run `xtun upgrade`",
        ))
    }

    /// Claims a free monitor slot (none claimed, or its lease expired) for
    /// this process. `rate` events per second per CPU, `burst` at once;
    /// `all` adds decapsulated and encapsulated packets. The caller holds
    /// the namespace lock, so two monitors never pick the same slot.
    pub fn monitor_claim(&mut self, all: bool, rate: u32, burst: u32) -> Result<MonitorClaim> {
        let settings = self.current_settings()?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Io(e))?;
        let now = monotonic_ns();
        let maps = self.monitor_maps()?;
        // A slot whose ring this handle has not handed out already, and
        // that no live monitor holds.
        let free = (0..MONITOR_SLOTS).find(|&slot| {
            maps.rings[slot as usize].is_some()
                && (settings.monitors & (1 << slot) == 0
                    || maps
                        .leases
                        .get(&slot, 0)
                        .map_or(true, |l| l.deadline_ns <= now))
        });
        let Some(slot) = free else {
            return Err(DataplaneError::Full(
                "monitor slot: as many monitors as there are ring buffers are listening",
            ));
        };
        let cost_ns = 1_000_000_000 / u64::from(rate.max(1));
        let lease = MonitorLease {
            deadline_ns: now + LEASE_NS,
            cost_ns,
            burst_ns: cost_ns * u64::from(burst.max(1)),
            fallback_level: 0,
            pid: std::process::id(),
        };
        maps.leases.set(slot, lease, 0)?;
        let zero = PerCpuValues::try_from(vec![MonitorCpu::default(); cpus])?;
        maps.stats.set(slot, zero, 0)?;
        let data = maps.rings[slot as usize]
            .take()
            .ok_or(DataplaneError::Missing("monitor ring buffer"))?;
        let ring = RingBuf::try_from(Map::RingBuf(data))?;
        let claim = MonitorClaim { slot, ring, all };
        self.monitor_set_bits(&claim)?;
        Ok(claim)
    }

    /// Sets the claim's bits in the settings word (a lease that lapsed
    /// was released by the data plane: renewing takes it back). The word is
    /// shared by every monitor and `xtun log`: the caller holds the
    /// namespace lock, or two read-modify-writes could lose one.
    pub fn monitor_set_bits(&mut self, claim: &MonitorClaim) -> Result<()> {
        let mut settings = self.current_settings()?;
        let want = claim_bits(claim.all, claim.slot, settings.monitors);
        if want != settings.monitors {
            settings.monitors = want;
            self.settings.set(0, settings, 0)?;
        }
        Ok(())
    }

    /// Whether the settings word lacks the claim's bits (the data plane
    /// released a lapsed lease), so that `monitor_set_bits` has work to do.
    pub fn monitor_bits_lapsed(&self, claim: &MonitorClaim) -> Result<bool> {
        let monitors = self.current_settings()?.monitors;
        Ok(claim_bits(claim.all, claim.slot, monitors) != monitors)
    }

    /// Renews the claim's lease (its own slot: no lock needed); call it
    /// every `LEASE_REFRESH_NS`, then `monitor_bits_lapsed`.
    pub fn monitor_renew(&mut self, claim: &MonitorClaim) -> Result<()> {
        let maps = self.monitor_maps()?;
        let mut lease = maps.leases.get(&claim.slot, 0)?;
        lease.deadline_ns = monotonic_ns() + LEASE_NS;
        lease.pid = std::process::id();
        maps.leases.set(claim.slot, lease, 0)?;
        Ok(())
    }

    /// Gives the slot back now (a monitor that exits normally); one that
    /// dies lets its lease expire instead. The caller holds the namespace
    /// lock (see `monitor_set_bits`); without it, `monitor_end_lease`.
    pub fn monitor_release(&mut self, claim: &MonitorClaim) -> Result<()> {
        let mut settings = self.current_settings()?;
        let bit = 1 << claim.slot;
        settings.monitors &= !(bit | bit << MONITOR_ALL_SHIFT);
        self.settings.set(0, settings, 0)?;
        self.monitor_end_lease(claim)
    }

    /// Ends the claim's lease without touching the settings word: the data
    /// plane clears the slot's bits at its next look, as for a monitor that
    /// died.
    pub fn monitor_end_lease(&mut self, claim: &MonitorClaim) -> Result<()> {
        let maps = self.monitor_maps()?;
        let mut lease = maps.leases.get(&claim.slot, 0)?;
        lease.deadline_ns = 0;
        maps.leases.set(claim.slot, lease, 0)?;
        Ok(())
    }

    /// Every monitor slot: lease, and counters summed over CPUs. Empty for
    /// an instance without monitor maps.
    pub fn monitor_slots(&self) -> Result<Vec<MonitorSlot>> {
        let Some(maps) = self.monitor.as_ref() else {
            return Ok(Vec::new());
        };
        let settings = self.current_settings()?;
        let now = monotonic_ns();
        let mut slots = Vec::new();
        for slot in 0..MONITOR_SLOTS {
            let lease = maps.leases.get(&slot, 0)?;
            let claimed = settings.monitors & (1 << slot) != 0;
            let mut s = MonitorSlot {
                slot,
                active: claimed && lease.deadline_ns > now,
                all: settings.monitors & (1 << (slot + MONITOR_ALL_SHIFT)) != 0,
                pid: lease.pid,
                remaining_ns: lease.deadline_ns.saturating_sub(now),
                events: 0,
                lost_rate_limit: 0,
                lost_ring_full: 0,
            };
            for cpu in maps.stats.get(&slot, 0)?.iter() {
                s.events += cpu.events;
                s.lost_rate_limit += cpu.lost_rate_limit;
                s.lost_ring_full += cpu.lost_ring_full;
            }
            slots.push(s);
        }
        Ok(slots)
    }

    /// The log level the programs act on: the one set, unless it was set
    /// by an `xtun log` whose lease has expired (then the one it replaced,
    /// which the data plane puts back at its next look).
    pub fn effective_log_level(&self) -> Result<u32> {
        let settings = self.current_settings()?;
        let Some(maps) = self.monitor.as_ref() else {
            return Ok(settings.log_level);
        };
        let lease = maps.leases.get(&LOG_LEASE_SLOT, 0)?;
        if lease.deadline_ns != 0 && lease.deadline_ns <= monotonic_ns() {
            return Ok(lease.fallback_level);
        }
        Ok(settings.log_level)
    }

    /// Sets the log level for as long as this process renews the lease
    /// (`renew_log_lease`); should it die, the data plane goes back to
    /// `fallback` by itself. Without monitor maps, a plain switch.
    pub fn set_log_level_leased(&mut self, level: u32, fallback: u32) -> Result<()> {
        if let Some(maps) = self.monitor.as_mut() {
            let lease = MonitorLease {
                deadline_ns: monotonic_ns() + LEASE_NS,
                fallback_level: fallback,
                pid: std::process::id(),
                ..MonitorLease::default()
            };
            maps.leases.set(LOG_LEASE_SLOT, lease, 0)?;
        }
        self.set_log_level(level)
    }

    pub fn renew_log_lease(&mut self) -> Result<()> {
        if let Some(maps) = self.monitor.as_mut() {
            let mut lease = maps.leases.get(&LOG_LEASE_SLOT, 0)?;
            lease.deadline_ns = monotonic_ns() + LEASE_NS;
            maps.leases.set(LOG_LEASE_SLOT, lease, 0)?;
        }
        Ok(())
    }

    /// Lets the lease lapse now without touching the settings word: the
    /// data plane puts back the level it replaced at its next look.
    pub fn lapse_log_lease(&mut self) -> Result<()> {
        if let Some(maps) = self.monitor.as_mut() {
            let mut lease = maps.leases.get(&LOG_LEASE_SLOT, 0)?;
            lease.deadline_ns = 1;
            maps.leases.set(LOG_LEASE_SLOT, lease, 0)?;
        }
        Ok(())
    }

    /// Puts the level back and ends the lease.
    pub fn end_log_lease(&mut self, level: u32) -> Result<()> {
        self.set_log_level(level)?;
        if let Some(maps) = self.monitor.as_mut() {
            maps.leases
                .set(LOG_LEASE_SLOT, MonitorLease::default(), 0)?;
        }
        Ok(())
    }
}
