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
    #[error(
        "{0} is not in this /sys (mount sysfs in the network namespace, as `ip netns exec` does)"
    )]
    NotInSysfs(String),
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

/// How the pair of tunnel interface `ifindex` hands what it sends to the
/// data plane. A tunnel that writes a GRE checksum or sequence number
/// (`per_packet_header`) needs one header per packet, which GSO cannot make
/// after a BPF encapsulation: its interface takes single packets only (TCP
/// builds GSO packets whatever the device's features say). A tunnel that
/// numbers its packets (`numbered`, `oseq`) must send them in the order it
/// numbers them, or a receiver with `iseq` drops those overtaken: the
/// kernel numbers under its tunnel's transmit lock; here the port's
/// receive is steered (RPS) to one CPU, so the data plane numbers and sends
/// them one at a time, in the order they were queued there.
pub fn set_transmit(
    nl: &mut Netlink,
    ifindex: u32,
    per_packet_header: bool,
    numbered: bool,
) -> Result<(), DeviceError> {
    const GSO_MAX_SEGS: u32 = 65535;
    let segs = if per_packet_header { 1 } else { GSO_MAX_SEGS };
    nl.set_gso_max_segs(ifindex, segs)?;
    let name = port_name(ifindex);
    let port = nl
        .link_by_name(&name)?
        .ok_or_else(|| DeviceError::Gone(name.clone()))?;
    let cpus = if numbered {
        let online = online_cpus();
        let cpu = online
            .get(port.index as usize % online.len().max(1))
            .copied()
            .unwrap_or(0);
        cpu_mask(cpu)
    } else {
        "0".to_string()
    };
    steer_receive(&port, &cpus)
}

/// Writes `mask` to the RPS CPU mask of each receive queue of `port`, after
/// checking that this /sys shows `port` itself (under `nsenter` it shows the
/// namespace it was mounted in, where another device may have its name).
fn steer_receive(port: &Link, mask: &str) -> Result<(), DeviceError> {
    let dir = format!("/sys/class/net/{}", port.name);
    let read = |file: &str| std::fs::read_to_string(format!("{dir}/{file}")).unwrap_or_default();
    let address = port
        .address
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    if read("ifindex").trim() != port.index.to_string() || read("address").trim() != address {
        return Err(DeviceError::NotInSysfs(port.name.clone()));
    }
    let queues = std::fs::read_dir(format!("{dir}/queues"))
        .map_err(|_| DeviceError::NotInSysfs(port.name.clone()))?;
    for queue in queues.flatten() {
        let name = queue.file_name().to_string_lossy().into_owned();
        if name.starts_with("rx-") {
            sysctl(format!("{dir}/queues/{name}/rps_cpus"), mask)?;
        }
    }
    Ok(())
}

/// The online CPUs, from the kernel's list ("0-3,6").
fn online_cpus() -> Vec<u32> {
    let list = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    parse_cpu_list(&list)
}

fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for range in list.trim().split(',').filter(|r| !r.is_empty()) {
        let (first, last) = range.split_once('-').unwrap_or((range, range));
        if let (Ok(first), Ok(last)) = (first.parse::<u32>(), last.parse::<u32>()) {
            cpus.extend(first..=last);
        }
    }
    cpus
}

/// A CPU mask with only `cpu` set, as sysfs writes them: hexadecimal words
/// of 32 CPUs, the highest first, separated by commas.
fn cpu_mask(cpu: u32) -> String {
    let mut words = vec![format!("{:x}", 1u32 << (cpu % 32))];
    words.extend((0..cpu / 32).map(|_| "00000000".to_string()));
    words.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_and_masks_are_read_and_written_as_sysfs_does() {
        assert_eq!(parse_cpu_list("0-3,6\n"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("0\n"), vec![0]);
        assert_eq!(parse_cpu_list(""), Vec::<u32>::new());
        assert_eq!(cpu_mask(0), "1");
        assert_eq!(cpu_mask(5), "20");
        assert_eq!(cpu_mask(31), "80000000");
        assert_eq!(cpu_mask(33), "2,00000000");
        assert_eq!(cpu_mask(64), "1,00000000,00000000");
    }
}
