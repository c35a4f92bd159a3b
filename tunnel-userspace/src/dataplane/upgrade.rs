//! `xtun upgrade`: this binary's programs in place of the running ones,
//! over the same maps.

use std::os::fd::AsRawFd as _;

use aya::maps::{Array, HashMap, MapData};
use tunnel_common::maps::*;

use super::{
    attach::{attached_xdp_mode, load_defrag, load_tc, load_xdp},
    bpffs::load_object_sharing,
    build_id,
    forward::ForwardMaps,
    monitor::MonitorMaps,
    tunnels6::load_classifier,
    Dataplane, DataplaneError, Result, FILTER_DEFRAG, FILTER_TUNNEL, OBJECT,
};
use crate::netlink::{self, Netlink, TcHook};

impl Dataplane {
    /// Replaces the running programs with this binary's, everywhere they are
    /// attached, keeping the maps (and so every tunnel and counter): XDP is
    /// swapped with IFLA_XDP's expected-fd replace and each tc filter with
    /// NLM_F_REPLACE, both atomic, so no packet meets a missing program.
    /// Returns how many attachments were replaced.
    pub fn upgrade(&mut self, nl: &mut Netlink) -> Result<usize> {
        if self.shared_map_ids.is_empty() {
            return Err(DataplaneError::Incomplete(
                "nothing to upgrade: freshly loaded",
            ));
        }
        let mut object = load_object_sharing(&self.shared_map_ids)?;
        let (new_xdp_fd, new_xdp_id) = load_xdp(&mut object)?;
        let (new_tc_fd, new_tc_id) = load_tc(&mut object)?;
        let new_defrag = load_defrag(&mut object)?;
        // The IPv6 programs, where this instance runs them.
        let new_tc6 = match self.tc6 {
            Some(_) => Some(load_classifier(&mut object, PROG_TC6)?),
            None => None,
        };
        let new_tap6 = match self.tap6 {
            Some(_) => Some(load_classifier(&mut object, PROG_TAP6)?),
            None => None,
        };
        let ipv6_swaps: Vec<(u32, i32)> = [(&self.tc6, &new_tc6), (&self.tap6, &new_tap6)]
            .into_iter()
            .filter_map(|(old, new)| match (old, new) {
                (Some((_, old_id)), Some((new_fd, _))) => Some((*old_id, new_fd.as_raw_fd())),
                _ => None,
            })
            .collect();
        // An instance from before `XTUN_TUN_BY_IF` gets the map now: it is
        // filled before any program that reads it is attached.
        let mut by_if: Array<MapData, TunnelConfig> = Array::try_from(
            object
                .take_map(MAP_TUNNELS_BY_IF)
                .ok_or(DataplaneError::Missing(MAP_TUNNELS_BY_IF))?,
        )?;
        let mut ports: HashMap<MapData, u32, TunnelConfig> = HashMap::try_from(
            object
                .take_map(MAP_PORTS)
                .ok_or(DataplaneError::Missing(MAP_PORTS))?,
        )?;
        for (_, cfg) in self.tunnels.iter().flatten() {
            let key = cfg.datapath_ifindex();
            if key < IF_INDEXED_MAX {
                by_if.set(key, cfg, 0)?;
            } else {
                ports.insert(key, cfg, 0)?;
            }
        }
        self.tunnels_by_if = Some(by_if);
        self.ports = Some(ports);
        if self.monitor.is_none() {
            self.monitor = Some(MonitorMaps::take(|name| {
                object.take_map(name).ok_or(DataplaneError::Missing(name))
            })?);
        }
        // The same for the fast path's maps; every underlay becomes a
        // redirect target below.
        if self.forward.is_none() {
            self.forward = Some(ForwardMaps::take(|name| {
                object.take_map(name).ok_or(DataplaneError::Missing(name))
            })?);
        }

        let mut replaced = 0;
        for link in nl.links()? {
            if let (Some(id), Some(old_fd)) = (link.xdp_prog_id, self.xdp_fd.as_ref()) {
                if Some(id) == self.xdp_id {
                    let mode = attached_xdp_mode(&link);
                    nl.replace_xdp(link.index, new_xdp_fd.as_raw_fd(), old_fd.as_raw_fd(), mode)?;
                    replaced += 1;
                }
            }
            for hook in [TcHook::Ingress, TcHook::Egress] {
                for filter in nl.bpf_filters(link.index, hook)? {
                    let ipv6 = ipv6_swaps
                        .iter()
                        .find(|(old_id, _)| filter.prog_id == Some(*old_id));
                    if let Some((_, new_fd)) = ipv6 {
                        // Underlays have it at their own priority, ports at ours.
                        let name = filter.name.as_deref().unwrap_or(FILTER_TUNNEL);
                        nl.add_bpf_filter_at(
                            filter.prio,
                            link.index,
                            hook,
                            *new_fd,
                            name,
                            filter.classid,
                            true,
                        )?;
                        replaced += 1;
                        continue;
                    }
                    if filter.prio != netlink::FILTER_PRIO || filter.prog_id != Some(self.tc_id) {
                        continue;
                    }
                    if filter.classid != CLASSID_TUNNEL {
                        self.add_forward_port(link.index)?;
                        // Underlays get (or keep) reassembly, the new one.
                        nl.add_bpf_filter_at(
                            netlink::DEFRAG_PRIO,
                            link.index,
                            hook,
                            new_defrag.0.as_raw_fd(),
                            FILTER_DEFRAG,
                            0,
                            true,
                        )?;
                    }
                    let name = filter.name.as_deref().unwrap_or(FILTER_TUNNEL);
                    nl.add_bpf_filter(
                        link.index,
                        hook,
                        new_tc_fd.as_raw_fd(),
                        name,
                        filter.classid,
                        true,
                    )?;
                    replaced += 1;
                }
            }
        }
        let mut settings = self.current_settings()?;
        settings.build_id = build_id(OBJECT);
        self.settings.set(0, settings, 0)?;
        self.xdp_fd = Some(new_xdp_fd);
        self.xdp_id = Some(new_xdp_id);
        self.tc_fd = new_tc_fd;
        self.tc_id = new_tc_id;
        self.defrag = Some(new_defrag);
        if new_tc6.is_some() {
            self.tc6 = new_tc6;
        }
        if new_tap6.is_some() {
            self.tap6 = new_tap6;
        }
        self._ebpf = Some(object);
        Ok(replaced)
    }
}
