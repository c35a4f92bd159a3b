//! Ethernet over GRE (`gretap`, transparent Ethernet bridging): what
//! differs from an IP tunnel. The whole frame travels behind a GRE header
//! with protocol type `ETH_P_TEB`, and arrives with its own Ethernet header.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_ENCAP_L2_MASK,
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L4_GRE,
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_INGRESS,
    },
    helpers::generated::{bpf_redirect, bpf_skb_change_head},
    programs::TcContext,
};
use tunnel_common::{stats::*, wire};

use crate::{
    classify::Matched,
    parse::{read_at, write_at, Frame},
};

/// An Ethernet header as halfwords.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EthWords {
    pub addresses: [u16; 6],
    pub ether_type: u16,
}

/// The Ethernet header a decapsulated frame starts with, read before the
/// outer headers go: a gretap frame's own, or for an IP packet the outer
/// addresses with the inner family's EtherType.
#[inline(always)]
pub fn decapsulated_header<F: Frame>(ctx: &F, m: &Matched) -> Result<EthWords, ()> {
    if m.teb {
        // `strip` ends with the inner Ethernet header. Copied by the load
        // helper: the offset is the packet's, unbounded for the verifier.
        let mut header = EthWords {
            addresses: [0; 6],
            ether_type: 0,
        };
        let dst = &raw mut header as *mut u8;
        if !ctx.load(m.strip, dst, wire::ETH_HDR_LEN) {
            return Err(());
        }
        return Ok(header);
    }
    let addresses: [u16; 6] = read_at(ctx, 0)?;
    Ok(EthWords {
        addresses,
        ether_type: m.inner.ether_type().to_be(),
    })
}

/// Marks a frame encapsulated here (outer IPv4) and sent back into its
/// port's ingress (`Room::Prepended`): its second pass only routes it.
/// tc_index is free for this since the kernel dropped dsmark and tcindex
/// (6.3).
pub const REENTRY_TC_INDEX: u32 = 0x6558;

/// How a frame got room for its outer headers.
#[derive(PartialEq, Eq)]
pub enum Room {
    /// An IP packet: bpf_skb_adjust_room inserted it after the Ethernet
    /// header, which was copied behind it, and recorded the encapsulation
    /// (L2 in GRE) for GSO.
    Adjusted,
    /// Anything else (ARP): adjust_room takes only IP, so the headers go in
    /// front of the whole frame. skb->protocol still names the inner
    /// protocol, which bpf_redirect_neigh refuses: see `send_prepended`.
    Prepended,
}

/// Makes `overhead` bytes of room for the outer Ethernet, IP (`outer_l3`:
/// `BPF_F_ADJ_ROOM_ENCAP_L3_IPV4` or `_IPV6`) and GRE headers in front of
/// the frame, `ip` or not (as skb->protocol says: what adjust_room goes
/// by).
#[inline(always)]
pub fn make_room(ctx: &TcContext, overhead: usize, ip: bool, outer_l3: u32) -> Result<Room, u32> {
    if ip {
        let frame_header: EthWords = read_at(ctx, 0).map_err(|_| TX_BAD_INNER)?;
        let inner_l2 = ((wire::ETH_HDR_LEN as u64) & BPF_ADJ_ROOM_ENCAP_L2_MASK as u64)
            << BPF_ADJ_ROOM_ENCAP_L2_SHIFT;
        let flags = (BPF_F_ADJ_ROOM_FIXED_GSO
            | outer_l3
            | BPF_F_ADJ_ROOM_ENCAP_L4_GRE
            | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
            | inner_l2;
        ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
            .map_err(|_| TX_NO_BUFS)?;
        // The inner Ethernet header ends the new room.
        write_at(ctx, overhead, frame_header).map_err(|_| TX_NO_BUFS)?;
        return Ok(Room::Adjusted);
    }
    // Never a GSO packet: the kernel segments only TCP, UDP and SCTP
    // over IP.
    // SAFETY: helper call on our own skb.
    if unsafe { bpf_skb_change_head(ctx.skb.skb, overhead as u32, 0) } != 0 {
        return Err(TX_NO_BUFS);
    }
    Ok(Room::Prepended)
}

/// Sends a `Room::Prepended` packet, now an IPv4 packet in an Ethernet
/// frame, back into the ingress of the port it came from: receiving it
/// sets skb->protocol from its EtherType, and the second pass (which
/// finds `mark` in tc_index) routes it like any other.
#[inline(always)]
pub fn send_prepended(ctx: &TcContext, port: u32, mark: u32) -> i32 {
    // SAFETY: tc_index is writable from tc programs.
    unsafe { (*ctx.skb.skb).tc_index = mark };
    // SAFETY: plain helper call.
    (unsafe { bpf_redirect(port, BPF_F_INGRESS as u64) }) as i32
}

/// Is this a packet `send_prepended` sent back? Clears the mark.
#[inline(always)]
pub fn is_reentry(ctx: &TcContext) -> bool {
    // SAFETY: reading and writing fields tc programs may access.
    unsafe {
        let skb = ctx.skb.skb;
        if (*skb).tc_index != REENTRY_TC_INDEX || (*skb).protocol != wire::ETH_P_IP.to_be() as u32 {
            return false;
        }
        (*skb).tc_index = 0;
    }
    true
}
