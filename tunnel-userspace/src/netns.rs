//! `-n NAME` / `-netns NAME`: run in a named network namespace, as `ip -n`
//! does (iproute2's `netns_switch`), so no `ip netns exec` is needed.

use std::{ffi::CString, io, os::fd::AsRawFd as _};

use crate::grammar::IpError;

/// Where `ip netns add` keeps its namespaces.
const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Joins the named namespace: setns into it, then a private mount
/// namespace with a /sys that describes it. Must run before any thread is
/// started (unshare of the mount namespace needs a process of one thread).
pub fn enter(name: &str) -> Result<(), IpError> {
    let path = format!("{NETNS_RUN_DIR}/{name}");
    let file = std::fs::File::open(&path).map_err(|e| {
        IpError::usage(format!(
            "Cannot open network namespace \"{name}\": {}",
            strerror(&e)
        ))
    })?;
    // SAFETY: a valid open descriptor and a namespace type.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        return Err(IpError::usage(format!(
            "setting the network namespace \"{name}\" failed: {}",
            strerror(&io::Error::last_os_error())
        )));
    }
    drop(file);
    // SAFETY: plain syscalls on constant, NUL-terminated arguments.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) < 0 {
            return Err(IpError::usage(format!(
                "unshare failed: {}",
                strerror(&io::Error::last_os_error())
            )));
        }
        // Mounts made here must not reach the parent's namespace.
        let root = c"/";
        let none = c"none";
        let empty = c"";
        if libc::mount(
            empty.as_ptr(),
            root.as_ptr(),
            none.as_ptr(),
            libc::MS_SLAVE | libc::MS_REC,
            std::ptr::null(),
        ) < 0
        {
            return Err(IpError::usage(format!(
                "\"mount --make-rslave /\" failed: {}",
                strerror(&io::Error::last_os_error())
            )));
        }
        let sys = c"/sys";
        let mut flags = 0;
        if libc::umount2(sys.as_ptr(), libc::MNT_DETACH) < 0 {
            // Could not unmount it: shadow it, read-only if it was.
            let mut st: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(sys.as_ptr(), &mut st) == 0 && st.f_flag & libc::ST_RDONLY != 0 {
                flags = libc::MS_RDONLY;
            }
        }
        let source = CString::new(name).unwrap_or_else(|_| c"sysfs".to_owned());
        let sysfs = c"sysfs";
        if libc::mount(
            source.as_ptr(),
            sys.as_ptr(),
            sysfs.as_ptr(),
            flags,
            std::ptr::null(),
        ) < 0
        {
            return Err(IpError::usage(format!(
                "mount of /sys failed: {}",
                strerror(&io::Error::last_os_error())
            )));
        }
    }
    Ok(())
}

/// The C library's wording of an errno, as `ip` prints it (no "(os error N)").
fn strerror(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(at) => text[..at].to_string(),
        None => text,
    }
}
