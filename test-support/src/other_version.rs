//! A data plane as another version of xtun leaves it running: programs with
//! xtun's names over maps of another layout. That is all `Dataplane::find`
//! reads of a running instance: the programs attached (or loaded) under
//! xtun's names, and the names, types and sizes of their maps.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
    thread,
};

use tunnel_common::{
    maps::{TunnelConfig, MAP_COUNTERS, MAP_TUNNELS, PROG_TC, PROG_XDP_DECAP},
    stats::COUNTER_COUNT,
};
use tunnel_userspace::{bpf_sys, netlink::Netlink, testbed::Netns};

use crate::raw_bpf::{
    create_map, ld_map, load_program, mov64_imm, BPF_MAP_TYPE_HASH, BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, EXIT,
};

/// `XDP_FLAGS_SKB_MODE`: generic XDP, which any interface takes.
const XDP_FLAGS_SKB_MODE: u32 = 2;

pub struct OtherVersionDataplane {
    xdp: OwnedFd,
    /// Held so that the instance keeps its tc program, as a running one does.
    _tc: OwnedFd,
    tunnels: OwnedFd,
    _counters: OwnedFd,
}

impl OtherVersionDataplane {
    /// An instance whose `XTUN_COUNTERS` is this build's and whose
    /// `XTUN_TUNNELS` values are 8 bytes longer than this build's
    /// `TunnelConfig` (a version that added a field).
    pub fn load() -> io::Result<Self> {
        let counters = create_map(BPF_MAP_TYPE_PERCPU_ARRAY, MAP_COUNTERS, 4, 8, COUNTER_COUNT)?;
        let tunnels = create_map(
            BPF_MAP_TYPE_HASH,
            MAP_TUNNELS,
            4,
            std::mem::size_of::<TunnelConfig>() as u32 + 8,
            16,
        )?;
        // Each program uses both maps and does nothing else.
        let program = |prog_type, name, verdict| {
            let mut insns = ld_map(1, &counters).to_vec();
            insns.extend(ld_map(1, &tunnels));
            insns.extend([mov64_imm(0, verdict), EXIT]);
            load_program(prog_type, name, &insns)
        };
        let xdp = program(BPF_PROG_TYPE_XDP, PROG_XDP_DECAP, 2)?;
        let tc = program(BPF_PROG_TYPE_SCHED_CLS, PROG_TC, -1)?;
        Ok(Self {
            xdp,
            _tc: tc,
            tunnels,
            _counters: counters,
        })
    }

    /// Attaches the XDP program to `dev` in `ns` (generic mode), from a
    /// thread that joins `ns`: a namespace is per thread.
    pub fn attach_xdp(&self, ns: &Netns, dev: &str) -> io::Result<()> {
        let path = format!("/var/run/netns/{}", ns.name);
        let fd = self.xdp.as_raw_fd();
        thread::scope(|s| {
            s.spawn(|| {
                let netns = std::fs::File::open(&path)?;
                // SAFETY: an open namespace descriptor; only this thread moves.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                let mut nl = Netlink::new().map_err(io::Error::other)?;
                let link = nl
                    .link_by_name(dev)
                    .map_err(io::Error::other)?
                    .ok_or_else(|| io::Error::other(format!("no {dev} in {}", ns.name)))?;
                nl.set_xdp(link.index, Some(fd), XDP_FLAGS_SKB_MODE)
                    .map_err(io::Error::other)
            })
            .join()
            .expect("the attaching thread")
        })
    }

    /// Entries in the instance's `XTUN_TUNNELS`.
    pub fn tunnel_entries(&self) -> usize {
        bpf_sys::map_keys(self.tunnels.as_raw_fd(), 4)
            .expect("walking XTUN_TUNNELS")
            .len()
    }
}
