//! The tunnel table and everything that goes with a tunnel: its lookup
//! entries by port, its sequence state, its decapsulation entry, its
//! counter slot, its potential routers and learnt path MTUs.
//!
//! The order of the writes is what keeps an `xtun` killed at any point
//! safe: a decapsulation entry only ever names a tunnel whose configuration
//! is in place (it goes in last and out first), and whatever a kill leaves
//! behind is found by `repair`.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
};

use aya::maps::{Array, MapData, PerCpuValues};
use tunnel_common::maps::*;

use super::{Dataplane, DataplaneError, Result};
use crate::config::{decap_key, wire_addr};

/// One edit of an ISATAP tunnel's potential-router list (`ip tunnel prl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrlEdit {
    /// A router that also takes packets to non-ISATAP destinations.
    Default(Ipv4Addr),
    NoDefault(Ipv4Addr),
    Delete(Ipv4Addr),
}

/// The interface a tunnel is registered on, and where the data plane
/// meets its packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelDevice {
    /// One end of a veth pair (what `tunnel add` makes): the data plane
    /// runs on the other end, `port`.
    Veth { port: u32 },
    /// An Ethernet device the data plane runs on itself (a
    /// BPF_PROG_TEST_RUN, which has no pair).
    Ethernet,
    /// A layer-3 TUN device without an Ethernet header, the previous
    /// design (benchmarks measure it beside the current one).
    Tun,
}

/// What `repair` removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Repaired {
    /// The entries of a tunnel whose interface is gone (a killed `del`).
    Interface(u32),
    /// A decapsulation entry no tunnel's configuration accounts for (a
    /// killed `change`): its key, and the interface it named.
    Decap(DecapKey, u32),
}

impl Dataplane {
    /// The configuration of the tunnel on `ifindex`, if it is one of ours.
    pub fn tunnel(&self, ifindex: u32) -> Option<TunnelConfig> {
        self.tunnels.get(&ifindex, 0).ok()
    }

    /// Every tunnel: its interface and configuration.
    pub fn tunnels(&self) -> Vec<(u32, TunnelConfig)> {
        self.tunnels.iter().flatten().collect()
    }

    /// Is `ifindex` a tunnel interface or a tunnel's port?
    pub fn is_tunnel_or_port(&self, ifindex: u32) -> bool {
        self.tunnels
            .iter()
            .flatten()
            .any(|(i, cfg)| i == ifindex || cfg.port_ifindex == ifindex)
    }

    /// The tunnels (interfaces) that leave by underlay `ifindex`.
    pub fn tunnels_on_underlay(&self, ifindex: u32) -> Vec<u32> {
        self.tunnels
            .iter()
            .flatten()
            .filter(|(_, cfg)| cfg.underlay_ifindex == ifindex)
            .map(|(i, _)| i)
            .collect()
    }

    /// The tunnel (interface) that receives what `cfg` would receive.
    pub fn decap_holder(&self, cfg: &TunnelConfig) -> Option<u32> {
        let decap = self.decap.as_ref()?;
        decap.get(&decap_key(cfg), 0).ok().map(|t| t.ifindex)
    }

    /// The sequence numbers of the tunnel on `ifindex`.
    pub fn sequence(&self, ifindex: u32) -> Option<SeqState> {
        self.seq.get(&ifindex, 0).ok()
    }

    /// Registers the tunnel `cfg` on interface `ifindex`: a zeroed counter
    /// slot, its sequence state, its configuration, and last the
    /// decapsulation entry that makes it reachable. Returns the
    /// configuration as stored. On failure nothing is left.
    pub fn add_tunnel(
        &mut self,
        ifindex: u32,
        device: TunnelDevice,
        mut cfg: TunnelConfig,
    ) -> Result<TunnelConfig> {
        cfg.flags &= !TUNNEL_F_ETH_DEV;
        (cfg.port_ifindex, cfg.flags) = match device {
            TunnelDevice::Veth { port } => (port, cfg.flags | TUNNEL_F_ETH_DEV),
            TunnelDevice::Ethernet => (0, cfg.flags | TUNNEL_F_ETH_DEV),
            TunnelDevice::Tun => (0, cfg.flags),
        };
        cfg.ifindex = ifindex;
        let result = (|| {
            cfg.stats_slot = self.allocate_stats_slot()?;
            self.seq.insert(ifindex, SeqState::default(), 0)?;
            self.set_tunnel(cfg)?;
            let target = DecapTarget::for_tunnel(ifindex, &cfg);
            self.decap_mut()?.insert(decap_key(&cfg), target, 0)?;
            Ok(cfg)
        })();
        if result.is_err() {
            self.forget_tunnel(ifindex);
        }
        result
    }

    /// Replaces the configuration of the tunnel on `ifindex` (`tunnel
    /// change`), keeping what the tunnel owns (counter slot, port, default
    /// router). The new decapsulation entry goes in first, then the
    /// configuration, then the old entry goes: every packet finds its
    /// tunnel throughout, and no other tunnel's entries are touched.
    pub fn change_tunnel(&mut self, ifindex: u32, mut cfg: TunnelConfig) -> Result<TunnelConfig> {
        let old = self.tunnels.get(&ifindex, 0)?;
        cfg.ifindex = ifindex;
        cfg.prl_default = old.prl_default;
        cfg.stats_slot = old.stats_slot;
        cfg.port_ifindex = old.port_ifindex;
        cfg.flags |= old.flags & TUNNEL_F_ETH_DEV;
        let (old_key, new_key) = (decap_key(&old), decap_key(&cfg));
        let target = DecapTarget::for_tunnel(ifindex, &cfg);
        self.decap_mut()?.insert(new_key, target, 0)?;
        self.set_tunnel(cfg)?;
        if old_key != new_key {
            self.decap_mut()?.remove(&old_key)?;
        }
        Ok(cfg)
    }

    /// Forgets the tunnel on `ifindex` (its interface is gone, or going):
    /// the decapsulation entry first, so nothing is delivered to it, then
    /// its configuration (its counter slot is free again once that is
    /// gone), then what else it owned. Best effort: whatever stays is
    /// found by `repair`.
    pub fn forget_tunnel(&mut self, ifindex: u32) {
        self.forget(ifindex, true);
    }

    /// `forget_tunnel`; without `decap`, its decapsulation entry stays
    /// for `repair` to report as stale.
    fn forget(&mut self, ifindex: u32, decap: bool) {
        self.forget6(ifindex, decap);
        if let Some(cfg) = self.tunnel(ifindex).filter(|_| decap) {
            let key = decap_key(&cfg);
            if let Ok(decap) = self.decap_mut() {
                if decap.get(&key, 0).is_ok_and(|t| t.ifindex == ifindex) {
                    let _ = decap.remove(&key);
                }
            }
        }
        let slot = self.tunnel(ifindex).map(|c| c.stats_slot);
        if self.remove_tunnel(ifindex).is_ok() {
            if let (Some(slot), Some(used)) = (slot, self.used_slots.as_mut()) {
                used.remove(&slot);
                self.lowest_free_slot = self.lowest_free_slot.min(slot);
            }
        }
        let _ = self.seq.remove(&ifindex);
        self.forget_path_mtus(ifindex);
        self.forget_neighbours(ifindex);
        let routers: Vec<PrlKey> = self
            .prl
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for key in routers {
            let _ = self.prl.remove(&key);
        }
        self.untrack_interface(ifindex);
    }

    /// Removes what an `xtun` killed halfway left: the entries of tunnels
    /// whose interface is not in `live` (a killed `del`), and decapsulation
    /// entries that no tunnel's configuration accounts for (a killed
    /// `change`). The caller holds the namespace lock, so no live `xtun`
    /// is halfway through anything.
    pub fn repair(&mut self, live: &HashSet<u32>) -> Result<Vec<Repaired>> {
        let mut repaired = Vec::new();
        let tunnels = self.tunnels();
        for (ifindex, _) in tunnels.iter().filter(|(i, _)| !live.contains(i)) {
            self.forget(*ifindex, false);
            repaired.push(Repaired::Interface(*ifindex));
        }
        let wanted: HashMap<u32, DecapKey> = tunnels
            .iter()
            .filter(|(i, _)| live.contains(i))
            .map(|(i, c)| (*i, decap_key(c)))
            .collect();
        let stale: Vec<(DecapKey, u32)> = self
            .decap_mut()?
            .iter()
            .flatten()
            .filter(|(k, t)| wanted.get(&t.ifindex) != Some(k))
            .map(|(k, t)| (k, t.ifindex))
            .collect();
        for (key, ifindex) in stale {
            let _ = self.decap_mut()?.remove(&key);
            repaired.push(Repaired::Decap(key, ifindex));
        }
        // The IPv6 index the same way; its keys have no IPv4 form to
        // report, so they go quietly.
        self.repair6(live);
        Ok(repaired)
    }

    /// Edits the potential-router list of the ISATAP tunnel on `ifindex`:
    /// every deletion is checked first, so a bad one changes nothing; the
    /// tunnel's default router stays one listed as default.
    pub fn edit_prl(&mut self, ifindex: u32, edits: &[PrlEdit]) -> Result<()> {
        let mut cfg = self.tunnels.get(&ifindex, 0)?;
        let key = |addr: Ipv4Addr| PrlKey {
            ifindex,
            addr: wire_addr(addr),
        };
        for edit in edits {
            if let PrlEdit::Delete(addr) = edit {
                if self.prl.get(&key(*addr), 0).is_err() {
                    return Err(DataplaneError::NotInPrl(wire_addr(*addr)));
                }
            }
        }
        for edit in edits {
            match *edit {
                PrlEdit::Delete(addr) => self.prl.remove(&key(addr))?,
                PrlEdit::Default(addr) => {
                    self.prl
                        .insert(key(addr), PrlEntry { flags: PRL_DEFAULT }, 0)?;
                    cfg.prl_default = wire_addr(addr);
                }
                PrlEdit::NoDefault(addr) => self.prl.insert(key(addr), PrlEntry { flags: 0 }, 0)?,
            }
        }
        let is_default = |e: &PrlEntry| e.flags & PRL_DEFAULT != 0;
        let still_default = cfg.prl_default != 0
            && self
                .prl
                .get(
                    &PrlKey {
                        ifindex,
                        addr: cfg.prl_default,
                    },
                    0,
                )
                .is_ok_and(|e| is_default(&e));
        if !still_default {
            cfg.prl_default = self
                .prl
                .iter()
                .flatten()
                .find(|(k, e)| k.ifindex == ifindex && is_default(e))
                .map_or(0, |(k, _)| k.addr);
        }
        self.set_tunnel(cfg)
    }

    /// Every potential router: (tunnel, router, is a default router).
    pub fn routers(&self) -> Vec<(u32, Ipv4Addr, bool)> {
        self.prl
            .iter()
            .flatten()
            .map(|(k, e)| {
                (
                    k.ifindex,
                    Ipv4Addr::from(u32::from_be(k.addr)),
                    e.flags & PRL_DEFAULT != 0,
                )
            })
            .collect()
    }

    /// The path MTUs tunnel `ifindex` has learnt that still hold: (remote,
    /// path MTU of outer packets, seconds left).
    pub fn path_mtus(&self, ifindex: u32) -> Vec<(u32, u32, u64)> {
        // bpf_ktime_get_ns() counts CLOCK_MONOTONIC.
        let now = super::monotonic_ns();
        let mut found: Vec<(u32, u32, u64)> = self
            .pmtu
            .iter()
            .flatten()
            .filter(|(k, e)| k.ifindex == ifindex && e.expires_ns > now)
            .map(|(k, e)| (k.remote, e.mtu, (e.expires_ns - now) / 1_000_000_000))
            .collect();
        found.sort();
        found
    }

    /// The decapsulation index: what received packets are matched against.
    pub fn decap_index(&self) -> Vec<(DecapKey, DecapTarget)> {
        self.decap
            .as_ref()
            .map(|d| d.iter().flatten().collect())
            .unwrap_or_default()
    }

    /// Writes `cfg` (for the tunnel on `cfg.ifindex`) to the tunnel table
    /// and to the entry the data plane finds it by: its port's.
    pub(super) fn set_tunnel(&mut self, cfg: TunnelConfig) -> Result<()> {
        self.tunnels.insert(cfg.ifindex, cfg, 0)?;
        let key = cfg.datapath_ifindex();
        if let Some(by_if) = self.tunnels_by_if_for(key) {
            by_if.set(key, cfg, 0)?;
        } else if let Some(ports) = self.ports.as_mut().filter(|_| key >= IF_INDEXED_MAX) {
            ports.insert(key, cfg, 0)?;
        }
        Ok(())
    }

    /// Removes the tunnel on `ifindex` from the tables: the data plane
    /// stops encapsulating for it first.
    fn remove_tunnel(&mut self, ifindex: u32) -> Result<()> {
        let key = self
            .tunnels
            .get(&ifindex, 0)
            .map_or(ifindex, |cfg| cfg.datapath_ifindex());
        if let Some(by_if) = self.tunnels_by_if_for(key) {
            by_if.set(key, TunnelConfig::default(), 0)?;
        } else if let Some(ports) = self.ports.as_mut().filter(|_| key >= IF_INDEXED_MAX) {
            let _ = ports.remove(&key);
        }
        self.tunnels.remove(&ifindex)?;
        Ok(())
    }

    /// `XTUN_TUN_BY_IF`, where it exists and has an entry for `ifindex`.
    fn tunnels_by_if_for(&mut self, ifindex: u32) -> Option<&mut Array<MapData, TunnelConfig>> {
        self.tunnels_by_if
            .as_mut()
            .filter(|_| ifindex < IF_INDEXED_MAX)
    }

    fn decap_mut(&mut self) -> Result<&mut aya::maps::HashMap<MapData, DecapKey, DecapTarget>> {
        self.decap
            .as_mut()
            .ok_or(DataplaneError::Incomplete("decapsulation map missing"))
    }

    /// Forgets the path MTUs of tunnel `ifindex` (it is gone).
    fn forget_path_mtus(&mut self, ifindex: u32) {
        let keys: Vec<PmtuKey> = self
            .pmtu
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for key in keys {
            let _ = self.pmtu.remove(&key);
        }
    }

    /// A counter slot no configured tunnel uses, zeroed, for a new tunnel
    /// (the lowest free one, so slots stay dense). The slots in use are
    /// read once per handle; the namespace lock keeps them current.
    pub(super) fn allocate_stats_slot(&mut self) -> Result<u32> {
        if self.used_slots.is_none() {
            let used: BTreeSet<u32> = self
                .tunnels
                .iter()
                .flatten()
                .map(|(_, cfg)| cfg.stats_slot)
                .collect();
            self.used_slots = Some(used);
        }
        let used = self.used_slots.as_mut().expect("just read");
        let capacity = self.tunnel_stats.len();
        let slot = (self.lowest_free_slot..capacity)
            .find(|slot| !used.contains(slot))
            .ok_or(DataplaneError::Full("tunnel counters"))?;
        used.insert(slot);
        self.lowest_free_slot = slot + 1;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = PerCpuValues::try_from(vec![TunnelStats::default(); cpus])?;
        self.tunnel_stats.set(slot, zero, 0)?;
        Ok(slot)
    }
}
