//! Encapsulation steps shared by the tc port (`tc_port`) and the XDP
//! forwarding fast path (`forward`): what the inner packet is, where the
//! outer one goes, and the outer headers' contents and bytes. The hooks
//! differ only in how they make room and send.

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_PROHIBIT,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC,
    },
    helpers::generated::bpf_get_prandom_u32,
    maps::lpm_trie::Key,
    EbpfContext,
};
use tunnel_common::{
    maps::*,
    stats::*,
    wire::{self, Family, Ipv4Fields, Ipv4Words},
};

use crate::{
    csum, fib,
    gre::{self, Gre},
    maps::{self, NEIGH},
    parse::{read_at, write_at, Frame},
};

/// EtherType and IPv4 header, as written after the Ethernet addresses.
/// Halfwords throughout, so that each is one store.
#[repr(C)]
struct OuterHeaders {
    eth_type: u16,
    ip: Ipv4Words,
}

/// What the encapsulation needs to know about the inner packet.
pub struct InnerInfo {
    pub family: Family,
    pub tos: u8,
    pub ttl: u8,
    /// IPv4: source address, header length, flags and fragment offset.
    pub src: u32,
    /// IPv6: source address as halfwords in memory order.
    pub src6: [u16; 8],
    pub header_len: usize,
    pub frag: u16,
    /// Destination address as halfwords in memory order (IPv4 in the
    /// first two).
    pub dst: [u16; 8],
    /// The whole Ethernet frame travels (gretap).
    pub ethernet: bool,
}

/// The outer TTL for a frame without an IP header to inherit it from, as
/// the kernel's route gives it (`net.ipv4.ip_default_ttl`).
const DEFAULT_TTL: u8 = 64;

impl InnerInfo {
    /// An IPv4 packet's, from its header (`ethernet`: in a gretap frame).
    #[inline(always)]
    pub fn v4(ip: &Ipv4Words, ethernet: bool) -> Result<Self, u32> {
        if ip.version() != 4 {
            return Err(TX_BAD_INNER);
        }
        Ok(Self {
            family: Family::V4,
            tos: ip.tos(),
            ttl: ip.ttl(),
            src: ip.src(),
            src6: [0; 8],
            header_len: ip.header_len(),
            frag: ip.frag(),
            dst: [ip.0[8], ip.0[9], 0, 0, 0, 0, 0, 0],
            ethernet,
        })
    }

    /// An IPv6 packet's, from its fixed header (`ethernet`: in a gretap
    /// frame).
    #[inline(always)]
    pub fn v6(head: &[u16; wire::IPV6_HDR_LEN / 2], ethernet: bool) -> Result<Self, u32> {
        let first = u16::from_be(head[0]);
        if first >> 12 != 6 {
            return Err(TX_BAD_INNER);
        }
        let mut dst = [0u16; 8];
        dst.copy_from_slice(&head[12..20]);
        let mut src6 = [0u16; 8];
        src6.copy_from_slice(&head[4..12]);
        Ok(Self {
            family: Family::V6,
            tos: (first >> 4) as u8,
            ttl: u16::from_be(head[3]) as u8,
            src: 0,
            src6,
            header_len: wire::IPV6_HDR_LEN,
            frag: 0,
            dst,
            ethernet,
        })
    }

    /// A gretap frame that is not IP (ARP...): nothing to inherit; the
    /// outer TTL defaults as the kernel's route does (`ip_default_ttl`).
    #[inline(always)]
    pub fn opaque() -> Self {
        Self {
            family: Family::V4,
            tos: 0,
            ttl: DEFAULT_TTL,
            src: 0,
            src6: [0; 8],
            header_len: 0,
            frag: 0,
            dst: [0; 8],
            ethernet: true,
        }
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.family == Family::V6
    }

    /// An IPv4 packet that may not be fragmented.
    #[inline(always)]
    pub fn df(&self) -> bool {
        !self.is_v6() && self.frag & wire::IP_DF != 0
    }
}

/// Can a tunnel of `mode` carry inner packets of `family` as IP? (gretap
/// carries Ethernet frames: its callers tell it apart first.)
#[inline(always)]
pub fn carries(mode: u8, family: Family) -> bool {
    match family {
        Family::V4 => mode == MODE_GRE || mode == MODE_IPIP,
        Family::V6 => mode != MODE_IPIP,
    }
}

/// The outer destination of a tunnel whose remote is decided per packet:
/// ISATAP's address embedded in the inner destination, the longest
/// matching multipoint neighbour, or the ISATAP default router.
#[inline(always)]
fn remote_for(cfg: &TunnelConfig, ifindex: u32, inner: &InnerInfo) -> Result<u32, u32> {
    let dst: [u8; 16] = wire::bytes_of(inner.dst);
    if cfg.mode == MODE_ISATAP && inner.is_v6() {
        if let Some(v4) = wire::isatap_ipv4(&dst) {
            return Ok(u32::from_ne_bytes(v4));
        }
    }
    let (family, bits) = if inner.is_v6() { (6, 128) } else { (4, 32) };
    let key = Key::new(
        NEIGH_KEY_FIXED_BITS + bits,
        NeighKey {
            ifindex,
            family,
            addr: dst,
        },
    );
    if let Some(neigh) = NEIGH.get(&key) {
        return Ok(neigh.remote);
    }
    if cfg.mode == MODE_ISATAP && cfg.prl_default != 0 {
        return Ok(cfg.prl_default);
    }
    Err(TX_NO_NEIGH)
}

/// The tunnel's remote: the configured one (a gretap link always has it),
/// or the one for this packet.
#[inline(always)]
pub fn remote(cfg: &TunnelConfig, inner: &InnerInfo) -> Result<u32, u32> {
    if inner.ethernet || cfg.remote != 0 {
        Ok(cfg.remote)
    } else {
        remote_for(cfg, cfg.ifindex, inner)
    }
}

/// Where the route to `remote` leads, looked up per packet as the kernel's
/// tunnels route each packet, so traffic follows route changes.
pub struct Route {
    pub src: u32,
    pub oif: u32,
    /// The next hop (the gateway, or `remote` itself on link).
    pub next_hop: u32,
    /// With a neighbour lookup: the Ethernet addresses to send with.
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

/// How the route to the remote is asked for.
#[derive(Clone, Copy)]
pub struct RouteQuery {
    /// Resolve the next hop's MAC too (XDP, which has no neighbour
    /// helper); tc leaves that to `bpf_redirect_neigh`.
    pub neigh: bool,
    /// The outer packet's length, for the route's MTU check; 0 for none.
    pub tot_len: u16,
}

/// The route to `remote`, looked up as if the packet arrived on the port
/// (userspace enables forwarding there, which bpf_fib_lookup requires; the
/// port receives nothing but what the tunnel interface sends, so nothing
/// else is forwarded). Err(None) where it cannot be looked up here (a
/// tunnel without a port): the caller falls back to the configuration.
/// Err(Some(FWD_PASS_TOO_BIG)) when a `tot_len` asked for exceeds the MTU.
/// The XDP fast path asks the same route in `forward::outer_route` (tc's
/// instruction budget keeps this one as it is): keep the two in step.
#[inline(always)]
pub fn route_to<C: EbpfContext>(
    ctx: &C,
    cfg: &TunnelConfig,
    remote: u32,
    query: RouteQuery,
) -> Result<Route, Option<u32>> {
    let mut params = fib::request(fib::AF_INET, cfg.datapath_ifindex());
    params.__bindgen_anon_4.ipv4_dst = remote;
    params.__bindgen_anon_1.tot_len = query.tot_len;
    // A configured local address is the flow's source, as the kernel's
    // tunnels route with it (policy rules `from` match); only `local any`
    // asks the helper to pick one.
    params.__bindgen_anon_3.ipv4_src = cfg.local;
    let mut flags = if query.neigh {
        0
    } else {
        BPF_FIB_LOOKUP_SKIP_NEIGH
    };
    if cfg.local == 0 {
        flags |= BPF_FIB_LOOKUP_SRC;
    }
    let ret = fib::lookup(ctx, &mut params, flags);
    if ret == BPF_FIB_LKUP_RET_SUCCESS as i64 {
        // An outer packet routed into the tunnel itself would come back
        // here: drop it instead of looping (the kernel's DeadLoop).
        if params.ifindex == cfg.ifindex {
            return Err(Some(TX_DEAD_LOOP));
        }
        // SAFETY: the helper filled in the source and next hop.
        let (src, next_hop) = unsafe {
            (
                params.__bindgen_anon_3.ipv4_src,
                params.__bindgen_anon_4.ipv4_dst,
            )
        };
        if src != 0 {
            return Ok(Route {
                src,
                oif: params.ifindex,
                next_hop,
                smac: params.smac,
                dmac: params.dmac,
            });
        }
    }
    match ret as u32 {
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            Err(Some(TX_NO_ROUTE))
        }
        BPF_FIB_LKUP_RET_FRAG_NEEDED if query.tot_len != 0 => Err(Some(FWD_PASS_TOO_BIG)),
        _ => Err(None),
    }
}

/// The GRE header a `mode gre` tunnel sends (`flags` are none for other
/// modes), and the sum of the inner packet at `l2` its checksum covers:
/// taken now, before any header is pushed in front.
#[inline(always)]
pub fn gre_header<F: Frame>(
    ctx: &F,
    cfg: &TunnelConfig,
    flags: u16,
    inner: &InnerInfo,
    l2: usize,
    inner_len: u32,
) -> Result<(Gre, u32), u32> {
    let inner_sum = if flags & wire::GRE_CSUM != 0 {
        // A frame that is not IP has no inner header to sum from.
        let known = match inner.header_len {
            0 => None,
            _ => csum::inner_sum(ctx, l2, inner.is_v6()),
        };
        let sum = match known {
            Some(s) => s.sum,
            None => csum::sum_bytes(ctx, l2, inner_len as usize).ok_or(TX_BAD_INNER)?,
        };
        // A gretap frame's Ethernet header is part of the GRE payload.
        if inner.ethernet {
            // The MAC header is linear (in an skb and a frame alike).
            let header: [u8; wire::ETH_HDR_LEN] = read_at(ctx, 0).map_err(|_| TX_BAD_INNER)?;
            csum::add(sum, csum::sum_array(&header))
        } else {
            sum
        }
    } else {
        0
    };
    let seq = if flags & wire::GRE_SEQ != 0 {
        gre::next_sequence(cfg.ifindex).ok_or(TX_NO_BUFS)?
    } else {
        0
    };
    let gre = Gre {
        flags,
        family: inner.family,
        teb: inner.ethernet,
        key: cfg.okey,
        seq,
    };
    Ok((gre, inner_sum))
}

/// The outer IPv4 header's fields, as the kernel's tunnels set them.
#[inline(always)]
pub fn outer_ipv4(
    cfg: &TunnelConfig,
    inner: &InnerInfo,
    local: u32,
    remote: u32,
    tot_len: u16,
    fragmentable: bool,
) -> Ipv4Fields {
    let proto = match cfg.mode {
        _ if inner.ethernet => wire::IPPROTO_GRE,
        MODE_GRE => wire::IPPROTO_GRE,
        MODE_IPIP => wire::IPPROTO_IPIP,
        _ => wire::IPPROTO_IPV6,
    };
    let ttl = if cfg.ttl != 0 { cfg.ttl } else { inner.ttl };
    let dscp = if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
        inner.tos
    } else {
        cfg.tos
    };
    // DF always with `pmtudisc`, else the inner IPv4 packet's own; never
    // on IPv6 that the path can carry only in fragments.
    let df = !fragmentable && (cfg.flags & TUNNEL_F_PMTUDISC != 0 || inner.df());
    // Like the kernel: DF packets carry ID 0, others a random one.
    let id = if df {
        0
    } else {
        // SAFETY: plain helper call.
        (unsafe { bpf_get_prandom_u32() }) as u16
    };
    Ipv4Fields {
        tos: wire::ecn_encapsulate(dscp, inner.tos),
        tot_len,
        id,
        frag: if df { wire::IP_DF } else { 0 },
        ttl,
        proto,
        src: local,
        dst: remote,
    }
}

/// Writes the outer headers after the Ethernet addresses, in room already
/// made (linear): the EtherType, the IPv4 header and, when `is_gre` (gre
/// and gretap; the caller's test, as a second read of the mode would
/// double the paths the verifier walks), the GRE header whose checksum
/// covers `inner_sum`.
#[inline(always)]
pub fn write_outer<F: Frame>(
    ctx: &F,
    is_gre: bool,
    outer: &Ipv4Fields,
    gre: &Gre,
    inner_sum: u32,
) -> Result<(), u32> {
    let headers = OuterHeaders {
        eth_type: wire::ETH_P_IP.to_be(),
        ip: Ipv4Words::from_fields(outer),
    };
    write_at(ctx, 12, headers).map_err(|_| TX_NO_BUFS)?;
    if is_gre {
        let off = wire::ETH_HDR_LEN + wire::IPV4_HDR_LEN;
        gre::write(ctx, off, gre, inner_sum).map_err(|_| TX_NO_BUFS)?;
    }
    Ok(())
}

/// Counts `inner_len` bytes sent into the tunnel in its own counters.
#[inline(always)]
pub fn count_tunnel_sent(cfg: &TunnelConfig, inner_len: u32) {
    maps::tunnel_stats(cfg.stats_slot, |s| {
        s.tx_packets += 1;
        s.tx_bytes += inner_len as u64;
    });
}
