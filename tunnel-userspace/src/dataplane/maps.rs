//! Every map of the instance as `xtun map list|dump` shows it: sizes, how
//! many entries are in use, and the entries as raw bytes (the CLI decodes
//! them by map name).

use std::{
    collections::{BTreeMap, BTreeSet},
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::maps::{MapData, MapInfo, MapType};
use tunnel_common::maps::*;

use super::{program_info, Dataplane, DataplaneError, Result};
use crate::bpf_sys::{self, RawEntry};

/// One map, as `xtun map list` shows it.
#[derive(Clone, Debug)]
pub struct MapSummary {
    pub id: u32,
    pub name: String,
    /// The kernel's name for its type (`hash`, `lpm_trie`, ...).
    pub kind: &'static str,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    /// Entries in use (see `MapEntries`); None where that is not known.
    pub in_use: Option<usize>,
}

/// The entries of a map in use, as raw bytes. The arrays indexed by tunnel
/// slot or ifindex have every index: only the slots of configured tunnels,
/// the interfaces tracked and the ifindexes with a tunnel are in use.
pub enum MapEntries {
    /// A key and its value.
    Plain(Vec<(Vec<u8>, Vec<u8>)>),
    /// A key and its value on each possible CPU.
    PerCpu(Vec<RawEntry>),
}

/// A map's entries in use, with what decoding them takes.
pub struct MapDump {
    pub summary: MapSummary,
    pub entries: MapEntries,
    /// The tunnel (ifindex) using each `XTUN_TUN_STATS` slot.
    pub slot_owners: BTreeMap<u32, u32>,
}

fn type_name(info: &MapInfo) -> &'static str {
    match info.map_type() {
        Ok(MapType::Hash) => "hash",
        Ok(MapType::PerCpuHash) => "percpu_hash",
        Ok(MapType::Array) => "array",
        Ok(MapType::PerCpuArray) => "percpu_array",
        Ok(MapType::RingBuf) => "ringbuf",
        Ok(MapType::LpmTrie) => "lpm_trie",
        Ok(MapType::DevMapHash) => "devmap_hash",
        _ => "other",
    }
}

fn is_per_cpu(info: &MapInfo) -> bool {
    matches!(
        info.map_type(),
        Ok(MapType::PerCpuHash) | Ok(MapType::PerCpuArray)
    )
}

/// Every entry of a map, as raw bytes.
fn raw_entries(info: &MapInfo) -> Result<Vec<RawEntry>> {
    let data = MapData::from_id(info.id())?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    Ok(bpf_sys::map_entries(
        data.fd().as_fd().as_raw_fd(),
        info.key_size() as usize,
        info.value_size() as usize,
        is_per_cpu(info),
        cpus,
    )?)
}

/// Whether an entry of an array indexed by tunnel slot or ifindex is in
/// use: a configured tunnel's slot, or a tracked interface (whose entry is
/// never all zero). Entries of other maps always are.
fn in_use(name: &str, slot_owners: &BTreeMap<u32, u32>, key: &[u8], values: &[Vec<u8>]) -> bool {
    match name {
        MAP_TUNNEL_STATS => key
            .get(..4)
            .is_some_and(|k| slot_owners.contains_key(&u32::from_ne_bytes(k.try_into().unwrap()))),
        MAP_IF_INDEXED | MAP_TUNNELS_BY_IF => values.iter().flatten().any(|b| *b != 0),
        _ => true,
    }
}

impl Dataplane {
    /// The instance's maps: every map used by its programs, by id.
    fn map_infos(&self) -> Result<Vec<MapInfo>> {
        let mut ids = BTreeSet::new();
        let ipv6 = self.ipv6_program_ids().into_iter().map(|(_, id)| id);
        for id in self.xdp_id.into_iter().chain([self.tc_id]).chain(ipv6) {
            if let Some(info) = program_info(id) {
                ids.extend(info.map_ids()?.unwrap_or_default());
            }
        }
        Ok(ids
            .into_iter()
            .filter_map(|id| MapInfo::from_id(id).ok())
            .collect())
    }

    /// Every map of the instance: id and name.
    pub fn map_names(&self) -> Result<Vec<(u32, String)>> {
        Ok(self
            .map_infos()?
            .iter()
            .map(|m| (m.id(), m.name_as_str().unwrap_or("").to_string()))
            .collect())
    }

    /// The tunnel (ifindex) using each counter slot.
    fn slot_owners(&self) -> BTreeMap<u32, u32> {
        self.tunnels()
            .into_iter()
            .map(|(ifindex, cfg)| (cfg.stats_slot, ifindex))
            .collect()
    }

    fn summary(&self, info: &MapInfo, slot_owners: &BTreeMap<u32, u32>) -> MapSummary {
        let name = info.name_as_str().unwrap_or("").to_string();
        let in_use = match name.as_str() {
            MAP_TUNNEL_STATS => Some(slot_owners.len()),
            MAP_IF_INDEXED | MAP_TUNNELS_BY_IF => raw_entries(info).ok().map(|entries| {
                entries
                    .iter()
                    .filter(|(key, values)| in_use(&name, slot_owners, key, values))
                    .count()
            }),
            _ => match info.map_type() {
                Ok(MapType::Hash) | Ok(MapType::PerCpuHash) | Ok(MapType::LpmTrie) => {
                    MapData::from_id(info.id()).ok().and_then(|data| {
                        bpf_sys::map_keys(data.fd().as_fd().as_raw_fd(), info.key_size() as usize)
                            .ok()
                            .map(|k| k.len())
                    })
                }
                Ok(MapType::Array) | Ok(MapType::PerCpuArray) => Some(info.max_entries() as usize),
                _ => None,
            },
        };
        MapSummary {
            id: info.id(),
            kind: type_name(info),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            in_use,
            name,
        }
    }

    /// Every map of the instance (`xtun map list`).
    pub fn map_list(&self) -> Result<Vec<MapSummary>> {
        let owners = self.slot_owners();
        Ok(self
            .map_infos()?
            .iter()
            .map(|info| self.summary(info, &owners))
            .collect())
    }

    /// The entries in use of the map called `name` (`xtun map dump`); None
    /// if the instance has no such map. A ring buffer has no entries to
    /// dump: it is streamed (`xtun monitor`, `xtun log`).
    pub fn map_dump(&self, name: &str) -> Result<Option<MapDump>> {
        let Some(info) = self
            .map_infos()?
            .into_iter()
            .find(|m| m.name_as_str() == Some(name))
        else {
            return Ok(None);
        };
        if matches!(info.map_type(), Ok(MapType::RingBuf)) {
            return Err(DataplaneError::RingBuffer {
                name: name.to_string(),
                monitor: MAP_MON_RINGS.contains(&name),
            });
        }
        let slot_owners = self.slot_owners();
        let summary = self.summary(&info, &slot_owners);
        let entries = raw_entries(&info)?
            .into_iter()
            .filter(|(key, values)| in_use(name, &slot_owners, key, values));
        let entries = if is_per_cpu(&info) {
            MapEntries::PerCpu(entries.collect())
        } else {
            MapEntries::Plain(
                entries
                    .map(|(key, mut values)| (key, values.swap_remove(0)))
                    .collect(),
            )
        };
        Ok(Some(MapDump {
            summary,
            entries,
            slot_owners,
        }))
    }
}
