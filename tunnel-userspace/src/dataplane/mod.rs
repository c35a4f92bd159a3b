//! The data plane of a network namespace: its programs and every one of
//! its maps. `Dataplane` is the only way to read or change that state; the
//! CLI, the tests and the benchmarks all go through its operations.
//!
//! Attachments are made through netlink (IFLA_XDP and a clsact `bpf`
//! filter), which the kernel keeps for as long as the interface exists, so
//! the data plane outlives the `xtun` process without any bpffs pins. That
//! matters under `ip netns exec`, where /sys/fs/bpf is not mounted. The maps
//! are found again from the programs attached in the current namespace.
//!
//! By job: this file loads and finds an instance; `bpffs` loads a second
//! object that shares a running instance's maps, and `upgrade` swaps its
//! programs; `attach` hooks it to interfaces; `tunnels` keeps the tunnel
//! table and everything that goes with a tunnel; `neighbours` the
//! multipoint neighbour table; `counters` sums the counters; `monitor` the
//! monitor and log leases; `maps` lists and dumps maps for `xtun map`;
//! `test_run` runs the programs over a packet (BPF_PROG_TEST_RUN).

mod attach;
mod bpffs;
mod counters;
mod forward;
mod maps;
mod monitor;
mod neighbours;
mod test_run;
mod tunnels;
mod tunnels6;
mod upgrade;

use std::{
    collections::BTreeSet,
    os::fd::{AsFd, OwnedFd},
};

use aya::{
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap},
    programs::{loaded_programs, ProgramInfo},
    Ebpf,
};
use thiserror::Error;
use tunnel_common::maps::*;

pub use self::{
    attach::detach_interface,
    bpffs::BPFFS_DIR_PREFIX,
    maps::{MapDump, MapEntries, MapSummary},
    monitor::{MonitorClaim, MonitorSlot},
    neighbours::{Neighbour, NeighbourBatch},
    test_run::TestRun,
    tunnels::{PrlEdit, Repaired, TunnelDevice},
    tunnels6::{decap_keys6, FILTER_UNDERLAY6, UNDERLAY6_PRIO},
};
use self::{
    attach::{load_defrag, load_tc, load_xdp},
    bpffs::{raise_memlock_limit, KernelLayout},
    forward::ForwardMaps,
    monitor::MonitorMaps,
    tunnels6::V6Maps,
};
use crate::netlink::{self, Link, Netlink, TcHook};

/// The eBPF object built by build.rs, embedded so `xtun` is self-contained.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tunnel"));

/// Names we give our tc filters: an underlay attached by `xtun attach`, one
/// attached implicitly by `tunnel add` (detached again with its last tunnel),
/// and a tunnel interface's egress.
pub const FILTER_UNDERLAY: &str = "xtun_underlay";
pub const FILTER_UNDERLAY_AUTO: &str = "xtun_underlay_auto";
pub const FILTER_TUNNEL: &str = "xtun_tunnel";
pub const FILTER_DEFRAG: &str = "xtun_defrag";

#[derive(Debug, Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("eBPF map: {0}")]
    Map(#[from] aya::maps::MapError),
    #[error("eBPF XDP redirect map: {0}")]
    XdpMap(#[from] aya::maps::xdp::XdpMapError),
    #[error("the eBPF object has no {0}")]
    Missing(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(
        "{dev} already has an XDP program (id {id}{}) that is not xtun's; remove it first (ip link set dev {dev} xdp off)",
        name.as_ref().map(|n| format!(", {n}")).unwrap_or_default()
    )]
    ForeignXdp {
        dev: String,
        id: u32,
        name: Option<String>,
    },
    #[error("{dev} carries tunnels ({tunnels}); delete them first")]
    InUse { dev: String, tunnels: String },
    #[error("xtun is not attached to {0}")]
    NotAttached(String),
    #[error("the data plane in this namespace was loaded by another xtun version (its {0} map is missing or differs); to move to this version, with that version's xtun: `xtun export > FILE`, then `xtun tunnel del` each tunnel and `xtun detach` each interface; then with this one: `xtun apply -f FILE`")]
    OtherVersion(&'static str),
    #[error("no free {0}: the data plane holds as many tunnels as it can")]
    Full(&'static str),
    #[error("the xtun data plane in this namespace is incomplete ({0}); delete its tunnels and attach again")]
    Incomplete(&'static str),
    #[error("{} is not in the potential-router list", std::net::Ipv4Addr::from(u32::from_be(*.0)))]
    NotInPrl(u32),
    #[error("{}", if *monitor {
        format!("{name} is a ring buffer of monitor events: stream it with `xtun monitor`")
    } else {
        format!("{name} is a ring buffer of log records: stream it with `xtun log`")
    })]
    RingBuffer { name: String, monitor: bool },
}

pub type Result<T> = std::result::Result<T, DataplaneError>;

/// Where an underlay decapsulates, as asked for (`--decap`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapChoice {
    /// tc on veth, whose peer would lose GSO to a native XDP program;
    /// XDP everywhere else.
    Auto,
    Xdp,
    Tc,
}

impl DecapChoice {
    fn resolve(self, link: &Link) -> Self {
        match self {
            Self::Auto if link.kind.as_deref() == Some("veth") => Self::Tc,
            Self::Auto => Self::Xdp,
            other => other,
        }
    }
}

/// Where an underlay ended up decapsulating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapMode {
    Xdp(XdpMode),
    Tc,
}

impl DecapMode {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Xdp(XdpMode::Native) => "XDP native",
            Self::Xdp(XdpMode::Generic) => "XDP generic",
            Self::Tc => "tc",
        }
    }
}

/// How XDP ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpMode {
    Native,
    Generic,
}

/// The data plane of the current network namespace: its programs and maps.
pub struct Dataplane {
    /// Keeps a freshly loaded object alive until it is attached.
    _ebpf: Option<Ebpf>,
    /// Maps of an instance found again (empty for a fresh load).
    shared_map_ids: BTreeSet<u32>,
    xdp_fd: Option<OwnedFd>,
    xdp_id: Option<u32>,
    tc_fd: OwnedFd,
    tc_id: u32,
    /// Outer-fragment reassembly; loaded when an underlay needs it.
    defrag: Option<(OwnedFd, u32)>,
    /// The IPv6 underlay's program; loaded when a tunnel over IPv6 needs it.
    tc6: Option<(OwnedFd, u32)>,
    /// ip6gretap ports' program; loaded when such a link needs it.
    tap6: Option<(OwnedFd, u32)>,
    /// The IPv6 underlay's maps; None until `tc6` is loaded (an instance
    /// without tunnels over IPv6 may have none).
    v6: Option<V6Maps>,
    /// Every tunnel, by ifindex. Written only through `set_tunnel` and
    /// `remove_tunnel`, which keep `tunnels_by_if` in step.
    tunnels: HashMap<MapData, u32, TunnelConfig>,
    /// Tunnels below `IF_INDEXED_MAX`, by ifindex, for the data plane.
    /// None in an instance loaded by a version without it (until upgraded).
    tunnels_by_if: Option<Array<MapData, TunnelConfig>>,
    /// Tunnels whose port is at `IF_INDEXED_MAX` or above, by port.
    ports: Option<HashMap<MapData, u32, TunnelConfig>>,
    decap: Option<HashMap<MapData, DecapKey, DecapTarget>>,
    /// Indexed by `TunnelConfig::stats_slot`.
    tunnel_stats: PerCpuArray<MapData, TunnelStats>,
    counters: PerCpuArray<MapData, u64>,
    /// Interfaces from `IF_INDEXED_MAX` up, by ifindex.
    if_counters: PerCpuHashMap<MapData, u32, IfCounters>,
    /// Interfaces below `IF_INDEXED_MAX`, by ifindex.
    if_indexed: PerCpuArray<MapData, IfCounters>,
    settings: Array<MapData, Settings>,
    neigh: LpmTrie<MapData, NeighKey, NeighEntry>,
    prl: HashMap<MapData, PrlKey, PrlEntry>,
    seq: HashMap<MapData, u32, SeqState>,
    /// Path MTUs the data plane learnt from ICMP (read-only here).
    pmtu: HashMap<MapData, PmtuKey, PmtuEntry>,
    /// `xtun monitor`'s leases, counters and ring buffers; None in an
    /// instance loaded by a version without them (until upgraded).
    monitor: Option<MonitorMaps>,
    /// The XDP forwarding fast path's maps; None in an instance loaded by
    /// a version without them (until upgraded).
    forward: Option<ForwardMaps>,
    /// Counter slots of configured tunnels, once read (`allocate_stats_slot`).
    used_slots: Option<BTreeSet<u32>>,
    /// No slot below this is free.
    lowest_free_slot: u32,
}

/// A running instance's map `name`, as this build's type for it. A map that
/// is missing, or of another type, key or value size, was made by another
/// version of xtun, whose maps this one cannot read.
fn take_shaped<M: TryFrom<Map, Error = aya::maps::MapError>>(
    maps: &mut std::collections::HashMap<String, Map>,
    name: &'static str,
) -> Result<M> {
    let map = maps
        .remove(name)
        .ok_or(DataplaneError::OtherVersion(name))?;
    M::try_from(map).map_err(|e| match e {
        aya::maps::MapError::InvalidMapType { .. }
        | aya::maps::MapError::InvalidKeySize { .. }
        | aya::maps::MapError::InvalidValueSize { .. } => DataplaneError::OtherVersion(name),
        other => other.into(),
    })
}

/// Identifies an eBPF object: FNV-1a over its bytes.
pub fn build_id(object: &[u8]) -> u64 {
    object.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub(crate) fn program_info(id: u32) -> Option<ProgramInfo> {
    loaded_programs().flatten().find(|p| p.id() == id)
}

pub(crate) fn program_name(id: u32) -> Option<String> {
    program_info(id).and_then(|p| p.name_as_str().map(str::to_owned))
}

/// Is `name` one of our program names (as the kernel reports them)?
fn is_ours(name: &str) -> bool {
    name == PROG_XDP_DECAP
        || name == PROG_TC
        || name == PROG_DEFRAG
        || name == PROG_TC6
        || name == PROG_TAP6
}

impl Dataplane {
    /// Finds the data plane attached in this namespace, if any.
    pub fn find(nl: &mut Netlink) -> Result<Option<Self>> {
        let links = nl.links()?;
        let mut anchor = None;
        for link in &links {
            if let Some(id) = link.xdp_prog_id {
                if program_name(id).as_deref() == Some(PROG_XDP_DECAP) {
                    anchor = Some(id);
                    break;
                }
            }
        }
        if anchor.is_none() {
            'links: for link in &links {
                for hook in [TcHook::Egress, TcHook::Ingress] {
                    for filter in nl.bpf_filters(link.index, hook)? {
                        let Some(id) = filter.prog_id else { continue };
                        if program_name(id).as_deref() == Some(PROG_TC) {
                            anchor = Some(id);
                            break 'links;
                        }
                    }
                }
            }
        }
        let Some(anchor) = anchor else {
            return Ok(None);
        };
        Self::from_anchor(anchor).map(Some)
    }

    /// Rebuilds the handle from one attached program: its counters map
    /// identifies the instance, and every xtun program using that map
    /// belongs to it.
    fn from_anchor(anchor: u32) -> Result<Self> {
        let info = program_info(anchor).ok_or(DataplaneError::Incomplete("program vanished"))?;
        let counters_id = info
            .map_ids()?
            .unwrap_or_default()
            .into_iter()
            .find(|&id| {
                MapInfo::from_id(id)
                    .ok()
                    .and_then(|m| m.name_as_str().map(|n| n == MAP_COUNTERS))
                    .unwrap_or(false)
            })
            .ok_or(DataplaneError::Incomplete("no counters map"))?;

        let mut xdp = None;
        let mut tc = None;
        let mut defrag = None;
        let mut tc6 = None;
        let mut tap6 = None;
        let mut map_ids = BTreeSet::new();
        for prog in loaded_programs().flatten() {
            let Some(name) = prog.name_as_str().map(str::to_owned) else {
                continue;
            };
            if !is_ours(&name) {
                continue;
            }
            let ids = prog.map_ids()?.unwrap_or_default();
            if !ids.contains(&counters_id) {
                continue;
            }
            map_ids.extend(ids);
            let fd: OwnedFd = prog.fd()?.as_fd().try_clone_to_owned()?;
            if name == PROG_XDP_DECAP {
                xdp = Some((fd, prog.id()));
            } else if name == PROG_DEFRAG {
                defrag = Some((fd, prog.id()));
            } else if name == PROG_TC6 {
                tc6 = Some((fd, prog.id()));
            } else if name == PROG_TAP6 {
                tap6 = Some((fd, prog.id()));
            } else {
                tc = Some((fd, prog.id()));
            }
        }
        let (tc_fd, tc_id) = tc.ok_or(DataplaneError::Incomplete("tc program missing"))?;
        let mut maps = std::collections::HashMap::new();
        for &id in &map_ids {
            let data = MapData::from_id(id)?;
            let name = data.info()?.name_as_str().map(str::to_owned);
            if let Some(name) = name {
                maps.insert(name, Map::from_map_data(data)?);
            }
        }
        let (xdp_fd, xdp_id) = xdp.map_or((None, None), |(fd, id)| (Some(fd), Some(id)));
        let v6 = V6Maps::from_found(&mut maps)?;
        Ok(Self {
            _ebpf: None,
            shared_map_ids: map_ids,
            xdp_fd,
            xdp_id,
            tc_fd,
            tc_id,
            defrag,
            tc6,
            tap6,
            v6,
            tunnels: take_shaped(&mut maps, MAP_TUNNELS)?,
            tunnels_by_if: maps
                .contains_key(MAP_TUNNELS_BY_IF)
                .then(|| take_shaped(&mut maps, MAP_TUNNELS_BY_IF))
                .transpose()?,
            ports: maps
                .contains_key(MAP_PORTS)
                .then(|| take_shaped(&mut maps, MAP_PORTS))
                .transpose()?,
            decap: maps
                .contains_key(MAP_DECAP)
                .then(|| take_shaped(&mut maps, MAP_DECAP))
                .transpose()?,
            tunnel_stats: take_shaped(&mut maps, MAP_TUNNEL_STATS)?,
            counters: take_shaped(&mut maps, MAP_COUNTERS)?,
            if_counters: take_shaped(&mut maps, MAP_IF_COUNTERS)?,
            if_indexed: take_shaped(&mut maps, MAP_IF_INDEXED)?,
            settings: take_shaped(&mut maps, MAP_SETTINGS)?,
            neigh: take_shaped(&mut maps, MAP_NEIGH)?,
            prl: take_shaped(&mut maps, MAP_PRL)?,
            seq: take_shaped(&mut maps, MAP_SEQ)?,
            pmtu: take_shaped(&mut maps, MAP_PMTU)?,
            monitor: maps
                .contains_key(MAP_MON_LEASES)
                .then(|| {
                    MonitorMaps::take(|name| {
                        maps.remove(name).ok_or(DataplaneError::OtherVersion(name))
                    })
                })
                .transpose()?,
            forward: maps
                .contains_key(MAP_FORWARD_LANS)
                .then(|| {
                    ForwardMaps::take(|name| {
                        maps.remove(name).ok_or(DataplaneError::OtherVersion(name))
                    })
                })
                .transpose()?,
            used_slots: None,
            lowest_free_slot: 0,
        })
    }

    /// Loads a fresh copy of the programs and maps (not yet attached).
    pub fn load() -> Result<Self> {
        Self::load_with_capacity(None)
    }

    /// Like `load`, with room for `tunnels` entries in the per-tunnel maps
    /// instead of the default (benchmarks at scale).
    pub fn load_with_capacity(tunnels: Option<u32>) -> Result<Self> {
        raise_memlock_limit();
        let kernel = KernelLayout::read();
        let mut loader = kernel.loader();
        if let Some(n) = tunnels {
            for name in [
                MAP_TUNNELS,
                MAP_PORTS,
                MAP_DECAP,
                MAP_TUNNEL_STATS,
                MAP_IF_COUNTERS,
                MAP_SEQ,
            ] {
                loader.map_max_entries(name, n);
            }
        }
        let mut ebpf = loader.load(OBJECT)?;
        let (xdp_fd, xdp_id) = load_xdp(&mut ebpf)?;
        let (tc_fd, tc_id) = load_tc(&mut ebpf)?;
        let defrag = Some(load_defrag(&mut ebpf)?);
        let mut take =
            |name: &'static str| ebpf.take_map(name).ok_or(DataplaneError::Missing(name));
        let tunnels = HashMap::try_from(take(MAP_TUNNELS)?)?;
        let tunnels_by_if = Some(Array::try_from(take(MAP_TUNNELS_BY_IF)?)?);
        let ports = Some(HashMap::try_from(take(MAP_PORTS)?)?);
        let decap = Some(HashMap::try_from(take(MAP_DECAP)?)?);
        let tunnel_stats = PerCpuArray::try_from(take(MAP_TUNNEL_STATS)?)?;
        let counters = PerCpuArray::try_from(take(MAP_COUNTERS)?)?;
        let if_counters = PerCpuHashMap::try_from(take(MAP_IF_COUNTERS)?)?;
        let if_indexed = PerCpuArray::try_from(take(MAP_IF_INDEXED)?)?;
        let neigh = LpmTrie::try_from(take(MAP_NEIGH)?)?;
        let prl = HashMap::try_from(take(MAP_PRL)?)?;
        let seq = HashMap::try_from(take(MAP_SEQ)?)?;
        let pmtu = HashMap::try_from(take(MAP_PMTU)?)?;
        let monitor = Some(MonitorMaps::take(&mut take)?);
        let forward = Some(ForwardMaps::take(&mut take)?);
        let mut settings: Array<MapData, Settings> = Array::try_from(take(MAP_SETTINGS)?)?;
        let v6 = V6Maps::from_object(&mut ebpf)?;
        settings.set(
            0,
            Settings {
                log_level: LOG_OFF,
                monitors: 0,
                build_id: build_id(OBJECT),
            },
            0,
        )?;
        Ok(Self {
            _ebpf: Some(ebpf),
            shared_map_ids: BTreeSet::new(),
            xdp_fd: Some(xdp_fd),
            xdp_id: Some(xdp_id),
            tc_fd,
            tc_id,
            defrag,
            tc6: None,
            tap6: None,
            v6,
            tunnels,
            tunnels_by_if,
            ports,
            decap,
            tunnel_stats,
            counters,
            if_counters,
            if_indexed,
            settings,
            neigh,
            prl,
            seq,
            pmtu,
            monitor,
            forward,
            used_slots: None,
            lowest_free_slot: 0,
        })
    }

    /// Ids of the instance's programs: (XDP, TC).
    pub fn program_ids(&self) -> (Option<u32>, u32) {
        (self.xdp_id, self.tc_id)
    }

    /// The programs of tunnels over IPv6 this instance runs, by short
    /// name: `xtun_tc6` ("tc6") and `xtun_tap6` ("tap6"), each loaded when
    /// first needed.
    pub fn ipv6_program_ids(&self) -> Vec<(&'static str, u32)> {
        [("tc6", &self.tc6), ("tap6", &self.tap6)]
            .into_iter()
            .filter_map(|(hook, loaded)| loaded.as_ref().map(|(_, id)| (hook, *id)))
            .collect()
    }

    pub fn current_settings(&self) -> Result<Settings> {
        Ok(self.settings.get(&0, 0)?)
    }

    pub fn set_log_level(&mut self, level: u32) -> Result<()> {
        let mut settings = self.current_settings()?;
        settings.log_level = level;
        self.settings.set(0, settings, 0)?;
        Ok(())
    }

    pub fn find_or_load(nl: &mut Netlink) -> Result<Self> {
        match Self::find(nl)? {
            Some(dp) => Ok(dp),
            None => Self::load(),
        }
    }

    pub fn xdp_fd(&self) -> Option<&OwnedFd> {
        self.xdp_fd.as_ref()
    }

    pub fn tc_fd(&self) -> &OwnedFd {
        &self.tc_fd
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of `bpf_ktime_get_ns`, which
/// leases are compared against.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
