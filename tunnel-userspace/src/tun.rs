//! Tunnel interfaces are persistent TUN devices: point-to-point, NOARP, L3,
//! created down, and managed by iproute2 like any other link.

use std::{
    fs::{File, OpenOptions},
    io,
    os::fd::AsRawFd,
};

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_TUN_EXCL: libc::c_short = 0x8000u16 as libc::c_short;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// A TUN device that exists only while this value lives, until `persist`.
/// Whatever happens before then (an error, or the process being killed),
/// the kernel removes the device, and its tc filters with it.
pub struct PendingTun {
    file: File,
}

impl PendingTun {
    /// Makes the device outlive this process.
    pub fn persist(self) -> io::Result<()> {
        // SAFETY: valid descriptor; the argument is an integer.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Creates a TUN device called `name`; fails if it exists.
pub fn create(name: &str) -> io::Result<PendingTun> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI | IFF_TUN_EXCL,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: valid descriptor and ifreq buffer.
    if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PendingTun { file })
}
