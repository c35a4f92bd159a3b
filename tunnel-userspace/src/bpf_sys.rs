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

/// `BPF_PROG_TEST_RUN` flag: run an XDP program over real frames whose
/// `XDP_TX` and `XDP_REDIRECT` really transmit.
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

/// Runs XDP program `prog_fd` `repeat` times in live-frames mode over
/// copies of `frame` received on `ifindex` (of the calling thread's
/// namespace): frames it sends with `XDP_TX` leave by that device (the
/// gateway bench's generator). The program must write the whole frame each
/// run: recycled pages keep what the receivers wrote into them.
pub fn xdp_live_frames(prog_fd: RawFd, frame: &[u8], ifindex: u32, repeat: u32) -> io::Result<()> {
    // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx queue,
    // egress_ifindex.
    let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
    let mut attr = TestRunAttr {
        prog_fd: prog_fd as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ctx_size_in: std::mem::size_of_val(&ctx) as u32,
        ctx_in: ctx.as_ptr() as u64,
        flags: BPF_F_TEST_XDP_LIVE_FRAMES,
        ..Default::default()
    };
    test_run(&mut attr)
}

/// BPF_PROG_TEST_RUN with `attr`, which the kernel updates in place.
fn test_run(attr: &mut TestRunAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid attribute block whose pointers (set by the
    // callers) outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    test_run(&mut attr)?;
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
