//! Keys and values of the data plane's BPF maps.
//!
//! Addresses and keys are stored exactly as they appear on the wire (network
//! byte order inside a `u32`), so the kernel side compares and copies them
//! without swapping.

/// Map names, as the kernel reports them (at most 15 bytes).
pub const MAP_TUNNELS: &str = "XTUN_TUNNELS";
pub const MAP_TUNNELS_BY_IF: &str = "XTUN_TUN_BY_IF";
pub const MAP_DECAP: &str = "XTUN_DECAP";
pub const MAP_TUNNEL_STATS: &str = "XTUN_TUN_STATS";
pub const MAP_COUNTERS: &str = "XTUN_COUNTERS";
pub const MAP_IF_COUNTERS: &str = "XTUN_IF_COUNTER";
pub const MAP_IF_INDEXED: &str = "XTUN_IF_INDEXED";
pub const MAP_SETTINGS: &str = "XTUN_SETTINGS";
pub const MAP_NEIGH: &str = "XTUN_NEIGH";
pub const MAP_PRL: &str = "XTUN_PRL";
pub const MAP_SEQ: &str = "XTUN_SEQ";
/// Tunnel configurations by the ifindex of the tunnel's port (the hidden
/// veth end where encapsulation runs), for ports from `IF_INDEXED_MAX` up.
pub const MAP_PORTS: &str = "XTUN_PORTS";
/// Path MTUs learnt from ICMP, by (tunnel, remote).
pub const MAP_PMTU: &str = "XTUN_PMTU";
/// aya-log's ring buffer of log records.
pub const MAP_LOGS: &str = "AYA_LOGS";
/// `xtun monitor` and `xtun log` leases: `MonitorLease` per monitor slot,
/// then one for the log level (`LOG_LEASE_SLOT`).
pub const MAP_MON_LEASES: &str = "XTUN_MON_LEASE";
/// Per-CPU `MonitorCpu` per monitor slot: rate-limit state and counts.
pub const MAP_MON_STATS: &str = "XTUN_MON_STATS";
/// One ring buffer of `MonitorEvent`s per monitor slot (a ring buffer has a
/// single consumer position, so each monitor has its own).
pub const MAP_MON_RINGS: [&str; MONITOR_SLOTS as usize] = [
    "XTUN_MON_RING0",
    "XTUN_MON_RING1",
    "XTUN_MON_RING2",
    "XTUN_MON_RING3",
];

/// LAN ifindex -> `ForwardLan`: the interfaces with the XDP forwarding
/// fast path on (`xtun attach LAN --forward xdp`).
pub const MAP_FORWARD_LANS: &str = "XTUN_FWD_LANS";
/// Slot 0: `ForwardState`, what the fast path needs namespace-wide.
pub const MAP_FORWARD_STATE: &str = "XTUN_FWD_STATE";
/// ifindex -> the same ifindex: every attached interface, the fast path's
/// XDP_REDIRECT targets.
pub const MAP_FORWARD_PORTS: &str = "XTUN_FWD_PORTS";

/// Capacity of the fast path's LAN and redirect-target maps.
pub const MAX_FORWARD_PORTS: u32 = 4096;

/// Tunnel interface ifindex -> `Tunnel6Config`: the IPv6 part of the
/// configuration of tunnels over an IPv6 underlay (`xtun -6 tunnel`).
pub const MAP_TUNNELS6: &str = "XTUN_TUNNELS6";
/// `DecapKey6` -> `DecapTarget`: the decapsulation index of tunnels over
/// an IPv6 underlay.
pub const MAP_DECAP6: &str = "XTUN_DECAP6";
/// `Pmtu6Key` -> `PmtuEntry`: path MTUs learnt from ICMPv6 Packet Too Big.
pub const MAP_PMTU6: &str = "XTUN_PMTU6";

/// Program names, as the kernel reports them (at most 15 bytes).
pub const PROG_XDP_DECAP: &str = "xtun_decap";
pub const PROG_TC: &str = "xtun_tc";
/// Outer-fragment reassembly, a tc filter on each underlay before `PROG_TC`.
pub const PROG_DEFRAG: &str = "xtun_defrag";
/// The IPv6 underlay's tc program: encapsulation on the ports of tunnels
/// over IPv6, and decapsulation of IPv6 outer headers on underlays (a
/// filter after `PROG_TC`'s). Its own program, so that the verifier walks
/// it on its own budget.
pub const PROG_TC6: &str = "xtun_tc6";
/// Encapsulation on the ports of ip6gretap links (whole frames over IPv6),
/// a program of its own for its own verifier budget.
pub const PROG_TAP6: &str = "xtun_tap6";

pub const MAX_TUNNELS: u32 = 65536;
/// Interfaces whose ifindex is below this keep their counters in an array
/// indexed by ifindex (`XTUN_IF_INDEXED`), and tunnels their configuration
/// in one too (`XTUN_TUN_BY_IF`, beside `XTUN_TUNNELS`): the verifier turns
/// an array lookup into a few instructions. Higher ifindexes use hashes.
pub const IF_INDEXED_MAX: u32 = 1024;
/// Multipoint neighbours, over all tunnels.
pub const MAX_NEIGHBOURS: u32 = 2 * 1024 * 1024;
/// Potential-router-list entries, over all ISATAP tunnels.
pub const MAX_PRL: u32 = 4096;

/// Tunnel modes (`ip tunnel ... mode M`).
pub const MODE_GRE: u8 = 1;
pub const MODE_IPIP: u8 = 2;
pub const MODE_SIT: u8 = 3;
pub const MODE_ISATAP: u8 = 4;
/// Ethernet over GRE (`ip link add ... type gretap`): whole frames, GRE
/// protocol type `ETH_P_TEB`.
pub const MODE_GRETAP: u8 = 5;
/// Over an IPv6 underlay (`ip -6 tunnel ... mode M`): GRE (`ip6gre`),
/// IPv6 in IPv6 (`ip6ip6`), IPv4 in IPv6 (`ipip6`), either (`any`), and
/// Ethernet over GRE (`ip link add ... type ip6gretap`).
pub const MODE_IP6GRE: u8 = 6;
pub const MODE_IP6IP6: u8 = 7;
pub const MODE_IPIP6: u8 = 8;
pub const MODE_ANY6: u8 = 9;
pub const MODE_IP6GRETAP: u8 = 10;

/// Does `mode` run over an IPv6 underlay (its addresses in `Tunnel6Config`)?
#[inline(always)]
pub const fn is_ipv6_underlay(mode: u8) -> bool {
    mode >= MODE_IP6GRE && mode <= MODE_IP6GRETAP
}

/// `TunnelConfig::flags` bits.
pub const TUNNEL_F_IKEY: u32 = 1 << 0;
pub const TUNNEL_F_OKEY: u32 = 1 << 1;
pub const TUNNEL_F_ICSUM: u32 = 1 << 2;
pub const TUNNEL_F_OCSUM: u32 = 1 << 3;
pub const TUNNEL_F_ISEQ: u32 = 1 << 4;
pub const TUNNEL_F_OSEQ: u32 = 1 << 5;
/// Set DF on the outer header (`pmtudisc`, the default).
pub const TUNNEL_F_PMTUDISC: u32 = 1 << 6;
/// Copy the inner TOS/DSCP to the outer header (`tos inherit`).
pub const TUNNEL_F_TOS_INHERIT: u32 = 1 << 7;
/// The user named the underlay (`dev PHYS`).
pub const TUNNEL_F_BOUND_DEV: u32 = 1 << 8;
/// The tunnel device carries an Ethernet header in front of the inner
/// packet (the tunnel's port, and BPF_PROG_TEST_RUN; a TUN device, as the
/// previous design used, is L3 and has none).
pub const TUNNEL_F_ETH_DEV: u32 = 1 << 9;
/// ISATAP: receive checks the inner source against the outer one or the
/// potential-router list.
pub const TUNNEL_F_ISATAP: u32 = 1 << 10;
/// Inner IPv4 sources are checked against the tunnel's routes (strict
/// reverse-path filtering on the tunnel interface, `rpfilter`).
pub const TUNNEL_F_RPFILTER: u32 = 1 << 11;
/// The tunnel carries Ethernet frames (`gretap`): received GRE must
/// announce `ETH_P_TEB`, and the frame is delivered as it is, its MAC
/// addresses kept.
pub const TUNNEL_F_TEB: u32 = 1 << 12;
/// IPv6 underlay, `encaplimit none`: no encapsulation-limit option is sent
/// (the kernel's IP6_TNL_F_IGN_ENCAP_LIMIT).
pub const TUNNEL_F_IGN_ENCAP_LIMIT: u32 = 1 << 13;
/// IPv6 underlay, `flowlabel inherit`: the outer flow label is the inner
/// IPv6 packet's (IP6_TNL_F_USE_ORIG_FLOWLABEL). `tclass inherit` is
/// `TUNNEL_F_TOS_INHERIT`.
pub const TUNNEL_F_FLOWLABEL_INHERIT: u32 = 1 << 14;
/// IPv6 underlay, `allow-localremote` (IP6_TNL_F_ALLOW_LOCAL_REMOTE).
pub const TUNNEL_F_ALLOW_LOCALREMOTE: u32 = 1 << 15;

/// The tunnel interface's MAC address. A tunnel interface is one end of a
/// veth pair; decapsulated packets reach it through the other end (its
/// port) addressed to this. Every tunnel has the same one: each pair is a
/// link of its own, and the interface is NOARP, so it is never resolved.
pub const TUNNEL_MAC: [u8; 6] = [0x02, 0x78, 0x74, 0x75, 0x6e, 0x00];

/// Configuration of one tunnel, keyed by the tunnel interface's ifindex in
/// `XTUN_TUNNELS`, and by its port's in `XTUN_TUN_BY_IF`/`XTUN_PORTS`.
/// Read by the TC program on the port's ingress to build the outer headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelConfig {
    /// Outer source address, network order; 0 (`local any`) takes the
    /// source of the route to the remote, per packet.
    pub local: u32,
    /// Outer destination address, network order; 0 (`remote any`) looks
    /// the remote up per packet in the neighbour table (ISATAP: from the
    /// inner destination).
    pub remote: u32,
    /// Key expected on received GRE packets, network order.
    pub ikey: u32,
    /// Key put on sent GRE packets, network order.
    pub okey: u32,
    /// Interface the outer packets leave by.
    pub underlay_ifindex: u32,
    /// `TUNNEL_F_*` bits.
    pub flags: u32,
    /// The tunnel interface's MTU, for path MTU checks.
    pub mtu: u32,
    /// `MODE_*`.
    pub mode: u8,
    /// Outer TTL; 0 means inherit from the inner packet.
    pub ttl: u8,
    /// Outer TOS when not inherited (the fallback when inherited).
    pub tos: u8,
    pub _pad: u8,
    /// ISATAP: where inner packets to non-ISATAP destinations go (the
    /// first `prl-default` router), network order; 0 when none.
    pub prl_default: u32,
    /// `local any`: the source of the route to the remote when the tunnel
    /// was added or changed, network order. Used where the data plane cannot
    /// look the route up itself (bpf_fib_lookup needs forwarding enabled).
    pub default_src: u32,
    /// Index of the tunnel's counters in `XTUN_TUN_STATS`.
    pub stats_slot: u32,
    /// The tunnel interface (the key of `XTUN_TUNNELS`, `XTUN_SEQ`,
    /// `XTUN_NEIGH` and `XTUN_PRL`).
    pub ifindex: u32,
    /// The port: the veth end the tunnel interface sends into and receives
    /// from, where the data plane runs; 0 where the data plane runs on the
    /// tunnel interface itself (tests).
    pub port_ifindex: u32,
}

impl TunnelConfig {
    /// The GRE flags this tunnel sends (key, checksum, sequence number);
    /// none for a mode without GRE.
    #[inline(always)]
    pub const fn gre_output_flags(&self) -> u16 {
        let mut gre = 0;
        if self.mode == MODE_GRE || self.mode == MODE_GRETAP {
            if self.flags & TUNNEL_F_OKEY != 0 {
                gre |= crate::wire::GRE_KEY;
            }
            if self.flags & TUNNEL_F_OCSUM != 0 {
                gre |= crate::wire::GRE_CSUM;
            }
            if self.flags & TUNNEL_F_OSEQ != 0 {
                gre |= crate::wire::GRE_SEQ;
            }
        }
        gre
    }

    /// The ifindex the data plane finds this configuration by: the
    /// interface its encapsulation runs on.
    pub fn datapath_ifindex(&self) -> u32 {
        if self.port_ifindex != 0 {
            self.port_ifindex
        } else {
            self.ifindex
        }
    }
}

/// The IPv6 part of a tunnel over an IPv6 underlay, keyed by the tunnel
/// interface's ifindex in `XTUN_TUNNELS6`. The rest of its configuration
/// is its `TunnelConfig` (mode, keys, flags, MTU, ports, counters), whose
/// IPv4 addresses are 0; there `ttl` is the hop limit (0: inherit) and
/// `tos` the traffic class.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tunnel6Config {
    /// Outer source address, wire order; all zeros (`local any`) takes
    /// `default_src`.
    pub local: [u8; 16],
    /// Outer destination address, wire order; all zeros (`remote any`)
    /// receives from any remote and cannot send.
    pub remote: [u8; 16],
    /// `local any`: the source of the route to the remote when the tunnel
    /// was added or changed.
    pub default_src: [u8; 16],
    /// Outer flow label (low 20 bits, host order) unless inherited.
    pub flowlabel: u32,
    /// RFC 2473 tunnel encapsulation limit sent in a destination-options
    /// header, unless `TUNNEL_F_IGN_ENCAP_LIMIT`.
    pub encap_limit: u8,
    pub _pad: [u8; 3],
}

/// Key of the IPv6 underlay's decapsulation index (`XTUN_DECAP6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DecapKey6 {
    /// Outer destination address (our `local`), wire order.
    pub local: [u8; 16],
    /// Outer source address (our `remote`), wire order; all zeros for a
    /// tunnel with `remote any`, looked up when no exact entry matches.
    pub remote: [u8; 16],
    /// GRE key, network order; 0 when `has_key` is 0.
    pub key: u32,
    /// Inner protocol after the IPv6 header and its extension headers:
    /// GRE, IPIP or IPv6 (mode `any` has one entry for each of the last
    /// two).
    pub proto: u8,
    /// 1 when the tunnel expects a GRE key.
    pub has_key: u8,
    pub _pad: [u8; 2],
}

/// Key of the IPv6 underlay's path-MTU table (`XTUN_PMTU6`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Pmtu6Key {
    /// The tunnel interface.
    pub ifindex: u32,
    /// Outer destination, wire order.
    pub remote: [u8; 16],
}

/// Key of the multipoint neighbour table (a longest-prefix-match trie):
/// the tunnel, the inner address family, then the inner address. The
/// trie's prefix length counts `ifindex` and `family` as 64 leading bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct NeighKey {
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u32,
    /// Inner address, wire order; IPv4 uses the first 4 bytes.
    pub addr: [u8; 16],
}

/// Bits of the trie prefix taken by `NeighKey::ifindex` and `family`.
pub const NEIGH_KEY_FIXED_BITS: u32 = 64;

/// Value of the neighbour table: the outer destination for the prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NeighEntry {
    /// Network order.
    pub remote: u32,
}

/// Key of the ISATAP potential-router list.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PrlKey {
    pub ifindex: u32,
    /// Router address, network order.
    pub addr: u32,
}

/// `PrlEntry::flags`: the router may be a default router.
pub const PRL_DEFAULT: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PrlEntry {
    pub flags: u32,
}

/// GRE sequence-number state of one tunnel. Updated atomically: several
/// CPUs run the programs at once. 64-bit words because the BPF target has
/// only 64-bit atomics; the low 32 bits are the sequence number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SeqState {
    /// Next sequence number to send.
    pub o_seq: u64,
    /// Next sequence number expected; 0 until the first packet.
    pub i_seq: u64,
}

/// Key of the decapsulation index: which tunnel a received packet belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DecapKey {
    /// Outer destination address (our `local`), network order.
    pub local: u32,
    /// Outer source address (our `remote`), network order.
    pub remote: u32,
    /// GRE key, network order; 0 when `has_key` is 0.
    pub key: u32,
    /// Outer IP protocol: GRE, IPIP or IPv6.
    pub proto: u8,
    /// 1 when the tunnel expects a GRE key.
    pub has_key: u8,
    pub _pad: [u8; 2],
}

/// Value of the decapsulation index.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DecapTarget {
    /// The tunnel interface the inner packet is delivered on.
    pub ifindex: u32,
    /// `TUNNEL_F_*` bits that matter on receive.
    pub flags: u32,
    /// Index of the tunnel's counters in `XTUN_TUN_STATS`.
    pub stats_slot: u32,
    /// Where the inner packet is sent to reach the tunnel interface: its
    /// port (sent out of it, so the pair counts it as received on the
    /// tunnel interface), or the interface itself (received there).
    pub port: u32,
}

impl DecapKey {
    /// The key of a packet from `remote` to `local` by outer protocol
    /// `proto`, with the GRE key `key` (network order) when it has one.
    #[inline(always)]
    pub const fn new(local: u32, remote: u32, proto: u8, key: Option<u32>) -> Self {
        let (key, has_key) = match key {
            Some(key) => (key, 1),
            None => (0, 0),
        };
        Self {
            local,
            remote,
            key,
            proto,
            has_key,
            _pad: [0; 2],
        }
    }
}

impl DecapTarget {
    /// The index entry that delivers to the tunnel on `ifindex`.
    pub fn for_tunnel(ifindex: u32, cfg: &TunnelConfig) -> Self {
        Self {
            ifindex,
            flags: cfg.flags,
            stats_slot: cfg.stats_slot,
            port: cfg.port_ifindex,
        }
    }
}

/// The smallest path MTU an ICMP report may set, as the kernel's
/// `net.ipv4.route.min_pmtu`; lower reports are ignored.
pub const MIN_PMTU: u32 = 552;
/// How long a learnt path MTU holds, as the kernel's
/// `net.ipv4.route.mtu_expires` (600 s).
pub const PMTU_EXPIRES_NS: u64 = 600 * 1_000_000_000;

/// Key of the path-MTU table: a tunnel and one of its remotes (multipoint
/// tunnels have many).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct PmtuKey {
    /// The tunnel interface.
    pub ifindex: u32,
    /// Outer destination, network order.
    pub remote: u32,
}

/// A path MTU learnt from ICMP "fragmentation needed".
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PmtuEntry {
    /// The path MTU for outer packets (bytes of the outer IPv4 packet).
    pub mtu: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` after which it no longer holds.
    pub expires_ns: u64,
}

/// Per-tunnel counters, one copy per CPU, named as `ip -s tunnel show` names them.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TunnelStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub rx_errors: u64,
    pub rx_csum_errors: u64,
    pub rx_out_of_seq: u64,
    pub rx_mcasts: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    pub tx_dead_loop: u64,
    pub tx_no_route: u64,
    pub tx_no_bufs: u64,
}

/// Written by the XDP program in front of a decapsulated frame so that the
/// TC ingress program can deliver it on the tunnel interface without
/// looking the tunnel up again: what the decapsulation index said.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct XdpMeta {
    pub magic: u32,
    pub ifindex: u32,
    pub flags: u32,
    pub stats_slot: u32,
    pub port: u32,
}

impl XdpMeta {
    /// The tag `magic` for a frame of the tunnel `target`.
    #[inline(always)]
    pub const fn new(magic: u32, target: &DecapTarget) -> Self {
        Self {
            magic,
            ifindex: target.ifindex,
            flags: target.flags,
            stats_slot: target.stats_slot,
            port: target.port,
        }
    }

    /// What the decapsulation index said, as the tag carries it.
    #[inline(always)]
    pub const fn target(&self) -> DecapTarget {
        DecapTarget {
            ifindex: self.ifindex,
            flags: self.flags,
            stats_slot: self.stats_slot,
            port: self.port,
        }
    }
}

/// A LAN interface with the XDP forwarding fast path on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForwardLan {
    /// Held by earlier versions (a copy of the LAN's rp_filter, now
    /// unused): kept so that the map's layout, and a data plane loaded
    /// by such a version, stay readable.
    pub _reserved: [u32; 2],
}

/// The fast path's namespace-wide state (slot 0 of `XTUN_FWD_STATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForwardState {
    /// How many LANs have the fast path: decapsulated packets are looked
    /// up for it only while there is one.
    pub lans: u32,
    /// Held by earlier versions (a copy of rp_filter sysctls, now unused);
    /// kept for the map's layout, as `ForwardLan::_reserved`.
    pub _reserved: u32,
}

/// Per-interface data-plane counters: one slot per `stats` reason.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IfCounters {
    pub counts: [u64; crate::stats::COUNTER_COUNT as usize],
    /// Nonzero while userspace tracks the interface. Entries of
    /// `XTUN_IF_INDEXED` exist for every ifindex; only tracked ones count.
    pub tracked: u64,
}

impl Default for IfCounters {
    fn default() -> Self {
        Self {
            counts: [0; crate::stats::COUNTER_COUNT as usize],
            tracked: 0,
        }
    }
}

/// Run-time settings of a data-plane instance (slot 0 of `XTUN_SETTINGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Highest aya-log level emitted: 0 off, 1 error, 2 warn, 3 info,
    /// 4 debug, 5 trace. Changed at run time without reloading.
    pub log_level: u32,
    /// Monitors listening (`xtun monitor`): bit `i` set while monitor slot
    /// `i` is claimed, bit `MONITOR_ALL_SHIFT + i` while it also wants
    /// decapsulated and encapsulated packets (`--all`). 0 when nobody
    /// listens, which is all the data plane checks per packet then. (Was
    /// padding: the layout is unchanged.)
    pub monitors: u32,
    /// Identifies the object the running programs were loaded from.
    pub build_id: u64,
}

pub const LOG_OFF: u32 = 0;
pub const LOG_ERROR: u32 = 1;
pub const LOG_WARN: u32 = 2;
pub const LOG_INFO: u32 = 3;
pub const LOG_DEBUG: u32 = 4;
pub const LOG_TRACE: u32 = 5;

/// The classid of the tc filter on an underlay whose XDP program does the
/// decapsulation: tc then only delivers.
pub const CLASSID_XDP_UNDERLAY: u32 = 0x7874_0001;
/// The classid of the tc filter on an underlay that decapsulates in tc.
pub const CLASSID_TC_UNDERLAY: u32 = 0x7874_0002;
/// The classid of the tc filter on a tunnel's egress, which encapsulates.
/// Filters with classid 0 (attached by earlier versions) work out per
/// packet which of the two they are.
pub const CLASSID_TUNNEL: u32 = 0x7874_0003;

/// "xtun" — only frames our XDP program decapsulated carry it.
pub const XDP_META_MAGIC: u32 = 0x7874_756e;
/// "xtuc" — a tunnel packet XDP left whole because its GRE checksum did not
/// add up: it may still be pending offload, which only tc can tell, so tc
/// decapsulates it.
pub const XDP_META_CSUM_IN_TC: u32 = 0x7874_7563;

/// How many `xtun monitor`s may listen at once.
pub const MONITOR_SLOTS: u32 = 4;
/// `Settings::monitors` bit of slot `i` wanting every outcome: `1 << (MONITOR_ALL_SHIFT + i)`.
pub const MONITOR_ALL_SHIFT: u32 = 8;
/// The `Settings::monitors` bits of claimed slots.
pub const MONITOR_SLOT_MASK: u32 = (1 << MONITOR_SLOTS) - 1;
/// Index of `xtun log`'s lease in `XTUN_MON_LEASE`.
pub const LOG_LEASE_SLOT: u32 = MONITOR_SLOTS;
/// Bytes of each packet a monitor event carries (from the Ethernet header).
pub const MONITOR_SNAP: usize = 128;
/// Each ring buffer's size (a power of two, in pages).
pub const MONITOR_RING_BYTES: u32 = 256 * 1024;
/// A lease lasts this long (CLOCK_MONOTONIC, as `bpf_ktime_get_ns`); its
/// holder renews it every `LEASE_REFRESH_NS`.
pub const LEASE_NS: u64 = 3_000_000_000;
pub const LEASE_REFRESH_NS: u64 = 1_000_000_000;

/// A lease on a monitor slot (or on the log level): valid while
/// `bpf_ktime_get_ns() < deadline_ns`. The data plane releases an expired
/// one itself, so a holder killed by any signal leaves nothing behind.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MonitorLease {
    /// CLOCK_MONOTONIC nanoseconds; 0 for no lease.
    pub deadline_ns: u64,
    /// Monitor: the token bucket's cost of one event, in nanoseconds of
    /// credit (1e9 / events per second per CPU).
    pub cost_ns: u64,
    /// Monitor: the bucket's capacity (burst × cost).
    pub burst_ns: u64,
    /// Log lease: the level to go back to when the lease expires.
    pub fallback_level: u32,
    /// The holder's process id (for `status` and `map dump`).
    pub pid: u32,
}

/// One CPU's state for one monitor slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MonitorCpu {
    /// Token bucket: credit in nanoseconds, and when it was last topped up.
    pub credit_ns: u64,
    pub last_ns: u64,
    /// Events written to the slot's ring buffer.
    pub events: u64,
    /// Events not written: over the rate, or the ring buffer full.
    pub lost_rate_limit: u64,
    pub lost_ring_full: u64,
}

/// Where a monitor event was seen.
pub const MON_HOOK_XDP: u32 = 1;
/// tc ingress on an underlay (delivery, or decapsulation on `--decap tc`).
pub const MON_HOOK_TC: u32 = 2;
/// tc ingress on a tunnel's port: encapsulation (transmit direction).
pub const MON_HOOK_ENCAP: u32 = 3;

/// One packet's outcome, as the data plane writes it to a monitor's ring
/// buffer. `data` holds the first `cap_len` bytes of the frame as it was at
/// that point (outer headers on receive drops, the inner packet once
/// decapsulated, the outer packet once encapsulated).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MonitorEvent {
    pub ktime_ns: u64,
    /// The interface the program ran on.
    pub ifindex: u32,
    /// A `stats` counter index: why.
    pub reason: u32,
    /// The tunnel interface involved, where known (0 otherwise).
    pub tunnel: u32,
    /// `MON_HOOK_*`.
    pub hook: u32,
    /// The whole frame's length, and how much of it `data` holds.
    pub pkt_len: u32,
    pub cap_len: u32,
    pub data: [u8; MONITOR_SNAP],
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all of these are repr(C), contain only integers and have no
    // implicit padding, so every bit pattern is a valid value.
    unsafe impl aya::Pod for TunnelConfig {}
    unsafe impl aya::Pod for DecapKey {}
    unsafe impl aya::Pod for DecapTarget {}
    unsafe impl aya::Pod for TunnelStats {}
    unsafe impl aya::Pod for IfCounters {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for NeighKey {}
    unsafe impl aya::Pod for NeighEntry {}
    unsafe impl aya::Pod for PrlKey {}
    unsafe impl aya::Pod for PrlEntry {}
    unsafe impl aya::Pod for SeqState {}
    unsafe impl aya::Pod for PmtuKey {}
    unsafe impl aya::Pod for PmtuEntry {}
    unsafe impl aya::Pod for MonitorLease {}
    unsafe impl aya::Pod for MonitorCpu {}
    unsafe impl aya::Pod for MonitorEvent {}
    unsafe impl aya::Pod for ForwardLan {}
    unsafe impl aya::Pod for ForwardState {}
    unsafe impl aya::Pod for Tunnel6Config {}
    unsafe impl aya::Pod for DecapKey6 {}
    unsafe impl aya::Pod for Pmtu6Key {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<TunnelConfig>(), 52);
        assert_eq!(size_of::<NeighKey>(), 24);
        assert_eq!(size_of::<Tunnel6Config>(), 56);
        assert_eq!(size_of::<DecapKey6>(), 40);
        assert_eq!(size_of::<Pmtu6Key>(), 20);
        assert_eq!(size_of::<NeighEntry>(), 4);
        assert_eq!(size_of::<PrlKey>(), 8);
        assert_eq!(size_of::<SeqState>(), 16);
        assert_eq!(size_of::<PmtuKey>(), 8);
        assert_eq!(size_of::<PmtuEntry>(), 16);
        assert_eq!(size_of::<DecapKey>(), 16);
        assert_eq!(size_of::<DecapTarget>(), 16);
        assert_eq!(size_of::<TunnelStats>(), 12 * 8);
        assert_eq!(size_of::<XdpMeta>(), 20);
        assert_eq!(size_of::<Settings>(), 16);
        assert_eq!(size_of::<MonitorLease>(), 32);
        assert_eq!(size_of::<MonitorCpu>(), 40);
        assert_eq!(size_of::<MonitorEvent>(), 32 + MONITOR_SNAP);
        assert_eq!(
            size_of::<IfCounters>(),
            8 * (crate::stats::COUNTER_COUNT as usize + 1)
        );
    }

    #[test]
    fn gre_output_flags_follow_the_o_options_and_only_for_gre() {
        use crate::wire::{GRE_CSUM, GRE_KEY, GRE_SEQ};
        let cfg = |mode, flags| TunnelConfig {
            mode,
            flags,
            ..Default::default()
        };
        assert_eq!(cfg(MODE_GRE, 0).gre_output_flags(), 0);
        assert_eq!(cfg(MODE_GRE, TUNNEL_F_OKEY).gre_output_flags(), GRE_KEY);
        assert_eq!(cfg(MODE_GRE, TUNNEL_F_OCSUM).gre_output_flags(), GRE_CSUM);
        assert_eq!(cfg(MODE_GRE, TUNNEL_F_OSEQ).gre_output_flags(), GRE_SEQ);
        let all = TUNNEL_F_OKEY | TUNNEL_F_OCSUM | TUNNEL_F_OSEQ;
        // Input options never show on output.
        let inputs = TUNNEL_F_IKEY | TUNNEL_F_ICSUM | TUNNEL_F_ISEQ;
        assert_eq!(
            cfg(MODE_GRE, all | inputs).gre_output_flags(),
            GRE_KEY | GRE_CSUM | GRE_SEQ
        );
        assert_eq!(cfg(MODE_GRE, inputs).gre_output_flags(), 0);
        for mode in [MODE_IPIP, MODE_SIT, MODE_ISATAP] {
            assert_eq!(cfg(mode, all).gre_output_flags(), 0);
        }
    }

    #[test]
    fn decap_keys_and_xdp_tags_carry_every_field() {
        let keyed = DecapKey::new(1, 2, 47, Some(9));
        assert_eq!((keyed.local, keyed.remote, keyed.proto), (1, 2, 47));
        assert_eq!((keyed.key, keyed.has_key), (9, 1));
        let plain = DecapKey::new(1, 2, 4, None);
        assert_eq!((plain.key, plain.has_key, plain._pad), (0, 0, [0; 2]));
        let target = DecapTarget {
            ifindex: 3,
            flags: 4,
            stats_slot: 5,
            port: 6,
        };
        let tag = XdpMeta::new(7, &target);
        assert_eq!((tag.magic, tag.target()), (7, target));
    }

    #[test]
    fn names_fit_the_kernel_limit() {
        for name in [
            MAP_TUNNELS,
            MAP_DECAP,
            MAP_TUNNEL_STATS,
            MAP_COUNTERS,
            MAP_IF_COUNTERS,
            MAP_IF_INDEXED,
            MAP_SETTINGS,
            MAP_NEIGH,
            MAP_PRL,
            MAP_SEQ,
            MAP_PORTS,
            MAP_PMTU,
            MAP_TUNNELS6,
            MAP_DECAP6,
            MAP_PMTU6,
            MAP_MON_LEASES,
            MAP_MON_STATS,
            MAP_MON_RINGS[0],
            PROG_XDP_DECAP,
            PROG_TC,
            PROG_TC6,
            PROG_TAP6,
        ] {
            assert!(name.len() <= 15, "{name}");
        }
    }
}
