//! Tunnel interfaces are one end of a veth pair. The other end, the port
//! (`xtpN`, N the tunnel's ifindex), is where the data plane runs: what the
//! kernel sends on the tunnel interface arrives on the port, whose tc
//! ingress encapsulates it, and decapsulated packets are sent out of the
//! port to arrive on the tunnel interface. So the interface has carrier
//! with no process holding it, and the pair counts every packet in both
//! directions, as the kernel's tunnel devices do.

use tunnel_common::maps::TUNNEL_MAC;

use crate::netlink::{Link, Netlink, NetlinkError};

/// Names a pair carries until its tunnel is complete: a tunnel interface
/// whose name starts with this is left from an `xtun` killed halfway
/// through `add`, and the next change removes it.
pub const UNFINISHED_PREFIX: &str = "xtnew";

/// The name of the port of the tunnel interface `ifindex`.
pub fn port_name(ifindex: u32) -> String {
    format!("xtp{ifindex}")
}

/// Is `name` the name of a tunnel interface an `add` did not finish?
pub fn is_unfinished(name: &str) -> bool {
    name.starts_with(UNFINISHED_PREFIX)
}

/// A tunnel interface and its port, made but not yet named: until `finish`
/// renames it, it is `UNFINISHED_PREFIX…`, so a killed `add` never leaves
/// an interface under the tunnel's name.
pub struct NewTunnel {
    pub link: Link,
    pub port: Link,
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("{0} disappeared while it was being set up")]
    Gone(String),
    #[error("writing {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
}

fn sysctl(path: String, value: &str) -> Result<(), DeviceError> {
    std::fs::write(&path, value).map_err(|source| DeviceError::Sysctl { path, source })
}

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{:06x}",
        (nanos ^ std::process::id().rotate_left(12)) & 0xff_ffff
    )
}

/// Creates the pair for a tunnel with `mtu`: the interface point-to-point
/// in behaviour (NOARP, no automatic IPv6 address, our fixed MAC), or with
/// `ethernet` (gretap) an ordinary Ethernet interface (ARP, its random MAC,
/// IPv6 as configured); the port up, with forwarding on so that the data
/// plane may look routes up there (the port receives nothing but what its
/// tunnel interface sends, which the data plane always consumes).
pub fn create(nl: &mut Netlink, mtu: u32, ethernet: bool) -> Result<NewTunnel, DeviceError> {
    let suffix = unique_suffix();
    let name = format!("{UNFINISHED_PREFIX}{suffix}");
    let temp_port = format!("xtpnew{suffix}");
    nl.add_veth_pair(&name, &temp_port, mtu)?;
    let link = nl
        .link_by_name(&name)?
        .ok_or_else(|| DeviceError::Gone(name.clone()))?;
    let result = (|| {
        let port = nl
            .link_by_name(&temp_port)?
            .ok_or_else(|| DeviceError::Gone(temp_port.clone()))?;
        let port_name = port_name(link.index);
        nl.set_name(port.index, &port_name)?;
        let point_to_point = if ethernet {
            vec![port.index]
        } else {
            vec![link.index, port.index]
        };
        for dev in point_to_point {
            nl.set_noarp(dev)?;
            nl.disable_ipv6_addrgen(dev)?;
        }
        if !ethernet {
            nl.set_mac(link.index, TUNNEL_MAC)?;
        }
        sysctl(
            format!("/proc/sys/net/ipv4/conf/{port_name}/forwarding"),
            "1",
        )?;
        // IPv6 route lookups on the port, for answers to IPv6 senders. With
        // IPv6 off on the port first, forwarding does not make it join the
        // all-routers group and send MLD reports into the tunnel interface.
        // A kernel booted without IPv6 has neither file: nothing to do.
        for (setting, value) in [("disable_ipv6", "1"), ("forwarding", "1")] {
            let path = format!("/proc/sys/net/ipv6/conf/{port_name}/{setting}");
            match sysctl(path, value) {
                Err(DeviceError::Sysctl { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        let port = nl
            .link_by_index(port.index)?
            .ok_or_else(|| DeviceError::Gone(port_name.clone()))?;
        Ok(NewTunnel {
            link: link.clone(),
            port,
        })
    })();
    if result.is_err() {
        let _ = nl.del_link(link.index);
    }
    result
}

impl NewTunnel {
    /// Brings the port up and gives the tunnel interface its name: the
    /// last step of `add`. The interface itself stays down, as `ip tunnel
    /// add` leaves it.
    pub fn finish(&self, nl: &mut Netlink, name: &str) -> Result<(), DeviceError> {
        nl.set_up(self.port.index)?;
        nl.set_name(self.link.index, name)?;
        Ok(())
    }
}

/// MTU of both ends of the pair of tunnel interface `ifindex`.
pub fn set_mtu(nl: &mut Netlink, ifindex: u32, port: u32, mtu: u32) -> Result<(), DeviceError> {
    // The port first, so it can always take what the interface sends.
    if port != 0 {
        nl.set_mtu(port, mtu.max(68))?;
    }
    nl.set_mtu(ifindex, mtu)?;
    Ok(())
}
