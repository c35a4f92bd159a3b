//! Internet checksums over packet bytes, for GRE `csum`.
//!
//! Sums are 32-bit one's complement accumulators of big-endian 16-bit words,
//! folded only at the end, like the ones in `tunnel_common::wire`.

use aya_ebpf::helpers::generated::bpf_csum_diff;
use tunnel_common::wire;

use crate::parse::Frame;

/// Bytes summed per helper call.
pub const CHUNK: usize = 64;
/// The longest range summed byte by byte: a jumbo frame.
const MAX_CHUNKS: usize = 9216 / CHUNK;

/// Adds `b` to the accumulator `a` without losing carries.
#[inline(always)]
pub fn add(a: u32, b: u32) -> u32 {
    let (sum, carry) = a.overflowing_add(b);
    sum + carry as u32
}

/// Folds an accumulator to 16 bits, without complementing it (0xffff for
/// data that checks out).
#[inline(always)]
pub fn fold_without_complement(sum: u32) -> u16 {
    !wire::fold_and_complement(sum)
}

/// Sum of `len` packet bytes from `off`, or None when they are not all there
/// or longer than a jumbo frame. Whole chunks first, each a constant-size
/// load, so the verifier walks a short loop body; then the rest.
#[inline(always)]
pub fn sum_bytes<F: Frame>(ctx: &F, off: usize, len: usize) -> Option<u32> {
    // Filled by the load helper before each use; not zeroed first, since
    // zeroing costs a byte-by-byte memset loop in BPF.
    let mut buf = core::mem::MaybeUninit::<[u64; CHUNK / 8]>::uninit();
    let buf = buf.as_mut_ptr() as *mut u8;
    let chunks = len / CHUNK;
    if chunks > MAX_CHUNKS {
        return None;
    }
    // bpf_csum_diff sums host-order words; swapped back at the end.
    let mut acc: u32 = 0;
    let mut i = 0;
    while i < MAX_CHUNKS {
        if i >= chunks {
            break;
        }
        if !ctx.load(off + i * CHUNK, buf, CHUNK) {
            return None;
        }
        acc = csum_diff(buf, CHUNK, acc)?;
        i += 1;
    }
    let done = chunks * CHUNK;
    let rest = len - done;
    let whole = rest & !3;
    if whole > 0 {
        // Written so that the verifier sees a length in 1..=CHUNK.
        let load_len = ((whole - 1) & (CHUNK - 1)) + 1;
        if !ctx.load(off + done, buf, load_len) {
            return None;
        }
        acc = csum_diff(buf, load_len & !3, acc)?;
    }
    // The last 1-3 bytes, which bpf_csum_diff cannot take; `whole` is a
    // multiple of 4, so they start on a word.
    let mut tail_sum = 0;
    let tail = rest & 3;
    if tail > 0 {
        let mut last = [0u8; 4];
        let load_len = ((tail - 1) & 3) + 1;
        if !ctx.load(off + done + whole, last.as_mut_ptr(), load_len) {
            return None;
        }
        tail_sum = sum_array(&last);
    }
    Some(add(
        fold_without_complement(acc).swap_bytes() as u32,
        tail_sum,
    ))
}

/// Adds `len` bytes of `buf` to the host-order accumulator `acc`. `buf`
/// holds at least `len` bytes the load helper wrote, and `len` <= CHUNK.
#[inline(always)]
fn csum_diff(buf: *mut u8, len: usize, acc: u32) -> Option<u32> {
    // SAFETY: as above; the helper only reads `len` bytes.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, buf as *mut u32, len as u32, acc) };
    (r >= 0).then_some(r as u32)
}

/// `N` packet bytes from `off`, copied into an array the helper fills (left
/// unzeroed: zeroing it first costs a byte-by-byte memset loop in BPF).
#[inline(always)]
fn load_array<F: Frame, const N: usize>(ctx: &F, off: usize) -> Option<[u8; N]> {
    let mut bytes = core::mem::MaybeUninit::<[u8; N]>::uninit();
    if !ctx.load(off, bytes.as_mut_ptr() as *mut u8, N) {
        return None;
    }
    // SAFETY: the helper wrote all N bytes.
    Some(unsafe { bytes.assume_init() })
}

/// Sum of a byte array read from the packet.
#[inline(always)]
pub fn sum_array<const N: usize>(bytes: &[u8; N]) -> u32 {
    let mut sum = 0u32;
    let mut i = 0;
    while i + 1 < N {
        sum += u16::from_be_bytes([bytes[i], bytes[i + 1]]) as u32;
        i += 2;
    }
    sum
}

/// What the inner packet's transport checksum implies about its bytes.
pub struct InnerSum {
    /// Sum of the whole inner packet once its transport checksum is final.
    pub sum: u32,
    /// Offset (from the inner header) of the transport checksum field.
    pub check_off: usize,
    /// The value that field holds while the checksum is still left to the
    /// NIC (CHECKSUM_PARTIAL): the folded pseudo-header sum. None for ICMP,
    /// which is always checksummed in software.
    pub partial: Option<u16>,
}

/// The sum of an inner packet at `off`, worked out from its headers alone:
/// a valid TCP, UDP or ICMPv6 checksum makes the transport bytes sum to the
/// complement of the pseudo-header, and a valid ICMP (or IPv4 header)
/// checksum makes them sum to zero. This is how the kernel checksums the
/// GRE of a packet whose own checksum the NIC has not filled in yet (local
/// checksum offload). None for anything else: fragments, IPv6 extension
/// headers, other protocols, UDP without a checksum.
#[inline(always)]
pub fn inner_sum<F: Frame>(ctx: &F, off: usize, v6: bool) -> Option<InnerSum> {
    let (pseudo, hdr_sum, l4_off, proto) = if v6 {
        let ip: [u8; wire::IPV6_HDR_LEN] = load_array(ctx, off)?;
        let proto = ip[6];
        let payload = u16::from_be_bytes([ip[4], ip[5]]) as u32;
        let mut addrs = [0u8; 32];
        addrs.copy_from_slice(&ip[8..40]);
        let pseudo = sum_array(&addrs) + payload + proto as u32;
        (pseudo, sum_array(&ip), wire::IPV6_HDR_LEN, proto)
    } else {
        let ip: [u8; wire::IPV4_HDR_LEN] = load_array(ctx, off)?;
        let ihl = ((ip[0] & 0x0F) as usize) * 4;
        let frag = u16::from_be_bytes([ip[6], ip[7]]);
        if ihl < wire::IPV4_HDR_LEN || frag & (wire::IP_MF | wire::IP_OFFSET) != 0 {
            return None;
        }
        let tot_len = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let l4_len = tot_len.checked_sub(ihl)? as u32;
        let proto = ip[9];
        let mut addrs = [0u8; 8];
        addrs.copy_from_slice(&ip[12..20]);
        // A valid header (options included) sums to 0xffff.
        (
            sum_array(&addrs) + l4_len + proto as u32,
            0xFFFF,
            ihl,
            proto,
        )
    };
    let check_off = match proto {
        wire::IPPROTO_TCP => l4_off + 16,
        wire::IPPROTO_UDP | wire::IPPROTO_ICMPV6 => l4_off + 6,
        wire::IPPROTO_ICMP if !v6 => {
            return Some(InnerSum {
                sum: add(hdr_sum, 0xFFFF),
                check_off: l4_off + 2,
                partial: None,
            })
        }
        _ => return None,
    };
    if proto == wire::IPPROTO_UDP {
        let mut check = [0u8; 2];
        if !ctx.load(off + check_off, check.as_mut_ptr(), 2) || check == [0, 0] {
            return None;
        }
    }
    let partial = fold_without_complement(pseudo);
    Some(InnerSum {
        sum: add(hdr_sum, !partial as u32),
        check_off,
        partial: Some(partial),
    })
}
