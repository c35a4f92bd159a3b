//! Path MTU, as the kernel's tunnels keep it: ICMP "fragmentation needed"
//! for an outer packet a tunnel sent lowers that tunnel's path MTU to the
//! remote (`note_icmp`, on the underlay); an inner packet that then does not
//! fit and may not be fragmented is answered with ICMP "fragmentation
//! needed" to its sender (`answer_too_big`, on the port), so that TCP lowers
//! its segment size instead of black-holing.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup as FibParams, bpf_redir_neigh,
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SKIP_NEIGH,
        BPF_FIB_LOOKUP_SRC, TC_ACT_REDIRECT,
    },
    helpers::generated::{bpf_ktime_get_ns, bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use network_types::eth::EthHdr;
use tunnel_common::{
    maps::{DecapKey, PmtuEntry, PmtuKey, TunnelConfig, MIN_PMTU, PMTU_EXPIRES_NS, TUNNEL_MAC},
    stats::*,
    wire::{self, Ipv4Fields, Ipv4Words, IPPROTO_ICMP, IPPROTO_ICMPV6},
};

use crate::{
    classify::find_tunnel,
    csum,
    fib::{self, AF_INET, AF_INET6},
    maps::PMTU,
    parse::{read_at, write_at, Frame},
};

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_HDR_LEN: usize = 8;

/// Bytes an ICMP error quotes of the packet it answers, beyond its IP
/// header: enough for the ports and TCP's sequence number (RFC 792).
/// As much of the packet as fits in a 576-byte answer (the kernel's
/// `icmp_send`); at least the header and 8 bytes (RFC 792) whenever the
/// packet has them. More than 8 matters too: a TCP packet whose checksum
/// is left to offload cannot be cut before its checksum field.
const QUOTE_MAX_V4: usize = 576 - wire::IPV4_HDR_LEN - ICMP_HDR_LEN;
/// As much as fits in the IPv6 minimum MTU (RFC 4443 2.4).
const QUOTE_MAX_V6: usize = IPV6_MIN_MTU as usize - wire::IPV6_HDR_LEN - ICMP_HDR_LEN;

/// Looks at an ICMP message (its header at `l4`) received on an underlay:
/// a "fragmentation needed" whose quoted header is an outer packet one of
/// our tunnels sent (local -> remote, the protocol, the GRE key when the
/// tunnel has one) records the reported MTU for (tunnel, remote). Returns
/// the counter reason; the message itself always goes on to the kernel.
#[inline(always)]
pub fn note_icmp<F: Frame>(ctx: &F, l4: usize, icmp_dst: u32) -> u32 {
    let Ok(head) = read_at::<[u8; 8], F>(ctx, l4) else {
        return RX_PASS_NOT_TUNNEL;
    };
    // Other errors about what a tunnel sent are only counted: the kernel's
    // tunnels would tell the next inner senders "host unreachable" for a
    // while (`err_count`); xtun does not.
    let frag_needed = head[0] == ICMP_DEST_UNREACH && head[1] == ICMP_FRAG_NEEDED;
    if !frag_needed && head[0] != ICMP_DEST_UNREACH && head[0] != ICMP_TIME_EXCEEDED {
        return RX_PASS_NOT_TUNNEL;
    }
    let mtu = u16::from_be_bytes([head[6], head[7]]) as u32;
    let quoted = l4 + ICMP_HDR_LEN;
    let Ok(ip) = read_at::<Ipv4Words, F>(ctx, quoted) else {
        return RX_ICMP_IGNORED;
    };
    let ihl = ip.header_len();
    let proto = ip.proto();
    if ip.version() != 4 || ihl < wire::IPV4_HDR_LEN {
        return RX_ICMP_IGNORED;
    }
    if proto != wire::IPPROTO_GRE && proto != wire::IPPROTO_IPIP && proto != wire::IPPROTO_IPV6 {
        return RX_ICMP_IGNORED;
    }
    // The GRE key, when the quoted header has one: it must be quoted
    // whole, as the kernel's ipgre_err requires.
    let mut key = None;
    if proto == wire::IPPROTO_GRE {
        let mut flags = [0u8; 2];
        if !ctx.load(quoted + ihl, flags.as_mut_ptr(), 2) {
            return RX_ICMP_IGNORED;
        }
        let flags = u16::from_be_bytes(flags);
        if flags & wire::GRE_KEY != 0 {
            let mut k = [0u8; 4];
            if !ctx.load(
                quoted + ihl + wire::gre_key_offset(flags),
                k.as_mut_ptr(),
                4,
            ) {
                return RX_ICMP_IGNORED;
            }
            key = Some(u32::from_ne_bytes(k));
        }
    }
    // Addressed to where the quoted packet came from: this host.
    if ip.src() != icmp_dst {
        return RX_ICMP_IGNORED;
    }
    // The packet we sent: from our local address to the remote.
    let Some(target) = find_tunnel(DecapKey::new(ip.src(), ip.dst(), proto, key)) else {
        return RX_ICMP_IGNORED;
    };
    if !frag_needed {
        return RX_ICMP_NOT_RELAYED;
    }
    // A report below the minimum, or not below the packet it quotes, is
    // not one a router makes for it.
    if mtu < MIN_PMTU || mtu >= ip.tot_len() as u32 {
        return RX_ICMP_IGNORED;
    }
    let key = PmtuKey {
        ifindex: target.ifindex,
        remote: ip.dst(),
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // As the kernel's route exceptions: a report only lowers a path MTU
    // that still holds (or refreshes it); a higher one waits for expiry.
    // SAFETY: the value is copied out.
    if let Some(known) = unsafe { PMTU.get(key) } {
        if known.expires_ns > now && known.mtu < mtu {
            return RX_ICMP_IGNORED;
        }
    }
    let entry = PmtuEntry {
        mtu,
        _pad: 0,
        expires_ns: now + PMTU_EXPIRES_NS,
    };
    if PMTU.insert(key, entry, 0).is_err() {
        return RX_ICMP_IGNORED;
    }
    RX_ICMP_FRAG_NEEDED
}

/// The path MTU to `remote` for outer packets of tunnel `ifindex`, while a
/// report holds.
#[inline(always)]
pub fn path_mtu(ifindex: u32, remote: u32) -> Option<u32> {
    let key = PmtuKey { ifindex, remote };
    // SAFETY: the value is copied out.
    let known = unsafe { PMTU.get(key) }?;
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    (known.expires_ns > now).then_some(known.mtu)
}

/// What an inner IPv4 packet is, as far as fragmentation goes.
pub struct InnerV4 {
    pub src: u32,
    pub dst: u32,
    pub header_len: usize,
    /// Not the first fragment: never answered (RFC 1122).
    pub later_fragment: bool,
}

/// The IP header and ICMP header of the answer, as halfwords.
#[repr(C)]
struct IcmpHeaders {
    eth_type: u16,
    ip: Ipv4Words,
    icmp: [u16; ICMP_HDR_LEN / 2],
}

/// Turns the inner IPv4 packet behind the Ethernet header into an ICMP
/// "fragmentation needed" carrying `mtu` (the tunnel's MTU on this path)
/// and sends it to the inner source: into the tunnel interface when the
/// sender is this host (from the inner destination, which the route back
/// through the tunnel passes rp_filter for; an address of this host would
/// be a martian there), or out of the interface the route to a forwarded
/// sender leaves by, from that interface's address.
#[inline(always)]
pub fn answer_too_big(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    inner: &InnerV4,
    mtu: u32,
) -> Result<i32, u32> {
    if inner.later_fragment || !answerable_v4(inner.src, inner.dst) {
        return Err(TX_TOO_BIG_DROP);
    }
    let mut params = fib::request(AF_INET, cfg.datapath_ifindex());
    params.__bindgen_anon_4.ipv4_dst = inner.src;
    // SAFETY (the reads of `params`): union fields, zeroed by the request,
    // that the helper fills in.
    let has_source = |p: &FibParams| unsafe { p.__bindgen_anon_3.ipv4_src } != 0;
    let local_sender = route_back(ctx, cfg, &mut params, has_source)?;
    let next_hop = fib::next_hop_v4(unsafe { params.__bindgen_anon_4.ipv4_dst });
    let from = if local_sender {
        inner.dst
    } else {
        unsafe { params.__bindgen_anon_3.ipv4_src }
    };
    // Never an answer to an ICMP error (RFC 1122).
    if is_icmp_error_v4(ctx, inner) {
        return Err(TX_TOO_BIG_DROP);
    }

    // The quote: the inner header and the first bytes after it.
    let quote = QUOTE_MAX_V4.min(ctx.len() as usize - EthHdr::LEN);
    quote_behind(ctx, quote, wire::IPV4_HDR_LEN + ICMP_HDR_LEN)?;

    let total = (wire::IPV4_HDR_LEN + ICMP_HDR_LEN + quote) as u16;
    let mut headers = IcmpHeaders {
        eth_type: wire::ETH_P_IP.to_be(),
        ip: Ipv4Words::from_fields(&Ipv4Fields {
            // Internetwork control precedence, as the kernel's ICMP errors.
            tos: 0xc0,
            tot_len: total,
            ttl: 64,
            proto: IPPROTO_ICMP,
            src: from,
            dst: inner.src,
            ..Default::default()
        }),
        icmp: [
            u16::from_be_bytes([ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED]).to_be(),
            0,
            0,
            (mtu.min(u16::MAX as u32) as u16).to_be(),
        ],
    };
    headers.icmp[1] = icmp_checksum(ctx, headers.icmp, wire::IPV4_HDR_LEN, quote, 0)?;
    let back = Destination::back(local_sender, &params, next_hop);
    send(ctx, cfg, back, headers)
}

/// The checksum of an ICMP or ICMPv6 answer whose checksum word is still
/// 0: over its header `icmp`, the `quote` bytes behind the headers (an
/// `ip_len`-byte IP header, then the ICMP header) and `pseudo` (ICMPv6's
/// pseudo-header sum; 0 for ICMP, which has none).
#[inline(always)]
fn icmp_checksum(
    ctx: &TcContext,
    icmp: [u16; ICMP_HDR_LEN / 2],
    ip_len: usize,
    quote: usize,
    pseudo: u32,
) -> Result<u16, u32> {
    let quoted_at = EthHdr::LEN + ip_len + ICMP_HDR_LEN;
    let quoted = csum::sum_bytes(ctx, quoted_at, quote).ok_or(TX_TOO_BIG_DROP)?;
    let header = csum::sum_array(&wire::bytes_of::<4, 8>(icmp));
    Ok(wire::fold_and_complement(csum::add(csum::add(pseudo, header), quoted)).to_be())
}

/// Looks the route back to an inner sender up as if from the port
/// (`params` made by `fib::request` from the port, the sender's address
/// set): Ok(true) for a sender on this host, Ok(false) for a forwarded one,
/// `params` then holding the way out, our source (`has_source` tells
/// whether the helper found one) and the next hop.
#[inline(always)]
fn route_back(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    params: &mut FibParams,
    has_source: impl Fn(&FibParams) -> bool,
) -> Result<bool, u32> {
    let ret = fib::lookup(ctx, params, BPF_FIB_LOOKUP_SKIP_NEIGH | BPF_FIB_LOOKUP_SRC) as u32;
    if ret == BPF_FIB_LKUP_RET_NOT_FWDED {
        return Ok(true);
    }
    if ret == BPF_FIB_LKUP_RET_SUCCESS && has_source(params) && params.ifindex != cfg.ifindex {
        return Ok(false);
    }
    Err(TX_TOO_BIG_DROP)
}

/// May an IPv4 packet from `src` to `dst` be answered with an ICMP error?
/// Not from an unspecified, multicast or broadcast source, nor to a
/// multicast or broadcast destination (RFC 1122, as `__icmp_send`).
#[inline(always)]
fn answerable_v4(src: u32, dst: u32) -> bool {
    let special = |a: [u8; 4]| a[0] == 0 || a[0] >= 224;
    !special(src.to_ne_bytes()) && !special(dst.to_ne_bytes())
}

/// Is the inner IPv4 packet an ICMP error message (destination
/// unreachable, source quench, redirect, time exceeded, parameter problem)?
#[inline(always)]
fn is_icmp_error_v4(ctx: &TcContext, inner: &InnerV4) -> bool {
    let proto = ctx.load::<u8>(EthHdr::LEN + 9).unwrap_or(0);
    let icmp_type = ctx.load::<u8>(EthHdr::LEN + inner.header_len).unwrap_or(0);
    proto == IPPROTO_ICMP && matches!(icmp_type, 3 | 4 | 5 | 11 | 12)
}

/// Where an answer goes: into the tunnel interface (a sender on this
/// host), or out of the route to a forwarded sender.
enum Destination {
    Local,
    Forwarded { oif: u32, next_hop: bpf_redir_neigh },
}

impl Destination {
    /// Where `route_back` said the answer goes (`params` from it).
    #[inline(always)]
    fn back(local_sender: bool, params: &FibParams, next_hop: bpf_redir_neigh) -> Self {
        if local_sender {
            Destination::Local
        } else {
            Destination::Forwarded {
                oif: params.ifindex,
                next_hop,
            }
        }
    }
}

/// Cuts the packet down to the Ethernet header and the first `quote`
/// bytes of the inner packet, then makes room for `headers` bytes of new
/// headers in front of them.
#[inline(always)]
fn quote_behind(ctx: &TcContext, quote: usize, headers: usize) -> Result<(), u32> {
    // SAFETY: helper call on our own skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (EthHdr::LEN + quote) as u32, 0) } != 0 {
        return Err(TX_TOO_BIG_DROP);
    }
    ctx.adjust_room(headers as i32, BPF_ADJ_ROOM_MAC, 0)
        .map_err(|_| TX_TOO_BIG_DROP)
}

/// Writes the Ethernet destination and `headers` (EtherType onwards) in
/// front of the quote, and sends the answer to `to`.
#[inline(always)]
fn send<H>(ctx: &TcContext, cfg: &TunnelConfig, to: Destination, headers: H) -> Result<i32, u32> {
    let dst_mac: [u16; 3] = wire::words_of(match to {
        Destination::Local => TUNNEL_MAC,
        // Any unicast placeholder: bpf_redirect_neigh writes the real one.
        Destination::Forwarded { .. } => [0x02, 0, 0, 0, 0, 0x01],
    });
    // Written in place: the headers are linear after adjust_room.
    write_at(ctx, 0, dst_mac).map_err(|_| TX_TOO_BIG_DROP)?;
    write_at(ctx, 12, headers).map_err(|_| TX_TOO_BIG_DROP)?;
    let action = match to {
        // Out of the port: received on the tunnel interface.
        // SAFETY: plain helper call.
        Destination::Local => unsafe { bpf_redirect(cfg.port_ifindex, 0) as i32 },
        Destination::Forwarded { oif, next_hop } => fib::redirect_neigh(oif, next_hop),
    };
    if action != TC_ACT_REDIRECT {
        return Err(TX_TOO_BIG_DROP);
    }
    Ok(action)
}

pub const ICMPV6_PKT_TOOBIG: u8 = 2;
/// ICMPv6 "parameter problem" (code 0: erroneous header field).
pub const ICMPV6_PARAMPROB: u8 = 4;
/// The smallest MTU IPv6 allows: below it, no "packet too big" is sent.
pub const IPV6_MIN_MTU: u32 = 1280;

/// The IPv6 and ICMPv6 headers of the answer, as halfwords.
#[repr(C)]
struct Icmpv6Headers {
    eth_type: u16,
    ip: [u16; wire::IPV6_HDR_LEN / 2],
    icmp: [u16; ICMP_HDR_LEN / 2],
}

/// As `answer_too_big`, for an inner IPv6 packet from `src` (its address
/// as halfwords in memory order): an ICMPv6 "packet too big" carrying `mtu`.
#[inline(always)]
pub fn answer_too_big_v6(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    src: [u16; 8],
    dst: [u16; 8],
    mtu: u32,
) -> Result<i32, u32> {
    answer_v6(ctx, cfg, src, dst, ICMPV6_PKT_TOOBIG, mtu)
}

/// Answers an inner IPv6 packet from `src` with an ICMPv6 error of
/// `error_type` (code 0) whose 32-bit field is `value` (the MTU of a
/// "packet too big", the pointer of a "parameter problem"), quoting it.
#[inline(always)]
pub fn answer_v6(
    ctx: &TcContext,
    cfg: &TunnelConfig,
    src: [u16; 8],
    dst: [u16; 8],
    error_type: u8,
    value: u32,
) -> Result<i32, u32> {
    // Not from an unspecified or multicast source, not to a multicast
    // destination, never to an ICMPv6 error (RFC 4443 2.4).
    let high = |a: [u16; 8]| u16::from_be(a[0]) >> 8;
    if src == [0; 8] || high(src) == 0xff || high(dst) == 0xff {
        return Err(TX_TOO_BIG_DROP);
    }
    let next = ctx.load::<u8>(EthHdr::LEN + 6).unwrap_or(0);
    let icmp_type = ctx
        .load::<u8>(EthHdr::LEN + wire::IPV6_HDR_LEN)
        .unwrap_or(0);
    if next == IPPROTO_ICMPV6 && icmp_type < 128 {
        return Err(TX_TOO_BIG_DROP);
    }
    let mut params = fib::request(AF_INET6, cfg.datapath_ifindex());
    params.__bindgen_anon_4.ipv6_dst = fib::v6_words(src);
    // SAFETY (the reads of `params`): union fields, zeroed by the request,
    // that the helper fills in.
    let has_source = |p: &FibParams| unsafe { p.__bindgen_anon_3.ipv6_src } != [0; 4];
    let local_sender = route_back(ctx, cfg, &mut params, has_source)?;
    let next_hop = fib::next_hop_v6(unsafe { params.__bindgen_anon_4.ipv6_dst });
    let from: [u16; 8] = if local_sender {
        dst
    } else {
        fib::v6_halfwords(unsafe { params.__bindgen_anon_3.ipv6_src })
    };

    let quote = QUOTE_MAX_V6.min(ctx.len() as usize - EthHdr::LEN);
    quote_behind(ctx, quote, wire::IPV6_HDR_LEN + ICMP_HDR_LEN)?;

    let payload = (ICMP_HDR_LEN + quote) as u16;
    let mut ip = [0u16; wire::IPV6_HDR_LEN / 2];
    ip[0] = 0x6000u16.to_be();
    ip[2] = payload.to_be();
    ip[3] = u16::from_be_bytes([IPPROTO_ICMPV6, 64]).to_be();
    ip[4..12].copy_from_slice(&from);
    ip[12..20].copy_from_slice(&src);
    let [value_hi, value_lo] = wire::split_words(value.to_be());
    let mut icmp = [
        u16::from_be_bytes([error_type, 0]).to_be(),
        0,
        value_hi,
        value_lo,
    ];
    // The pseudo-header: both addresses, the length and next header.
    let pseudo = csum::sum_array(&wire::bytes_of::<8, 16>(from))
        + csum::sum_array(&wire::bytes_of::<8, 16>(src))
        + payload as u32
        + IPPROTO_ICMPV6 as u32;
    icmp[1] = icmp_checksum(ctx, icmp, wire::IPV6_HDR_LEN, quote, pseudo)?;
    let headers = Icmpv6Headers {
        eth_type: wire::ETH_P_IPV6.to_be(),
        ip,
        icmp,
    };
    let back = Destination::back(local_sender, &params, next_hop);
    send(ctx, cfg, back, headers)
}
