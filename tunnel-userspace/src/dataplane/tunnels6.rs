//! Tunnels over an IPv6 underlay (`xtun -6 tunnel`): their IPv6 part
//! (`XTUN_TUNNELS6`), their decapsulation entries (`XTUN_DECAP6`) and the
//! program that runs them (`xtun_tc6`).
//!
//! Such a tunnel is also an ordinary entry of the tunnel table, so that
//! counters, ports, `del` and `repair` treat it as any other; its writes
//! keep the same order: configuration first, decapsulation entries last,
//! and out in the reverse order.

use std::{
    collections::{HashMap as StdHashMap, HashSet},
    os::fd::{AsFd, AsRawFd, OwnedFd},
};

use aya::{
    maps::{HashMap, Map, MapData},
    programs::SchedClassifier,
    Ebpf,
};
use tunnel_common::maps::*;

use super::{
    bpffs::load_object_sharing, Dataplane, DataplaneError, Result, TunnelDevice, FILTER_TUNNEL,
};
use crate::netlink::{self, Link, Netlink, TcHook};

/// `xtun_tc6`'s priority on an underlay's ingress: right after `xtun_tc`.
pub const UNDERLAY6_PRIO: u16 = netlink::FILTER_PRIO + 1;

/// The filter name of `xtun_tc6` on an underlay.
pub const FILTER_UNDERLAY6: &str = "xtun_underlay6";

/// The IPv6 underlay's maps.
pub struct V6Maps {
    tunnels6: HashMap<MapData, u32, Tunnel6Config>,
    decap6: HashMap<MapData, DecapKey6, DecapTarget>,
    pmtu6: HashMap<MapData, Pmtu6Key, PmtuEntry>,
}

impl V6Maps {
    /// Takes the maps from wherever `take` finds them by name.
    pub(super) fn take(mut take: impl FnMut(&'static str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            tunnels6: HashMap::try_from(take(MAP_TUNNELS6)?)?,
            decap6: HashMap::try_from(take(MAP_DECAP6)?)?,
            pmtu6: HashMap::try_from(take(MAP_PMTU6)?)?,
        })
    }

    /// The maps of a freshly loaded object, when it has them.
    pub(super) fn from_object(ebpf: &mut Ebpf) -> Result<Option<Self>> {
        if ebpf.map(MAP_TUNNELS6).is_none() {
            return Ok(None);
        }
        Self::take(|name| ebpf.take_map(name).ok_or(DataplaneError::Missing(name))).map(Some)
    }

    /// The maps of an instance found again, when it has them (only
    /// `xtun_tc6` uses them: an instance without IPv6 tunnels has none).
    pub(super) fn from_found(maps: &mut StdHashMap<String, Map>) -> Result<Option<Self>> {
        if !maps.contains_key(MAP_TUNNELS6) {
            return Ok(None);
        }
        Self::take(|name| maps.remove(name).ok_or(DataplaneError::OtherVersion(name))).map(Some)
    }
}

/// The decapsulation-index keys of a tunnel over IPv6: one per inner
/// protocol it receives (two for mode `any`).
pub fn decap_keys6(cfg: &TunnelConfig, cfg6: &Tunnel6Config) -> Vec<DecapKey6> {
    let protos: &[u8] = match cfg.mode {
        MODE_IP6GRE | MODE_IP6GRETAP => &[IPPROTO_GRE],
        MODE_IP6IP6 => &[IPPROTO_IPV6],
        MODE_IPIP6 => &[IPPROTO_IPIP],
        MODE_ANY6 => &[IPPROTO_IPIP, IPPROTO_IPV6],
        _ => &[],
    };
    let is_gre = cfg.mode == MODE_IP6GRE || cfg.mode == MODE_IP6GRETAP;
    let has_key = is_gre && cfg.flags & TUNNEL_F_IKEY != 0;
    protos
        .iter()
        .map(|&proto| DecapKey6 {
            local: cfg6.local,
            remote: cfg6.remote,
            key: if has_key { cfg.ikey } else { 0 },
            proto,
            has_key: has_key as u8,
            _pad: [0; 2],
        })
        .collect()
}

const IPPROTO_GRE: u8 = 47;
const IPPROTO_IPIP: u8 = 4;
const IPPROTO_IPV6: u8 = 41;

impl Dataplane {
    fn v6_mut(&mut self) -> Result<&mut V6Maps> {
        self.v6
            .as_mut()
            .ok_or(DataplaneError::Incomplete("IPv6 underlay maps missing"))
    }

    /// `xtun_tc6`, loaded (sharing the instance's maps) if this instance
    /// has none yet, with the IPv6 maps that come with it.
    pub(super) fn ensure_tc6(&mut self) -> Result<RawFdOf> {
        if self.tc6.is_none() {
            let fresh = self
                ._ebpf
                .as_mut()
                .filter(|e| e.program(PROG_TC6).is_some());
            let loaded = match fresh {
                // A fresh load's object holds every map already.
                Some(ebpf) => load_classifier(ebpf, PROG_TC6)?,
                None => {
                    let mut object = load_object_sharing(&self.shared_map_ids)?;
                    let loaded = load_classifier(&mut object, PROG_TC6)?;
                    if self.v6.is_none() {
                        self.v6 = V6Maps::from_object(&mut object)?;
                    }
                    if self._ebpf.is_none() {
                        self._ebpf = Some(object);
                    }
                    loaded
                }
            };
            self.tc6 = Some(loaded);
        }
        if self.v6.is_none() {
            return Err(DataplaneError::Missing(MAP_TUNNELS6));
        }
        Ok(RawFdOf(
            self.tc6.as_ref().map_or(-1, |(fd, _)| fd.as_raw_fd()),
        ))
    }

    /// `xtun_tap6`, for ip6gretap ports, loaded if this instance has none
    /// yet: from the object `xtun_tc6` came from, or else a new one
    /// sharing the instance's maps (the IPv6 ones included).
    pub(super) fn ensure_tap6(&mut self) -> Result<RawFdOf> {
        self.ensure_tc6()?;
        if self.tap6.is_none() {
            let fresh = self
                ._ebpf
                .as_mut()
                .filter(|e| e.program(PROG_TAP6).is_some());
            let loaded = match fresh {
                Some(ebpf) => load_classifier(ebpf, PROG_TAP6)?,
                None => {
                    let mut object = load_object_sharing(&self.shared_map_ids)?;
                    load_classifier(&mut object, PROG_TAP6)?
                }
            };
            self.tap6 = Some(loaded);
        }
        Ok(RawFdOf(
            self.tap6.as_ref().map_or(-1, |(fd, _)| fd.as_raw_fd()),
        ))
    }

    /// The IPv6 part of the tunnel on `ifindex`, if it runs over IPv6.
    pub fn tunnel6(&self, ifindex: u32) -> Option<Tunnel6Config> {
        self.v6.as_ref()?.tunnels6.get(&ifindex, 0).ok()
    }

    /// Every tunnel over IPv6: its interface and IPv6 part.
    pub fn tunnels6(&self) -> Vec<(u32, Tunnel6Config)> {
        self.v6
            .as_ref()
            .map(|v6| v6.tunnels6.iter().flatten().collect())
            .unwrap_or_default()
    }

    /// The tunnel (interface) that already receives what `cfg` would
    /// receive, if any.
    pub fn decap6_holder(&self, cfg: &TunnelConfig, cfg6: &Tunnel6Config) -> Option<u32> {
        let v6 = self.v6.as_ref()?;
        decap_keys6(cfg, cfg6)
            .iter()
            .find_map(|k| v6.decap6.get(k, 0).ok().map(|t| t.ifindex))
    }

    /// The path MTUs learnt from ICMPv6 Packet Too Big for the tunnel on
    /// `ifindex` that still hold: (remote, MTU, seconds left).
    pub fn path_mtus6(&self, ifindex: u32) -> Vec<([u8; 16], u32, u64)> {
        let Some(v6) = self.v6.as_ref() else {
            return Vec::new();
        };
        // bpf_ktime_get_ns() counts CLOCK_MONOTONIC.
        let now = super::monotonic_ns();
        let mut found: Vec<([u8; 16], u32, u64)> = v6
            .pmtu6
            .iter()
            .flatten()
            .filter(|(k, e)| k.ifindex == ifindex && e.expires_ns > now)
            .map(|(k, e)| (k.remote, e.mtu, (e.expires_ns - now) / 1_000_000_000))
            .collect();
        found.sort();
        found
    }

    /// The IPv6 decapsulation index.
    pub fn decap_index6(&self) -> Vec<(DecapKey6, DecapTarget)> {
        self.v6
            .as_ref()
            .map(|v6| v6.decap6.iter().flatten().collect())
            .unwrap_or_default()
    }

    /// Registers the tunnel over IPv6 `cfg` + `cfg6` on interface
    /// `ifindex`, as `add_tunnel` does an IPv4 one: counter slot, sequence
    /// state, IPv6 part, configuration, and last its decapsulation entries.
    /// On failure nothing is left.
    pub fn add_tunnel6(
        &mut self,
        ifindex: u32,
        device: TunnelDevice,
        mut cfg: TunnelConfig,
        cfg6: Tunnel6Config,
    ) -> Result<TunnelConfig> {
        if !is_ipv6_underlay(cfg.mode) {
            return Err(DataplaneError::Incomplete("not a mode over IPv6"));
        }
        self.ensure_tc6()?;
        if cfg.mode == MODE_IP6GRETAP {
            self.ensure_tap6()?;
        }
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
            self.v6_mut()?.tunnels6.insert(ifindex, cfg6, 0)?;
            self.set_tunnel(cfg)?;
            let target = DecapTarget::for_tunnel(ifindex, &cfg);
            for key in decap_keys6(&cfg, &cfg6) {
                self.v6_mut()?.decap6.insert(key, target, 0)?;
            }
            Ok(cfg)
        })();
        if result.is_err() {
            self.forget_tunnel(ifindex);
        }
        result
    }

    /// Replaces the configuration of the tunnel over IPv6 on `ifindex`
    /// (`tunnel change`), keeping what it owns; new decapsulation entries
    /// first, then the configuration, then the old entries go.
    pub fn change_tunnel6(
        &mut self,
        ifindex: u32,
        mut cfg: TunnelConfig,
        cfg6: Tunnel6Config,
    ) -> Result<TunnelConfig> {
        let old = self.tunnels.get(&ifindex, 0)?;
        let old6 = self
            .tunnel6(ifindex)
            .ok_or(DataplaneError::Incomplete("not a tunnel over IPv6"))?;
        cfg.ifindex = ifindex;
        cfg.prl_default = old.prl_default;
        cfg.stats_slot = old.stats_slot;
        cfg.port_ifindex = old.port_ifindex;
        cfg.flags |= old.flags & TUNNEL_F_ETH_DEV;
        let old_keys = decap_keys6(&old, &old6);
        let new_keys = decap_keys6(&cfg, &cfg6);
        let target = DecapTarget::for_tunnel(ifindex, &cfg);
        for key in &new_keys {
            self.v6_mut()?.decap6.insert(*key, target, 0)?;
        }
        self.v6_mut()?.tunnels6.insert(ifindex, cfg6, 0)?;
        self.set_tunnel(cfg)?;
        for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            self.v6_mut()?.decap6.remove(key)?;
        }
        let remote = cfg6.remote;
        if remote != old6.remote {
            self.forget_path_mtus6(ifindex);
        }
        Ok(cfg)
    }

    /// Removes the IPv6 part of the tunnel on `ifindex`: its decapsulation
    /// entries first. Called by `forget_tunnel` before the rest goes.
    pub(super) fn forget6(&mut self, ifindex: u32, decap: bool) {
        let Some(v6) = self.v6.as_mut() else { return };
        if decap {
            let stale: Vec<DecapKey6> = v6
                .decap6
                .iter()
                .flatten()
                .filter(|(_, t)| t.ifindex == ifindex)
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                let _ = v6.decap6.remove(&key);
            }
        }
        let _ = v6.tunnels6.remove(&ifindex);
        self.forget_path_mtus6(ifindex);
    }

    fn forget_path_mtus6(&mut self, ifindex: u32) {
        let Some(v6) = self.v6.as_mut() else { return };
        let keys: Vec<Pmtu6Key> = v6
            .pmtu6
            .keys()
            .flatten()
            .filter(|k| k.ifindex == ifindex)
            .collect();
        for key in keys {
            let _ = v6.pmtu6.remove(&key);
        }
    }

    /// `repair` for the IPv6 index: entries naming no live tunnel over
    /// IPv6, or keys that tunnel's configuration does not give.
    pub(super) fn repair6(&mut self, live: &HashSet<u32>) -> Vec<(DecapKey6, u32)> {
        let wanted: StdHashMap<u32, Vec<DecapKey6>> = self
            .tunnels6()
            .into_iter()
            .filter(|(i, _)| live.contains(i))
            .filter_map(|(i, c6)| Some((i, decap_keys6(&self.tunnel(i)?, &c6))))
            .collect();
        let Some(v6) = self.v6.as_mut() else {
            return Vec::new();
        };
        let stale: Vec<(DecapKey6, u32)> = v6
            .decap6
            .iter()
            .flatten()
            .filter(|(k, t)| !wanted.get(&t.ifindex).is_some_and(|keys| keys.contains(k)))
            .map(|(k, t)| (k, t.ifindex))
            .collect();
        for (key, _) in &stale {
            let _ = v6.decap6.remove(key);
        }
        let orphans: Vec<u32> = v6
            .tunnels6
            .keys()
            .flatten()
            .filter(|i| !live.contains(i))
            .collect();
        for ifindex in orphans {
            let _ = v6.tunnels6.remove(&ifindex);
        }
        stale
    }

    /// Attaches `xtun_tc6` (`xtun_tap6` for an ip6gretap link) to the port
    /// of the tunnel over IPv6 on `ifindex`: what the tunnel interface
    /// sends is encapsulated there. (The port has IPv6 forwarding on from
    /// its creation, which the route lookups there need.)
    pub fn attach_tunnel6(&mut self, nl: &mut Netlink, ifindex: u32, port: u32) -> Result<()> {
        let frames = self
            .tunnel(ifindex)
            .is_some_and(|cfg| cfg.mode == MODE_IP6GRETAP);
        let fd = if frames {
            self.ensure_tap6()?
        } else {
            self.ensure_tc6()?
        };
        self.track_interface(ifindex)?;
        nl.add_clsact(port)?;
        nl.add_bpf_filter(
            port,
            TcHook::Ingress,
            fd.0,
            FILTER_TUNNEL,
            CLASSID_TUNNEL,
            false,
        )?;
        Ok(())
    }

    /// Adds IPv6 decapsulation to an underlay already attached
    /// (`attach_underlay`): `xtun_tc6` after `xtun_tc`, which leaves it the
    /// packets it does not own.
    pub fn attach_underlay6(&mut self, nl: &mut Netlink, link: &Link) -> Result<()> {
        let fd = self.ensure_tc6()?;
        let present = nl
            .bpf_filters(link.index, TcHook::Ingress)?
            .iter()
            .any(|f| f.prio == UNDERLAY6_PRIO);
        if present {
            return Ok(());
        }
        nl.add_clsact(link.index)?;
        nl.add_bpf_filter_at(
            UNDERLAY6_PRIO,
            link.index,
            TcHook::Ingress,
            fd.0,
            FILTER_UNDERLAY6,
            CLASSID_TC_UNDERLAY,
            true,
        )?;
        Ok(())
    }
}

/// A descriptor borrowed from the handle.
pub(super) struct RawFdOf(pub std::os::fd::RawFd);

/// Loads the object's tc program `name` into the kernel: its fd and id.
pub(super) fn load_classifier(ebpf: &mut Ebpf, name: &'static str) -> Result<(OwnedFd, u32)> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(name)
        .ok_or(DataplaneError::Missing(name))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}
