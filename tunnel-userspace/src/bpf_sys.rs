//! The few bpf(2) calls xtun makes itself, each where aya 0.14 has no
//! way to make it. The data plane's own programs run through aya's
//! `TestRun` (`Dataplane::test_run_xdp`/`test_run_tc`).

use std::{io, os::fd::RawFd};

const BPF_PROG_TEST_RUN: libc::c_long = 10;

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The outcome of one BPF_PROG_TEST_RUN.
#[derive(Debug, Clone)]
pub struct TestRun {
    /// The program's return value (the verdict).
    pub retval: u32,
    /// The packet as the program left it.
    pub data: Vec<u8>,
    /// Average run time in nanoseconds, as measured by the kernel.
    pub duration_ns: u32,
}

/// Runs a loaded program over `data` (`repeat` times), optionally with a
/// context (`xdp_md` or `__sk_buff`) as input.
/// Raw: aya runs only programs it loaded, not a bare descriptor.
pub fn prog_test_run(
    prog_fd: RawFd,
    data: &[u8],
    ctx: Option<&[u8]>,
    repeat: u32,
) -> io::Result<TestRun> {
    let mut out = vec![0u8; data.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: data.len() as u32,
        data_size_out: out.len() as u32,
        data_in: data.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat,
        ..Default::default()
    };
    if let Some(ctx) = ctx {
        attr.ctx_size_in = ctx.len() as u32;
        attr.ctx_in = ctx.as_ptr() as u64;
    }
    // SAFETY: attr points at valid buffers that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    out.truncate(attr.data_size_out as usize);
    Ok(TestRun {
        retval: attr.retval,
        data: out,
        duration_ns: attr.duration,
    })
}

const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

fn map_call(cmd: libc::c_long, attr: &mut MapElemAttr) -> io::Result<()> {
    // SAFETY: attr points at buffers sized by the caller for this map.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut MapElemAttr,
            std::mem::size_of::<MapElemAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// BPF_MAP_UPDATE_BATCH: inserts `count` packed keys and values in one
/// call. On error, returns how many went in before it.
/// Raw: aya has no batch map operations.
pub fn map_update_batch(
    map_fd: RawFd,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> Result<(), (usize, io::Error)> {
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count as u32,
        map_fd: map_fd as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: keys and values hold `count` packed entries of the map's sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if rc < 0 {
        return Err((attr.count as usize, io::Error::last_os_error()));
    }
    Ok(())
}

/// Every key of a map, as raw bytes, in the kernel's iteration order.
/// Raw: aya's maps are typed, and `xtun map` walks any map as bytes.
pub fn map_keys(map_fd: RawFd, key_size: usize) -> io::Result<Vec<Vec<u8>>> {
    let mut keys = Vec::new();
    let mut next = vec![0u8; key_size];
    let mut prev: Option<Vec<u8>> = None;
    loop {
        let mut attr = MapElemAttr {
            map_fd: map_fd as u32,
            _pad: 0,
            key: prev.as_ref().map_or(0, |k| k.as_ptr() as u64),
            value_or_next_key: next.as_mut_ptr() as u64,
            flags: 0,
        };
        match map_call(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(()) => {
                keys.push(next.clone());
                prev = Some(next.clone());
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(keys),
            Err(e) => return Err(e),
        }
    }
}

/// One map entry as raw bytes: the key, and one value (or one value per
/// possible CPU for per-CPU maps).
pub type RawEntry = (Vec<u8>, Vec<Vec<u8>>);

/// Every entry of a map as raw bytes.
pub fn map_entries(
    map_fd: RawFd,
    key_size: usize,
    value_size: usize,
    per_cpu: bool,
    cpus: usize,
) -> io::Result<Vec<RawEntry>> {
    let stride = if per_cpu {
        value_size.div_ceil(8) * 8
    } else {
        value_size
    };
    let slots = if per_cpu { cpus } else { 1 };
    let mut out = Vec::new();
    for key in map_keys(map_fd, key_size)? {
        let mut value = vec![0u8; stride * slots];
        let mut attr = MapElemAttr {
            map_fd: map_fd as u32,
            _pad: 0,
            key: key.as_ptr() as u64,
            value_or_next_key: value.as_mut_ptr() as u64,
            flags: 0,
        };
        match map_call(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => {}
            // Deleted between the key walk and the lookup.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(e),
        }
        let values = value
            .chunks(stride)
            .map(|c| c[..value_size].to_vec())
            .collect();
        out.push((key, values));
    }
    Ok(out)
}

const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Loads a program that only returns `retval`: the floor that benchmarks
/// measure the data plane against.
/// Raw: aya loads programs only from an object file.
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

/// One BPF instruction: opcode, destination and source registers, immediate.
const fn insn(opcode: u8, dst: u8, src: u8, imm: i32) -> u64 {
    opcode as u64 | ((dst as u64 | (src as u64) << 4) << 8) | ((imm as u32 as u64) << 32)
}

const fn mov64_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, imm)
}

const fn mov64_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0)
}

const EXIT: u64 = 0x95;

fn load_insns(prog_type: u32, insns: &[u64]) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"xtun_noop");
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: attr points at valid instructions and license for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by us.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Kernel memory charged to a BPF object (the `memlock` line of its fdinfo).
pub fn memlock(fd: RawFd) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::other("no memlock in fdinfo"))
}
