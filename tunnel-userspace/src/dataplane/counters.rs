//! The counters: per tunnel (by its slot), per interface and reason
//! (ifindexes below `IF_INDEXED_MAX` in an array, the rest in a hash),
//! and the rest, each summed over CPUs.

use aya::maps::PerCpuValues;
use tunnel_common::maps::*;

use super::{Dataplane, Result};

impl Dataplane {
    /// Starts counting by reason for an interface (zeroed).
    pub fn track_interface(&mut self, ifindex: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let tracked = IfCounters {
            tracked: 1,
            ..IfCounters::default()
        };
        let zero = PerCpuValues::try_from(vec![tracked; cpus])?;
        if ifindex < IF_INDEXED_MAX {
            self.if_indexed.set(ifindex, zero, 0)?;
        } else {
            self.if_counters.insert(ifindex, zero, 0)?;
        }
        Ok(())
    }

    pub(super) fn untrack_interface(&mut self, ifindex: u32) {
        if ifindex < IF_INDEXED_MAX {
            if let Ok(cpus) = aya::util::nr_cpus() {
                if let Ok(zero) = PerCpuValues::try_from(vec![IfCounters::default(); cpus]) {
                    let _ = self.if_indexed.set(ifindex, zero, 0);
                }
            }
        } else {
            let _ = self.if_counters.remove(&ifindex);
        }
    }

    /// Per-interface counters summed over CPUs, for every tracked interface.
    pub fn interface_totals(&self) -> Vec<(u32, Vec<u64>)> {
        let sum = |per_cpu: &PerCpuValues<IfCounters>| {
            let mut sums = vec![0u64; tunnel_common::stats::COUNTER_COUNT as usize];
            for cpu in per_cpu.iter() {
                for (sum, v) in sums.iter_mut().zip(cpu.counts.iter()) {
                    *sum += v;
                }
            }
            sums
        };
        let mut rows: Vec<(u32, Vec<u64>)> = self
            .if_counters
            .iter()
            .flatten()
            .map(|(ifindex, per_cpu)| (ifindex, sum(&per_cpu)))
            .collect();
        rows.extend((0..IF_INDEXED_MAX).filter_map(|ifindex| {
            let per_cpu = self.if_indexed.get(&ifindex, 0).ok()?;
            per_cpu
                .iter()
                .any(|c| c.tracked != 0)
                .then(|| (ifindex, sum(&per_cpu)))
        }));
        rows.sort_by_key(|(ifindex, _)| *ifindex);
        rows
    }

    /// Sum of a tunnel's per-CPU counters.
    pub fn tunnel_totals(&self, ifindex: u32) -> Option<TunnelStats> {
        let slot = self.tunnels.get(&ifindex, 0).ok()?.stats_slot;
        let per_cpu = self.tunnel_stats.get(&slot, 0).ok()?;
        let mut t = TunnelStats::default();
        for s in per_cpu.iter() {
            t.rx_packets += s.rx_packets;
            t.rx_bytes += s.rx_bytes;
            t.rx_errors += s.rx_errors;
            t.rx_csum_errors += s.rx_csum_errors;
            t.rx_out_of_seq += s.rx_out_of_seq;
            t.rx_mcasts += s.rx_mcasts;
            t.tx_packets += s.tx_packets;
            t.tx_bytes += s.tx_bytes;
            t.tx_errors += s.tx_errors;
            t.tx_dead_loop += s.tx_dead_loop;
            t.tx_no_route += s.tx_no_route;
            t.tx_no_bufs += s.tx_no_bufs;
        }
        Some(t)
    }

    /// Whether `ifindex` is a tunnel interface (or else an underlay).
    pub fn is_tunnel(&self, ifindex: u32) -> bool {
        self.tunnels.get(&ifindex, 0).is_ok()
    }

    /// Data-plane counters summed over CPUs, by slot.
    pub fn counter_totals(&self) -> Result<Vec<u64>> {
        let mut totals = Vec::new();
        for slot in 0..tunnel_common::stats::COUNTER_COUNT {
            let per_cpu = self.counters.get(&slot, 0)?;
            totals.push(per_cpu.iter().sum());
        }
        Ok(totals)
    }
}
