//! Outer IPv4 fragments of GRE, IPIP and SIT packets, and outer IPv6
//! fragments of ip6gre and ip6tnl packets, put back together before
//! decapsulation, as the kernel's `ip_defrag` (`ipv6_frag_rcv`) does before
//! `ip_gre` (`ip6_gre`, `ip6_tunnel`).
//! Without it, a tunnel packet fragmented on a narrow path would be
//! reassembled by the kernel into a datagram that no protocol handler here
//! receives.
//!
//! `xtun_defrag` is its own tc program, a filter on each underlay's ingress
//! just before the data plane's: the verifier walks it apart from
//! decapsulation. Unfragmented packets leave it at once. A fragment is
//! copied into a slot of `XTUN_FRAGS` and consumed; the fragment that
//! completes its datagram is rewritten into the whole datagram and goes on
//! to the next filter, which decapsulates it (on an XDP underlay, XDP tags
//! tunnel fragments so that tc decapsulates what comes of them).
//!
//! As the kernel's `ip_frag_queue`: fragments in any order, duplicates
//! dropped, an overlap discards the whole datagram, a set incomplete after
//! 30 s (`ipfrag_time`) is given up, and memory is bounded (a fixed array
//! of slots; a live set is never evicted for a newer one, except a set no
//! first fragment has vouched for yet, which a vouched-for one may take).
//! A set may only start with a first fragment whose headers match a
//! configured tunnel (or with a later fragment, provisionally), so spoofed
//! first fragments are the kernel's business, not ours.

use core::intrinsics::{atomic_cxchg, atomic_or, atomic_xadd, AtomicOrdering};

use aya_ebpf::{
    bindings::{BPF_CSUM_LEVEL_RESET, TC_ACT_SHOT, TC_ACT_STOLEN, TC_ACT_UNSPEC},
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_csum_level, bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_store_bytes},
    },
    macros::{classifier, map},
    maps::Array,
    programs::TcContext,
};
use network_types::eth::EthHdr;
use tunnel_common::{
    maps::DecapKey,
    stats::{
        RX_FRAG_DUPLICATE, RX_FRAG_QUEUED, RX_REASM_REFUSED, RX_REASM_TIMEOUT, RX_REASSEMBLED,
    },
    wire::{self, Ipv4Words},
};

use crate::{classify, decap6, encap6::NEXTHDR_DEST, gre, maps, parse::read_at};

/// Datagrams being reassembled at once, across all underlays.
const FRAG_SLOTS: u32 = 64;
/// Payload bytes a slot holds; a power of two, for the verifier's bounds.
const SLOT_BYTES: usize = 16384;
/// The largest payload put back together: an skb at tc ingress grows to
/// at most `SKB_MAX_ALLOC` (16 KiB less its shared info), headers included.
const REASM_MAX: usize = 16000;
/// 8-byte fragment blocks, one bit each.
const BITMAP_WORDS: usize = SLOT_BYTES / 8 / 64;
/// The kernel's `ipfrag_time`.
const FRAG_TIMEOUT_NS: u64 = 30_000_000_000;
/// Slots a datagram may use, from its hash on.
const PROBES: u32 = 4;
/// Added to a set's balance until its last fragment tells its length; far
/// above any payload, so the balance is zero only once every byte is in.
const UNKNOWN_LENGTH: u64 = 1 << 32;

/// One datagram being put back together.
#[repr(C)]
pub struct FragSet {
    /// When its first fragment arrived (`bpf_ktime_get_ns`); 0: free.
    started_ns: u64,
    /// Bytes copied in minus its length (or plus `UNKNOWN_LENGTH`):
    /// whoever brings it to zero completes the datagram.
    balance: u64,
    /// The datagram's addresses (IPv4's in the first word, the rest 0).
    src: [u32; 4],
    dst: [u32; 4],
    id: u32,
    proto: u8,
    /// 1 once the first fragment matched a configured tunnel.
    vouched: u8,
    /// 4 or 6.
    version: u8,
    _pad0: u8,
    /// Payload length, from the last fragment; 0 until then.
    len: u32,
    /// The first fragment's IP header: IPv4's 20 bytes or IPv6's 40.
    header: [u16; HEADER_WORDS],
    _pad: [u8; 4],
    /// Which 8-byte blocks of the payload are in.
    blocks: [u64; BITMAP_WORDS],
    /// Twice `SLOT_BYTES`, so that a copy at any masked offset of any
    /// length up to `SLOT_BYTES` stays inside the value for the verifier.
    data: [u8; 2 * SLOT_BYTES],
}

#[map(name = "XTUN_FRAGS")]
static FRAGS: Array<FragSet> = Array::with_max_entries(FRAG_SLOTS, 0);

#[classifier]
pub fn xtun_defrag(ctx: TcContext) -> i32 {
    match try_defrag(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            maps::count(ingress_ifindex(&ctx), reason);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel gave us.
    unsafe { (*ctx.skb.skb).ifindex }
}

/// Words of the longest IP header kept: IPv6's.
const HEADER_WORDS: usize = wire::IPV6_HDR_LEN / 2;
/// IPv6's fragment header.
const NEXTHDR_FRAGMENT: u8 = 44;
const FRAG_HDR_LEN: usize = 8;

/// What one fragment says about its datagram.
struct Fragment {
    /// 4 or 6.
    version: u8,
    src: [u32; 4],
    dst: [u32; 4],
    id: u32,
    /// What the datagram carries (IPv6: the fragment header's next header).
    proto: u8,
    /// Where its payload starts in the packet.
    payload_at: usize,
    /// Payload bytes from `offset`, a multiple of 8 unless `last`.
    offset: usize,
    len: usize,
    last: bool,
}

/// `Ok(TC_ACT_UNSPEC)` lets the packet on to the next filter: anything
/// that is not a tunnel fragment, or a datagram just completed.
#[inline(always)]
fn try_defrag(ctx: &TcContext) -> Result<i32, u32> {
    let frag = match tunnel_fragment(ctx) {
        Some(frag) => frag,
        None => match tunnel_fragment6(ctx) {
            Some(frag) => frag,
            None => return Ok(TC_ACT_UNSPEC),
        },
    };
    let vouched = if frag.offset == 0 {
        if !first_fragment_is_ours(ctx, &frag) {
            return Ok(TC_ACT_UNSPEC);
        }
        true
    } else {
        false
    };
    let end = frag.offset + frag.len;
    if end > REASM_MAX || frag.len == 0 {
        return Err(RX_REASM_REFUSED);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let set = find_set(ctx, &frag, vouched, now)?;
    // SAFETY (this block and below): `set` is a map value, valid while the
    // program runs; fields other CPUs may write are only touched atomically
    // or written whole.
    unsafe {
        if frag.last {
            let len = end as u32;
            let (seen, _) = atomic_cxchg::<_, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &raw mut (*set).len,
                0,
                len,
            );
            if seen != 0 && seen != len {
                return Err(discard(set));
            }
        }
        match claim_blocks(set, frag.offset, end) {
            Claim::New => {}
            Claim::Duplicate => return Err(RX_FRAG_DUPLICATE),
            Claim::Overlap => return Err(discard(set)),
        }
        if frag.offset == 0 {
            // The first fragment's IP header, straight into the slot.
            let header = (*set).header.as_mut_ptr() as *mut _;
            let header_len = if frag.version == 6 {
                wire::IPV6_HDR_LEN
            } else {
                wire::IPV4_HDR_LEN
            };
            let skb = ctx.skb.skb as *const _;
            if bpf_skb_load_bytes(skb, EthHdr::LEN as u32, header, header_len as u32) != 0 {
                return Err(discard(set));
            }
            (*set).vouched = 1;
        }
        // Bounds the verifier can see: it does not follow `end`'s check
        // to `offset` and `len`, and the compiler would drop these as
        // redundant if it could see through them.
        let offset = opaque(frag.offset) & (SLOT_BYTES - 1);
        let copy = opaque(frag.len);
        if copy == 0 || copy > SLOT_BYTES {
            return Err(discard(set));
        }
        let at = (*set).data.as_mut_ptr().add(offset);
        let payload = frag.payload_at as u32;
        if bpf_skb_load_bytes(ctx.skb.skb as *const _, payload, at as *mut _, copy as u32) != 0 {
            return Err(discard(set));
        }
        let mut delta = frag.len as u64;
        if frag.last {
            delta = delta.wrapping_sub(end as u64).wrapping_sub(UNKNOWN_LENGTH);
        }
        let before =
            atomic_xadd::<_, _, { AtomicOrdering::SeqCst }>(&raw mut (*set).balance, delta);
        if before.wrapping_add(delta) != 0 {
            maps::count(ingress_ifindex(ctx), RX_FRAG_QUEUED);
            return Ok(TC_ACT_STOLEN);
        }
        rebuild(ctx, set)?;
    }
    maps::count(ingress_ifindex(ctx), RX_REASSEMBLED);
    Ok(TC_ACT_UNSPEC)
}

/// The fragment's fields, if it is an outer IPv4 fragment of a tunnel
/// protocol that can be reassembled here: no options, a good header sum.
#[inline(always)]
fn tunnel_fragment(ctx: &TcContext) -> Option<Fragment> {
    let ethertype: u16 = read_at(ctx, 12).ok()?;
    if ethertype != wire::ETH_P_IP.to_be() {
        return None;
    }
    let header: Ipv4Words = read_at(ctx, EthHdr::LEN).ok()?;
    let frag = header.frag();
    if frag & (wire::IP_MF | wire::IP_OFFSET) == 0 {
        return None;
    }
    let proto = header.proto();
    if proto != wire::IPPROTO_GRE && proto != wire::IPPROTO_IPIP && proto != wire::IPPROTO_IPV6 {
        return None;
    }
    // Options, a bad sum or a length past the packet: the kernel's to drop.
    if header.version() != 4 || header.header_len() != wire::IPV4_HDR_LEN {
        return None;
    }
    if wire::fold_and_complement(header.sum()) != 0 {
        return None;
    }
    let tot_len = header.tot_len() as usize;
    if tot_len < wire::IPV4_HDR_LEN || EthHdr::LEN + tot_len > ctx.len() as usize {
        return None;
    }
    let last = frag & wire::IP_MF == 0;
    let mut len = tot_len - wire::IPV4_HDR_LEN;
    if !last {
        // As the kernel: a fragment with more to come ends on a block.
        len &= !7;
    }
    Some(Fragment {
        version: 4,
        src: [header.src(), 0, 0, 0],
        dst: [header.dst(), 0, 0, 0],
        id: header.0[2] as u32,
        proto,
        payload_at: EthHdr::LEN + wire::IPV4_HDR_LEN,
        offset: (frag & wire::IP_OFFSET) as usize * 8,
        len,
        last,
    })
}

/// The same for an outer IPv6 fragment: its fragment header right after
/// the IPv6 header (where the kernel's tunnels and routers put it), of a
/// datagram that starts with the destination options or a tunnel
/// protocol. A fragment with more to come whose length is not a multiple
/// of 8 is the kernel's to refuse.
#[inline(always)]
fn tunnel_fragment6(ctx: &TcContext) -> Option<Fragment> {
    let ethertype: u16 = read_at(ctx, 12).ok()?;
    if ethertype != wire::ETH_P_IPV6.to_be() {
        return None;
    }
    let fixed: [u16; 4] = read_at(ctx, EthHdr::LEN).ok()?;
    let [next, _] = u16::from_be(fixed[3]).to_be_bytes();
    if u16::from_be(fixed[0]) >> 12 != 6 || next != NEXTHDR_FRAGMENT {
        return None;
    }
    let payload_len = u16::from_be(fixed[2]) as usize;
    let frag_at = EthHdr::LEN + wire::IPV6_HDR_LEN;
    if payload_len < FRAG_HDR_LEN || frag_at + payload_len > ctx.len() as usize {
        return None;
    }
    let fh: [u16; 4] = read_at(ctx, frag_at).ok()?;
    let [proto, _] = u16::from_be(fh[0]).to_be_bytes();
    if proto != NEXTHDR_DEST
        && proto != wire::IPPROTO_GRE
        && proto != wire::IPPROTO_IPIP
        && proto != wire::IPPROTO_IPV6
    {
        return None;
    }
    let frag_off = u16::from_be(fh[1]);
    let last = frag_off & 1 == 0;
    let len = payload_len - FRAG_HDR_LEN;
    if !last && !len.is_multiple_of(8) {
        return None;
    }
    Some(Fragment {
        version: 6,
        src: read_at(ctx, EthHdr::LEN + 8).ok()?,
        dst: read_at(ctx, EthHdr::LEN + 24).ok()?,
        id: wire::join_words(fh[2], fh[3]),
        proto,
        payload_at: frag_at + FRAG_HDR_LEN,
        offset: (frag_off & !7) as usize,
        len,
        last,
    })
}

/// Does a first fragment's header (with the GRE key, when there is one)
/// match a configured tunnel? A subprogram, for the lookup keys' stack.
#[inline(never)]
fn first_fragment_is_ours(ctx: &TcContext, frag: &Fragment) -> bool {
    let mut l4 = frag.payload_at;
    let mut proto = frag.proto;
    if frag.version == 6 && proto == NEXTHDR_DEST {
        // The destination options (the encapsulation limit) first.
        let Ok([next, units]) = read_at::<[u8; 2], _>(ctx, l4) else {
            return false;
        };
        proto = next;
        l4 += (units as usize + 1) * 8;
    }
    let key = if proto == wire::IPPROTO_GRE {
        // The GRE header, as much of it as the fragment has, must be linear.
        let headers = l4
            + (frag.payload_at + frag.len)
                .saturating_sub(l4)
                .min(wire::GRE_MAX_LEN);
        if ctx.pull_data(headers as u32).is_err() {
            return false;
        }
        match gre::parse(ctx, l4) {
            Ok(gre) => gre.key(),
            Err(_) => return false,
        }
    } else {
        None
    };
    if frag.version == 6 {
        // SAFETY: the addresses' words hold their bytes in memory order
        // (read from the packet as they are), so their bytes are the
        // addresses.
        let bytes = |a: [u32; 4]| unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(a) };
        return decap6::find_tunnel6(bytes(frag.dst), bytes(frag.src), proto, key).is_some();
    }
    classify::find_tunnel(DecapKey::new(frag.dst[0], frag.src[0], proto, key)).is_some()
}

/// The slot of the fragment's datagram: its own, or a new one taken from a
/// free, expired or (for a vouched-for fragment) unvouched slot.
#[inline(always)]
fn find_set(
    ctx: &TcContext,
    frag: &Fragment,
    vouched: bool,
    now: u64,
) -> Result<*mut FragSet, u32> {
    let (src, dst, id, proto) = (frag.src, frag.dst, frag.id, frag.proto);
    let fold = |a: [u32; 4]| a[0] ^ a[1] ^ a[2] ^ a[3];
    let hash = (fold(src) ^ fold(dst).rotate_left(16) ^ id.rotate_left(8) ^ proto as u32)
        .wrapping_mul(0x9E37_79B1);
    // The slot to take if the datagram has none: a free or expired one
    // first, else (for a vouched-for fragment) an unvouched one. Plain
    // values rather than an Option, whose unset payload the verifier
    // would see read.
    let mut spare: *mut FragSet = core::ptr::null_mut();
    let mut spare_started = 0u64;
    let mut spare_is_free = false;
    let mut i = 0;
    while i < PROBES {
        let index = (hash >> 16).wrapping_add(i) % FRAG_SLOTS;
        i += 1;
        let Some(set) = FRAGS.get_ptr_mut(index) else {
            continue;
        };
        // SAFETY: map value, valid while the program runs.
        let (started, mine, set_vouched) = unsafe {
            (
                core::ptr::read_volatile(&(*set).started_ns),
                (*set).src == src
                    && (*set).dst == dst
                    && (*set).id == id
                    && (*set).proto == proto
                    && (*set).version == frag.version,
                (*set).vouched != 0,
            )
        };
        let expired = started != 0 && now.wrapping_sub(started) > FRAG_TIMEOUT_NS;
        if started != 0 && !expired {
            if mine {
                return Ok(set);
            }
            if vouched && !set_vouched && spare.is_null() {
                spare = set;
                spare_started = started;
            }
            continue;
        }
        if !spare_is_free {
            spare = set;
            spare_started = started;
            spare_is_free = true;
        }
    }
    if spare.is_null() {
        return Err(RX_REASM_REFUSED);
    }
    let (set, started) = (spare, spare_started);
    // SAFETY: as above; the slot is taken by whoever swaps its start time.
    unsafe {
        let (_, won) = atomic_cxchg::<_, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
            &raw mut (*set).started_ns,
            started,
            now,
        );
        if !won {
            return Err(RX_REASM_REFUSED);
        }
        if started != 0 {
            // An incomplete datagram given up: timed out, or unvouched
            // and in the way of one a first fragment vouched for.
            maps::count(ingress_ifindex(ctx), RX_REASM_TIMEOUT);
        }
        (*set).src = src;
        (*set).dst = dst;
        (*set).id = id;
        (*set).proto = proto;
        (*set).version = frag.version;
        (*set).vouched = 0;
        (*set).len = 0;
        (*set).balance = UNKNOWN_LENGTH;
        let mut w = 0;
        while w < BITMAP_WORDS {
            (*set).blocks[w] = 0;
            w += 1;
        }
    }
    Ok(set)
}

enum Claim {
    New,
    Duplicate,
    Overlap,
}

/// Marks the blocks of `[start, end)` as in. All of them in already: a
/// duplicate; some: an overlap (RFC 5722's rule, which the kernel applies
/// to IPv4 too).
///
/// # Safety
/// `set` is a map value.
#[inline(always)]
unsafe fn claim_blocks(set: *mut FragSet, start: usize, end: usize) -> Claim {
    let (first, last) = (start / 8, end.div_ceil(8));
    // Accumulated without a branch per word: the verifier then walks the
    // loop once per word rather than once per combination of outcomes.
    let (mut fresh, mut seen) = (0u64, 0u64);
    let mut w = 0;
    while w < BITMAP_WORDS {
        let mask = range_mask(w, first, last);
        // SAFETY: per the contract; other CPUs set bits atomically too.
        let before = unsafe {
            atomic_or::<_, _, { AtomicOrdering::SeqCst }>(&raw mut (*set).blocks[w], mask)
        };
        fresh |= !before & mask;
        seen |= before & mask;
        w += 1;
    }
    match (fresh != 0, seen != 0) {
        (true, false) => Claim::New,
        (false, _) => Claim::Duplicate,
        (true, true) => Claim::Overlap,
    }
}

/// The bits of bitmap word `w` for blocks `[first, last)`.
#[inline(always)]
fn range_mask(w: usize, first: usize, last: usize) -> u64 {
    let lo = w * 64;
    let from = first.saturating_sub(lo).min(64);
    let to = last.saturating_sub(lo).min(64);
    ones(to) & !ones(from)
}

/// The low `n` bits (`n` up to 64) set, without branching on `n`.
#[inline(always)]
fn ones(n: usize) -> u64 {
    let all = 0u64.wrapping_sub((n >> 6) as u64);
    ((1u64 << (n & 63)) - 1) | all
}

/// Does the bitmap hold exactly the blocks of a `len`-byte payload?
///
/// # Safety
/// `set` is a map value.
#[inline(always)]
unsafe fn complete(set: *const FragSet, len: usize) -> bool {
    let blocks = len.div_ceil(8);
    let mut differ = 0u64;
    let mut w = 0;
    while w < BITMAP_WORDS {
        // SAFETY: per the contract.
        differ |= unsafe { (*set).blocks[w] } ^ range_mask(w, 0, blocks);
        w += 1;
    }
    differ == 0
}

/// `value`, as something the compiler cannot reason about.
#[inline(always)]
fn opaque(value: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&value) }
}

/// Gives up a datagram (an overlap, or lengths that disagree).
///
/// # Safety
/// `set` is a map value.
#[inline(always)]
unsafe fn discard(set: *mut FragSet) -> u32 {
    // SAFETY: per the contract.
    unsafe { core::ptr::write_volatile(&raw mut (*set).started_ns, 0) };
    RX_REASM_REFUSED
}

/// Turns the packet that completed its datagram into the whole datagram:
/// the first fragment's header, unfragmented, over every fragment's bytes.
///
/// # Safety
/// `set` is a map value whose datagram this CPU completed.
#[inline(always)]
unsafe fn rebuild(ctx: &TcContext, set: *mut FragSet) -> Result<(), u32> {
    // SAFETY: per the contract; no other CPU writes a completed set.
    unsafe {
        let len = (*set).len as usize;
        if len == 0 || len > REASM_MAX || (*set).vouched == 0 || !complete(set, len) {
            return Err(discard(set));
        }
        let copy = len & (2 * SLOT_BYTES - 1);
        if copy == 0 || copy > SLOT_BYTES {
            return Err(discard(set));
        }
        let mut header = (*set).header;
        // IPv4: its length, no fragment bits, a new sum. IPv6: its payload
        // length, and what the fragment header said comes next in place
        // of the fragment header, which goes.
        let header_len = if (*set).version == 6 {
            header[2] = (len as u16).to_be();
            let [_, hop_limit] = u16::from_be(header[3]).to_be_bytes();
            header[3] = u16::from_be_bytes([(*set).proto, hop_limit]).to_be();
            wire::IPV6_HDR_LEN
        } else {
            let mut v4 = Ipv4Words([0; wire::IPV4_HDR_LEN / 2]);
            v4.0.copy_from_slice(&header[..wire::IPV4_HDR_LEN / 2]);
            v4.0[1] = ((wire::IPV4_HDR_LEN + len) as u16).to_be();
            v4.0[3] = 0;
            v4.0[5] = 0;
            v4.0[5] = wire::ipv4_header_checksum(&v4.0);
            header[..wire::IPV4_HDR_LEN / 2].copy_from_slice(&v4.0);
            wire::IPV4_HDR_LEN
        };
        let skb = ctx.skb.skb;
        let payload = EthHdr::LEN + header_len;
        let ok = bpf_skb_change_tail(skb, (payload + len) as u32, 0) == 0
            && bpf_skb_store_bytes(
                skb as *mut _,
                EthHdr::LEN as u32,
                header.as_ptr() as *const _,
                header_len as u32,
                0,
            ) == 0
            && bpf_skb_store_bytes(
                skb as *mut _,
                payload as u32,
                (*set).data.as_ptr() as *const _,
                copy as u32,
                0,
            ) == 0;
        core::ptr::write_volatile(&raw mut (*set).started_ns, 0);
        if !ok {
            return Err(RX_REASM_REFUSED);
        }
        // The bytes came from several packets: whatever one of them said
        // about its checksum no longer holds for the whole.
        bpf_csum_level(skb, BPF_CSUM_LEVEL_RESET as u64);
    }
    Ok(())
}
