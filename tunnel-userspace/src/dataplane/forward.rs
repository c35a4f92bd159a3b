//! The XDP forwarding fast path's maps: which LANs have it, and the
//! interfaces it may redirect to (every attached underlay and LAN).

use aya::maps::{Array, DevMapHash, HashMap, Map, MapData};
use tunnel_common::maps::*;

use super::{Dataplane, DataplaneError, Result};
use crate::netlink::Link;

/// The maps behind `xtun attach LAN --forward xdp`.
pub(super) struct ForwardMaps {
    lans: HashMap<MapData, u32, ForwardLan>,
    state: Array<MapData, ForwardState>,
    ports: DevMapHash<MapData>,
}

impl ForwardMaps {
    pub(super) fn take(mut take: impl FnMut(&'static str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            lans: HashMap::try_from(take(MAP_FORWARD_LANS)?)?,
            state: Array::try_from(take(MAP_FORWARD_STATE)?)?,
            ports: DevMapHash::try_from(take(MAP_FORWARD_PORTS)?)?,
        })
    }
}

impl Dataplane {
    fn forward_maps(&mut self) -> Result<&mut ForwardMaps> {
        self.forward
            .as_mut()
            .ok_or(DataplaneError::OtherVersion(MAP_FORWARD_LANS))
    }

    /// Lets the fast path redirect to `ifindex` (an attached interface).
    /// An instance without the fast path's maps has nothing to update.
    pub(super) fn add_forward_port(&mut self, ifindex: u32) -> Result<()> {
        if let Some(maps) = self.forward.as_mut() {
            maps.ports.insert(ifindex, ifindex, None, 0)?;
        }
        Ok(())
    }

    /// Takes `ifindex` out of the fast path: as a LAN and as a target.
    pub(super) fn remove_forward_port(&mut self, ifindex: u32) -> Result<()> {
        if self.forwards(ifindex) {
            self.set_forward(ifindex, false)?;
        }
        if let Some(maps) = self.forward.as_mut() {
            let _ = maps.ports.remove(ifindex);
        }
        Ok(())
    }

    /// Does LAN `ifindex` have the fast path?
    pub fn forwards(&self, ifindex: u32) -> bool {
        self.forward
            .as_ref()
            .is_some_and(|maps| maps.lans.get(&ifindex, 0).is_ok())
    }

    /// The LANs with the fast path, by ifindex.
    pub fn forward_lans(&self) -> Vec<u32> {
        self.forward
            .as_ref()
            .map(|maps| maps.lans.keys().filter_map(|k| k.ok()).collect())
            .unwrap_or_default()
    }

    /// Switches the fast path on or off for LAN `ifindex`, and keeps the
    /// namespace-wide count of LANs in step.
    fn set_forward(&mut self, ifindex: u32, on: bool) -> Result<()> {
        let maps = self.forward_maps()?;
        if on {
            maps.lans.insert(ifindex, ForwardLan::default(), 0)?;
        } else {
            let _ = maps.lans.remove(&ifindex);
        }
        let lans = maps.lans.keys().filter(|k| k.is_ok()).count() as u32;
        let state = ForwardState {
            lans,
            ..ForwardState::default()
        };
        maps.state.set(0, state, 0)?;
        Ok(())
    }

    /// `xtun attach LAN --forward xdp|off`: the LAN must be attached with
    /// XDP already. Returns whether anything changed.
    pub fn forward_lan(&mut self, link: &Link, on: bool) -> Result<bool> {
        let was_on = self.forwards(link.index);
        if !on {
            if was_on {
                self.set_forward(link.index, false)?;
            }
            return Ok(was_on);
        }
        self.add_forward_port(link.index)?;
        self.set_forward(link.index, true)?;
        Ok(!was_on)
    }
}
