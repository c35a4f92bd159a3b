//! The one ethtool setting xtun changes: generic segmentation offload on a
//! tunnel interface. Tunnels that write a GRE checksum or sequence number
//! need one header per packet, which the kernel's GSO cannot produce after
//! a BPF encapsulation, so their interfaces hand over single packets.

use std::{io, os::fd::AsRawFd as _};

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_SGSO: u32 = 0x24;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Turns generic segmentation offload on `ifname` on or off.
pub fn set_gso(ifname: &str, on: bool) -> io::Result<()> {
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: std::ptr::null_mut(),
        _pad: [0; 16],
    };
    if ifname.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    let mut value = EthtoolValue {
        cmd: ETHTOOL_SGSO,
        data: on as u32,
    };
    req.data = &mut value;
    // SAFETY: socket() has no memory arguments.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: we own the new descriptor.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: `req` and `value` outlive the call and have the layouts the
    // kernel expects for SIOCETHTOOL.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
