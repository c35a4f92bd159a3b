//! The bench's baseline programs: floors that the data plane's per-packet
//! cost is measured against. They are written as raw instructions so that
//! each holds exactly the helper calls it names and nothing else (no
//! compiler prologue, bounds checks or map lookups), and they live with the
//! bench rather than in the `xtun` library, which never loads them.

use std::{io, os::fd::RawFd};

use xtun_test_support::raw_bpf::{insn, load_program, mov64_imm, mov64_reg, EXIT};
pub use xtun_test_support::raw_bpf::{BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP};

/// Loads a program that only returns `retval`: the floor that benchmarks
/// measure the data plane against.
pub fn load_noop(prog_type: u32, retval: i32) -> io::Result<std::os::fd::OwnedFd> {
    load_insns(prog_type, &[mov64_imm(0, retval), EXIT])
}

/// Helper number of `bpf_xdp_adjust_meta`.
const BPF_FUNC_XDP_ADJUST_META: i32 = 54;

/// Loads an XDP program that calls `bpf_xdp_adjust_meta(ctx, 0)` (which
/// checks its bounds and changes nothing) `calls` times, then passes the
/// frame: against the no-op floor, what one helper call costs here.
pub fn load_xdp_helper_calls(calls: usize) -> io::Result<std::os::fd::OwnedFd> {
    let mut insns = vec![mov64_reg(6, 1)];
    for _ in 0..calls {
        insns.extend([
            mov64_reg(1, 6),
            mov64_imm(2, 0),
            insn(0x85, 0, 0, BPF_FUNC_XDP_ADJUST_META),
        ]);
    }
    insns.extend([mov64_imm(0, 2), EXIT]);
    load_insns(BPF_PROG_TYPE_XDP, &insns)
}

/// Helper number of `bpf_xdp_adjust_head`.
const BPF_FUNC_XDP_ADJUST_HEAD: i32 = 44;

/// Loads an XDP program that makes the two calls every decapsulation in
/// XDP makes and nothing else: `bpf_xdp_adjust_head(ctx, 24)` (a GRE
/// frame's outer headers) and `bpf_xdp_adjust_meta(ctx, -16)` (the tag).
pub fn load_xdp_decap_calls() -> io::Result<std::os::fd::OwnedFd> {
    let insns = [
        mov64_reg(6, 1),
        mov64_reg(1, 6),
        mov64_imm(2, 24),
        insn(0x85, 0, 0, BPF_FUNC_XDP_ADJUST_HEAD),
        mov64_reg(1, 6),
        mov64_imm(
            2,
            -(std::mem::size_of::<tunnel_common::maps::XdpMeta>() as i32),
        ),
        insn(0x85, 0, 0, BPF_FUNC_XDP_ADJUST_META),
        mov64_imm(0, 2),
        EXIT,
    ];
    load_insns(BPF_PROG_TYPE_XDP, &insns)
}

/// Helper numbers of `bpf_skb_adjust_room` and `bpf_redirect_neigh`.
const BPF_FUNC_SKB_ADJUST_ROOM: i32 = 50;
const BPF_FUNC_REDIRECT_NEIGH: i32 = 152;
/// `bpf_skb_adjust_room`'s mode that moves the room in after the MAC header.
const BPF_ADJ_ROOM_MAC: i32 = 1;

/// Loads a tc program that makes the two calls every GRE encapsulation
/// makes and nothing else: `bpf_skb_adjust_room(skb, 24, BPF_ADJ_ROOM_MAC,
/// FIXED_GSO | ENCAP_L3_IPV4 | ENCAP_L4_GRE)`, then
/// `bpf_redirect_neigh(1, NULL, 0, 0)`, whose verdict it returns.
pub fn load_tc_encap_calls() -> io::Result<std::os::fd::OwnedFd> {
    const FLAGS: i32 = 1 | 2 | 8;
    let insns = [
        mov64_reg(6, 1),
        mov64_imm(2, 24),
        mov64_imm(3, BPF_ADJ_ROOM_MAC),
        mov64_imm(4, FLAGS),
        insn(0x85, 0, 0, BPF_FUNC_SKB_ADJUST_ROOM),
        mov64_imm(1, 1),
        mov64_imm(2, 0),
        mov64_imm(3, 0),
        mov64_imm(4, 0),
        insn(0x85, 0, 0, BPF_FUNC_REDIRECT_NEIGH),
        EXIT,
    ];
    load_insns(BPF_PROG_TYPE_SCHED_CLS, &insns)
}

/// Helper number of `bpf_redirect`.
const BPF_FUNC_REDIRECT: i32 = 23;

/// Loads a tc program that makes the two calls every GRE decapsulation in
/// tc makes and nothing else: `bpf_skb_adjust_room(skb, -24,
/// BPF_ADJ_ROOM_MAC, FIXED_GSO | DECAP_L3_IPV4)`, then
/// `bpf_redirect(1, BPF_F_INGRESS)`, whose verdict it returns.
pub fn load_tc_decap_calls() -> io::Result<std::os::fd::OwnedFd> {
    const FLAGS: i32 = 1 | (1 << 7);
    const BPF_F_INGRESS: i32 = 1;
    let insns = [
        mov64_reg(6, 1),
        mov64_imm(2, -24),
        mov64_imm(3, BPF_ADJ_ROOM_MAC),
        mov64_imm(4, FLAGS),
        insn(0x85, 0, 0, BPF_FUNC_SKB_ADJUST_ROOM),
        mov64_imm(1, 1),
        mov64_imm(2, BPF_F_INGRESS),
        insn(0x85, 0, 0, BPF_FUNC_REDIRECT),
        EXIT,
    ];
    load_insns(BPF_PROG_TYPE_SCHED_CLS, &insns)
}

fn load_insns(prog_type: u32, insns: &[u64]) -> io::Result<std::os::fd::OwnedFd> {
    load_program(prog_type, "xtun_noop", insns)
}

/// Kernel memory charged to a BPF object (the `memlock` line of its fdinfo).
pub fn memlock(fd: RawFd) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock in fdinfo"))
}
