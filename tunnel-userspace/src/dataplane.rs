//! Loading the data plane, finding it again in a network namespace, and
//! attaching it to interfaces.
//!
//! Attachments are made through netlink (IFLA_XDP and a clsact `bpf`
//! filter), which the kernel keeps for as long as the interface exists, so
//! the data plane outlives the `xtun` process without any bpffs pins. That
//! matters under `ip netns exec`, where /sys/fs/bpf is not mounted. The maps
//! are found again from the programs attached in the current namespace.

use std::{
    collections::BTreeSet,
    os::fd::{AsFd, AsRawFd, OwnedFd, RawFd},
};

use aya::{
    maps::{
        Array, HashMap, LpmTrie, Map, MapData, MapInfo, PerCpuArray, PerCpuHashMap, PerCpuValues,
        RingBuf,
    },
    programs::{loaded_programs, ProgramInfo, SchedClassifier, Xdp},
    Ebpf,
};
use thiserror::Error;
use tunnel_common::maps::*;

use crate::netlink::{self, BpfFilter, Link, Netlink, TcHook, XDP_ATTACHED_SKB};

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
    /// Every tunnel, by ifindex. Written only through `set_tunnel` and
    /// `remove_tunnel`, which keep `tunnels_by_if` in step.
    pub tunnels: HashMap<MapData, u32, TunnelConfig>,
    /// Tunnels below `IF_INDEXED_MAX`, by ifindex, for the data plane.
    /// None in an instance loaded by a version without it (until upgraded).
    tunnels_by_if: Option<Array<MapData, TunnelConfig>>,
    /// Tunnels whose port is at `IF_INDEXED_MAX` or above, by port.
    ports: Option<HashMap<MapData, u32, TunnelConfig>>,
    pub decap: Option<HashMap<MapData, DecapKey, DecapTarget>>,
    /// Indexed by `TunnelConfig::stats_slot`.
    pub tunnel_stats: PerCpuArray<MapData, TunnelStats>,
    pub counters: PerCpuArray<MapData, u64>,
    /// Interfaces from `IF_INDEXED_MAX` up, by ifindex.
    pub if_counters: PerCpuHashMap<MapData, u32, IfCounters>,
    /// Interfaces below `IF_INDEXED_MAX`, by ifindex.
    pub if_indexed: PerCpuArray<MapData, IfCounters>,
    pub settings: Array<MapData, Settings>,
    pub neigh: LpmTrie<MapData, NeighKey, NeighEntry>,
    pub prl: HashMap<MapData, PrlKey, PrlEntry>,
    pub seq: HashMap<MapData, u32, SeqState>,
    /// Path MTUs the data plane learnt from ICMP (read-only here).
    pmtu: HashMap<MapData, PmtuKey, PmtuEntry>,
    /// `xtun monitor`'s leases, counters and ring buffers; None in an
    /// instance loaded by a version without them (until upgraded).
    monitor: Option<MonitorMaps>,
}

/// The maps behind `xtun monitor` (and `xtun log`'s lease).
struct MonitorMaps {
    leases: Array<MapData, MonitorLease>,
    stats: PerCpuArray<MapData, MonitorCpu>,
    /// One per slot, until a monitor takes it.
    rings: Vec<Option<MapData>>,
}

impl MonitorMaps {
    fn take(mut take: impl FnMut(&'static str) -> Result<Map>) -> Result<Self> {
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

fn program_info(id: u32) -> Option<ProgramInfo> {
    loaded_programs().flatten().find(|p| p.id() == id)
}

fn program_name(id: u32) -> Option<String> {
    program_info(id).and_then(|p| p.name_as_str().map(str::to_owned))
}

/// Is `name` one of our program names (as the kernel reports them)?
fn is_ours(name: &str) -> bool {
    name == PROG_XDP_DECAP || name == PROG_TC || name == PROG_DEFRAG
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
        Ok(Self {
            _ebpf: None,
            shared_map_ids: map_ids,
            xdp_fd,
            xdp_id,
            tc_fd,
            tc_id,
            defrag,
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
        let mut settings: Array<MapData, Settings> = Array::try_from(take(MAP_SETTINGS)?)?;
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
        })
    }

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
                    if filter.prio != netlink::FILTER_PRIO || filter.prog_id != Some(self.tc_id) {
                        continue;
                    }
                    if filter.classid != CLASSID_TUNNEL {
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
        self._ebpf = Some(object);
        Ok(replaced)
    }

    /// Ids of the instance's programs: (XDP, TC).
    pub fn program_ids(&self) -> (Option<u32>, u32) {
        (self.xdp_id, self.tc_id)
    }

    /// The instance's maps: every map used by its programs, by id.
    pub fn map_infos(&self) -> Result<Vec<MapInfo>> {
        let mut ids = BTreeSet::new();
        for id in self.xdp_id.into_iter().chain([self.tc_id]) {
            if let Some(info) = program_info(id) {
                ids.extend(info.map_ids()?.unwrap_or_default());
            }
        }
        Ok(ids
            .into_iter()
            .filter_map(|id| MapInfo::from_id(id).ok())
            .collect())
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

    /// Configures the tunnel on `ifindex`, or replaces its configuration.
    /// The data plane finds it by its port (`TunnelConfig::port_ifindex`).
    pub fn set_tunnel(&mut self, ifindex: u32, mut cfg: TunnelConfig) -> Result<()> {
        cfg.ifindex = ifindex;
        self.tunnels.insert(ifindex, cfg, 0)?;
        let key = cfg.datapath_ifindex();
        if let Some(by_if) = self.tunnels_by_if_for(key) {
            by_if.set(key, cfg, 0)?;
        } else if let Some(ports) = self.ports.as_mut().filter(|_| key >= IF_INDEXED_MAX) {
            ports.insert(key, cfg, 0)?;
        }
        Ok(())
    }

    /// Forgets the tunnel on `ifindex`: the data plane stops encapsulating
    /// for it first.
    pub fn remove_tunnel(&mut self, ifindex: u32) -> Result<()> {
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

    /// The path MTUs tunnel `ifindex` has learnt that still hold: (remote,
    /// path MTU of outer packets, seconds left).
    pub fn path_mtus(&self, ifindex: u32) -> Vec<(u32, u32, u64)> {
        // bpf_ktime_get_ns() counts CLOCK_MONOTONIC.
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes the timespec we pass.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let now = now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
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

    /// Forgets the path MTUs of tunnel `ifindex` (it is gone).
    pub fn forget_path_mtus(&mut self, ifindex: u32) {
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

    pub fn untrack_interface(&mut self, ifindex: u32) {
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

    pub fn decap_mut(&mut self) -> Result<&mut HashMap<MapData, DecapKey, DecapTarget>> {
        self.decap
            .as_mut()
            .ok_or(DataplaneError::Incomplete("decapsulation map missing"))
    }

    /// Our tc filter on `link`'s ingress, if the data plane is attached there.
    pub fn underlay_filter(&self, nl: &mut Netlink, link: &Link) -> Result<Option<BpfFilter>> {
        Ok(nl
            .bpf_filters(link.index, TcHook::Ingress)?
            .into_iter()
            .find(|f| f.prio == netlink::FILTER_PRIO && f.prog_id == Some(self.tc_id)))
    }

    /// Attaches decapsulation and delivery to an underlay interface.
    /// `explicit` marks an `xtun attach`, which survives its last tunnel.
    /// Returns where decapsulation runs, or None if it was attached already.
    pub fn attach_underlay(
        &mut self,
        nl: &mut Netlink,
        link: &Link,
        explicit: bool,
        choice: DecapChoice,
    ) -> Result<Option<DecapMode>> {
        let name = if explicit {
            FILTER_UNDERLAY
        } else {
            FILTER_UNDERLAY_AUTO
        };
        if let Some(existing) = self.underlay_filter(nl, link)? {
            // An underlay attached by a version without reassembly gets it.
            let defrag_fd = self.defrag_fd()?;
            attach_defrag(nl, link.index, defrag_fd)?;
            let in_xdp = existing.classid == CLASSID_XDP_UNDERLAY;
            let wanted = match choice {
                DecapChoice::Auto => None,
                other => Some(other.resolve(link) != DecapChoice::Tc),
            };
            if let Some(want_xdp) = wanted.filter(|&w| w != in_xdp) {
                // Switch where this underlay decapsulates, without a gap:
                // the tc program delivers XDP-tagged frames whatever its
                // classid, so XDP goes in before tc stops decapsulating,
                // and tc starts before XDP goes out.
                let fd = self.tc_fd.as_raw_fd();
                let mode = if want_xdp {
                    let xdp = self.attach_xdp(nl, link)?;
                    nl.add_bpf_filter(
                        link.index,
                        TcHook::Ingress,
                        fd,
                        name,
                        CLASSID_XDP_UNDERLAY,
                        true,
                    )?;
                    DecapMode::Xdp(xdp)
                } else {
                    nl.add_bpf_filter(
                        link.index,
                        TcHook::Ingress,
                        fd,
                        name,
                        CLASSID_TC_UNDERLAY,
                        true,
                    )?;
                    nl.set_xdp(link.index, None, 0)?;
                    DecapMode::Tc
                };
                return Ok(Some(mode));
            }
            if explicit && existing.name.as_deref() != Some(FILTER_UNDERLAY) {
                // Promote an implicit attachment; atomic replace, no gap.
                let fd = self.tc_fd.as_raw_fd();
                nl.add_bpf_filter(
                    link.index,
                    TcHook::Ingress,
                    fd,
                    name,
                    existing.classid,
                    true,
                )?;
            }
            return Ok(None);
        }
        let (mode, classid) = match choice.resolve(link) {
            DecapChoice::Tc => (DecapMode::Tc, CLASSID_TC_UNDERLAY),
            _ => (
                DecapMode::Xdp(self.attach_xdp(nl, link)?),
                CLASSID_XDP_UNDERLAY,
            ),
        };
        let defrag_fd = self.defrag_fd()?;
        let attach_tc = nl
            .add_clsact(link.index)
            .and_then(|()| attach_defrag(nl, link.index, defrag_fd))
            .and_then(|()| {
                nl.add_bpf_filter(
                    link.index,
                    TcHook::Ingress,
                    self.tc_fd.as_raw_fd(),
                    name,
                    classid,
                    true,
                )
            });
        if let Err(e) = attach_tc {
            let _ = nl.del_bpf_filter_at(netlink::DEFRAG_PRIO, link.index, TcHook::Ingress);
            if matches!(mode, DecapMode::Xdp(_)) {
                let _ = nl.set_xdp(link.index, None, 0);
            }
            return Err(e.into());
        }
        self.track_interface(link.index)?;
        Ok(Some(mode))
    }

    /// The reassembly program, loaded (sharing the instance's maps) if this
    /// instance has none yet: found again, it has one only where some
    /// underlay uses it.
    fn defrag_fd(&mut self) -> Result<RawFd> {
        if self.defrag.is_none() {
            let mut object = load_object_sharing(&self.shared_map_ids)?;
            self.defrag = Some(load_defrag(&mut object)?);
        }
        Ok(self
            .defrag
            .as_ref()
            .map(|(fd, _)| fd.as_raw_fd())
            .unwrap_or(-1))
    }

    /// An instance whose underlays all decapsulate in tc has no XDP program
    /// left in the kernel: load one that shares the instance's maps.
    fn ensure_xdp_program(&mut self) -> Result<()> {
        if self.xdp_fd.is_some() {
            return Ok(());
        }
        let mut object = load_object_sharing(&self.shared_map_ids)?;
        let (fd, id) = load_xdp(&mut object)?;
        self.xdp_fd = Some(fd);
        self.xdp_id = Some(id);
        self._ebpf = Some(object);
        Ok(())
    }

    /// Attaches the XDP program natively, or generically where the driver
    /// cannot, unless another program holds the interface.
    fn attach_xdp(&mut self, nl: &mut Netlink, link: &Link) -> Result<XdpMode> {
        self.ensure_xdp_program()?;
        let xdp_fd = self
            .xdp_fd
            .as_ref()
            .ok_or(DataplaneError::Incomplete("XDP program missing"))?;
        match link.xdp_prog_id {
            Some(id) if Some(id) == self.xdp_id => Ok(if link.xdp_attached == XDP_ATTACHED_SKB {
                XdpMode::Generic
            } else {
                XdpMode::Native
            }),
            Some(id) => Err(DataplaneError::ForeignXdp {
                dev: link.name.clone(),
                id,
                name: program_name(id),
            }),
            None => {
                let fd = xdp_fd.as_raw_fd();
                let noexist = netlink::XDP_FLAGS_UPDATE_IF_NOEXIST;
                match nl.set_xdp(link.index, Some(fd), noexist | netlink::XDP_FLAGS_DRV_MODE) {
                    Ok(()) => Ok(XdpMode::Native),
                    Err(native) => {
                        eprintln!(
                            "xtun: native XDP is not available on {} ({native}); using generic XDP",
                            link.name
                        );
                        nl.set_xdp(link.index, Some(fd), noexist | netlink::XDP_FLAGS_SKB_MODE)?;
                        Ok(XdpMode::Generic)
                    }
                }
            }
        }
    }

    /// Removes XDP and tc delivery from an underlay.
    pub fn detach_underlay(&mut self, nl: &mut Netlink, link: &Link) -> Result<()> {
        let users: Vec<u32> = self
            .tunnels
            .iter()
            .flatten()
            .filter(|(_, cfg)| cfg.underlay_ifindex == link.index)
            .map(|(ifindex, _)| ifindex)
            .collect();
        if !users.is_empty() {
            let links = nl.links()?;
            let names: Vec<String> = users
                .iter()
                .map(|i| {
                    links
                        .iter()
                        .find(|l| l.index == *i)
                        .map_or_else(|| format!("ifindex {i}"), |l| l.name.clone())
                })
                .collect();
            return Err(DataplaneError::InUse {
                dev: link.name.clone(),
                tunnels: names.join(", "),
            });
        }
        detach_interface(nl, link, self.xdp_id)?;
        self.untrack_interface(link.index);
        Ok(())
    }

    /// Attaches encapsulation to a tunnel interface's egress.
    pub fn attach_tunnel(&mut self, nl: &mut Netlink, ifindex: u32, port: u32) -> Result<()> {
        self.track_interface(ifindex)?;
        nl.add_clsact(port)?;
        nl.add_bpf_filter(
            port,
            TcHook::Ingress,
            self.tc_fd.as_raw_fd(),
            FILTER_TUNNEL,
            CLASSID_TUNNEL,
            false,
        )?;
        Ok(())
    }

    /// A counter slot no configured tunnel uses, zeroed, for a new tunnel
    /// (the lowest free one, so slots stay dense).
    pub fn allocate_stats_slot(&mut self) -> Result<u32> {
        let used: BTreeSet<u32> = self
            .tunnels
            .iter()
            .flatten()
            .map(|(_, cfg)| cfg.stats_slot)
            .collect();
        let capacity = self.tunnel_stats.len();
        let slot = (0..capacity)
            .find(|slot| !used.contains(slot))
            .ok_or(DataplaneError::Full("tunnel counters"))?;
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let zero = PerCpuValues::try_from(vec![TunnelStats::default(); cpus])?;
        self.tunnel_stats.set(slot, zero, 0)?;
        Ok(slot)
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
    /// was released by the data plane: renewing takes it back).
    fn monitor_set_bits(&mut self, claim: &MonitorClaim) -> Result<()> {
        let mut settings = self.current_settings()?;
        let bit = 1 << claim.slot;
        let all = bit << MONITOR_ALL_SHIFT;
        let want = (settings.monitors & !all) | bit | if claim.all { all } else { 0 };
        if want != settings.monitors {
            settings.monitors = want;
            self.settings.set(0, settings, 0)?;
        }
        Ok(())
    }

    /// Renews the claim's lease; call it every `LEASE_REFRESH_NS`.
    pub fn monitor_renew(&mut self, claim: &MonitorClaim) -> Result<()> {
        let maps = self.monitor_maps()?;
        let mut lease = maps.leases.get(&claim.slot, 0)?;
        lease.deadline_ns = monotonic_ns() + LEASE_NS;
        lease.pid = std::process::id();
        maps.leases.set(claim.slot, lease, 0)?;
        self.monitor_set_bits(claim)
    }

    /// Gives the slot back now (a monitor that exits normally); one that
    /// dies lets its lease expire instead.
    pub fn monitor_release(&mut self, claim: &MonitorClaim) -> Result<()> {
        let mut settings = self.current_settings()?;
        let bit = 1 << claim.slot;
        settings.monitors &= !(bit | bit << MONITOR_ALL_SHIFT);
        self.settings.set(0, settings, 0)?;
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

    /// Puts the level back and ends the lease.
    pub fn end_log_lease(&mut self, level: u32) -> Result<()> {
        self.set_log_level(level)?;
        if let Some(maps) = self.monitor.as_mut() {
            maps.leases
                .set(LOG_LEASE_SLOT, MonitorLease::default(), 0)?;
        }
        Ok(())
    }

    /// The decapsulation index: what received packets are matched against.
    pub fn decap_index(&self) -> Vec<(DecapKey, DecapTarget)> {
        self.decap
            .as_ref()
            .map(|d| d.iter().flatten().collect())
            .unwrap_or_default()
    }
}

/// Removes xtun's XDP program and tc filters from an interface, and the
/// clsact qdisc if nothing else uses it.
pub fn detach_interface(nl: &mut Netlink, link: &Link, xdp_id: Option<u32>) -> Result<()> {
    let ours = |id: u32| xdp_id == Some(id) || program_name(id).as_deref() == Some(PROG_XDP_DECAP);
    if let Some(id) = link.xdp_prog_id {
        if ours(id) {
            nl.set_xdp(link.index, None, attached_xdp_mode(link))?;
        }
    }
    nl.del_bpf_filter(link.index, TcHook::Ingress)?;
    nl.del_bpf_filter(link.index, TcHook::Egress)?;
    nl.del_bpf_filter_at(netlink::DEFRAG_PRIO, link.index, TcHook::Ingress)?;
    if nl.bpf_filters(link.index, TcHook::Ingress)?.is_empty()
        && nl.bpf_filters(link.index, TcHook::Egress)?.is_empty()
    {
        // Other filter kinds would also keep it; the kernel refuses nothing
        // here, so only remove a clsact that has no filters of any kind left.
        if nl.tc_filter_count(link.index)? == 0 {
            let _ = nl.del_clsact(link.index);
        }
    }
    Ok(())
}

/// Loads the object's XDP program into the kernel: its fd and id.
fn load_xdp(ebpf: &mut Ebpf) -> Result<(OwnedFd, u32)> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP_DECAP)
        .ok_or(DataplaneError::Missing(PROG_XDP_DECAP))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}

/// Attaches outer-fragment reassembly to an underlay's ingress, before
/// the data plane's own filter.
fn attach_defrag(nl: &mut Netlink, ifindex: u32, fd: RawFd) -> netlink::Result<()> {
    nl.add_bpf_filter_at(
        netlink::DEFRAG_PRIO,
        ifindex,
        TcHook::Ingress,
        fd,
        FILTER_DEFRAG,
        0,
        true,
    )
}

/// Loads the object's reassembly program into the kernel: its fd and id.
fn load_defrag(ebpf: &mut Ebpf) -> Result<(OwnedFd, u32)> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_DEFRAG)
        .ok_or(DataplaneError::Missing(PROG_DEFRAG))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}

/// Loads the object's tc program into the kernel: its fd and id.
fn load_tc(ebpf: &mut Ebpf) -> Result<(OwnedFd, u32)> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_TC)
        .ok_or(DataplaneError::Missing(PROG_TC))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}

/// The IFLA_XDP mode flag of the program attached to `link`.
fn attached_xdp_mode(link: &Link) -> u32 {
    if link.xdp_attached == XDP_ATTACHED_SKB {
        netlink::XDP_FLAGS_SKB_MODE
    } else {
        netlink::XDP_FLAGS_DRV_MODE
    }
}

/// Maps shared between every program of an instance (not the per-object
/// `.rodata` sections).
fn is_shared_map(name: &str) -> bool {
    name.starts_with("XTUN_") || name == MAP_LOGS
}

/// Mount points of `load_object_sharing`'s private bpffs: PREFIX + pid.
pub const BPFFS_DIR_PREFIX: &str = "xtun-bpffs-";

/// Removes the (empty) mount-point directories that an `xtun` killed during
/// a load left behind; the mounts themselves died with its private mount
/// namespace.
fn remove_stale_mount_points() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BPFFS_DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Loads the embedded object so that its programs use the existing maps
/// `map_ids` instead of new ones. aya reuses a map pinned at the path given
/// for it, so the maps are pinned for the duration of the load on a bpffs
/// that only this process sees (a private mount namespace): nothing is left
/// behind, and it works under `ip netns exec`, where /sys/fs/bpf is absent.
fn load_object_sharing(map_ids: &BTreeSet<u32>) -> Result<Ebpf> {
    raise_memlock_limit();
    remove_stale_mount_points();
    let dir = std::env::temp_dir().join(format!("{BPFFS_DIR_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        private_bpffs(&dir)?;
        let mut pins = Vec::new();
        for &id in map_ids {
            let data = MapData::from_id(id)?;
            let Some(name) = data.info()?.name_as_str().map(str::to_owned) else {
                continue;
            };
            if !is_shared_map(&name) {
                continue;
            }
            let path = dir.join(&name);
            data.pin(&path)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            pins.push((name, path));
        }
        let kernel = KernelLayout::read();
        let mut loader = kernel.loader();
        for (name, path) in &pins {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        Ok(loader.load(OBJECT)?)
    })();
    // SAFETY: plain umount2 of our own private mount.
    unsafe {
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .expect("no NUL in temp path");
        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Moves this process into a private mount namespace and mounts a fresh
/// bpffs on `dir` there.
fn private_bpffs(dir: &std::path::Path) -> Result<()> {
    let cstr = |s: &str| std::ffi::CString::new(s).expect("static string");
    let path =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in temp path");
    // SAFETY: plain syscalls with valid C strings; xtun is single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let root = cstr("/");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
        let (src, fstype) = (cstr("bpffs"), cstr("bpf"));
        if libc::mount(
            src.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit; failure only matters on old kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// What the programs need to know about the running kernel's structures,
/// set as read-only globals before they are loaded.
struct KernelLayout {
    ip_summed_byte: u32,
    ip_summed_shift: u32,
}

impl KernelLayout {
    fn read() -> Self {
        // Unknown: checksums pending offload are then not recognised, and
        // GRE packets carrying them are dropped as bad checksums.
        let (ip_summed_byte, ip_summed_shift) = crate::btf::skb_ip_summed().unwrap_or((0, 0));
        Self {
            ip_summed_byte,
            ip_summed_shift,
        }
    }

    fn loader(&self) -> aya::EbpfLoader<'_> {
        let mut loader = aya::EbpfLoader::new();
        loader
            .override_global("SKB_IP_SUMMED_BYTE", &self.ip_summed_byte, true)
            .override_global("SKB_IP_SUMMED_SHIFT", &self.ip_summed_shift, true);
        loader
    }
}
