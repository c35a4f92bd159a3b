//! Hooking the programs to interfaces: an underlay's XDP program and tc
//! ingress filter (decapsulation and delivery), a tunnel port's tc ingress
//! filter (encapsulation), and taking them off again.

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd};

use aya::{
    programs::{SchedClassifier, Xdp},
    Ebpf,
};
use tunnel_common::maps::*;

use super::{
    bpffs::load_object_sharing, forward::ForwardMaps, program_name, Dataplane, DataplaneError,
    DecapChoice, DecapMode, Result, XdpMode, FILTER_DEFRAG, FILTER_TUNNEL, FILTER_UNDERLAY,
    FILTER_UNDERLAY_AUTO,
};
use crate::netlink::{self, BpfFilter, Link, Netlink, TcHook, XDP_ATTACHED_SKB};

impl Dataplane {
    /// Our tc filter on `link`'s ingress, if the data plane is attached there.
    pub fn underlay_filter(&self, nl: &mut Netlink, link: &Link) -> Result<Option<BpfFilter>> {
        Ok(nl
            .bpf_filters(link.index, TcHook::Ingress)?
            .into_iter()
            .find(|f| f.prio == netlink::FILTER_PRIO && f.prog_id == Some(self.tc_id)))
    }

    /// Attaches decapsulation and delivery to an underlay interface.
    /// `explicit` marks an `xtun attach`, which survives its last tunnel.
    /// Returns where decapsulation runs, or None if it was attached already.
    pub fn attach_underlay(
        &mut self,
        nl: &mut Netlink,
        link: &Link,
        explicit: bool,
        choice: DecapChoice,
    ) -> Result<Option<DecapMode>> {
        let name = if explicit {
            FILTER_UNDERLAY
        } else {
            FILTER_UNDERLAY_AUTO
        };
        if let Some(existing) = self.underlay_filter(nl, link)? {
            // An underlay attached by a version without the fast path
            // becomes one of its redirect targets.
            self.add_forward_port(link.index)?;
            // An underlay attached by a version without reassembly gets it.
            let defrag_fd = self.defrag_fd()?;
            attach_defrag(nl, link.index, defrag_fd)?;
            let in_xdp = existing.classid == CLASSID_XDP_UNDERLAY;
            let wanted = match choice {
                DecapChoice::Auto => None,
                other => Some(other.resolve(link) != DecapChoice::Tc),
            };
            if let Some(want_xdp) = wanted.filter(|&w| w != in_xdp) {
                // Switch where this underlay decapsulates, without a gap:
                // the tc program delivers XDP-tagged frames whatever its
                // classid, so XDP goes in before tc stops decapsulating,
                // and tc starts before XDP goes out.
                let fd = self.tc_fd.as_raw_fd();
                let mode = if want_xdp {
                    let xdp = self.attach_xdp(nl, link)?;
                    nl.add_bpf_filter(
                        link.index,
                        TcHook::Ingress,
                        fd,
                        name,
                        CLASSID_XDP_UNDERLAY,
                        true,
                    )?;
                    DecapMode::Xdp(xdp)
                } else {
                    nl.add_bpf_filter(
                        link.index,
                        TcHook::Ingress,
                        fd,
                        name,
                        CLASSID_TC_UNDERLAY,
                        true,
                    )?;
                    nl.set_xdp(link.index, None, 0)?;
                    DecapMode::Tc
                };
                return Ok(Some(mode));
            }
            if explicit && existing.name.as_deref() != Some(FILTER_UNDERLAY) {
                // Promote an implicit attachment; atomic replace, no gap.
                let fd = self.tc_fd.as_raw_fd();
                nl.add_bpf_filter(
                    link.index,
                    TcHook::Ingress,
                    fd,
                    name,
                    existing.classid,
                    true,
                )?;
            }
            return Ok(None);
        }
        let (mode, classid) = match choice.resolve(link) {
            DecapChoice::Tc => (DecapMode::Tc, CLASSID_TC_UNDERLAY),
            _ => (
                DecapMode::Xdp(self.attach_xdp(nl, link)?),
                CLASSID_XDP_UNDERLAY,
            ),
        };
        let defrag_fd = self.defrag_fd()?;
        let attach_tc = nl
            .add_clsact(link.index)
            .and_then(|()| attach_defrag(nl, link.index, defrag_fd))
            .and_then(|()| {
                nl.add_bpf_filter(
                    link.index,
                    TcHook::Ingress,
                    self.tc_fd.as_raw_fd(),
                    name,
                    classid,
                    true,
                )
            });
        if let Err(e) = attach_tc {
            let _ = nl.del_bpf_filter_at(netlink::DEFRAG_PRIO, link.index, TcHook::Ingress);
            if matches!(mode, DecapMode::Xdp(_)) {
                let _ = nl.set_xdp(link.index, None, 0);
            }
            return Err(e.into());
        }
        self.track_interface(link.index)?;
        self.add_forward_port(link.index)?;
        Ok(Some(mode))
    }

    /// The reassembly program, loaded (sharing the instance's maps) if this
    /// instance has none yet: found again, it has one only where some
    /// underlay uses it.
    fn defrag_fd(&mut self) -> Result<RawFd> {
        if self.defrag.is_none() {
            let mut object = load_object_sharing(&self.shared_map_ids)?;
            self.defrag = Some(load_defrag(&mut object)?);
        }
        Ok(self
            .defrag
            .as_ref()
            .map(|(fd, _)| fd.as_raw_fd())
            .unwrap_or(-1))
    }

    /// An instance whose underlays all decapsulate in tc has no XDP program
    /// left in the kernel: load one that shares the instance's maps.
    /// Only the XDP program uses the forwarding fast path's maps, so
    /// such an instance had none: they come with it, and every underlay
    /// attached so far becomes a redirect target.
    fn ensure_xdp_program(&mut self, nl: &mut Netlink) -> Result<()> {
        if self.xdp_fd.is_some() {
            return Ok(());
        }
        let mut object = load_object_sharing(&self.shared_map_ids)?;
        let (fd, id) = load_xdp(&mut object)?;
        let new_forward_maps = self.forward.is_none();
        if new_forward_maps {
            self.forward = Some(ForwardMaps::take(|name| {
                object.take_map(name).ok_or(DataplaneError::Missing(name))
            })?);
        }
        self.xdp_fd = Some(fd);
        self.xdp_id = Some(id);
        self._ebpf = Some(object);
        if new_forward_maps {
            for link in nl.links()? {
                if self.underlay_filter(nl, &link)?.is_some() {
                    self.add_forward_port(link.index)?;
                }
            }
        }
        Ok(())
    }

    /// Attaches the XDP program natively, or generically where the driver
    /// cannot, unless another program holds the interface.
    fn attach_xdp(&mut self, nl: &mut Netlink, link: &Link) -> Result<XdpMode> {
        self.ensure_xdp_program(nl)?;
        let xdp_fd = self
            .xdp_fd
            .as_ref()
            .ok_or(DataplaneError::Incomplete("XDP program missing"))?;
        match link.xdp_prog_id {
            Some(id) if Some(id) == self.xdp_id => Ok(if link.xdp_attached == XDP_ATTACHED_SKB {
                XdpMode::Generic
            } else {
                XdpMode::Native
            }),
            Some(id) => Err(DataplaneError::ForeignXdp {
                dev: link.name.clone(),
                id,
                name: program_name(id),
            }),
            None => {
                let fd = xdp_fd.as_raw_fd();
                let noexist = netlink::XDP_FLAGS_UPDATE_IF_NOEXIST;
                match nl.set_xdp(link.index, Some(fd), noexist | netlink::XDP_FLAGS_DRV_MODE) {
                    Ok(()) => Ok(XdpMode::Native),
                    Err(native) => {
                        eprintln!(
                            "xtun: native XDP is not available on {} ({native}); using generic XDP",
                            link.name
                        );
                        nl.set_xdp(link.index, Some(fd), noexist | netlink::XDP_FLAGS_SKB_MODE)?;
                        Ok(XdpMode::Generic)
                    }
                }
            }
        }
    }

    /// Removes XDP and tc delivery from an underlay.
    pub fn detach_underlay(&mut self, nl: &mut Netlink, link: &Link) -> Result<()> {
        let users = self.tunnels_on_underlay(link.index);
        if !users.is_empty() {
            let links = nl.links()?;
            let names: Vec<String> = users
                .iter()
                .map(|i| {
                    links
                        .iter()
                        .find(|l| l.index == *i)
                        .map_or_else(|| format!("ifindex {i}"), |l| l.name.clone())
                })
                .collect();
            return Err(DataplaneError::InUse {
                dev: link.name.clone(),
                tunnels: names.join(", "),
            });
        }
        self.remove_forward_port(link.index)?;
        detach_interface(nl, link, self.xdp_id)?;
        self.untrack_interface(link.index);
        Ok(())
    }

    /// Attaches encapsulation to a tunnel interface's egress.
    pub fn attach_tunnel(&mut self, nl: &mut Netlink, ifindex: u32, port: u32) -> Result<()> {
        self.track_interface(ifindex)?;
        nl.add_clsact(port)?;
        nl.add_bpf_filter(
            port,
            TcHook::Ingress,
            self.tc_fd.as_raw_fd(),
            FILTER_TUNNEL,
            CLASSID_TUNNEL,
            false,
        )?;
        Ok(())
    }
}

/// Removes xtun's XDP program and tc filters from an interface, and the
/// clsact qdisc if nothing else uses it.
pub fn detach_interface(nl: &mut Netlink, link: &Link, xdp_id: Option<u32>) -> Result<()> {
    let ours = |id: u32| xdp_id == Some(id) || program_name(id).as_deref() == Some(PROG_XDP_DECAP);
    // Reassembly first: killed after any step, what is left still shows
    // the data plane's filter, so that the next detach finds and finishes it.
    nl.del_bpf_filter_at(netlink::DEFRAG_PRIO, link.index, TcHook::Ingress)?;
    nl.del_bpf_filter_at(super::UNDERLAY6_PRIO, link.index, TcHook::Ingress)?;
    if let Some(id) = link.xdp_prog_id {
        if ours(id) {
            nl.set_xdp(link.index, None, attached_xdp_mode(link))?;
        }
    }
    nl.del_bpf_filter(link.index, TcHook::Ingress)?;
    nl.del_bpf_filter(link.index, TcHook::Egress)?;
    if nl.bpf_filters(link.index, TcHook::Ingress)?.is_empty()
        && nl.bpf_filters(link.index, TcHook::Egress)?.is_empty()
    {
        // Other filter kinds would also keep it; the kernel refuses nothing
        // here, so only remove a clsact that has no filters of any kind left.
        if nl.tc_filter_count(link.index)? == 0 {
            let _ = nl.del_clsact(link.index);
        }
    }
    Ok(())
}

/// Loads the object's XDP program into the kernel: its fd and id.
pub(super) fn load_xdp(ebpf: &mut Ebpf) -> Result<(OwnedFd, u32)> {
    let prog: &mut Xdp = ebpf
        .program_mut(PROG_XDP_DECAP)
        .ok_or(DataplaneError::Missing(PROG_XDP_DECAP))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}

/// Attaches outer-fragment reassembly to an underlay's ingress, before
/// the data plane's own filter.
fn attach_defrag(nl: &mut Netlink, ifindex: u32, fd: RawFd) -> netlink::Result<()> {
    nl.add_bpf_filter_at(
        netlink::DEFRAG_PRIO,
        ifindex,
        TcHook::Ingress,
        fd,
        FILTER_DEFRAG,
        0,
        true,
    )
}

/// Loads the object's reassembly program into the kernel: its fd and id.
pub(super) fn load_defrag(ebpf: &mut Ebpf) -> Result<(OwnedFd, u32)> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_DEFRAG)
        .ok_or(DataplaneError::Missing(PROG_DEFRAG))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}

/// Loads the object's tc program into the kernel: its fd and id.
pub(super) fn load_tc(ebpf: &mut Ebpf) -> Result<(OwnedFd, u32)> {
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROG_TC)
        .ok_or(DataplaneError::Missing(PROG_TC))?
        .try_into()?;
    prog.load()?;
    Ok((prog.fd()?.as_fd().try_clone_to_owned()?, prog.info()?.id()))
}

/// The IFLA_XDP mode flag of the program attached to `link`.
pub(super) fn attached_xdp_mode(link: &Link) -> u32 {
    if link.xdp_attached == XDP_ATTACHED_SKB {
        netlink::XDP_FLAGS_SKB_MODE
    } else {
        netlink::XDP_FLAGS_DRV_MODE
    }
}
