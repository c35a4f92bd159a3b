//! Checks that the process may do what it is asked, so that a user without
//! privileges gets one clear line instead of an EPERM from deep inside.

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn effective() -> u64 {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and data are what capget(2) expects for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if rc != 0 {
        return 0;
    }
    data[0].effective as u64 | ((data[1].effective as u64) << 32)
}

/// The capabilities this process lacks: CAP_BPF (or CAP_SYS_ADMIN) to
/// read the data plane, and CAP_NET_ADMIN too to change it.
pub fn missing(change: bool) -> Vec<&'static str> {
    let caps = effective();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if change && !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    missing
}
