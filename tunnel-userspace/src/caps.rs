//! Checks that the process may do what it is asked, so that a user without
//! privileges gets one clear line instead of an EPERM from deep inside.

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

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

/// The capabilities this process lacks, as the kernel checks them. Every
/// command finds the data plane by walking the loaded programs and opening
/// them and their maps by id (BPF_PROG_GET_NEXT_ID, BPF_*_GET_FD_BY_ID),
/// which the kernel allows only with CAP_SYS_ADMIN: CAP_BPF is not enough.
/// Changing it also takes CAP_NET_ADMIN (netlink: links, XDP, tc).
pub fn missing(change: bool) -> Vec<&'static str> {
    let caps = effective();
    let has = |cap: u32| caps & (1 << cap) != 0;
    let mut missing = Vec::new();
    if change && !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN");
    }
    missing
}
