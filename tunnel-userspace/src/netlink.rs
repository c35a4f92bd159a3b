//! A small rtnetlink client: just the link, route and tc requests xtun needs.
//!
//! Every request asks for an ACK with extended error messages, so a refusal
//! comes back with the kernel's own explanation.

use std::{
    io,
    mem::size_of,
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum NetlinkError {
    #[error("netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("{op}: {err}{}", msg.as_ref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Kernel {
        op: &'static str,
        err: io::Error,
        msg: Option<String>,
    },
    #[error("{0}: malformed netlink reply")]
    Malformed(&'static str),
}

impl NetlinkError {
    /// The errno the kernel answered with, if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Self::Kernel { err, .. } => err.raw_os_error(),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, NetlinkError>;

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_MULTI: u16 = 0x2;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NETLINK_CAP_ACK: i32 = 10;
const NETLINK_EXT_ACK: i32 = 11;
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_GETROUTE: u16 = 26;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_F_NODAD: u8 = 0x02;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_GSO_MAX_SEGS: u16 = 40;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const IFLA_XDP: u16 = 43;
const IFLA_XDP_FD: u16 = 1;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_FLAGS: u16 = 3;
const IFLA_XDP_PROG_ID: u16 = 4;

pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;
pub const XDP_FLAGS_REPLACE: u32 = 16;
const IFLA_XDP_EXPECTED_FD: u16 = 8;
pub const XDP_ATTACHED_DRV: u8 = 1;
pub const XDP_ATTACHED_SKB: u8 = 2;

const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PREFSRC: u16 = 7;

const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_CLASSID: u16 = 3;
const TCA_BPF_FD: u16 = 6;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_FLAGS: u16 = 8;
const TCA_BPF_ID: u16 = 11;
const TCA_BPF_FLAG_ACT_DIRECT: u32 = 1;

const TC_H_CLSACT: u32 = 0xFFFF_FFF1;
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
const ETH_P_ALL: u16 = 0x0003;

/// The tc priority of xtun's filters, so they are found and removed without
/// touching anybody else's ("xt").
pub const FILTER_PRIO: u16 = 0x7874;
/// Outer-fragment reassembly runs just before the data plane's filter.
pub const DEFRAG_PRIO: u16 = FILTER_PRIO - 1;
const FILTER_HANDLE: u32 = 1;

/// Which clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    Ingress,
    Egress,
}

impl TcHook {
    fn parent(self) -> u32 {
        match self {
            Self::Ingress => 0xFFFF_FFF2,
            Self::Egress => 0xFFFF_FFF3,
        }
    }
}

/// What xtun needs to know about an interface.
#[derive(Clone, Debug, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub flags: u32,
    /// `IFLA_INFO_KIND`, e.g. "veth" or "tun".
    pub kind: Option<String>,
    /// The device type (`ARPHRD_*`): 1 for Ethernet, 65534 for a TUN
    /// device without link-layer header.
    pub link_type: u16,
    /// Id of the attached XDP program and how it is attached.
    pub xdp_prog_id: Option<u32>,
    pub xdp_attached: u8,
}

/// A bpf classifier found on a clsact hook.
#[derive(Clone, Debug)]
pub struct BpfFilter {
    pub prio: u16,
    pub prog_id: Option<u32>,
    pub name: Option<String>,
    pub classid: u32,
}

/// The answer of a route lookup.
#[derive(Clone, Debug)]
pub struct Route {
    pub oif: u32,
    pub prefsrc: Option<Ipv4Addr>,
}

/// Builds one netlink message.
struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    fn new(ty: u16, flags: u16, family_header: &[u8]) -> Self {
        let mut buf = vec![0u8; NLMSG_HDR_LEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        buf.extend_from_slice(family_header);
        pad4(&mut buf);
        Self {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, ty: u16, payload: &[u8]) -> &mut Self {
        let len = (4 + payload.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        pad4(&mut self.buf);
        self
    }

    fn attr_u32(&mut self, ty: u16, v: u32) -> &mut Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    fn attr_str(&mut self, ty: u16, s: &str) -> &mut Self {
        let mut bytes = s.as_bytes().to_vec();
        bytes.push(0);
        self.attr(ty, &bytes)
    }

    fn begin_nest(&mut self, ty: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end_nest(&mut self) -> &mut Self {
        let start = self.nests.pop().expect("balanced nests");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn ifinfomsg(index: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    h[8..12].copy_from_slice(&handle.to_ne_bytes());
    h[12..16].copy_from_slice(&parent.to_ne_bytes());
    h[16..20].copy_from_slice(&info.to_ne_bytes());
    h
}

/// Iterates the attributes in `buf`.
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & !NLA_F_NESTED;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        let next = (len + 3) & !3;
        buf = if next >= buf.len() { &[] } else { &buf[next..] };
        Some((ty, payload))
    })
}

fn nla_u32(p: &[u8]) -> Option<u32> {
    p.get(..4)
        .map(|b| u32::from_ne_bytes(b.try_into().unwrap()))
}

fn nla_string(p: &[u8]) -> String {
    let end = p.iter().position(|&b| b == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn new() -> Result<Self> {
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh, owned descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        for opt in [NETLINK_EXT_ACK, NETLINK_CAP_ACK] {
            let one: libc::c_int = 1;
            // SAFETY: valid socket and option buffer.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_NETLINK,
                    opt,
                    &one as *const _ as *const libc::c_void,
                    size_of::<libc::c_int>() as u32,
                );
            }
        }
        Ok(Self { fd, seq: 1 })
    }

    /// Sends `msg` and collects the payloads of the replies (for dumps) until
    /// the ACK or DONE.
    fn request(&mut self, op: &'static str, msg: Msg) -> Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = msg.finish(seq);
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: valid buffer and address.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if sent < 0 {
            return Err(NetlinkError::Socket(io::Error::last_os_error()));
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf)?;
            let mut off = 0;
            while off + NLMSG_HDR_LEN <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let ty = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
                let flags = u16::from_ne_bytes([buf[off + 6], buf[off + 7]]);
                let rseq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
                if len < NLMSG_HDR_LEN || off + len > n {
                    return Err(NetlinkError::Malformed(op));
                }
                let payload = &buf[off + NLMSG_HDR_LEN..off + len];
                off += (len + 3) & !3;
                if rseq != seq {
                    continue;
                }
                match ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
                            .ok_or(NetlinkError::Malformed(op))?;
                        if errno == 0 {
                            return Ok(out);
                        }
                        let msg = if flags & NLM_F_ACK_TLVS != 0 {
                            // Capped ACK: errno, then the request's header, then TLVs.
                            payload.get(4 + NLMSG_HDR_LEN..).and_then(|tlvs| {
                                attrs(tlvs)
                                    .find(|(t, _)| *t == NLMSGERR_ATTR_MSG)
                                    .map(|(_, p)| nla_string(p))
                            })
                        } else {
                            None
                        };
                        return Err(NetlinkError::Kernel {
                            op,
                            err: io::Error::from_raw_os_error(-errno),
                            msg,
                        });
                    }
                    _ => {
                        out.push((ty, payload.to_vec()));
                        if flags & NLM_F_MULTI == 0 {
                            // A single answer (e.g. RTM_GETROUTE); an ACK may follow.
                            continue;
                        }
                    }
                }
            }
        }
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_DUMP, &ifinfomsg(0));
        let replies = self.request("listing interfaces", msg)?;
        Ok(replies
            .iter()
            .filter(|(ty, _)| *ty == RTM_NEWLINK)
            .filter_map(|(_, p)| parse_link(p))
            .collect())
    }

    /// One link, asked for directly rather than found in a dump (the cost
    /// of a dump grows with the number of interfaces, tunnels included).
    fn get_link(&mut self, index: u32, name: Option<&str>) -> Result<Option<Link>> {
        let mut msg = Msg::new(RTM_GETLINK, NLM_F_ACK, &ifinfomsg(index));
        if let Some(name) = name {
            msg.attr_str(IFLA_IFNAME, name);
        }
        match self.request("looking up the interface", msg) {
            Ok(replies) => Ok(replies
                .iter()
                .filter(|(ty, _)| *ty == RTM_NEWLINK)
                .find_map(|(_, p)| parse_link(p))),
            Err(e) if matches!(e.errno(), Some(libc::ENODEV) | Some(libc::EINVAL)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn link_by_name(&mut self, name: &str) -> Result<Option<Link>> {
        if name.is_empty() || name.len() > 15 {
            return Ok(None);
        }
        self.get_link(0, Some(name))
    }

    pub fn link_by_index(&mut self, index: u32) -> Result<Option<Link>> {
        if index == 0 || index > i32::MAX as u32 {
            return Ok(None);
        }
        self.get_link(index, None)
    }

    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.attr_u32(IFLA_MTU, mtu);
        self.request("setting the MTU", msg).map(drop)
    }

    /// `ip link set DEV up`.
    pub fn set_up(&mut self, ifindex: u32) -> Result<()> {
        let mut header = ifinfomsg(ifindex);
        let up = libc::IFF_UP as u32;
        header[8..12].copy_from_slice(&up.to_ne_bytes());
        header[12..16].copy_from_slice(&up.to_ne_bytes());
        let msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &header);
        self.request("setting the interface up", msg).map(drop)
    }

    /// `ip addr add LOCAL/LEN [peer PEER] dev DEV` (IPv6 without duplicate
    /// address detection). Ok(false) when the address is there already.
    pub fn add_address(
        &mut self,
        ifindex: u32,
        local: std::net::IpAddr,
        prefix_len: u8,
        peer: Option<std::net::IpAddr>,
    ) -> Result<bool> {
        let octets = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => a.octets().to_vec(),
            std::net::IpAddr::V6(a) => a.octets().to_vec(),
        };
        let (family, flags) = match local {
            std::net::IpAddr::V4(_) => (libc::AF_INET as u8, 0),
            std::net::IpAddr::V6(_) => (libc::AF_INET6 as u8, IFA_F_NODAD),
        };
        let mut header = [0u8; 8];
        header[0] = family;
        header[1] = prefix_len;
        header[2] = flags;
        header[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        let mut msg = Msg::new(RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &header);
        msg.attr(IFA_LOCAL, &octets(local))
            .attr(IFA_ADDRESS, &octets(peer.unwrap_or(local)));
        match self.request("adding an address", msg) {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The addresses on `ifindex`: (local, prefix length, address), where
    /// the address is the peer's on point-to-point links.
    pub fn addresses(
        &mut self,
        ifindex: u32,
    ) -> Result<Vec<(std::net::IpAddr, u8, std::net::IpAddr)>> {
        let msg = Msg::new(RTM_GETADDR, NLM_F_DUMP, &[0u8; 8]);
        let replies = self.request("listing addresses", msg)?;
        let ip = |p: &[u8]| -> Option<std::net::IpAddr> {
            match p.len() {
                4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(p).ok()?)),
                16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(p).ok()?)),
                _ => None,
            }
        };
        let mut out = Vec::new();
        for (ty, p) in &replies {
            if *ty != RTM_NEWADDR || p.len() < 8 {
                continue;
            }
            if u32::from_ne_bytes(p[4..8].try_into().unwrap()) != ifindex {
                continue;
            }
            let (mut local, mut address) = (None, None);
            for (ty, payload) in attrs(&p[8..]) {
                match ty {
                    IFA_LOCAL => local = ip(payload),
                    IFA_ADDRESS => address = ip(payload),
                    _ => {}
                }
            }
            if let Some(address) = address {
                out.push((local.unwrap_or(address), p[1], address));
            }
        }
        Ok(out)
    }

    /// `ip link set DEV gso_max_segs N`: the most segments one packet handed
    /// to the device may stand for (1: no segmentation offload at all).
    pub fn set_gso_max_segs(&mut self, ifindex: u32, segs: u32) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.attr_u32(IFLA_GSO_MAX_SEGS, segs);
        self.request("setting gso_max_segs", msg).map(drop)
    }

    /// `ip link set DEV addrgenmode none`: no automatic IPv6 link-local
    /// address, as on the kernel's ipip and sit devices.
    pub fn disable_ipv6_addrgen(&mut self, ifindex: u32) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.begin_nest(IFLA_AF_SPEC)
            .begin_nest(libc::AF_INET6 as u16)
            .attr(IFLA_INET6_ADDR_GEN_MODE, &[IN6_ADDR_GEN_MODE_NONE])
            .end_nest()
            .end_nest();
        self.request("setting the IPv6 address generation mode", msg)
            .map(drop)
    }

    /// `ip link add NAME mtu MTU type veth peer name PEER mtu MTU`, both
    /// ends down. Fails if either name exists.
    pub fn add_veth_pair(&mut self, name: &str, peer: &str, mtu: u32) -> Result<()> {
        let mut msg = Msg::new(
            RTM_NEWLINK,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &ifinfomsg(0),
        );
        msg.attr_str(IFLA_IFNAME, name).attr_u32(IFLA_MTU, mtu);
        msg.begin_nest(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin_nest(IFLA_INFO_DATA)
            .begin_nest(VETH_INFO_PEER);
        // The peer's attributes follow an ifinfomsg of its own.
        msg.buf.extend_from_slice(&ifinfomsg(0));
        msg.attr_str(IFLA_IFNAME, peer).attr_u32(IFLA_MTU, mtu);
        msg.end_nest().end_nest().end_nest();
        self.request("creating the interface", msg).map(drop)
    }

    /// `ip link set DEV name NAME` (the device must be down).
    pub fn set_name(&mut self, ifindex: u32, name: &str) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.attr_str(IFLA_IFNAME, name);
        self.request("renaming the interface", msg).map(drop)
    }

    /// `ip link set DEV address MAC`.
    pub fn set_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.attr(IFLA_ADDRESS, &mac);
        self.request("setting the MAC address", msg).map(drop)
    }

    /// `ip link set DEV arp off`: no ARP or neighbour discovery leaves it.
    pub fn set_noarp(&mut self, ifindex: u32) -> Result<()> {
        let mut header = ifinfomsg(ifindex);
        let noarp = libc::IFF_NOARP as u32;
        header[8..12].copy_from_slice(&noarp.to_ne_bytes());
        header[12..16].copy_from_slice(&noarp.to_ne_bytes());
        let msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &header);
        self.request("turning ARP off", msg).map(drop)
    }

    pub fn del_link(&mut self, ifindex: u32) -> Result<()> {
        let msg = Msg::new(RTM_DELLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        self.request("deleting the interface", msg).map(drop)
    }

    /// Attaches (`Some(fd)`) or removes (`None`) the XDP program of a link.
    pub fn set_xdp(&mut self, ifindex: u32, fd: Option<RawFd>, flags: u32) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.begin_nest(IFLA_XDP)
            .attr(IFLA_XDP_FD, &fd.unwrap_or(-1).to_ne_bytes())
            .attr_u32(IFLA_XDP_FLAGS, flags)
            .end_nest();
        self.request("setting the XDP program", msg).map(drop)
    }

    /// Swaps the XDP program of a link for another in one step, provided
    /// the one attached is still `old_fd`'s.
    pub fn replace_xdp(
        &mut self,
        ifindex: u32,
        new_fd: RawFd,
        old_fd: RawFd,
        mode: u32,
    ) -> Result<()> {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(ifindex));
        msg.begin_nest(IFLA_XDP)
            .attr(IFLA_XDP_FD, &new_fd.to_ne_bytes())
            .attr(IFLA_XDP_EXPECTED_FD, &old_fd.to_ne_bytes())
            .attr_u32(IFLA_XDP_FLAGS, mode | XDP_FLAGS_REPLACE)
            .end_nest();
        self.request("replacing the XDP program", msg).map(drop)
    }

    /// `ip route get DST`.
    pub fn route_get(&mut self, dst: Ipv4Addr) -> Result<Route> {
        let mut rtm = [0u8; 12];
        rtm[0] = libc::AF_INET as u8;
        rtm[1] = 32;
        let mut msg = Msg::new(RTM_GETROUTE, NLM_F_ACK, &rtm);
        msg.attr(RTA_DST, &dst.octets());
        let replies = self.request("looking up the route", msg)?;
        let (_, p) = replies
            .first()
            .ok_or(NetlinkError::Malformed("route lookup"))?;
        let mut route = Route {
            oif: 0,
            prefsrc: None,
        };
        for (ty, v) in attrs(p.get(12..).unwrap_or_default()) {
            match ty {
                RTA_OIF => route.oif = nla_u32(v).unwrap_or(0),
                RTA_PREFSRC if v.len() == 4 => {
                    route.prefsrc = Some(Ipv4Addr::new(v[0], v[1], v[2], v[3]))
                }
                _ => {}
            }
        }
        Ok(route)
    }

    /// Adds a clsact qdisc unless one is there.
    pub fn add_clsact(&mut self, ifindex: u32) -> Result<()> {
        let mut msg = Msg::new(
            RTM_NEWQDISC,
            NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            &tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0),
        );
        msg.attr_str(TCA_KIND, "clsact");
        match self.request("adding the clsact qdisc", msg) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other.map(drop),
        }
    }

    pub fn del_clsact(&mut self, ifindex: u32) -> Result<()> {
        let msg = Msg::new(
            RTM_DELQDISC,
            NLM_F_ACK,
            &tcmsg(ifindex, CLSACT_HANDLE, TC_H_CLSACT, 0),
        );
        self.request("deleting the clsact qdisc", msg).map(drop)
    }

    /// Attaches a direct-action bpf classifier at xtun's priority.
    /// With `replace`, an existing filter at that priority is swapped
    /// atomically; without, an existing one is an error.
    pub fn add_bpf_filter(
        &mut self,
        ifindex: u32,
        hook: TcHook,
        prog_fd: RawFd,
        name: &str,
        classid: u32,
        replace: bool,
    ) -> Result<()> {
        self.add_bpf_filter_at(FILTER_PRIO, ifindex, hook, prog_fd, name, classid, replace)
    }

    /// `add_bpf_filter` at another priority (lower runs first).
    #[allow(clippy::too_many_arguments)]
    pub fn add_bpf_filter_at(
        &mut self,
        prio: u16,
        ifindex: u32,
        hook: TcHook,
        prog_fd: RawFd,
        name: &str,
        classid: u32,
        replace: bool,
    ) -> Result<()> {
        let info = ((prio as u32) << 16) | ETH_P_ALL.to_be() as u32;
        let exclusive = if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        let mut msg = Msg::new(
            RTM_NEWTFILTER,
            NLM_F_ACK | NLM_F_CREATE | exclusive,
            &tcmsg(ifindex, FILTER_HANDLE, hook.parent(), info),
        );
        msg.attr_str(TCA_KIND, "bpf")
            .begin_nest(TCA_OPTIONS)
            .attr_u32(TCA_BPF_FD, prog_fd as u32)
            .attr_str(TCA_BPF_NAME, name);
        if classid != 0 {
            msg.attr_u32(TCA_BPF_CLASSID, classid);
        }
        msg.attr_u32(TCA_BPF_FLAGS, TCA_BPF_FLAG_ACT_DIRECT)
            .end_nest();
        self.request("attaching the tc program", msg).map(drop)
    }

    /// Removes xtun's classifier from a hook; absent is fine.
    pub fn del_bpf_filter(&mut self, ifindex: u32, hook: TcHook) -> Result<()> {
        self.del_bpf_filter_at(FILTER_PRIO, ifindex, hook)
    }

    /// `del_bpf_filter` at another priority.
    pub fn del_bpf_filter_at(&mut self, prio: u16, ifindex: u32, hook: TcHook) -> Result<()> {
        let info = ((prio as u32) << 16) | ETH_P_ALL.to_be() as u32;
        let mut msg = Msg::new(
            RTM_DELTFILTER,
            NLM_F_ACK,
            &tcmsg(ifindex, 0, hook.parent(), info),
        );
        msg.attr_str(TCA_KIND, "bpf");
        match self.request("detaching the tc program", msg) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
            other => other.map(drop),
        }
    }

    /// How many tc filters of any kind sit on the clsact hooks of a link.
    pub fn tc_filter_count(&mut self, ifindex: u32) -> Result<usize> {
        Ok(self.dump_filters(ifindex, TcHook::Ingress)?.len()
            + self.dump_filters(ifindex, TcHook::Egress)?.len())
    }

    fn dump_filters(&mut self, ifindex: u32, hook: TcHook) -> Result<Vec<(u16, Vec<u8>)>> {
        let msg = Msg::new(
            RTM_GETTFILTER,
            NLM_F_DUMP,
            &tcmsg(ifindex, 0, hook.parent(), 0),
        );
        match self.request("listing tc filters", msg) {
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(vec![]),
            other => other,
        }
    }

    /// The bpf classifiers on a hook (empty if there is no clsact qdisc).
    pub fn bpf_filters(&mut self, ifindex: u32, hook: TcHook) -> Result<Vec<BpfFilter>> {
        let replies = self.dump_filters(ifindex, hook)?;
        let mut filters = Vec::new();
        for (_, p) in replies {
            if p.len() < 20 {
                continue;
            }
            let info = u32::from_ne_bytes(p[16..20].try_into().unwrap());
            let mut kind = None;
            let mut filter = BpfFilter {
                prio: (info >> 16) as u16,
                prog_id: None,
                name: None,
                classid: 0,
            };
            for (ty, v) in attrs(&p[20..]) {
                match ty {
                    TCA_KIND => kind = Some(nla_string(v)),
                    TCA_OPTIONS => {
                        for (oty, ov) in attrs(v) {
                            match oty {
                                TCA_BPF_ID => filter.prog_id = nla_u32(ov),
                                TCA_BPF_NAME => filter.name = Some(nla_string(ov)),
                                TCA_BPF_CLASSID => filter.classid = nla_u32(ov).unwrap_or(0),
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            if kind.as_deref() == Some("bpf") && filter.prog_id.is_some() {
                filters.push(filter);
            }
        }
        Ok(filters)
    }
}

fn recv(fd: RawFd, buf: &mut [u8]) -> Result<usize> {
    loop {
        // SAFETY: valid descriptor and buffer.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(NetlinkError::Socket(err));
        }
    }
}

fn parse_link(p: &[u8]) -> Option<Link> {
    if p.len() < 16 {
        return None;
    }
    let mut link = Link {
        index: i32::from_ne_bytes(p[4..8].try_into().ok()?) as u32,
        link_type: u16::from_ne_bytes(p[2..4].try_into().ok()?),
        flags: u32::from_ne_bytes(p[8..12].try_into().ok()?),
        ..Default::default()
    };
    for (ty, v) in attrs(&p[16..]) {
        match ty {
            IFLA_IFNAME => link.name = nla_string(v),
            IFLA_MTU => link.mtu = nla_u32(v).unwrap_or(0),
            IFLA_LINKINFO => {
                for (ity, iv) in attrs(v) {
                    if ity == IFLA_INFO_KIND {
                        link.kind = Some(nla_string(iv));
                    }
                }
            }
            IFLA_XDP => {
                for (xty, xv) in attrs(v) {
                    match xty {
                        IFLA_XDP_ATTACHED => link.xdp_attached = xv.first().copied().unwrap_or(0),
                        IFLA_XDP_PROG_ID => link.xdp_prog_id = nla_u32(xv),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_round_trip() {
        let mut msg = Msg::new(RTM_SETLINK, NLM_F_ACK, &ifinfomsg(7));
        msg.begin_nest(IFLA_XDP)
            .attr(IFLA_XDP_FD, &(-1i32).to_ne_bytes())
            .attr_u32(IFLA_XDP_FLAGS, 4)
            .end_nest()
            .attr_str(IFLA_IFNAME, "tun1");
        let bytes = msg.finish(9);
        assert_eq!(
            u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize,
            bytes.len()
        );
        let body = &bytes[NLMSG_HDR_LEN + 16..];
        let top: Vec<_> = attrs(body).collect();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].0, IFLA_XDP);
        let inner: Vec<_> = attrs(top[0].1).collect();
        assert_eq!(inner[0], (IFLA_XDP_FD, &(-1i32).to_ne_bytes()[..]));
        assert_eq!(nla_u32(inner[1].1), Some(4));
        assert_eq!(top[1].0, IFLA_IFNAME);
        assert_eq!(nla_string(top[1].1), "tun1");
    }
}
