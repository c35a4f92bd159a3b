//! The gateway bench's own XDP programs, written as raw instructions so
//! that each does exactly what it names:
//!
//! - a generator that hands 64-byte frames to the client's veth as a NIC's
//!   driver hands them to XDP (run in live-frames mode of
//!   `BPF_PROG_TEST_RUN`), so the gateways' XDP programs receive frames
//!   rather than skbs that veth must first copy;
//! - the floor gateways: the least any XDP gateway does for the bench's one
//!   flow (no route lookup, no TTL, no counters): push fixed outer headers
//!   and redirect, or pop them and redirect. What they reach bounds what
//!   xtun's fast path can reach on these veths.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
};

use anyhow::{bail, Context as _, Result};
use tunnel_userspace::bpf_sys::xdp_live_frames;
use xtun_test_support::raw_bpf::{
    attach_xdp, insn, insn_off, ld_imm64, load_program, mov64_imm, mov64_reg, BPF_PROG_TYPE_XDP,
    EXIT,
};

const XDP_PASS: i32 = 2;
const XDP_TX: i32 = 3;
const BPF_FUNC_XDP_ADJUST_HEAD: i32 = 44;
const BPF_FUNC_REDIRECT: i32 = 23;

/// Registers: r1 the context on entry, kept in r6; r2 and r3 the frame's
/// start and end; r4 and r5 scratch.
const CTX: u8 = 6;
const DATA: u8 = 2;
const DATA_END: u8 = 3;

/// A straight-line program with forward jumps to one `XDP_PASS` exit.
struct Program {
    insns: Vec<u64>,
    jumps_to_pass: Vec<usize>,
}

impl Program {
    fn new() -> Self {
        Self {
            insns: vec![mov64_reg(CTX, 1)],
            jumps_to_pass: Vec::new(),
        }
    }

    /// r2 = data, r3 = data_end; passes the frame unless it has `len`
    /// bytes at least.
    fn load_frame(&mut self, len: i32) {
        self.insns.extend([
            insn_off(0x61, DATA, CTX, 0, 0),
            insn_off(0x61, DATA_END, CTX, 4, 0),
            mov64_reg(4, DATA),
            insn(0x07, 4, 0, len),
        ]);
        self.pass_if(insn_off(0x2d, 4, DATA_END, 0, 0));
    }

    /// A conditional jump whose offset is filled in with the pass exit's.
    fn pass_if(&mut self, jump: u64) {
        self.jumps_to_pass.push(self.insns.len());
        self.insns.push(jump);
    }

    /// Passes the frame unless its byte at `off` is `value`.
    fn expect_u8(&mut self, off: i16, value: u8) {
        self.insns.push(insn_off(0x71, 5, DATA, off, 0));
        self.pass_if(insn_off(0x55, 5, 0, 0, value.into()));
    }

    /// Passes the frame unless its two bytes at `off` are `value`.
    fn expect_bytes2(&mut self, off: i16, value: [u8; 2]) {
        self.insns.push(insn_off(0x69, 5, DATA, off, 0));
        self.pass_if(insn_off(0x55, 5, 0, 0, u16::from_le_bytes(value).into()));
    }

    /// Writes `bytes` at `off` of the frame.
    fn store(&mut self, off: usize, bytes: &[u8]) {
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            let pos = (off + at) as i16;
            if rest.len() >= 8 {
                let word = u64::from_le_bytes(rest[..8].try_into().unwrap());
                self.insns.extend(ld_imm64(5, word));
                self.insns.push(insn_off(0x7b, DATA, 5, pos, 0));
                at += 8;
            } else if rest.len() >= 4 {
                let word = u32::from_le_bytes(rest[..4].try_into().unwrap());
                self.insns.push(insn_off(0x62, DATA, 0, pos, word as i32));
                at += 4;
            } else if rest.len() >= 2 {
                let half = u16::from_le_bytes(rest[..2].try_into().unwrap());
                self.insns.push(insn_off(0x6a, DATA, 0, pos, half.into()));
                at += 2;
            } else {
                self.insns
                    .push(insn_off(0x72, DATA, 0, pos, rest[0].into()));
                at += 1;
            }
        }
    }

    /// `bpf_xdp_adjust_head(ctx, delta)`, passing the frame if it fails.
    fn adjust_head(&mut self, delta: i32) {
        self.insns.extend([
            mov64_reg(1, CTX),
            mov64_imm(2, delta),
            insn(0x85, 0, 0, BPF_FUNC_XDP_ADJUST_HEAD),
        ]);
        self.pass_if(insn_off(0x55, 0, 0, 0, 0));
    }

    /// Returns `bpf_redirect(ifindex, 0)`.
    fn redirect(mut self, ifindex: u32) -> Vec<u64> {
        self.insns.extend([
            mov64_imm(1, ifindex as i32),
            mov64_imm(2, 0),
            insn(0x85, 0, 0, BPF_FUNC_REDIRECT),
            EXIT,
        ]);
        self.finish()
    }

    /// Returns `action`.
    fn returning(mut self, action: i32) -> Vec<u64> {
        self.insns.extend([mov64_imm(0, action), EXIT]);
        self.finish()
    }

    fn finish(mut self) -> Vec<u64> {
        let pass = self.insns.len();
        self.insns.extend([mov64_imm(0, XDP_PASS), EXIT]);
        for at in self.jumps_to_pass {
            let off = (pass - at - 1) as i16;
            self.insns[at] |= (off as u16 as u64) << 16;
        }
        self.insns
    }
}

fn load(name: &str, insns: &[u64]) -> io::Result<OwnedFd> {
    load_program(BPF_PROG_TYPE_XDP, name, insns)
}

/// The generator's program: writes `frame` over the buffer and sends it
/// back out of the device it was "received" on.
fn load_generator(frame: &[u8]) -> io::Result<OwnedFd> {
    let mut p = Program::new();
    p.load_frame(frame.len() as i32);
    p.store(0, frame);
    load("xtun_bench_gen", &p.returning(XDP_TX))
}

const ETH_P_IP: [u8; 2] = [0x08, 0x00];
const IPPROTO_UDP: u8 = 17;
const IPPROTO_GRE: u8 = 47;
/// Outer IPv4 and GRE headers without options.
const GRE_OVERHEAD: usize = 24;

/// The floor gateway towards the tunnel: an IPv4 UDP frame gets the fixed
/// `outer` (Ethernet, IPv4 and a 4-byte GRE header, 38 bytes) in place of
/// its Ethernet header and is redirected to `ifindex`.
pub fn load_floor_encap(outer: &[u8; 38], ifindex: u32) -> io::Result<OwnedFd> {
    let mut p = Program::new();
    p.load_frame(34);
    p.expect_bytes2(12, ETH_P_IP);
    p.expect_u8(23, IPPROTO_UDP);
    p.adjust_head(-(GRE_OVERHEAD as i32));
    p.load_frame(outer.len() as i32);
    p.store(0, outer);
    load("xtun_floor_enc", &p.redirect(ifindex))
}

/// The floor gateway from the tunnel: a GRE frame (IPv4 without options,
/// a 4-byte GRE header for IPv4) loses its outer headers, gets `eth` and
/// is redirected to `ifindex`.
pub fn load_floor_decap(eth: &[u8; 14], ifindex: u32) -> io::Result<OwnedFd> {
    let mut p = Program::new();
    p.load_frame(38);
    p.expect_bytes2(12, ETH_P_IP);
    p.expect_u8(14, 0x45);
    p.expect_u8(23, IPPROTO_GRE);
    p.expect_bytes2(34, [0, 0]);
    p.expect_bytes2(36, ETH_P_IP);
    p.adjust_head(GRE_OVERHEAD as i32);
    p.load_frame(eth.len() as i32);
    p.store(0, eth);
    load("xtun_floor_dec", &p.redirect(ifindex))
}

/// Moves the calling thread into network namespace `ns`.
fn enter_netns(ns: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(format!("/run/netns/{ns}"))?;
    // SAFETY: setns(2) on a namespace file we opened; it moves only the
    // calling thread, which is ours alone.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attaches `prog` to `dev` in namespace `ns` (from a thread of its own
/// there): attached while the returned link is open.
pub fn attach(ns: &str, dev: &str, prog: OwnedFd) -> Result<OwnedFd> {
    let (ns_name, dev_name) = (ns.to_string(), dev.to_string());
    thread::spawn(move || {
        enter_netns(&ns_name)?;
        attach_xdp(&prog, ifindex(&dev_name)?)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
    .with_context(|| format!("attaching to {dev} in {ns}"))
}

/// `dev`'s index in the calling thread's namespace.
fn ifindex(dev: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: a NUL-terminated name.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(io::Error::last_os_error()),
        index => Ok(index),
    }
}

/// Frames handed to `dev` of namespace `ns` as fast as the CPU it runs on
/// (CPU 0, as trafgen's worker) takes them, until dropped.
pub struct FrameGenerator {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<io::Result<()>>>,
}

/// Frames per BPF_PROG_TEST_RUN call: a few tenths of a second each.
const FRAMES_PER_CALL: u32 = 50_000;

impl FrameGenerator {
    pub fn start(ns: &str, dev: &str, frame: Vec<u8>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (ns, dev, stopping) = (ns.to_string(), dev.to_string(), stop.clone());
        let worker = thread::spawn(move || {
            enter_netns(&ns)?;
            pin_to_cpu0_at_high_priority();
            let prog = load_generator(&frame)?;
            let index = ifindex(&dev)?;
            while !stopping.load(Ordering::Relaxed) {
                xdp_live_frames(prog.as_raw_fd(), &frame, index, FRAMES_PER_CALL)?;
            }
            Ok(())
        });
        Self {
            stop,
            worker: Some(worker),
        }
    }

    /// Fails with the generator's error if it has stopped.
    pub fn check_running(&mut self) -> Result<()> {
        match self
            .worker
            .take_if(|w| w.is_finished())
            .map(JoinHandle::join)
        {
            None => Ok(()),
            Some(Ok(Err(e))) => bail!("the XDP frame generator stopped: {e}"),
            Some(_) => bail!("the XDP frame generator stopped"),
        }
    }
}

/// As trafgen's worker: CPU 0, SCHED_FIFO at the highest priority (which
/// the kernel holds to 95% of the CPU). Best effort.
fn pin_to_cpu0_at_high_priority() {
    // SAFETY: plain syscalls on the calling thread with valid arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
        let param = libc::sched_param {
            sched_priority: libc::sched_get_priority_max(libc::SCHED_FIFO),
        };
        libc::sched_setscheduler(0, libc::SCHED_FIFO, &param);
    }
}

impl Drop for FrameGenerator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
