//! A small rtnetlink client: the link, address, route and tc requests xtun
//! needs. `netlink-packet-route` encodes and decodes the messages; this
//! module only sends one request at a time on a synchronous `netlink-sys`
//! socket and collects the answers up to the ACK or the end of the dump.
//!
//! Every request asks for an ACK with extended error messages, so a refusal
//! comes back with the kernel's own explanation.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::RawFd,
};

use netlink_packet_core::{
    parse_string, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::{
    address::{AddressAttribute, AddressHeaderFlags, AddressMessage},
    link::{
        AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
        LinkFlags, LinkInfo, LinkMessage, LinkXdp, XdpAttached,
    },
    route::{RouteAddress, RouteAttribute, RouteMessage},
    tc::{TcAttribute, TcBpfFlags, TcFilterBpf, TcFilterBpfOption, TcHandle, TcMessage, TcOption},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
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
    #[error("{op}: malformed netlink reply ({detail})")]
    Undecodable { op: &'static str, detail: String },
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

pub const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;
pub const XDP_FLAGS_REPLACE: u32 = 16;
pub const XDP_ATTACHED_DRV: u8 = 1;
pub const XDP_ATTACHED_SKB: u8 = 2;
const XDP_ATTACHED_HW: u8 = 3;
const XDP_ATTACHED_MULTI: u8 = 4;

/// `NLMSGERR_ATTR_MSG`: the kernel's text in an extended ACK.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// The answers to a request fit in one datagram of this size (dumps are
/// split by the kernel into datagrams well below it).
const RECV_BUF_LEN: usize = 64 * 1024;

/// The tc priority of xtun's filters, so they are found and removed without
/// touching anybody else's ("xt").
pub const FILTER_PRIO: u16 = 0x7874;
/// Outer-fragment reassembly runs just before the data plane's filter.
pub const DEFRAG_PRIO: u16 = FILTER_PRIO - 1;
const FILTER_HANDLE: u32 = 1;
const CLSACT_HANDLE: u32 = 0xFFFF_0000;
const ETH_P_ALL: u16 = 0x0003;

/// Which clsact hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcHook {
    Ingress,
    Egress,
}

impl TcHook {
    fn parent(self) -> TcHandle {
        let minor = match self {
            Self::Ingress => TcHandle::MIN_INGRESS,
            Self::Egress => TcHandle::MIN_EGRESS,
        };
        TcHandle {
            major: u16::MAX,
            minor,
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
    /// The link-layer address (`IFLA_ADDRESS`), empty if it has none.
    pub address: Vec<u8>,
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

/// The answer of an IPv6 route lookup.
#[derive(Clone, Debug)]
pub struct Route6 {
    pub oif: u32,
    /// The source address the kernel would choose for this destination.
    pub prefsrc: Option<Ipv6Addr>,
}

pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn new() -> Result<Self> {
        let socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        // Best effort, as the answers are still right without them: the
        // kernel's text in errors, and errors that do not echo the request.
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Self {
            socket,
            seq: 1,
            buf: Vec::with_capacity(RECV_BUF_LEN),
        })
    }

    /// Sends `body` and collects the messages answered (several for a
    /// dump) until the ACK or the end of the dump.
    fn request(
        &mut self,
        op: &'static str,
        flags: u16,
        body: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let bytes = encode(body, flags, seq);
        let kernel = SocketAddr::new(0, 0);
        self.socket
            .send_to(&bytes, &kernel, 0)
            .map_err(NetlinkError::Socket)?;
        let mut out = Vec::new();
        loop {
            self.buf.clear();
            let n = loop {
                match self.socket.recv(&mut self.buf, 0) {
                    Ok(n) => break n.min(self.buf.len()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(NetlinkError::Socket(e)),
                }
            };
            let mut off = 0;
            while off < n {
                let datagram = &self.buf[off..n];
                let header = NetlinkBuffer::new_checked(datagram)
                    .map_err(|_| NetlinkError::Malformed(op))?;
                let len = header.length() as usize;
                let ours = header.sequence_number() == seq;
                let message = &datagram[..len];
                off += len.next_multiple_of(4);
                if !ours {
                    continue;
                }
                match decode(op, message)? {
                    Answer::Done => return Ok(out),
                    Answer::Message(m) => out.push(m),
                    Answer::Refused(err) => return Err(err),
                    Answer::Nothing => {}
                }
            }
        }
    }

    /// A request whose only answer is the ACK.
    fn command(&mut self, op: &'static str, flags: u16, body: RouteNetlinkMessage) -> Result<()> {
        self.request(op, flags | NLM_F_ACK, body).map(drop)
    }

    pub fn links(&mut self) -> Result<Vec<Link>> {
        let replies = self.request(
            "listing interfaces",
            NLM_F_DUMP,
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
        )?;
        Ok(replies.iter().filter_map(as_link).collect())
    }

    /// One link, asked for directly rather than found in a dump (the cost
    /// of a dump grows with the number of interfaces, tunnels included).
    fn get_link(&mut self, index: u32, name: Option<&str>) -> Result<Option<Link>> {
        let mut msg = link_message(index);
        if let Some(name) = name {
            msg.attributes.push(LinkAttribute::IfName(name.into()));
        }
        let op = "looking up the interface";
        match self.request(op, NLM_F_ACK, RouteNetlinkMessage::GetLink(msg)) {
            Ok(replies) => Ok(replies.iter().find_map(as_link)),
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

    fn set_link(
        &mut self,
        op: &'static str,
        ifindex: u32,
        attributes: Vec<LinkAttribute>,
    ) -> Result<()> {
        let mut msg = link_message(ifindex);
        msg.attributes = attributes;
        self.command(op, 0, RouteNetlinkMessage::SetLink(msg))
    }

    /// Sets the link flags in `flags` (and leaves the others alone).
    fn set_link_flags(&mut self, op: &'static str, ifindex: u32, flags: LinkFlags) -> Result<()> {
        let mut msg = link_message(ifindex);
        msg.header.flags = flags;
        msg.header.change_mask = flags;
        self.command(op, 0, RouteNetlinkMessage::SetLink(msg))
    }

    pub fn set_mtu(&mut self, ifindex: u32, mtu: u32) -> Result<()> {
        self.set_link("setting the MTU", ifindex, vec![LinkAttribute::Mtu(mtu)])
    }

    /// `ip link set DEV up`.
    pub fn set_up(&mut self, ifindex: u32) -> Result<()> {
        self.set_link_flags("setting the interface up", ifindex, LinkFlags::Up)
    }

    /// `ip addr add LOCAL/LEN [peer PEER] dev DEV` (IPv6 without duplicate
    /// address detection). Ok(false) when the address is there already.
    pub fn add_address(
        &mut self,
        ifindex: u32,
        local: IpAddr,
        prefix_len: u8,
        peer: Option<IpAddr>,
    ) -> Result<bool> {
        let msg = address_message(ifindex, local, prefix_len, peer);
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        match self.command(
            "adding an address",
            flags,
            RouteNetlinkMessage::NewAddress(msg),
        ) {
            Ok(()) => Ok(true),
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The addresses on `ifindex`: (local, prefix length, address), where
    /// the address is the peer's on point-to-point links.
    pub fn addresses(&mut self, ifindex: u32) -> Result<Vec<(IpAddr, u8, IpAddr)>> {
        let replies = self.request(
            "listing addresses",
            NLM_F_DUMP,
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        )?;
        let mut out = Vec::new();
        for reply in &replies {
            let RouteNetlinkMessage::NewAddress(msg) = reply else {
                continue;
            };
            if msg.header.index != ifindex {
                continue;
            }
            let (mut local, mut address) = (None, None);
            for attribute in &msg.attributes {
                match attribute {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(address) = address {
                out.push((local.unwrap_or(address), msg.header.prefix_len, address));
            }
        }
        Ok(out)
    }

    /// `ip link set DEV gso_max_segs N`: the most segments one packet handed
    /// to the device may stand for (1: no segmentation offload at all).
    pub fn set_gso_max_segs(&mut self, ifindex: u32, segs: u32) -> Result<()> {
        let attributes = vec![LinkAttribute::GsoMaxSegs(segs)];
        self.set_link("setting gso_max_segs", ifindex, attributes)
    }

    /// `ip link set DEV addrgenmode none`: no automatic IPv6 link-local
    /// address, as on the kernel's ipip and sit devices.
    pub fn disable_ipv6_addrgen(&mut self, ifindex: u32) -> Result<()> {
        let inet6 = vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)];
        let attributes = vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            inet6,
        )])];
        self.set_link(
            "setting the IPv6 address generation mode",
            ifindex,
            attributes,
        )
    }

    /// `ip link add NAME mtu MTU type veth peer name PEER mtu MTU`, both
    /// ends down. Fails if either name exists.
    pub fn add_veth_pair(&mut self, name: &str, peer: &str, mtu: u32) -> Result<()> {
        let msg = veth_pair_message(name, peer, mtu);
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        self.command(
            "creating the interface",
            flags,
            RouteNetlinkMessage::NewLink(msg),
        )
    }

    /// `ip link set DEV name NAME` (the device must be down).
    pub fn set_name(&mut self, ifindex: u32, name: &str) -> Result<()> {
        let attributes = vec![LinkAttribute::IfName(name.into())];
        self.set_link("renaming the interface", ifindex, attributes)
    }

    /// `ip link set DEV address MAC`.
    pub fn set_mac(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<()> {
        let attributes = vec![LinkAttribute::Address(mac.to_vec())];
        self.set_link("setting the MAC address", ifindex, attributes)
    }

    /// `ip link set DEV arp off`: no ARP or neighbour discovery leaves it.
    pub fn set_noarp(&mut self, ifindex: u32) -> Result<()> {
        self.set_link_flags("turning ARP off", ifindex, LinkFlags::Noarp)
    }

    pub fn del_link(&mut self, ifindex: u32) -> Result<()> {
        let msg = link_message(ifindex);
        self.command(
            "deleting the interface",
            0,
            RouteNetlinkMessage::DelLink(msg),
        )
    }

    /// Attaches (`Some(fd)`) or removes (`None`) the XDP program of a link.
    pub fn set_xdp(&mut self, ifindex: u32, fd: Option<RawFd>, flags: u32) -> Result<()> {
        let xdp = vec![LinkXdp::Fd(fd.unwrap_or(-1)), LinkXdp::Flags(flags)];
        self.set_link(
            "setting the XDP program",
            ifindex,
            vec![LinkAttribute::Xdp(xdp)],
        )
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
        let xdp = replace_xdp_attributes(new_fd, old_fd, mode);
        self.set_link(
            "replacing the XDP program",
            ifindex,
            vec![LinkAttribute::Xdp(xdp)],
        )
    }

    /// `ip route get DST`.
    pub fn route_get(&mut self, dst: Ipv4Addr) -> Result<Route> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let op = "looking up the route";
        let replies = self.request(op, NLM_F_ACK, RouteNetlinkMessage::GetRoute(msg))?;
        let Some(RouteNetlinkMessage::NewRoute(answer)) = replies.first() else {
            return Err(NetlinkError::Malformed("route lookup"));
        };
        let mut route = Route {
            oif: 0,
            prefsrc: None,
        };
        for attribute in &answer.attributes {
            match attribute {
                RouteAttribute::Oif(oif) => route.oif = *oif,
                RouteAttribute::PrefSource(RouteAddress::Inet(src)) => route.prefsrc = Some(*src),
                _ => {}
            }
        }
        Ok(route)
    }

    /// `ip -6 route get DST`.
    pub fn route_get6(&mut self, dst: Ipv6Addr) -> Result<Route6> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet6;
        msg.header.destination_prefix_length = 128;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet6(dst)));
        let op = "looking up the IPv6 route";
        let replies = self.request(op, NLM_F_ACK, RouteNetlinkMessage::GetRoute(msg))?;
        let Some(RouteNetlinkMessage::NewRoute(answer)) = replies.first() else {
            return Err(NetlinkError::Malformed("IPv6 route lookup"));
        };
        let mut route = Route6 {
            oif: 0,
            prefsrc: None,
        };
        for attribute in &answer.attributes {
            match attribute {
                RouteAttribute::Oif(oif) => route.oif = *oif,
                RouteAttribute::PrefSource(RouteAddress::Inet6(src)) => route.prefsrc = Some(*src),
                _ => {}
            }
        }
        Ok(route)
    }

    /// Adds a clsact qdisc unless one is there.
    pub fn add_clsact(&mut self, ifindex: u32) -> Result<()> {
        let mut msg = clsact_message(ifindex);
        msg.attributes.push(TcAttribute::Kind("clsact".into()));
        let flags = NLM_F_CREATE | NLM_F_EXCL;
        let body = RouteNetlinkMessage::NewQueueDiscipline(msg);
        match self.command("adding the clsact qdisc", flags, body) {
            Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
            other => other,
        }
    }

    pub fn del_clsact(&mut self, ifindex: u32) -> Result<()> {
        let body = RouteNetlinkMessage::DelQueueDiscipline(clsact_message(ifindex));
        self.command("deleting the clsact qdisc", 0, body)
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
        let msg = bpf_filter_message(prio, ifindex, hook, prog_fd, name, classid);
        let exclusive = if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        let body = RouteNetlinkMessage::NewTrafficFilter(msg);
        self.command("attaching the tc program", NLM_F_CREATE | exclusive, body)
    }

    /// Removes xtun's classifier from a hook; absent is fine.
    pub fn del_bpf_filter(&mut self, ifindex: u32, hook: TcHook) -> Result<()> {
        self.del_bpf_filter_at(FILTER_PRIO, ifindex, hook)
    }

    /// `del_bpf_filter` at another priority.
    pub fn del_bpf_filter_at(&mut self, prio: u16, ifindex: u32, hook: TcHook) -> Result<()> {
        let mut msg = filter_message(ifindex, hook, filter_info(prio));
        msg.attributes
            .push(TcAttribute::Kind(TcFilterBpf::KIND.into()));
        let body = RouteNetlinkMessage::DelTrafficFilter(msg);
        match self.command("detaching the tc program", 0, body) {
            Err(e) if matches!(e.errno(), Some(libc::ENOENT) | Some(libc::EINVAL)) => Ok(()),
            other => other,
        }
    }

    /// How many tc filters of any kind sit on the clsact hooks of a link.
    pub fn tc_filter_count(&mut self, ifindex: u32) -> Result<usize> {
        Ok(self.dump_filters(ifindex, TcHook::Ingress)?.len()
            + self.dump_filters(ifindex, TcHook::Egress)?.len())
    }

    fn dump_filters(&mut self, ifindex: u32, hook: TcHook) -> Result<Vec<TcMessage>> {
        let body = RouteNetlinkMessage::GetTrafficFilter(filter_message(ifindex, hook, 0));
        match self.request("listing tc filters", NLM_F_DUMP, body) {
            Ok(replies) => Ok(replies
                .into_iter()
                .filter_map(|reply| match reply {
                    RouteNetlinkMessage::NewTrafficFilter(msg) => Some(msg),
                    _ => None,
                })
                .collect()),
            Err(e) if matches!(e.errno(), Some(libc::EINVAL) | Some(libc::ENOENT)) => Ok(vec![]),
            Err(e) => Err(e),
        }
    }

    /// The bpf classifiers on a hook (empty if there is no clsact qdisc).
    pub fn bpf_filters(&mut self, ifindex: u32, hook: TcHook) -> Result<Vec<BpfFilter>> {
        Ok(self
            .dump_filters(ifindex, hook)?
            .iter()
            .filter_map(as_bpf_filter)
            .collect())
    }
}

/// What one message of an answer means to the request.
enum Answer {
    Message(RouteNetlinkMessage),
    Done,
    Refused(NetlinkError),
    Nothing,
}

fn encode(body: RouteNetlinkMessage, flags: u16, seq: u32) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = flags | NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(body));
    msg.finalize();
    let mut bytes = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut bytes);
    bytes
}

fn decode(op: &'static str, message: &[u8]) -> Result<Answer> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(message).map_err(|e| {
        NetlinkError::Undecodable {
            op,
            detail: e.to_string(),
        }
    })?;
    let flags = msg.header.flags;
    Ok(match msg.payload {
        NetlinkPayload::Done(_) => Answer::Done,
        NetlinkPayload::Error(ack) => match ack.code {
            None => Answer::Done,
            Some(code) => Answer::Refused(NetlinkError::Kernel {
                op,
                err: io::Error::from_raw_os_error(-code.get()),
                msg: ext_ack_message(flags, &ack.header),
            }),
        },
        NetlinkPayload::InnerMessage(m) => Answer::Message(m),
        _ => Answer::Nothing,
    })
}

/// The kernel's explanation in an extended ACK: with capped ACKs the
/// request's header (16 bytes) comes back alone, followed by attributes.
fn ext_ack_message(flags: u16, after_errno: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let tlvs = after_errno.get(size_of::<[u32; 4]>()..)?;
    NlasIterator::new(tlvs)
        .map_while(|nla| nla.ok())
        .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
        .and_then(|nla| parse_string(nla.value()).ok())
}

fn link_message(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn address_message(
    ifindex: u32,
    local: IpAddr,
    prefix_len: u8,
    peer: Option<IpAddr>,
) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.index = ifindex;
    msg.header.prefix_len = prefix_len;
    (msg.header.family, msg.header.flags) = match local {
        IpAddr::V4(_) => (AddressFamily::Inet, AddressHeaderFlags::empty()),
        IpAddr::V6(_) => (AddressFamily::Inet6, AddressHeaderFlags::Nodad),
    };
    msg.attributes.push(AddressAttribute::Local(local));
    msg.attributes
        .push(AddressAttribute::Address(peer.unwrap_or(local)));
    msg
}

fn veth_pair_message(name: &str, peer: &str, mtu: u32) -> LinkMessage {
    let mut peer_msg = link_message(0);
    peer_msg.attributes = vec![LinkAttribute::IfName(peer.into()), LinkAttribute::Mtu(mtu)];
    let mut msg = link_message(0);
    msg.attributes = vec![
        LinkAttribute::IfName(name.into()),
        LinkAttribute::Mtu(mtu),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]),
    ];
    msg
}

fn replace_xdp_attributes(new_fd: RawFd, old_fd: RawFd, mode: u32) -> Vec<LinkXdp> {
    vec![
        LinkXdp::Fd(new_fd),
        // The crate carries the expected fd as a u32, as the kernel reads it
        // (an s32 of the same bits).
        LinkXdp::ExpectedFd(old_fd as u32),
        LinkXdp::Flags(mode | XDP_FLAGS_REPLACE),
    ]
}

fn clsact_message(ifindex: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.handle = CLSACT_HANDLE.into();
    msg.header.parent = TcHandle::CLSACT;
    msg
}

/// The tcm_info of xtun's filters: priority, and the protocol (all) in
/// network order.
fn filter_info(prio: u16) -> u32 {
    ((prio as u32) << 16) | ETH_P_ALL.to_be() as u32
}

fn filter_message(ifindex: u32, hook: TcHook, info: u32) -> TcMessage {
    let mut msg = TcMessage::with_index(ifindex as i32);
    msg.header.parent = hook.parent();
    msg.header.info = info;
    msg
}

fn bpf_filter_message(
    prio: u16,
    ifindex: u32,
    hook: TcHook,
    prog_fd: RawFd,
    name: &str,
    classid: u32,
) -> TcMessage {
    let mut msg = filter_message(ifindex, hook, filter_info(prio));
    msg.header.handle = FILTER_HANDLE.into();
    let mut options = vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog_fd as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(name.into())),
    ];
    if classid != 0 {
        options.push(TcOption::Bpf(TcFilterBpfOption::ClassId(classid.into())));
    }
    options.push(TcOption::Bpf(TcFilterBpfOption::Flags(
        TcBpfFlags::DirectAction,
    )));
    msg.attributes = vec![
        TcAttribute::Kind(TcFilterBpf::KIND.into()),
        TcAttribute::Options(options),
    ];
    msg
}

fn as_link(reply: &RouteNetlinkMessage) -> Option<Link> {
    let RouteNetlinkMessage::NewLink(msg) = reply else {
        return None;
    };
    let mut link = Link {
        index: msg.header.index,
        link_type: msg.header.link_layer_type.into(),
        flags: msg.header.flags.bits(),
        ..Default::default()
    };
    for attribute in &msg.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Address(address) => link.address = address.clone(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(kind.to_string());
                    }
                }
            }
            LinkAttribute::Xdp(xdp) => {
                for x in xdp {
                    match x {
                        LinkXdp::Attached(how) => link.xdp_attached = attached_code(*how),
                        LinkXdp::ProgId(id) => link.xdp_prog_id = Some(*id),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(link)
}

/// `XDP_ATTACHED_*` of the crate's enum (which keeps its own conversion
/// private).
fn attached_code(how: XdpAttached) -> u8 {
    match how {
        XdpAttached::Driver => XDP_ATTACHED_DRV,
        XdpAttached::SocketBuffer => XDP_ATTACHED_SKB,
        XdpAttached::Hardware => XDP_ATTACHED_HW,
        XdpAttached::Multiple => XDP_ATTACHED_MULTI,
        XdpAttached::Other(code) => code,
        // None, and any mode a later crate version names.
        _ => 0,
    }
}

fn as_bpf_filter(msg: &TcMessage) -> Option<BpfFilter> {
    let mut kind = None;
    let mut filter = BpfFilter {
        prio: (msg.header.info >> 16) as u16,
        prog_id: None,
        name: None,
        classid: 0,
    };
    for attribute in &msg.attributes {
        match attribute {
            TcAttribute::Kind(k) => kind = Some(k.as_str()),
            TcAttribute::Options(options) => {
                for option in options {
                    match option {
                        TcOption::Bpf(TcFilterBpfOption::ProgId(id)) => filter.prog_id = Some(*id),
                        TcOption::Bpf(TcFilterBpfOption::ProgName(name)) => {
                            filter.name = Some(name.clone())
                        }
                        TcOption::Bpf(TcFilterBpfOption::ClassId(classid)) => {
                            filter.classid = (*classid).into()
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    (kind == Some(TcFilterBpf::KIND) && filter.prog_id.is_some()).then_some(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NLMSG_HDR_LEN: usize = 16;
    const IFINFOMSG_LEN: usize = 16;
    const TCMSG_LEN: usize = 20;

    /// The attributes in `bytes` as (type without flags, payload), read
    /// with the core crate's iterator only, so what the route crate wrote
    /// is checked against the kernel's numbers below.
    fn nlas(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
        NlasIterator::new(bytes)
            .map(|nla| {
                let nla = nla.expect("well-formed attribute");
                (nla.kind(), nla.value().to_vec())
            })
            .collect()
    }

    fn nla(bytes: &[u8], kind: u16) -> Vec<u8> {
        nlas(bytes)
            .into_iter()
            .find(|(k, _)| *k == kind)
            .unwrap_or_else(|| panic!("no attribute {kind}"))
            .1
    }

    fn u32_at(bytes: &[u8], off: usize) -> u32 {
        u32::from_ne_bytes(bytes[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn requests_carry_the_flags_sequence_and_length() {
        let bytes = encode(RouteNetlinkMessage::DelLink(link_message(7)), NLM_F_ACK, 9);
        assert_eq!(u32_at(&bytes, 0) as usize, bytes.len());
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 17, "RTM_DELLINK");
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            NLM_F_REQUEST | NLM_F_ACK
        );
        assert_eq!(u32_at(&bytes, 8), 9);
        assert_eq!(u32_at(&bytes, NLMSG_HDR_LEN + 4), 7, "ifi_index");
    }

    #[test]
    fn xdp_replacement_names_the_expected_program() {
        let mut msg = link_message(3);
        msg.attributes = vec![LinkAttribute::Xdp(replace_xdp_attributes(
            11,
            12,
            XDP_FLAGS_DRV_MODE,
        ))];
        let bytes = encode(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK, 1);
        let xdp = nla(&bytes[NLMSG_HDR_LEN + IFINFOMSG_LEN..], 43);
        assert_eq!(nla(&xdp, 1), 11i32.to_ne_bytes(), "IFLA_XDP_FD");
        assert_eq!(nla(&xdp, 8), 12i32.to_ne_bytes(), "IFLA_XDP_EXPECTED_FD");
        assert_eq!(
            nla(&xdp, 3),
            (XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE).to_ne_bytes(),
            "IFLA_XDP_FLAGS"
        );
    }

    #[test]
    fn veth_peer_has_its_own_ifinfomsg_name_and_mtu() {
        let msg = veth_pair_message("xa", "xb", 1400);
        let bytes = encode(RouteNetlinkMessage::NewLink(msg), NLM_F_ACK, 1);
        let attrs = &bytes[NLMSG_HDR_LEN + IFINFOMSG_LEN..];
        assert_eq!(nla(attrs, 3), b"xa\0", "IFLA_IFNAME");
        assert_eq!(nla(attrs, 4), 1400u32.to_ne_bytes(), "IFLA_MTU");
        let info = nla(attrs, 18);
        assert_eq!(nla(&info, 1), b"veth\0", "IFLA_INFO_KIND");
        let peer = nla(&nla(&info, 2), 1);
        let peer_attrs = &peer[IFINFOMSG_LEN..];
        assert_eq!(nla(peer_attrs, 3), b"xb\0");
        assert_eq!(nla(peer_attrs, 4), 1400u32.to_ne_bytes());
    }

    #[test]
    fn addrgenmode_none_nests_under_inet6() {
        let mut msg = link_message(5);
        msg.attributes = vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )])];
        let bytes = encode(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK, 1);
        let af_spec = nla(&bytes[NLMSG_HDR_LEN + IFINFOMSG_LEN..], 26);
        let inet6 = nla(&af_spec, libc::AF_INET6 as u16);
        assert_eq!(nla(&inet6, 8), [1], "IFLA_INET6_ADDR_GEN_MODE none");
    }

    #[test]
    fn bpf_filter_is_direct_action_at_xtuns_priority() {
        let msg = bpf_filter_message(FILTER_PRIO, 4, TcHook::Egress, 21, "xtun_tc", 0x1_0002);
        let bytes = encode(RouteNetlinkMessage::NewTrafficFilter(msg), NLM_F_ACK, 1);
        let tcm = &bytes[NLMSG_HDR_LEN..];
        assert_eq!(u32_at(tcm, 4), 4, "tcm_ifindex");
        assert_eq!(u32_at(tcm, 8), FILTER_HANDLE, "tcm_handle");
        assert_eq!(u32_at(tcm, 12), 0xFFFF_FFF3, "tcm_parent: clsact egress");
        assert_eq!(
            tcm[16..20],
            [0x00, 0x03, 0x74, 0x78],
            "prio 0x7874, ETH_P_ALL"
        );
        let attrs = &tcm[TCMSG_LEN..];
        assert_eq!(nla(attrs, 1), b"bpf\0", "TCA_KIND");
        let options = nla(attrs, 2);
        assert_eq!(nla(&options, 6), 21u32.to_ne_bytes(), "TCA_BPF_FD");
        assert_eq!(nla(&options, 7), b"xtun_tc\0", "TCA_BPF_NAME");
        assert_eq!(
            nla(&options, 3),
            0x1_0002u32.to_ne_bytes(),
            "TCA_BPF_CLASSID"
        );
        assert_eq!(
            nla(&options, 8),
            1u32.to_ne_bytes(),
            "TCA_BPF_FLAG_ACT_DIRECT"
        );

        let without_classid = bpf_filter_message(DEFRAG_PRIO, 4, TcHook::Ingress, 21, "x", 0);
        let bytes = encode(RouteNetlinkMessage::NewTrafficFilter(without_classid), 0, 1);
        assert_eq!(u32_at(&bytes, NLMSG_HDR_LEN + 12), 0xFFFF_FFF2);
        assert_eq!(
            bytes[NLMSG_HDR_LEN + 16..][..4],
            [0x00, 0x03, 0x73, 0x78],
            "prio 0x7873"
        );
        let options = nla(&bytes[NLMSG_HDR_LEN + TCMSG_LEN..], 2);
        assert!(nlas(&options).iter().all(|(k, _)| *k != 3));
    }

    /// A netlink message of type `ty` around `payload`, as the kernel
    /// sends it.
    fn kernel_message(ty: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&((NLMSG_HDR_LEN + payload.len()) as u32).to_ne_bytes());
        bytes.extend_from_slice(&ty.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(payload);
        bytes
    }

    fn attribute(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        bytes
    }

    #[test]
    fn a_refusal_reads_as_the_errno_and_the_kernels_text() {
        let mut payload = (-libc::EEXIST).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0; NLMSG_HDR_LEN]);
        payload.extend_from_slice(&attribute(NLMSGERR_ATTR_MSG, b"Filter already exists\0"));
        let bytes = kernel_message(2, NLM_F_ACK_TLVS, &payload);
        let Answer::Refused(err) = decode("attaching the tc program", &bytes).unwrap() else {
            panic!("not a refusal");
        };
        assert_eq!(err.errno(), Some(libc::EEXIST));
        assert_eq!(
            err.to_string(),
            format!(
                "attaching the tc program: {} (Filter already exists)",
                io::Error::from_raw_os_error(libc::EEXIST)
            )
        );

        let ack = kernel_message(2, 0, &[0; 4 + NLMSG_HDR_LEN]);
        assert!(matches!(decode("x", &ack).unwrap(), Answer::Done));
    }

    #[test]
    fn a_dumped_bpf_filter_gives_its_program_name_classid_and_prio() {
        let mut tcm = vec![0u8; TCMSG_LEN];
        tcm[4..8].copy_from_slice(&4i32.to_ne_bytes());
        tcm[16..20].copy_from_slice(&filter_info(FILTER_PRIO).to_ne_bytes());
        let mut options = attribute(11, &77u32.to_ne_bytes());
        options.extend(attribute(7, b"xtun_tc\0"));
        options.extend(attribute(3, &0x1_0005u32.to_ne_bytes()));
        tcm.extend(attribute(1, b"bpf\0"));
        tcm.extend(attribute(2 | 0x8000, &options));
        let bytes = kernel_message(44, 0, &tcm);
        let Answer::Message(RouteNetlinkMessage::NewTrafficFilter(msg)) =
            decode("listing tc filters", &bytes).unwrap()
        else {
            panic!("not a filter");
        };
        let filter = as_bpf_filter(&msg).expect("a bpf filter");
        assert_eq!(filter.prio, FILTER_PRIO);
        assert_eq!(filter.prog_id, Some(77));
        assert_eq!(filter.name.as_deref(), Some("xtun_tc"));
        assert_eq!(filter.classid, 0x1_0005);
    }

    #[test]
    fn a_dumped_link_gives_its_xdp_program_and_mode() {
        let mut ifi = vec![0u8; IFINFOMSG_LEN];
        ifi[2..4].copy_from_slice(&1u16.to_ne_bytes());
        ifi[4..8].copy_from_slice(&9i32.to_ne_bytes());
        ifi[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        ifi.extend(attribute(3, b"ul0\0"));
        ifi.extend(attribute(4, &1500u32.to_ne_bytes()));
        let mut xdp = attribute(2, &[XDP_ATTACHED_SKB]);
        xdp.extend(attribute(4, &33u32.to_ne_bytes()));
        ifi.extend(attribute(43 | 0x8000, &xdp));
        ifi.extend(attribute(18 | 0x8000, &attribute(1, b"veth\0")));
        let bytes = kernel_message(16, 0, &ifi);
        let Answer::Message(reply) = decode("listing interfaces", &bytes).unwrap() else {
            panic!("not a link");
        };
        let link = as_link(&reply).expect("a link");
        assert_eq!(
            (link.index, link.name.as_str(), link.mtu, link.link_type),
            (9, "ul0", 1500, 1)
        );
        assert_eq!(link.flags, libc::IFF_UP as u32);
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(link.xdp_prog_id, Some(33));
        assert_eq!(link.xdp_attached, XDP_ATTACHED_SKB);
    }
}
