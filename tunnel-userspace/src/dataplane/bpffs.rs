//! Loading a second copy of the object that shares a running instance's
//! maps (to upgrade it, or to add an XDP program it no longer has), through
//! a bpffs that only this process sees; and what every load needs first.

use std::collections::BTreeSet;

use aya::{maps::MapData, Ebpf};
use tunnel_common::maps::*;

use super::{Result, OBJECT};

/// Maps shared between every program of an instance (not the per-object
/// `.rodata` sections).
fn is_shared_map(name: &str) -> bool {
    name.starts_with("XTUN_") || name == MAP_LOGS
}

/// Mount points of `load_object_sharing`'s private bpffs: PREFIX + pid.
pub const BPFFS_DIR_PREFIX: &str = "xtun-bpffs-";

/// Removes the (empty) mount-point directories that an `xtun` killed during
/// a load left behind; the mounts themselves died with its private mount
/// namespace.
fn remove_stale_mount_points() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(BPFFS_DIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(entry.path());
        }
    }
}

/// Loads the embedded object so that its programs use the existing maps
/// `map_ids` instead of new ones. aya reuses a map pinned at the path given
/// for it, so the maps are pinned for the duration of the load on a bpffs
/// that only this process sees (a private mount namespace): nothing is left
/// behind, and it works under `ip netns exec`, where /sys/fs/bpf is absent.
pub(super) fn load_object_sharing(map_ids: &BTreeSet<u32>) -> Result<Ebpf> {
    raise_memlock_limit();
    remove_stale_mount_points();
    let dir = std::env::temp_dir().join(format!("{BPFFS_DIR_PREFIX}{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = (|| {
        private_bpffs(&dir)?;
        let mut pins = Vec::new();
        for &id in map_ids {
            let data = MapData::from_id(id)?;
            let Some(name) = data.info()?.name_as_str().map(str::to_owned) else {
                continue;
            };
            if !is_shared_map(&name) {
                continue;
            }
            let path = dir.join(&name);
            data.pin(&path)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            pins.push((name, path));
        }
        let kernel = KernelLayout::read();
        let mut loader = kernel.loader();
        for (name, path) in &pins {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        Ok(loader.load(OBJECT)?)
    })();
    // SAFETY: plain umount2 of our own private mount.
    unsafe {
        let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .expect("no NUL in temp path");
        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
    }
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Moves this process into a private mount namespace and mounts a fresh
/// bpffs on `dir` there.
fn private_bpffs(dir: &std::path::Path) -> Result<()> {
    let cstr = |s: &str| std::ffi::CString::new(s).expect("static string");
    let path =
        std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).expect("no NUL in temp path");
    // SAFETY: plain syscalls with valid C strings; xtun is single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        let root = cstr("/");
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
        let (src, fstype) = (cstr("bpffs"), cstr("bpf"));
        if libc::mount(
            src.as_ptr(),
            path.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    Ok(())
}

pub(super) fn raise_memlock_limit() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain setrlimit; failure only matters on old kernels.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

/// What the programs need to know about the running kernel's structures,
/// set as read-only globals before they are loaded.
pub(super) struct KernelLayout {
    ip_summed_byte: u32,
    ip_summed_shift: u32,
}

impl KernelLayout {
    pub(super) fn read() -> Self {
        // Unknown: checksums pending offload are then not recognised, and
        // GRE packets carrying them are dropped as bad checksums.
        let (ip_summed_byte, ip_summed_shift) = crate::btf::skb_ip_summed().unwrap_or((0, 0));
        Self {
            ip_summed_byte,
            ip_summed_shift,
        }
    }

    pub(super) fn loader(&self) -> aya::EbpfLoader<'_> {
        let mut loader = aya::EbpfLoader::new();
        loader
            .override_global("SKB_IP_SUMMED_BYTE", &self.ip_summed_byte, true)
            .override_global("SKB_IP_SUMMED_SHIFT", &self.ip_summed_shift, true);
        loader
    }
}
