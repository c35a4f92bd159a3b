//! XDP ingress: recognise our tunnels' packets and strip their outer headers.

use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{bpf_xdp_adjust_head, bpf_xdp_adjust_meta},
    programs::XdpContext,
    EbpfContext,
};
use aya_log_ebpf::{debug, trace};
use network_types::{
    eth::EthHdr,
    ip::{Ipv4Hdr, Ipv6Hdr},
};
use tunnel_common::{
    maps::{
        DecapKey, DecapTarget, PrlKey, XdpMeta, LOG_DEBUG, LOG_TRACE, TUNNEL_F_ICSUM,
        TUNNEL_F_ISATAP, TUNNEL_F_ISEQ, XDP_META_CSUM_IN_TC, XDP_META_MAGIC,
    },
    stats::*,
    wire::{self, EcnDecap, GreError, GreHdr, Ipv4Words},
};

use crate::{
    csum,
    maps::{self, DECAP, PRL, SEQ},
    monitor,
    parse::{ptr_at, ptr_at_mut, read_at, Frame},
    pmtu,
};

/// An Ethernet header as halfwords.
#[repr(C)]
struct EthWords {
    addresses: [u16; 6],
    ether_type: u16,
}

/// A parsed GRE header.
pub(crate) struct Gre {
    len: usize,
    inner: Inner,
    flags: u16,
    protocol: u16,
    pub(crate) key: Option<u32>,
    seq: Option<u32>,
}

/// What the outer headers say the payload is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Inner {
    V4,
    V6,
}

/// A packet that belongs to one of our tunnels.
pub struct Matched {
    pub target: DecapTarget,
    /// Bytes between the Ethernet header and the inner packet.
    pub strip: usize,
    pub inner: Inner,
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
    /// offload: for tc to decide (XDP only).
    DecapInTc,
}

/// XDP: Ok(action) for packets we handled (decapsulated or dropped, already
/// counted); Err(reason) for packets passed to the kernel untouched.
#[inline(always)]
pub fn try_decap(ctx: &XdpContext) -> Result<u32, u32> {
    // SAFETY: reading a field of the context the kernel gave us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let m = match classify(ctx)? {
        Verdict::Decap(m) => m,
        // XDP cannot tell a checksum pending offload from a wrong one:
        // tc decides.
        Verdict::DecapInTc => {
            tag(ctx, XDP_META_CSUM_IN_TC, &DecapTarget::default()).map_err(|_| RX_ADJUST_FAIL)?;
            return Ok(xdp_action::XDP_PASS);
        }
        Verdict::Drop(tunnel, reason) => {
            drop_for_tunnel(ifindex, tunnel.stats_slot, reason);
            monitor::dropped(ctx, monitor::MON_HOOK_XDP, ifindex, tunnel.ifindex, reason);
            if maps::log_enabled(LOG_DEBUG) {
                debug!(
                    ctx,
                    "drop for tunnel ifindex={} reason={}", tunnel.ifindex, reason
                );
            }
            return Ok(xdp_action::XDP_DROP);
        }
    };
    strip_outer(ctx, m.strip, m.inner, &m.target).map_err(|_| RX_ADJUST_FAIL)?;
    let inner_len = (ctx.data_end() - ctx.data()).saturating_sub(EthHdr::LEN) as u64;
    decapsulated(ctx, ifindex, &m, inner_len);
    Ok(xdp_action::XDP_PASS)
}

/// Counts a packet dropped on its way into the tunnel whose counters are
/// at `stats_slot`.
#[inline(always)]
pub fn drop_for_tunnel(ifindex: u32, stats_slot: u32, reason: u32) {
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

/// Parses the outer headers, finds the tunnel, checks the inner header and
/// applies RFC 6040 ECN to it. Err(reason): not ours, pass untouched.
#[inline(always)]
pub fn classify<F: Frame>(ctx: &F) -> Result<Verdict, u32> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|_| RX_PASS_NOT_IPV4)?;
    // SAFETY: ptr_at checked the bounds.
    if unsafe { (*eth).ether_type } != wire::ETH_P_IP.to_be() {
        return Err(RX_PASS_NOT_IPV4);
    }
    let ip: Ipv4Words = read_at(ctx, EthHdr::LEN).map_err(|_| RX_TRUNCATED)?;
    let proto = ip.proto();
    if proto != wire::IPPROTO_GRE
        && proto != wire::IPPROTO_IPIP
        && proto != wire::IPPROTO_IPV6
        && proto != pmtu::IPPROTO_ICMP
    {
        return Err(RX_PASS_NOT_TUNNEL);
    }
    let ihl = ip.header_len();
    if ip.version() != 4 || ihl < wire::IPV4_HDR_LEN {
        return Err(RX_TRUNCATED);
    }
    if ip.frag() & (wire::IP_MF | wire::IP_OFFSET) != 0 {
        // XDP cannot reassemble: tunnel fragments go to tc, whose
        // `xtun_defrag` puts them back together and hands the datagram on.
        if !ctx.sees_offload() && proto != pmtu::IPPROTO_ICMP {
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
    if proto == pmtu::IPPROTO_ICMP {
        return Err(pmtu::note_icmp(ctx, l4, local));
    }
    let gre = match proto {
        wire::IPPROTO_GRE => Some(parse_gre(ctx, l4)?),
        _ => None,
    };
    let (tunnel_len, inner, key) = match &gre {
        Some(g) => (g.len, g.inner, g.key),
        None if proto == wire::IPPROTO_IPIP => (0, Inner::V4, None),
        None => (0, Inner::V6, None),
    };

    let lookup = DecapKey {
        local,
        remote,
        key: key.unwrap_or(0),
        proto,
        has_key: key.is_some() as u8,
        _pad: [0; 2],
    };
    let target = find_tunnel(lookup).ok_or(RX_PASS_NO_TUNNEL)?;
    let inner_off = l4 + tunnel_len;

    if let Some(g) = &gre {
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
        if has_csum && !gre_checksum_ok(ctx, l4, EthHdr::LEN + tot_len, g, !known) {
            if !ctx.sees_offload() {
                return Ok(Verdict::DecapInTc);
            }
            if !(known && ctx.checksum_pending()) {
                return Ok(Verdict::Drop(target, RX_BAD_GRE_CSUM));
            }
        }
        if target.flags & TUNNEL_F_ISEQ != 0 && !sequence_ok(target.ifindex, g.seq) {
            return Ok(Verdict::Drop(target, RX_OUT_OF_SEQ));
        }
    }
    if target.flags & TUNNEL_F_ISATAP != 0
        && !isatap_source_ok(ctx, inner_off, remote, target.ifindex)
    {
        return Ok(Verdict::Drop(target, RX_ISATAP_SPOOF));
    }
    if let Err(reason) = check_inner_and_ecn(ctx, inner_off, inner, outer_tos) {
        return Ok(Verdict::Drop(target, reason));
    }
    Ok(Verdict::Decap(Matched {
        target,
        strip: ihl + tunnel_len,
        inner,
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
    wire::csum_fold(sum) == 0
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

/// Validates a GRE header at `off`.
#[inline(always)]
pub(crate) fn parse_gre<F: Frame>(ctx: &F, off: usize) -> Result<Gre, u32> {
    let gre: GreHdr = read_at(ctx, off).map_err(|_| RX_TRUNCATED)?;
    let flags = gre.flags();
    let len = wire::gre_parse_flags(flags).map_err(|e| match e {
        GreError::Version => RX_BAD_GRE_VERSION,
        GreError::Flags => RX_BAD_GRE_FLAGS,
    })?;
    if ctx.start() + off + len > ctx.end() {
        return Err(RX_TRUNCATED);
    }
    let word = |at: usize| -> Result<u32, u32> {
        let [a, b]: [u16; 2] = read_at(ctx, off + at).map_err(|_| RX_TRUNCATED)?;
        Ok(wire::join_words(a, b))
    };
    let key = if flags & wire::GRE_KEY != 0 {
        Some(word(wire::gre_key_offset(flags))?)
    } else {
        None
    };
    let seq = if flags & wire::GRE_SEQ != 0 {
        Some(u32::from_be(word(wire::gre_seq_offset(flags))?))
    } else {
        None
    };
    let inner = match gre.protocol() {
        wire::ETH_P_IP => Inner::V4,
        wire::ETH_P_IPV6 => Inner::V6,
        _ => return Err(RX_BAD_PAYLOAD),
    };
    Ok(Gre {
        len,
        inner,
        flags,
        protocol: gre.protocol(),
        key,
        seq,
    })
}

/// Verifies the GRE checksum over `[l4, ip_end)`. A packet from this host
/// whose inner transport checksum is still left to the NIC (its field holds
/// the pseudo-header sum) was checksummed as if it were filled in, as the
/// kernel's local checksum offload does; that form is accepted only if
/// everything else adds up.
#[inline(always)]
fn gre_checksum_ok<F: Frame>(
    ctx: &F,
    l4: usize,
    ip_end: usize,
    gre: &Gre,
    guess_offload: bool,
) -> bool {
    let Some(len) = ip_end.checked_sub(l4) else {
        return false;
    };
    if csum::sum_bytes(ctx, l4, len).is_some_and(|s| csum::fold(s) == 0xFFFF) {
        return true;
    }
    if !guess_offload {
        return false;
    }
    let inner_off = l4 + gre.len;
    let Some(expected) = csum::inner_sum(ctx, inner_off, gre.inner == Inner::V6) else {
        return false;
    };
    let Some(partial) = expected.partial else {
        return false;
    };
    let mut field = [0u8; 2];
    if !ctx.load(inner_off + expected.check_off, field.as_mut_ptr(), 2)
        || u16::from_be_bytes(field) != partial
    {
        return false;
    }
    // The GRE header's own words, from what parse_gre read.
    let Ok(check) = ptr_at::<[u8; 2], F>(ctx, l4 + wire::GRE_BASE_LEN) else {
        return false;
    };
    // SAFETY: bounds checked.
    let mut header =
        gre.flags as u32 + gre.protocol as u32 + u16::from_be_bytes(unsafe { *check }) as u32;
    if let Some(key) = gre.key {
        header += csum::sum_array(&key.to_ne_bytes());
    }
    if let Some(seq) = gre.seq {
        header += csum::sum_array(&seq.to_be_bytes());
    }
    csum::fold(csum::add(header, expected.sum)) == 0xFFFF
}

/// `iseq`: accepts `seq` unless it is missing or older than the next one
/// expected, then expects the one after it. Several CPUs may race here: the
/// expected number only moves forward, by compare-and-swap.
#[inline(always)]
fn sequence_ok(tunnel: u32, seq: Option<u32>) -> bool {
    let Some(seq) = seq else {
        return false;
    };
    let Some(state) = SEQ.get_ptr_mut(tunnel) else {
        return false;
    };
    // SAFETY: the map value lives as long as the map; every CPU updates it
    // only through atomics (a plain aligned load cannot tear).
    let expected = unsafe { &raw mut (*state).i_seq };
    let mut current = unsafe { core::ptr::read_volatile(expected) };
    let mut tries = 0;
    while tries < 8 {
        if current != 0 && (seq.wrapping_sub(current as u32) as i32) < 0 {
            return false;
        }
        // SAFETY: as above.
        let (seen, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                expected,
                current,
                seq.wrapping_add(1) as u64,
            )
        };
        if swapped {
            return true;
        }
        current = seen;
        tries += 1;
    }
    false
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
fn check_inner_and_ecn<F: Frame>(
    ctx: &F,
    off: usize,
    inner: Inner,
    outer_tos: u8,
) -> Result<(), u32> {
    match inner {
        Inner::V4 => {
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
                    ip.check = wire::csum_fold(sum).to_be_bytes();
                }
            }
        }
        Inner::V6 => {
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

/// Removes `strip` bytes after the Ethernet header, rewrites the Ethernet
/// header for the inner protocol and tags the frame for delivery.
#[inline(always)]
fn strip_outer(
    ctx: &XdpContext,
    strip: usize,
    inner: Inner,
    target: &DecapTarget,
) -> Result<(), ()> {
    // Both MAC addresses, as halfwords.
    let addresses: [u16; 6] = read_at(ctx, 0)?;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, strip as i32) } != 0 {
        return Err(());
    }
    let ether_type = match inner {
        Inner::V4 => wire::ETH_P_IP,
        Inner::V6 => wire::ETH_P_IPV6,
    };
    let eth: *mut EthWords = ptr_at_mut(ctx, 0)?;
    // SAFETY: bounds re-checked after adjust_head; aligned as read_at says.
    unsafe {
        eth.write(EthWords {
            addresses,
            ether_type: ether_type.to_be(),
        })
    };

    tag(ctx, XDP_META_MAGIC, target)
}

/// Puts `magic` and what the decapsulation index said for the frame in
/// front of it, for the tc program.
#[inline(always)]
fn tag(ctx: &XdpContext, magic: u32, target: &DecapTarget) -> Result<(), ()> {
    let meta_len = core::mem::size_of::<XdpMeta>() as i32;
    // SAFETY: helper call on our own context.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -meta_len) } != 0 {
        return Err(());
    }
    let meta = ctx.metadata();
    if meta + meta_len as usize > ctx.data() {
        return Err(());
    }
    // SAFETY: bounds checked against data, which ends the metadata area.
    unsafe {
        *(meta as *mut XdpMeta) = XdpMeta {
            magic,
            ifindex: target.ifindex,
            flags: target.flags,
            stats_slot: target.stats_slot,
            port: target.port,
        };
    }
    Ok(())
}
