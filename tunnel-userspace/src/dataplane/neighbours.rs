//! The neighbour table of multipoint (`remote any`) and ISATAP tunnels: an
//! inner prefix on a tunnel maps to the outer address of its remote,
//! longest prefix first (an LPM trie keyed by tunnel, family and address).

use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::{lpm_trie::Key, IterableMap as _};
use tunnel_common::maps::*;

use super::{Dataplane, DataplaneError, Result};
use crate::{
    bpf_sys,
    config::{addr_from_wire, wire_addr, Prefix},
};

/// One neighbour: on tunnel `ifindex`, inner `prefix` goes to `remote`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Neighbour {
    pub ifindex: u32,
    pub prefix: Prefix,
    pub remote: Ipv4Addr,
}

/// Neighbours to add in one go (`-batch`): keys and values packed as the
/// trie stores them, for BPF_MAP_UPDATE_BATCH.
#[derive(Default)]
pub struct NeighbourBatch {
    keys: Vec<u8>,
    values: Vec<u8>,
    len: usize,
}

impl NeighbourBatch {
    pub fn push(&mut self, ifindex: u32, prefix: &Prefix, remote: Ipv4Addr) {
        let key = prefix.key(ifindex);
        let data = key.data();
        self.keys.extend_from_slice(&key.prefix_len().to_ne_bytes());
        self.keys.extend_from_slice(&data.ifindex.to_ne_bytes());
        self.keys.extend_from_slice(&data.family.to_ne_bytes());
        self.keys.extend_from_slice(&data.addr);
        self.values
            .extend_from_slice(&wire_addr(remote).to_ne_bytes());
        self.len += 1;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A trie key as the prefix it stands for.
fn prefix_of(key: &Key<NeighKey>) -> Prefix {
    let k = key.data();
    let addr = if k.family == 6 {
        IpAddr::from(k.addr)
    } else {
        IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
    };
    Prefix {
        addr,
        len: key.prefix_len().saturating_sub(NEIGH_KEY_FIXED_BITS) as u8,
    }
}

impl Dataplane {
    /// Every neighbour of every tunnel.
    pub fn neighbours(&self) -> Result<Vec<Neighbour>> {
        let mut all = Vec::new();
        for entry in self.neigh.iter() {
            let (key, value) = entry?;
            all.push(Neighbour {
                ifindex: key.data().ifindex,
                prefix: prefix_of(&key),
                remote: addr_from_wire(value.remote),
            });
        }
        Ok(all)
    }

    /// Adds (or replaces) one neighbour.
    pub fn add_neighbour(&mut self, ifindex: u32, prefix: &Prefix, remote: Ipv4Addr) -> Result<()> {
        let entry = NeighEntry {
            remote: wire_addr(remote),
        };
        Ok(self.neigh.insert(&prefix.key(ifindex), entry, 0)?)
    }

    /// Removes one neighbour; false if there was none.
    pub fn remove_neighbour(&mut self, ifindex: u32, prefix: &Prefix) -> bool {
        self.neigh.remove(&prefix.key(ifindex)).is_ok()
    }

    /// Adds a batch of neighbours. On failure: how many went in before it.
    pub fn add_neighbours(
        &mut self,
        batch: &NeighbourBatch,
    ) -> std::result::Result<(), (usize, DataplaneError)> {
        if batch.is_empty() {
            return Ok(());
        }
        let fd = self.neigh.map().fd().as_fd().as_raw_fd();
        bpf_sys::map_update_batch(fd, &batch.keys, &batch.values, batch.len)
            .map_err(|(done, e)| (done, e.into()))
    }

    /// Removes every neighbour of tunnel `ifindex` (it is gone).
    pub(super) fn forget_neighbours(&mut self, ifindex: u32) {
        let keys: Vec<_> = self
            .neigh
            .keys()
            .flatten()
            .filter(|k| k.data().ifindex == ifindex)
            .collect();
        for key in keys {
            let _ = self.neigh.remove(&key);
        }
    }
}
