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

/// An interface's IPv4 `rp_filter` sysctl (`all` for the namespace's):
/// 0 when unreadable, as the kernel's default.
fn rp_filter(dev: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{dev}/rp_filter"))
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The name of interface `ifindex` in this namespace.
fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as the call requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Of interfaces whose own `rp_filter`s are `own`, the strictest mode the
/// kernel applies to any (each applies the larger of `all` and its own):
/// strict (1) over loose (2) over none (0).
fn strictest_rp_filter(all: u32, own: &[u32]) -> u32 {
    let strictness = |mode: u32| match mode {
        1 => 2,
        2 => 1,
        _ => 0,
    };
    own.iter()
        .map(|&mode| all.max(mode))
        .chain([all])
        .max_by_key(|&mode| strictness(mode))
        .unwrap_or(all)
}

impl Dataplane {
    /// The strictest IPv4 `rp_filter` the kernel applies to packets
    /// arriving on any of our tunnel interfaces: each one's is the larger
    /// of `all`'s and its own (a new interface takes `default`'s, which
    /// distributions set to loose), and strict (1) is stricter than loose
    /// (2), which is stricter than none (0). Stricter than a tunnel's own
    /// is safe: a packet the fast path does not pass goes to the kernel,
    /// which applies its own.
    fn tunnels_rp_filter(&self) -> u32 {
        let own = self
            .tunnels()
            .iter()
            .filter_map(|(ifindex, _)| ifname(*ifindex))
            .map(|name| rp_filter(&name))
            .collect::<Vec<_>>();
        strictest_rp_filter(rp_filter("all"), &own)
    }

    /// Rereads the sysctls the fast path's state holds (a tunnel was
    /// added); nothing to do while no LAN has the fast path.
    pub(super) fn refresh_forward_state(&mut self) -> Result<()> {
        let rp_filter_tunnels = self.tunnels_rp_filter();
        let Some(maps) = self.forward.as_mut() else {
            return Ok(());
        };
        let mut state = maps.state.get(&0, 0)?;
        if state.lans != 0 && state.rp_filter_tunnels != rp_filter_tunnels {
            state.rp_filter_tunnels = rp_filter_tunnels;
            maps.state.set(0, state, 0)?;
        }
        Ok(())
    }

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
            self.set_forward(ifindex, None)?;
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

    /// Switches the fast path on (`Some(lan)`, with its settings) or off
    /// for LAN `ifindex`, and keeps the namespace-wide state in step.
    fn set_forward(&mut self, ifindex: u32, lan: Option<ForwardLan>) -> Result<()> {
        let rp_filter_tunnels = self.tunnels_rp_filter();
        let maps = self.forward_maps()?;
        match lan {
            Some(lan) => maps.lans.insert(ifindex, lan, 0)?,
            None => {
                let _ = maps.lans.remove(&ifindex);
            }
        }
        let lans = maps.lans.keys().filter(|k| k.is_ok()).count() as u32;
        let state = ForwardState {
            lans,
            rp_filter_tunnels,
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
                self.set_forward(link.index, None)?;
            }
            return Ok(was_on);
        }
        self.add_forward_port(link.index)?;
        // The kernel checks the larger of `all` and the interface's own.
        let lan = ForwardLan {
            rp_filter: rp_filter("all").max(rp_filter(&link.name)),
            _pad: 0,
        };
        self.set_forward(link.index, Some(lan))?;
        Ok(!was_on)
    }
}

#[cfg(test)]
mod tests {
    use super::strictest_rp_filter;

    #[test]
    fn strict_beats_loose_beats_none() {
        assert_eq!(strictest_rp_filter(0, &[]), 0);
        assert_eq!(strictest_rp_filter(0, &[0, 2]), 2);
        // 2 is larger than 1, but loose: one strict tunnel makes it strict.
        assert_eq!(strictest_rp_filter(0, &[2, 1, 0]), 1);
        assert_eq!(
            strictest_rp_filter(2, &[1]),
            2,
            "the kernel takes the larger"
        );
        assert_eq!(strictest_rp_filter(1, &[0, 0]), 1);
        assert_eq!(strictest_rp_filter(1, &[2, 0]), 1);
    }
}
