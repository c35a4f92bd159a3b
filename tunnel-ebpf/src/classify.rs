//! The outer-header classifier both receive hooks share (XDP in `xdp`, tc
//! in `tc_ingress`): is a received frame one of our tunnels' packets, and
//! may it be decapsulated? Also what both count about the answer.

use aya_ebpf::EbpfContext;
use aya_log_ebpf::trace;
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use tunnel_common::{
    maps::{
        DecapKey, DecapTarget, PrlKey, LOG_TRACE, TUNNEL_F_ICSUM, TUNNEL_F_ISATAP, TUNNEL_F_ISEQ,
        TUNNEL_F_TEB,
    },
    stats::*,
    wire::{self, EcnDecap, Family, Ipv4Words},
};

use crate::{
    gre,
    maps::{self, DECAP, PRL},
    monitor,
    parse::{ptr_at, ptr_at_mut, read_at, Frame},
    pmtu,
};

/// A packet that belongs to one of our tunnels.
pub struct Matched {
    pub target: DecapTarget,
    /// Bytes between the Ethernet header and the inner packet (for a
    /// gretap frame, up to its end of its own Ethernet header).
    pub strip: usize,
    /// The inner packet's family (a gretap frame's, V4 when not IP).
    pub inner: Family,
    /// An Ethernet frame (gretap), delivered with its own header.
    pub teb: bool,
    /// Outer source address, network order (for logs).
    pub remote: u32,
}

/// Outcome of looking at a received frame.
pub enum Verdict {
    /// Ours: decapsulate.
    Decap(Matched),
    /// Ours, but to be dropped (counted against the tunnel): the reason.
    Drop(DecapTarget, u32),
    /// Ours, with a GRE checksum that does not add up and may be pending
    /// offload, or a fragment: for tc to decide (XDP only).
    DecapInTc,
}

/// Is the frame IPv4 (the only underlay family)? Err(reason): pass it
/// untouched.
#[inline(always)]
pub fn is_ipv4<F: Frame>(ctx: &F) -> Result<(), u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|_| RX_PASS_NOT_IPV4)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != wire::ETH_P_IP.to_be() {
        return Err(RX_PASS_NOT_IPV4);
    }
    Ok(())
}

/// The outer header's protocol, if it is one of our tunnels' (or ICMP
/// about what they sent); Err(reason) otherwise.
#[inline(always)]
pub fn tunnel_protocol(ip: &Ipv4Words) -> Result<u8, u32> {
    let proto = ip.proto();
    if proto != wire::IPPROTO_GRE
        && proto != wire::IPPROTO_IPIP
        && proto != wire::IPPROTO_IPV6
        && proto != wire::IPPROTO_ICMP
    {
        return Err(RX_PASS_NOT_TUNNEL);
    }
    Ok(proto)
}

/// Parses the outer headers, finds the tunnel, checks the inner header and
/// applies RFC 6040 ECN to it. Err(reason): not ours, pass untouched.
#[inline(always)]
pub fn classify<F: Frame>(ctx: &F) -> Result<Verdict, u32> {
    is_ipv4(ctx)?;
    let ip: Ipv4Words = read_at(ctx, EthHdr::LEN).map_err(|_| RX_TRUNCATED)?;
    let proto = tunnel_protocol(&ip)?;
    let ihl = ip.header_len();
    if ip.version() != 4 || ihl < wire::IPV4_HDR_LEN {
        return Err(RX_TRUNCATED);
    }
    if ip.frag() & (wire::IP_MF | wire::IP_OFFSET) != 0 {
        // XDP cannot reassemble: tunnel fragments go to tc, whose
        // `xtun_defrag` puts them back together and hands the datagram on.
        if !ctx.sees_offload() && proto != wire::IPPROTO_ICMP {
            return Ok(Verdict::DecapInTc);
        }
        return Err(RX_PASS_FRAGMENT);
    }
    let tot_len = ip.tot_len() as usize;
    if tot_len < ihl || EthHdr::LEN + tot_len > ctx.total_len() {
        return Err(RX_TRUNCATED);
    }
    if !ipv4_header_checksum_ok(ctx, &ip) {
        return Err(RX_BAD_OUTER_CSUM);
    }
    let local = ip.dst();
    let remote = ip.src();
    let outer_tos = ip.tos();

    let l4 = EthHdr::LEN + ihl;
    // ICMP about what our tunnels sent: it goes on to the kernel either way.
    if proto == wire::IPPROTO_ICMP {
        return Err(pmtu::note_icmp(ctx, l4, local));
    }
    let gre = match proto {
        wire::IPPROTO_GRE => Some(gre::parse(ctx, l4)?),
        _ => None,
    };
    let (tunnel_len, mut inner, key) = match &gre {
        Some(g) => (g.len(), g.family, g.key()),
        None if proto == wire::IPPROTO_IPIP => (0, Family::V4, None),
        None => (0, Family::V6, None),
    };

    let lookup = DecapKey::new(local, remote, proto, key);
    let target = find_tunnel(lookup).ok_or(RX_PASS_NO_TUNNEL)?;
    let mut inner_off = l4 + tunnel_len;
    let mut teb = false;

    if let Some(g) = &gre {
        // A frame never goes to an IP tunnel, nor an IP packet to a gretap
        // one (the kernel keeps them in separate tables, and rejects what
        // neither takes): left to the kernel, untouched, as before a
        // gretap existed.
        teb = target.flags & TUNNEL_F_TEB != 0;
        if g.teb != teb {
            return Err(RX_BAD_PAYLOAD);
        }
        // As the kernel's ip_tunnel_rcv: the C bit must be what the tunnel
        // expects, and the sequence number must not go backwards.
        let has_csum = g.flags & wire::GRE_CSUM != 0;
        if has_csum != (target.flags & TUNNEL_F_ICSUM != 0) {
            return Ok(Verdict::Drop(target, RX_BAD_GRE_CSUM));
        }
        // A checksum pending offload counts as verified, as in the
        // kernel's skb_checksum_simple_validate; only an skb can tell.
        // Where the skb's own word is known, it decides; the inner
        // pseudo-header form is only a guess for where it is not.
        let known = ctx.offload_known();
        if has_csum && !gre::checksum_ok(ctx, l4, EthHdr::LEN + tot_len, g, !known) {
            if !ctx.sees_offload() {
                return Ok(Verdict::DecapInTc);
            }
            if !(known && ctx.checksum_pending()) {
                return Ok(Verdict::Drop(target, RX_BAD_GRE_CSUM));
            }
        }
        if target.flags & TUNNEL_F_ISEQ != 0 && !gre::sequence_ok(target.ifindex, g.seq()) {
            return Ok(Verdict::Drop(target, RX_OUT_OF_SEQ));
        }
    }
    if target.flags & TUNNEL_F_ISATAP != 0
        && !isatap_source_ok(ctx, inner_off, remote, target.ifindex)
    {
        return Ok(Verdict::Drop(target, RX_ISATAP_SPOOF));
    }
    let mut strip = ihl + tunnel_len;
    if teb {
        let Ok(ether_type) = read_at::<u16, F>(ctx, inner_off + 12) else {
            return Ok(Verdict::Drop(target, RX_TRUNCATED));
        };
        strip += EthHdr::LEN;
        inner_off += EthHdr::LEN;
        // ECN as for an IP tunnel where the frame carries IP, as the
        // kernel's gretap does; other frames have nothing to mark.
        match Family::from_ether_type(u16::from_be(ether_type)) {
            Some(family) => inner = family,
            None => {
                return Ok(Verdict::Decap(Matched {
                    target,
                    strip,
                    inner,
                    teb,
                    remote,
                }))
            }
        }
    }
    if let Err(reason) = check_inner_and_ecn(ctx, inner_off, inner, outer_tos) {
        return Ok(Verdict::Drop(target, reason));
    }
    Ok(Verdict::Decap(Matched {
        target,
        strip,
        inner,
        teb,
        remote,
    }))
}

/// Verifies the outer IPv4 header checksum (options included), as the
/// kernel's `ip_rcv` does before anything else looks at the packet.
#[inline(always)]
fn ipv4_header_checksum_ok<F: Frame>(ctx: &F, ip: &Ipv4Words) -> bool {
    let ihl = ip.header_len();
    let mut sum = ip.sum();
    const MAX_OPTION_WORDS: usize = (60 - wire::IPV4_HDR_LEN) / 2;
    let mut i = 0;
    while i < MAX_OPTION_WORDS {
        let off = wire::IPV4_HDR_LEN + i * 2;
        if off >= ihl {
            break;
        }
        let Ok(word) = read_at::<u16, F>(ctx, EthHdr::LEN + off) else {
            return false;
        };
        sum += word as u32;
        i += 1;
    }
    wire::fold_and_complement(sum) == 0
}

/// The tunnel a packet belongs to, most specific first, as the kernel's
/// `ip_tunnel_lookup`: (local, remote), then `local any`, then
/// `remote any` (multipoint, ISATAP), then both.
#[inline(always)]
pub fn find_tunnel(mut key: DecapKey) -> Option<DecapTarget> {
    let (local, remote) = (key.local, key.remote);
    let wildcards = [(local, remote), (0, remote), (local, 0), (0, 0)];
    let mut i = 0;
    while i < wildcards.len() {
        (key.local, key.remote) = wildcards[i];
        // SAFETY: the value is copied out.
        if let Some(target) = unsafe { DECAP.get(key) } {
            return Some(*target);
        }
        i += 1;
    }
    None
}

/// ISATAP (the kernel's `isatap_chksrc`): the outer source is a listed
/// router, or the inner source is an ISATAP address embedding it.
#[inline(always)]
fn isatap_source_ok<F: Frame>(ctx: &F, inner_off: usize, outer_src: u32, tunnel: u32) -> bool {
    let router = PrlKey {
        ifindex: tunnel,
        addr: outer_src,
    };
    // SAFETY: only tested for presence.
    if unsafe { PRL.get(router) }.is_some() {
        return true;
    }
    let Ok(ip) = ptr_at::<Ipv6Hdr, F>(ctx, inner_off) else {
        return false;
    };
    // SAFETY: bounds checked.
    let src = unsafe { (*ip).src_addr };
    wire::isatap_ipv4(&src) == Some(outer_src.to_ne_bytes())
}

/// Checks that the inner header is what the outer one announced, and applies
/// RFC 6040 ECN decapsulation to it.
#[inline(always)]
pub(crate) fn check_inner_and_ecn<F: Frame>(
    ctx: &F,
    off: usize,
    inner: Family,
    outer_tos: u8,
) -> Result<(), u32> {
    match inner {
        Family::V4 => {
            let ip: *mut Ipv4Hdr = ptr_at_mut(ctx, off).map_err(|_| RX_TRUNCATED)?;
            // SAFETY: bounds checked; we own the frame.
            let ip = unsafe { &mut *ip };
            if ip.vihl >> 4 != 4 {
                return Err(RX_BAD_INNER);
            }
            match wire::ecn_decapsulate(outer_tos, ip.tos) {
                EcnDecap::Keep => {}
                EcnDecap::Drop => return Err(RX_ECN_DROP),
                EcnDecap::SetCe => {
                    // Incremental checksum update (RFC 1624) for the TOS byte.
                    let old = u16::from_be_bytes([ip.vihl, ip.tos]);
                    ip.tos |= wire::ECN_CE;
                    let new = u16::from_be_bytes([ip.vihl, ip.tos]);
                    let check = u16::from_be_bytes(ip.check);
                    let sum = (!check as u32) + (!old as u32) + new as u32;
                    ip.check = wire::fold_and_complement(sum).to_be_bytes();
                }
            }
        }
        Family::V6 => {
            let ip: *mut Ipv6Hdr = ptr_at_mut(ctx, off).map_err(|_| RX_TRUNCATED)?;
            // SAFETY: bounds checked; we own the frame.
            let ip = unsafe { &mut *ip };
            if ip.version() != 6 {
                return Err(RX_BAD_INNER);
            }
            let tclass = (ip.dscp() << 2) | ip.ecn();
            match wire::ecn_decapsulate(outer_tos, tclass) {
                EcnDecap::Keep => {}
                EcnDecap::Drop => return Err(RX_ECN_DROP),
                EcnDecap::SetCe => ip.set_dscp_ecn(ip.dscp(), wire::ECN_CE),
            }
        }
    }
    Ok(())
}

/// Counts a packet dropped on its way into the tunnel whose counters are
/// at `stats_slot`.
#[inline(always)]
pub fn count_tunnel_drop(ifindex: u32, stats_slot: u32, reason: u32) {
    maps::count(ifindex, reason);
    maps::tunnel_stats(stats_slot, |s| {
        s.rx_errors += 1;
        match reason {
            RX_BAD_GRE_CSUM => s.rx_csum_errors += 1,
            RX_OUT_OF_SEQ => s.rx_out_of_seq += 1,
            _ => {}
        }
    });
}

/// Counts a packet for `tunnel` dropped at `hook`, and tells monitors.
#[inline(always)]
pub fn tunnel_drop<F: Frame>(ctx: &F, hook: u32, ifindex: u32, tunnel: &DecapTarget, reason: u32) {
    count_tunnel_drop(ifindex, tunnel.stats_slot, reason);
    monitor::dropped(ctx, hook, ifindex, tunnel.ifindex, reason);
}

/// Counts (and at trace level logs) a decapsulated packet of `inner_len` bytes.
#[inline(always)]
pub fn decapsulated<C: EbpfContext + Frame>(ctx: &C, ifindex: u32, m: &Matched, inner_len: u64) {
    maps::count(ifindex, RX_DECAP);
    monitor::handled(
        ctx,
        monitor::rx_hook(ctx),
        ifindex,
        m.target.ifindex,
        RX_DECAP,
    );
    maps::tunnel_stats(m.target.stats_slot, |s| {
        s.rx_packets += 1;
        s.rx_bytes += inner_len;
    });
    if maps::log_enabled(LOG_TRACE) {
        trace!(
            ctx,
            "decap from {:i} to tunnel ifindex={} len={}",
            u32::from_be(m.remote),
            m.target.ifindex,
            inner_len
        );
    }
}
