//! GRE (RFC 2784, with RFC 2890's key and sequence number): the one parser
//! of a received header, the one builder of a sent one, the header's part
//! of the checksum both use, and the tunnel's sequence numbers.

use core::intrinsics::{atomic_cxchg, AtomicOrdering};

use tunnel_common::{
    stats::*,
    wire::{self, Family, GreError, GreHdr},
};

use crate::{
    csum,
    maps::SEQ,
    parse::{ptr_at, read_at, write_at, Frame},
};

/// A GRE header's fields: what a received one says, or what to send.
pub struct Gre {
    /// Flags and version (host order); says which options follow.
    pub flags: u16,
    /// The payload, as the protocol type announces it (unused for an
    /// Ethernet frame).
    pub family: Family,
    /// The payload is an Ethernet frame (`ETH_P_TEB`, gretap).
    pub teb: bool,
    /// Key, network order (the memory image of the wire word); 0 without
    /// `GRE_KEY`. Plain words rather than options: an option's unset
    /// payload, spilled to the stack, is a read the verifier refuses.
    pub key: u32,
    /// Sequence number, host order; 0 without `GRE_SEQ`.
    pub seq: u32,
}

impl Gre {
    #[inline(always)]
    pub fn key(&self) -> Option<u32> {
        (self.flags & wire::GRE_KEY != 0).then_some(self.key)
    }

    #[inline(always)]
    pub fn seq(&self) -> Option<u32> {
        (self.flags & wire::GRE_SEQ != 0).then_some(self.seq)
    }

    /// The header's length on the wire, options included.
    #[inline(always)]
    pub fn len(&self) -> usize {
        wire::gre_header_len(self.flags)
    }

    /// The protocol type word (host order).
    #[inline(always)]
    pub fn protocol(&self) -> u16 {
        if self.teb {
            wire::ETH_P_TEB
        } else {
            self.family.ether_type()
        }
    }

    /// One's complement sum of the header's words, with `check` in its
    /// checksum word (0 while it is being computed).
    #[inline(always)]
    fn sum(&self, check: u16) -> u32 {
        let mut sum = self.flags as u32 + self.protocol() as u32 + check as u32;
        if let Some(key) = self.key() {
            sum += csum::sum_array(&key.to_ne_bytes());
        }
        if let Some(seq) = self.seq() {
            sum += csum::sum_array(&seq.to_be_bytes());
        }
        sum
    }
}

/// Validates the GRE header at `off`.
#[inline(always)]
pub fn parse<F: Frame>(ctx: &F, off: usize) -> Result<Gre, u32> {
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
        word(wire::gre_key_offset(flags))?
    } else {
        0
    };
    let seq = if flags & wire::GRE_SEQ != 0 {
        u32::from_be(word(wire::gre_seq_offset(flags))?)
    } else {
        0
    };
    let teb = gre.protocol() == wire::ETH_P_TEB;
    let family = match Family::from_ether_type(gre.protocol()) {
        Some(family) => family,
        None if teb => Family::V4,
        None => return Err(RX_BAD_PAYLOAD),
    };
    Ok(Gre {
        flags,
        family,
        teb,
        key,
        seq,
    })
}

/// Verifies the checksum of the GRE header `gre` at `l4`, over
/// `[l4, ip_end)`. A packet from this host whose inner transport checksum
/// is still left to the NIC (its field holds the pseudo-header sum) was
/// checksummed as if it were filled in, as the kernel's local checksum
/// offload does; with `guess_offload`, that form is accepted only if
/// everything else adds up.
#[inline(always)]
pub fn checksum_ok<F: Frame>(
    ctx: &F,
    l4: usize,
    ip_end: usize,
    gre: &Gre,
    guess_offload: bool,
) -> bool {
    let Some(len) = ip_end.checked_sub(l4) else {
        return false;
    };
    if csum::sum_bytes(ctx, l4, len).is_some_and(|s| csum::fold_without_complement(s) == 0xFFFF) {
        return true;
    }
    // The guess knows where an inner IP packet starts, not a frame.
    if !guess_offload || gre.teb {
        return false;
    }
    let inner_off = l4 + gre.len();
    let Some(expected) = csum::inner_sum(ctx, inner_off, gre.family == Family::V6) else {
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
    let Ok(check) = ptr_at::<[u8; 2], F>(ctx, l4 + wire::GRE_BASE_LEN) else {
        return false;
    };
    // SAFETY: bounds checked.
    let header = gre.sum(u16::from_be_bytes(unsafe { *check }));
    csum::fold_without_complement(csum::add(header, expected.sum)) == 0xFFFF
}

/// Writes `gre` at `off`, in headers just pushed (linear). With the C bit,
/// its checksum covers the header and the inner packet, whose sum is
/// `inner_sum`.
#[inline(always)]
pub fn write<F: Frame>(ctx: &F, off: usize, gre: &Gre, inner_sum: u32) -> Result<(), ()> {
    write_at(ctx, off, GreHdr::new(gre.flags, gre.protocol()))?;
    if let Some(key) = gre.key() {
        let at = off + wire::gre_key_offset(gre.flags);
        write_at(ctx, at, wire::split_words(key))?;
    }
    if let Some(seq) = gre.seq() {
        let at = off + wire::gre_seq_offset(gre.flags);
        write_at(ctx, at, wire::split_words(seq.to_be()))?;
    }
    if gre.flags & wire::GRE_CSUM != 0 {
        let check = wire::fold_and_complement(csum::add(gre.sum(0), inner_sum));
        // The checksum word, then the reserved word (zero).
        write_at(ctx, off + wire::GRE_BASE_LEN, [check.to_be(), 0u16])?;
    }
    Ok(())
}

/// `iseq`: accepts `seq` unless it is missing or older than the next one
/// expected by `tunnel`, then expects the one after it.
#[inline(always)]
pub fn sequence_ok(tunnel: u32, seq: Option<u32>) -> bool {
    let Some(seq) = seq else {
        return false;
    };
    let Some(state) = SEQ.get_ptr_mut(tunnel) else {
        return false;
    };
    // SAFETY: a pointer into the map value, which lives as long as the map.
    let expected = unsafe { &raw mut (*state).i_seq };
    let accepted = swap_sequence::<8>(expected, |current| {
        let older = current != 0 && (seq.wrapping_sub(current as u32) as i32) < 0;
        (!older).then_some(seq.wrapping_add(1) as u64)
    });
    accepted.is_some()
}

/// `oseq`: takes `tunnel`'s next output sequence number.
#[inline(always)]
pub fn next_sequence(tunnel: u32) -> Option<u32> {
    let state = SEQ.get_ptr_mut(tunnel)?;
    // SAFETY: a pointer into the map value, which lives as long as the map.
    let next = unsafe { &raw mut (*state).o_seq };
    let taken = swap_sequence::<16>(
        next,
        |current| Some((current as u32).wrapping_add(1) as u64),
    );
    taken.map(|current| current as u32)
}

/// Replaces the sequence word at `word` with what `update` makes of it, by
/// compare-and-swap: several CPUs may race here, and LLVM's BPF backend
/// emits fetch-and-add without its fetch. `update` returning None leaves
/// the word alone; after `TRIES` lost races, give up. Returns the value
/// replaced.
#[inline(always)]
fn swap_sequence<const TRIES: usize>(
    word: *mut u64,
    update: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    // SAFETY: every CPU updates the word only through atomics (a plain
    // aligned load cannot tear).
    let mut current = unsafe { core::ptr::read_volatile(word) };
    let mut tries = 0;
    while tries < TRIES {
        let new = update(current)?;
        // SAFETY: as above.
        let (seen, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::Relaxed }, { AtomicOrdering::Relaxed }>(
                word, current, new,
            )
        };
        if swapped {
            return Some(current);
        }
        current = seen;
        tries += 1;
    }
    None
}
