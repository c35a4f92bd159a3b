//! Programs written as raw BPF instructions and maps made by hand, for what
//! must hold exactly what it names and nothing else: the bench's baseline
//! programs, and the stand-in for a data plane of another xtun version.

use std::{
    io,
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
pub const BPF_MAP_TYPE_HASH: u32 = 1;
pub const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `src` of a 64-bit load whose immediate is a map's descriptor.
const BPF_PSEUDO_MAP_FD: u8 = 1;

/// One BPF instruction: opcode, destination and source registers, immediate.
pub const fn insn(opcode: u8, dst: u8, src: u8, imm: i32) -> u64 {
    opcode as u64 | ((dst as u64 | (src as u64) << 4) << 8) | ((imm as u32 as u64) << 32)
}

pub const fn mov64_imm(dst: u8, imm: i32) -> u64 {
    insn(0xb7, dst, 0, imm)
}

pub const fn mov64_reg(dst: u8, src: u8) -> u64 {
    insn(0xbf, dst, src, 0)
}

/// `dst = map`: the two instructions that make a program use `map`.
pub fn ld_map(dst: u8, map: &OwnedFd) -> [u64; 2] {
    use std::os::fd::AsRawFd as _;
    [insn(0x18, dst, BPF_PSEUDO_MAP_FD, map.as_raw_fd()), 0]
}

pub const EXIT: u64 = 0x95;

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

#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// An object name as the kernel keeps it: at most 15 bytes and a NUL.
fn object_name(name: &str) -> [u8; 16] {
    assert!(name.len() < 16, "BPF object names have 15 bytes at most");
    let mut out = [0u8; 16];
    out[..name.len()].copy_from_slice(name.as_bytes());
    out
}

fn bpf<T>(cmd: libc::c_long, attr: &T) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid attribute block of the size passed, whose
    // pointers (instructions, license) outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            std::mem::size_of::<T>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor returned by the kernel, owned by us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Loads `insns` as a program of `prog_type` named `name`.
pub fn load_program(prog_type: u32, name: &str, insns: &[u64]) -> io::Result<OwnedFd> {
    let license = b"GPL\0";
    bpf(
        BPF_PROG_LOAD,
        &ProgLoadAttr {
            prog_type,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: object_name(name),
            ..Default::default()
        },
    )
}

/// Creates a map named `name`.
pub fn create_map(
    map_type: u32,
    name: &str,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<OwnedFd> {
    bpf(
        BPF_MAP_CREATE,
        &MapCreateAttr {
            map_type,
            key_size,
            value_size,
            max_entries,
            map_name: object_name(name),
            ..Default::default()
        },
    )
}

/// One BPF instruction with a 16-bit offset (loads, stores and jumps).
pub const fn insn_off(opcode: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    insn(opcode, dst, src, imm) | ((off as u16 as u64) << 16)
}

/// `dst = value`: the two instructions of a 64-bit immediate load.
pub const fn ld_imm64(dst: u8, value: u64) -> [u64; 2] {
    [
        insn(0x18, dst, 0, value as u32 as i32),
        insn(0, 0, 0, (value >> 32) as u32 as i32),
    ]
}

const BPF_LINK_CREATE: libc::c_long = 28;
/// The attach type of an XDP link.
const BPF_XDP: u32 = 37;

#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}

/// Attaches XDP program `prog` to `ifindex` (of the calling thread's
/// namespace) in the driver's mode; detached when the link is closed.
pub fn attach_xdp(prog: &OwnedFd, ifindex: u32) -> io::Result<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    bpf(
        BPF_LINK_CREATE,
        &LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            target_ifindex: ifindex,
            attach_type: BPF_XDP,
            ..Default::default()
        },
    )
}
