//! The site gateway (`cargo xtask bench --gateway`): client → gw1 → router →
//! gw2 → server, all veth, and 64-byte UDP frames generated at the client
//! forwarded by the gateways, counted where they arrive at the server.
//!
//! Five ways to join the two sites, measured round by round in one run:
//! plain kernel forwarding (no tunnel), the kernel's VXLAN devices between
//! the gateways, xtun's tunnel as routes into it use it today (the kernel's
//! stack on both sides), xtun's XDP forwarding fast path, and the floor:
//! the least any XDP gateway does for the flow. Each with two generators:
//! trafgen (skbs, which veth copies before XDP sees them) and XDP frames
//! (as a NIC's driver hands them to XDP).

use std::{
    collections::BTreeMap,
    os::{fd::OwnedFd, unix::process::CommandExt as _},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use serde_json::{json, Value};
use tunnel_common::stats::*;
use tunnel_userspace::testbed::{unique_prefix, Netns};

use super::{frames, median, summary};

/// Addresses: one /24 per link, all under 10.61.0.0/16, and the tunnel's
/// own point-to-point addresses.
const CLIENT: &str = "10.61.1.2";
const SERVER: &str = "10.61.4.2";
const GW1_UNDERLAY: &str = "10.61.2.1";
const GW2_UNDERLAY: &str = "10.61.3.1";
const GW1_INNER: &str = "10.61.100.1";
const GW2_INNER: &str = "10.61.100.2";
const CLIENT_NET: &str = "10.61.1.0/24";
const SERVER_NET: &str = "10.61.4.0/24";

/// Every veth end: (namespace role, device, address/len). Pairs are
/// consecutive: c0-g1c, g1u-ru1, ru2-g2u, g2s-s0.
const LINKS: [(Role, &str, &str); 8] = [
    (Role::Client, "c0", "10.61.1.2/24"),
    (Role::Gw1, "g1c", "10.61.1.1/24"),
    (Role::Gw1, "g1u", "10.61.2.1/24"),
    (Role::Router, "ru1", "10.61.2.2/24"),
    (Role::Router, "ru2", "10.61.3.2/24"),
    (Role::Gw2, "g2u", "10.61.3.1/24"),
    (Role::Gw2, "g2s", "10.61.4.1/24"),
    (Role::Server, "s0", "10.61.4.2/24"),
];

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Client,
    Gw1,
    Router,
    Gw2,
    Server,
}

const ROLES: [(Role, &str); 5] = [
    (Role::Client, "client"),
    (Role::Gw1, "gw1"),
    (Role::Router, "router"),
    (Role::Gw2, "gw2"),
    (Role::Server, "server"),
];

/// The five namespaces of one path, removed on drop.
struct Sites {
    namespaces: Vec<(Role, Netns)>,
}

impl Sites {
    fn new() -> Result<Self> {
        let prefix = unique_prefix("gw");
        let mut namespaces = Vec::new();
        for (role, name) in ROLES {
            namespaces.push((role, Netns::new(format!("{prefix}-{name}"))?));
        }
        let sites = Self { namespaces };
        for pair in LINKS.chunks(2) {
            let [(a, a_dev, _), (b, b_dev, _)] = [pair[0], pair[1]];
            tunnel_userspace::testbed::run(&[
                "ip",
                "link",
                "add",
                a_dev,
                "netns",
                &sites.ns(a).name,
                "type",
                "veth",
                "peer",
                "name",
                b_dev,
                "netns",
                &sites.ns(b).name,
            ])?;
        }
        for (role, dev, addr) in LINKS {
            let ns = sites.ns(role);
            ns.exec(&["ip", "addr", "add", addr, "dev", dev])?;
            ns.exec(&["ip", "link", "set", dev, "up"])?;
            // NAPI on every receiving veth end, in every path alike: an
            // XDP_REDIRECT into a veth needs it at the peer, and the
            // comparison is fair only if the other paths have it too.
            ns.exec(&["ethtool", "-K", dev, "gro", "on"])?;
        }
        for role in [Role::Gw1, Role::Router, Role::Gw2] {
            sites
                .ns(role)
                .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        // trafgen's packet socket gets the namespace's default send buffer
        // (208 KiB), which skbs waiting in a veth's XDP ring (256 of them)
        // can fill: its worker then stops at the EAGAIN. 4 MiB holds them.
        sites
            .ns(Role::Client)
            .exec(&["sysctl", "-qw", "net.core.wmem_default=4194304"])?;
        for (role, dst, via) in [
            (Role::Client, "default", "10.61.1.1"),
            (Role::Server, "default", "10.61.4.1"),
            (Role::Gw1, "10.61.3.0/24", "10.61.2.2"),
            (Role::Gw2, "10.61.2.0/24", "10.61.3.2"),
        ] {
            sites
                .ns(role)
                .exec(&["ip", "route", "add", dst, "via", via])?;
        }
        Ok(sites)
    }

    fn ns(&self, role: Role) -> &Netns {
        &self.namespaces.iter().find(|(r, _)| *r == role).unwrap().1
    }

    /// Routes each gateway's far site through the next hop given for it.
    fn route_sites_via(&self, peer_of_gw1: &str, peer_of_gw2: &str) -> Result<()> {
        self.ns(Role::Gw1)
            .exec(&["ip", "route", "add", SERVER_NET, "via", peer_of_gw1])?;
        self.ns(Role::Gw2)
            .exec(&["ip", "route", "add", CLIENT_NET, "via", peer_of_gw2])?;
        Ok(())
    }
}

/// One way of joining the sites. Its setup returns the XDP links that
/// keep its own programs attached, if any.
struct GatewayPath {
    name: &'static str,
    setup: fn(&Sites, &str) -> Result<Vec<OwnedFd>>,
}

const PLAIN: &str = "plain forwarding (no tunnel)";
const VXLAN: &str = "kernel VXLAN gateways";
const STACK: &str = "xtun GRE, stack path";
const FAST: &str = "xtun GRE, XDP fast path";
const FLOOR: &str = "XDP floor (fixed headers)";

const PATHS: [GatewayPath; 5] = [
    GatewayPath {
        name: PLAIN,
        setup: plain,
    },
    GatewayPath {
        name: VXLAN,
        setup: vxlan,
    },
    GatewayPath {
        name: STACK,
        setup: xtun_stack,
    },
    GatewayPath {
        name: FAST,
        setup: xtun_fast,
    },
    GatewayPath {
        name: FLOOR,
        setup: floor,
    },
];

/// The router knows both sites; the gateways route to each other's site
/// through it. In the tunnel paths it knows only the underlay.
fn plain(sites: &Sites, _: &str) -> Result<Vec<OwnedFd>> {
    sites.route_sites_via("10.61.2.2", "10.61.3.2")?;
    let router = sites.ns(Role::Router);
    router.exec(&["ip", "route", "add", CLIENT_NET, "via", GW1_UNDERLAY])?;
    router.exec(&["ip", "route", "add", SERVER_NET, "via", GW2_UNDERLAY])?;
    Ok(Vec::new())
}

fn vxlan(sites: &Sites, _: &str) -> Result<Vec<OwnedFd>> {
    for (role, local, remote, dev, addr, peer) in [
        (
            Role::Gw1,
            GW1_UNDERLAY,
            GW2_UNDERLAY,
            "g1u",
            GW1_INNER,
            GW2_INNER,
        ),
        (
            Role::Gw2,
            GW2_UNDERLAY,
            GW1_UNDERLAY,
            "g2u",
            GW2_INNER,
            GW1_INNER,
        ),
    ] {
        let ns = sites.ns(role);
        ns.exec(&[
            "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", remote, "local",
            local, "dstport", "4789", "dev", dev,
        ])?;
        ns.exec(&["ip", "link", "set", "vx0", "up"])?;
        ns.exec(&["ip", "addr", "add", addr, "peer", peer, "dev", "vx0"])?;
    }
    sites.route_sites_via(GW2_INNER, GW1_INNER)?;
    Ok(Vec::new())
}

/// xtun's GRE tunnel between the gateways, with each underlay attached as
/// `decap` says, as the seed throughput bench sets xtun up.
fn xtun_tunnels(sites: &Sites, xtun: &str, decap: &str) -> Result<()> {
    for (role, name, local, remote, dev, addr, peer) in [
        (
            Role::Gw1,
            "xt1",
            GW1_UNDERLAY,
            GW2_UNDERLAY,
            "g1u",
            GW1_INNER,
            GW2_INNER,
        ),
        (
            Role::Gw2,
            "xt2",
            GW2_UNDERLAY,
            GW1_UNDERLAY,
            "g2u",
            GW2_INNER,
            GW1_INNER,
        ),
    ] {
        let ns = sites.ns(role);
        ns.exec(&[xtun, "attach", dev, "--decap", decap])?;
        ns.exec(&[
            xtun, "tunnel", "add", name, "mode", "gre", "remote", remote, "local", local,
        ])?;
        ns.exec(&["ip", "link", "set", name, "up"])?;
        ns.exec(&["ip", "addr", "add", addr, "peer", peer, "dev", name])?;
    }
    sites.route_sites_via(GW2_INNER, GW1_INNER)
}

fn xtun_stack(sites: &Sites, xtun: &str) -> Result<Vec<OwnedFd>> {
    xtun_tunnels(sites, xtun, "auto")?;
    Ok(Vec::new())
}

/// The fast path: underlays decapsulating in XDP, and each gateway's LAN
/// interface attached with `--forward xdp`.
fn xtun_fast(sites: &Sites, xtun: &str) -> Result<Vec<OwnedFd>> {
    xtun_tunnels(sites, xtun, "xdp")?;
    for (role, lan) in [(Role::Gw1, "g1c"), (Role::Gw2, "g2s")] {
        sites
            .ns(role)
            .exec(&[xtun, "attach", lan, "--forward", "xdp"])?;
    }
    Ok(Vec::new())
}

/// The floor: gw1's LAN pushes fixed outer IPv4 and GRE headers onto the
/// flow and redirects it to the underlay, gw2's underlay pops them and
/// redirects the flow to its LAN, with no route lookup, TTL or counter.
/// Everything else (ARP, ping) takes plain forwarding's routes.
fn floor(sites: &Sites, _: &str) -> Result<Vec<OwnedFd>> {
    plain(sites, "")?;
    let (gw1, router, gw2, server) = (
        sites.ns(Role::Gw1),
        sites.ns(Role::Router),
        sites.ns(Role::Gw2),
        sites.ns(Role::Server),
    );
    let mut outer = Vec::with_capacity(38);
    outer.extend(mac_bytes(&mac_of(router, "ru1")?)?);
    outer.extend(mac_bytes(&mac_of(gw1, "g1u")?)?);
    outer.extend([0x08, 0x00]);
    let gre = [0, 0, 0x08, 0x00];
    outer.extend(ipv4_header(
        FRAME_IP_LEN + gre.len() as u16,
        IpNumber::GRE,
        GW1_UNDERLAY,
        GW2_UNDERLAY,
    )?);
    outer.extend(gre);
    let encap = frames::load_floor_encap(outer.as_slice().try_into()?, ifindex_of(gw1, "g1u")?)?;
    let mut eth = Vec::with_capacity(14);
    eth.extend(mac_bytes(&mac_of(server, "s0")?)?);
    eth.extend(mac_bytes(&mac_of(gw2, "g2s")?)?);
    eth.extend([0x08, 0x00]);
    let decap = frames::load_floor_decap(eth.as_slice().try_into()?, ifindex_of(gw2, "g2s")?)?;
    Ok(vec![
        frames::attach(&gw1.name, "g1c", encap)?,
        frames::attach(&gw2.name, "g2u", decap)?,
    ])
}

fn ifindex_of(ns: &Netns, dev: &str) -> Result<u32> {
    let out = ns.exec(&["ip", "-j", "link", "show", "dev", dev])?;
    let links: Value = serde_json::from_slice(&out.stdout)?;
    links[0]["ifindex"]
        .as_u64()
        .map(|i| i as u32)
        .with_context(|| format!("no ifindex for {dev}"))
}

fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("not a MAC: {mac}"))
}

/// An IPv4 header without options, TTL 64, with its checksum, for
/// `payload_len` bytes of `protocol`.
fn ipv4_header(payload_len: u16, protocol: IpNumber, src: &str, dst: &str) -> Result<Vec<u8>> {
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (src.parse()?, dst.parse()?);
    let mut header = Ipv4Header::new(payload_len, 64, protocol, src.octets(), dst.octets())?;
    header.header_checksum = header.calc_header_checksum();
    Ok(header.to_bytes().to_vec())
}

/// Drops the flow where it arrives at the server, after the device has
/// counted it: otherwise the server routes an ICMP port unreachable for
/// every packet (rate-limited only after the route lookup), and that cost,
/// the same in every path, would dilute the comparison. Only the flow:
/// gw2 must still resolve the server's address.
fn sink_at_server(sites: &Sites) -> Result<()> {
    let rules = "table netdev xtun_bench_sink {\n  chain ingress {\n    type filter hook ingress device \"s0\" priority 0; policy accept;\n    ip protocol udp udp dport 9 drop\n  }\n}\n";
    let file = std::env::temp_dir().join(format!("{}.nft", sites.ns(Role::Server).name));
    std::fs::write(&file, rules)?;
    let loaded = sites
        .ns(Role::Server)
        .exec(&["nft", "-f", file.to_str().context("temp path")?]);
    let _ = std::fs::remove_file(&file);
    loaded?;
    Ok(())
}

/// trafgen and its workers, in a process group of their own that is
/// stopped on drop, so a bench failing halfway leaves no generator behind.
struct Generator {
    child: Child,
    config: std::path::PathBuf,
    /// trafgen's stderr: a file rather than a pipe, which a worker outliving
    /// its parent would hold open.
    stderr: std::path::PathBuf,
}

impl Generator {
    /// One worker, which trafgen binds to CPU 0: the forwarding runs inline
    /// after each send, on that CPU. (One worker per CPU measured about
    /// twice the rate, but on the fast path a worker stops at its first
    /// EAGAIN from the veth, "Flushing TX_RING failed".) At high priority
    /// (SCHED_FIFO, which the kernel holds to 95% of the CPU), so that
    /// builds sharing the machine do not halve the figures: at load 6 one
    /// worker measured 68,000 pps without, 143,000-166,000 with. No C
    /// preprocessor, no rate limit, IRQ affinities untouched (veths have
    /// none).
    fn start(client: &Netns, config_text: &str) -> Result<Self> {
        let config = std::env::temp_dir().join(format!("{}.trafgen", client.name));
        std::fs::write(&config, config_text)?;
        let stderr = config.with_extension("stderr");
        let child = Command::new("ip")
            .args(["netns", "exec", &client.name, "trafgen", "--dev", "c0"])
            .arg("--conf")
            .arg(&config)
            .args(["--cpus", "1", "--prio-high", "--notouch-irq"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .process_group(0)
            .spawn()
            .context("starting trafgen")?;
        Ok(Self {
            child,
            config,
            stderr,
        })
    }

    fn signal_group(&self, signal: i32) {
        // SAFETY: kill(2) on the process group this generator leads.
        unsafe { libc::kill(-(self.child.id() as i32), signal) };
    }

    /// Fails with trafgen's own words if it has already exited.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            bail!("trafgen exited with {status}: {}", err.trim());
        }
        Ok(())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.signal_group(libc::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(2);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn mac_of(ns: &Netns, dev: &str) -> Result<String> {
    let out = ns.exec(&["ip", "-j", "link", "show", "dev", dev])?;
    let links: Value = serde_json::from_slice(&out.stdout)?;
    links[0]["address"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no MAC for {dev}"))
}

/// The flow's IPv4 packet length: 64-byte frames (14 Ethernet + 20 IPv4
/// + 8 UDP + 22 payload).
const FRAME_IP_LEN: u16 = 50;

/// The flow's frame: one fixed UDP flow from the client to the server's
/// discard port, 64 bytes from Ethernet header to payload.
fn udp_frame(src_mac: &str, dst_mac: &str) -> Result<Vec<u8>> {
    let (src, dst): (std::net::Ipv4Addr, std::net::Ipv4Addr) = (CLIENT.parse()?, SERVER.parse()?);
    let builder = PacketBuilder::ethernet2(mac_bytes(src_mac)?, mac_bytes(dst_mac)?)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(4000, 9);
    let payload = [0x42; FRAME_IP_LEN as usize - 28];
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut frame, &payload)?;
    Ok(frame)
}

/// trafgen's configuration for `frame`: its bytes, sent as they are.
fn trafgen_config(frame: &[u8]) -> String {
    let bytes: Vec<String> = frame.iter().map(|b| format!("0x{b:02x}")).collect();
    format!("{{\n  {}\n}}\n", bytes.join(", "))
}

/// What makes the client's flow.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    /// trafgen: skbs from a packet socket, which veth copies into a page
    /// of its own before an XDP program may see them.
    Trafgen,
    /// The bench's XDP live-frames generator: frames in page-pool pages,
    /// as a NIC's driver hands them to XDP.
    XdpFrames,
}

const LOADS: [(Load, &str); 2] = [(Load::Trafgen, "trafgen"), (Load::XdpFrames, "XDP frames")];

/// A running generator, stopped on drop.
enum Running {
    Trafgen(Generator),
    XdpFrames(frames::FrameGenerator),
}

impl Running {
    fn start(client: &Netns, load: Load, frame: &[u8]) -> Result<Self> {
        Ok(match load {
            Load::Trafgen => Self::Trafgen(Generator::start(client, &trafgen_config(frame))?),
            Load::XdpFrames => Self::XdpFrames(frames::FrameGenerator::start(
                &client.name,
                "c0",
                frame.to_vec(),
            )),
        })
    }

    fn check_running(&mut self) -> Result<()> {
        match self {
            Self::Trafgen(g) => g.check_running(),
            Self::XdpFrames(g) => g.check_running(),
        }
    }
}

/// Counters read at one moment: every device's rx packets and drops, and
/// xtun's drop counters on each gateway.
struct Snapshot {
    server_rx: u64,
    /// "role/dev rx" or "role/dev tx" → dropped packets, and "role Ip
    /// COUNTER" for the IP layer's discards (an unresolved neighbour, no
    /// route), which no device counts.
    device_drops: BTreeMap<String, u64>,
    /// "role/ifname counter" → packets.
    xtun_drops: BTreeMap<String, u64>,
    /// "role counter" → packets, summed over interfaces: what the fast
    /// path forwarded, and what it handed to the kernel and why.
    fast_path: BTreeMap<String, u64>,
    /// "role/dev" → frames XDP redirected on the gateways' receiving ends
    /// (veth's own count): what the floor gateways forwarded.
    xdp_redirects: BTreeMap<String, u64>,
    cpu: f64,
    at: Instant,
}

/// xtun's counters that mean a packet was dropped.
const XTUN_DROPS: &[u32] = &[
    RX_BAD_GRE_VERSION,
    RX_BAD_GRE_FLAGS,
    RX_TRUNCATED,
    RX_BAD_PAYLOAD,
    RX_BAD_INNER,
    RX_ECN_DROP,
    RX_ADJUST_FAIL,
    RX_DELIVER_FAIL,
    TX_BAD_INNER,
    TX_NO_BUFS,
    TX_NO_ROUTE,
    RX_BAD_GRE_CSUM,
    RX_OUT_OF_SEQ,
    TX_NO_NEIGH,
    TX_NO_SOURCE,
    TX_GSO_UNSUPPORTED,
    TX_DEAD_LOOP,
    RX_RPFILTER,
    TX_TOO_BIG_DROP,
];

impl Snapshot {
    fn take(sites: &Sites, xtun: Option<&str>) -> Result<Self> {
        let mut device_drops = BTreeMap::new();
        let mut server_rx = 0;
        for (role, role_name) in ROLES {
            let ns = sites.ns(role);
            let out = ns.exec(&["ip", "-j", "-s", "link", "show"])?;
            let links: Value = serde_json::from_slice(&out.stdout)?;
            for link in links.as_array().into_iter().flatten() {
                let name = link["ifname"].as_str().unwrap_or("?");
                if name == "lo" {
                    continue;
                }
                let stats = &link["stats64"];
                for dir in ["rx", "tx"] {
                    let dropped = stats[dir]["dropped"].as_u64().unwrap_or(0);
                    device_drops.insert(format!("{role_name}/{name} {dir}"), dropped);
                }
                if role == Role::Server && name == "s0" {
                    server_rx = stats["rx"]["packets"].as_u64().context("s0 rx packets")?;
                }
            }
            let snmp = ns.exec(&["cat", "/proc/net/snmp"])?;
            for (counter, n) in ip_discards(&String::from_utf8_lossy(&snmp.stdout)) {
                device_drops.insert(format!("{role_name} Ip {counter}"), n);
            }
        }
        let mut xtun_drops = BTreeMap::new();
        let mut fast_path = BTreeMap::new();
        if let Some(xtun) = xtun {
            for (role, role_name) in [(Role::Gw1, "gw1"), (Role::Gw2, "gw2")] {
                let out = sites.ns(role).exec(&[xtun, "-j", "stats"])?;
                let per_if: Value = serde_json::from_slice(&out.stdout)?;
                for entry in per_if.as_array().into_iter().flatten() {
                    let ifname = entry["ifname"].as_str().unwrap_or("?");
                    for &slot in XTUN_DROPS {
                        let counter = COUNTER_NAMES[slot as usize];
                        let n = entry["counters"][counter].as_u64().unwrap_or(0);
                        xtun_drops.insert(format!("{role_name}/{ifname} {counter}"), n);
                    }
                    let counters = entry["counters"].as_object().into_iter().flatten();
                    for (counter, n) in counters.filter(|(c, _)| is_fast_path_counter(c)) {
                        *fast_path
                            .entry(format!("{role_name} {counter}"))
                            .or_default() += n.as_u64().unwrap_or(0);
                    }
                }
            }
        }
        let mut xdp_redirects = BTreeMap::new();
        for (role, role_name, dev) in [(Role::Gw1, "gw1", "g1c"), (Role::Gw2, "gw2", "g2u")] {
            let out = sites.ns(role).exec(&["ethtool", "-S", dev])?;
            let redirected = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().split_once(": "))
                .filter(|(k, _)| k.starts_with("rx_queue_") && k.ends_with("_xdp_redirect"))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum();
            xdp_redirects.insert(format!("{role_name}/{dev}"), redirected);
        }
        Ok(Self {
            server_rx,
            device_drops,
            xtun_drops,
            fast_path,
            xdp_redirects,
            cpu: kernel_cpu_seconds(),
            at: Instant::now(),
        })
    }
}

const FORWARDED_TO_TUNNEL: &str = COUNTER_NAMES[TX_FORWARD_XDP as usize];
const FORWARDED_FROM_TUNNEL: &str = COUNTER_NAMES[RX_FORWARD_XDP as usize];

/// What the fast path forwarded, and what it handed to the kernel, by why.
fn is_fast_path_counter(name: &str) -> bool {
    const FAST_PATH: [u32; 10] = [
        TX_FORWARD_XDP,
        RX_FORWARD_XDP,
        FWD_PASS_TTL,
        FWD_PASS_OPTIONS,
        FWD_PASS_FRAGMENT,
        FWD_PASS_MULTICAST,
        FWD_PASS_NO_ROUTE,
        FWD_PASS_TOO_BIG,
        FWD_PASS_RPFILTER,
        FWD_PASS_MARTIAN,
    ];
    FAST_PATH
        .iter()
        .any(|&slot| COUNTER_NAMES[slot as usize] == name)
}

/// The IP layer's discard counters from /proc/net/snmp: its `Ip:` line of
/// names, then its line of values.
fn ip_discards(snmp: &str) -> Vec<(String, u64)> {
    const DISCARDS: [&str; 6] = [
        "InHdrErrors",
        "InAddrErrors",
        "InDiscards",
        "OutDiscards",
        "OutNoRoutes",
        "InUnknownProtos",
    ];
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip: "));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        return Vec::new();
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .filter(|(name, _)| DISCARDS.contains(name))
        .filter_map(|(name, value)| Some((name.to_string(), value.parse().ok()?)))
        .collect()
}

/// The machine's CPU time in the kernel so far (system, irq and softirq),
/// in seconds. Forwarding and trafgen's sending are all kernel time; the
/// builds that share this machine are mostly user time, which this leaves
/// out (the seed bench's `cpu_busy_seconds` counts them too).
fn kernel_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or("");
    // cpu user nice system idle iowait irq softirq ...
    let ticks: f64 = line
        .split_whitespace()
        .enumerate()
        .filter(|(i, _)| matches!(i, 3 | 6 | 7))
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// What one measurement gave.
struct Sample {
    pps: f64,
    cpu_seconds_per_mpkt: f64,
    drops: BTreeMap<String, u64>,
    fast_path: BTreeMap<String, u64>,
}

/// Increases from `before` to `after`, the nonzero ones only.
fn grown(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> impl Iterator<Item = (String, u64)> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v.saturating_sub(*before.get(k).unwrap_or(&0))))
        .filter(|(_, d)| *d > 0)
        .collect::<Vec<_>>()
        .into_iter()
}

/// How long the generator runs before counting starts: neighbours resolved,
/// rings and caches warm.
const WARM_UP: Duration = Duration::from_millis(500);

/// One measurement of a built path, `name`. For the fast path and the
/// floor, fails unless the gateways forwarded (nearly) every packet counted
/// at the server in XDP: otherwise the figure would be the kernel's path
/// under their name.
fn measure(
    sites: &Sites,
    name: &str,
    xtun: Option<&str>,
    load: Load,
    frame: &[u8],
    seconds: u32,
) -> Result<Sample> {
    let mut generator = Running::start(sites.ns(Role::Client), load, frame)?;
    thread::sleep(WARM_UP);
    generator.check_running()?;
    let before = Snapshot::take(sites, xtun)?;
    thread::sleep(Duration::from_secs(seconds.into()));
    let after = Snapshot::take(sites, xtun)?;
    generator.check_running()?;
    drop(generator);
    let packets = after.server_rx.saturating_sub(before.server_rx) as f64;
    let elapsed = after.at.duration_since(before.at).as_secs_f64();
    let mut drops: BTreeMap<String, u64> =
        grown(&before.device_drops, &after.device_drops).collect();
    drops.extend(grown(&before.xtun_drops, &after.xtun_drops));
    let fast: BTreeMap<String, u64> = grown(&before.fast_path, &after.fast_path).collect();
    if name == FLOOR {
        let redirected: BTreeMap<String, u64> =
            grown(&before.xdp_redirects, &after.xdp_redirects).collect();
        for dev in ["gw1/g1c", "gw2/g2u"] {
            let n = redirected.get(dev).copied().unwrap_or(0) as f64;
            if n < 0.9 * packets {
                bail!("{dev} redirected {n} frames for {packets} packets at the server: the floor's programs are not taken");
            }
        }
    }
    if name == FAST {
        for key in [
            format!("gw1 {FORWARDED_TO_TUNNEL}"),
            format!("gw2 {FORWARDED_FROM_TUNNEL}"),
        ] {
            let forwarded = fast.get(&key).copied().unwrap_or(0) as f64;
            if forwarded < 0.9 * packets {
                bail!(
                    "{key} is {forwarded} for {packets} packets at the server: the fast path is not taken (its counters: {fast:?})"
                );
            }
        }
    }
    Ok(Sample {
        pps: packets / elapsed,
        cpu_seconds_per_mpkt: (after.cpu - before.cpu) / (packets / 1e6),
        drops,
        fast_path: fast,
    })
}

/// How many times one measurement is tried when trafgen stops at an EAGAIN.
const TRAFGEN_ATTEMPTS: u32 = 3;

/// trafgen's worker exits at the first EAGAIN its packet socket returns
/// ("Flushing TX_RING failed"), which a full send buffer gives: then the
/// measurement, not the path, failed (a net under the client's larger
/// send buffer).
fn trafgen_hit_eagain(e: &anyhow::Error) -> bool {
    format!("{e:#}").contains("Flushing TX_RING failed")
}

/// `cargo xtask bench --gateway`: median of 3 rounds of 4 s (`quick`: one
/// round of 3 s), each round measuring every path once in turn.
pub fn run(quick: bool, xtun: &str, rows: &mut Vec<(String, String, Value)>) -> Result<Value> {
    let (rounds, seconds) = if quick { (1, 3) } else { (3, 4) };
    let mut built = Vec::new();
    for path in &PATHS {
        let sites = Sites::new()?;
        let links =
            (path.setup)(&sites, xtun).with_context(|| format!("setting up {}", path.name))?;
        // The path must carry the flow before it is measured.
        sites
            .ns(Role::Client)
            .exec(&["ping", "-c", "1", "-W", "2", SERVER])
            .with_context(|| format!("{}: client cannot reach the server", path.name))?;
        sink_at_server(&sites)?;
        let frame = udp_frame(
            &mac_of(sites.ns(Role::Client), "c0")?,
            &mac_of(sites.ns(Role::Gw1), "g1c")?,
        )?;
        let uses_xtun = path.name == STACK || path.name == FAST;
        built.push((path.name, sites, links, frame, uses_xtun));
    }
    // Per path and load: packets/s and CPU per round, drops and fast-path
    // counters over all rounds.
    let cells = built.len() * LOADS.len();
    let mut pps: Vec<Vec<f64>> = vec![Vec::new(); cells];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); cells];
    let mut drops: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); cells];
    let mut fast: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); cells];
    for _ in 0..rounds {
        for (i, (name, sites, _, frame, uses_xtun)) in built.iter().enumerate() {
            for (j, (load, load_name)) in LOADS.iter().enumerate() {
                let cell = i * LOADS.len() + j;
                let mut attempt = 1;
                let sample = loop {
                    match measure(
                        sites,
                        name,
                        uses_xtun.then_some(xtun),
                        *load,
                        frame,
                        seconds,
                    ) {
                        Ok(sample) => break sample,
                        Err(e) if attempt < TRAFGEN_ATTEMPTS && trafgen_hit_eagain(&e) => {
                            eprintln!("bench: {name}: {e:#}; measuring again");
                            attempt += 1;
                        }
                        Err(e) => {
                            return Err(e.context(format!("measuring {name} with {load_name}")))
                        }
                    }
                };
                pps[cell].push(sample.pps);
                cpu[cell].push(sample.cpu_seconds_per_mpkt);
                for (k, v) in sample.drops {
                    *drops[cell].entry(k).or_default() += v;
                }
                for (k, v) in sample.fast_path {
                    *fast[cell].entry(k).or_default() += v;
                }
            }
        }
    }
    let mut paths = serde_json::Map::new();
    for (i, (name, ..)) in built.iter().enumerate() {
        let mut doc = serde_json::Map::new();
        for (j, (_, load_name)) in LOADS.iter().enumerate() {
            let cell = i * LOADS.len() + j;
            let per_load = json!({
                "udp_64b_pps": summary(pps[cell].clone()),
                "kernel_cpu_seconds_per_million_packets": summary(cpu[cell].clone()),
                "drops": drops[cell],
                "xtun_fast_path_counters": fast[cell],
            });
            rows.push((
                name.to_string(),
                format!("UDP 64 B packets/s ({load_name})"),
                per_load["udp_64b_pps"].clone(),
            ));
            rows.push((
                name.to_string(),
                format!("kernel CPU s per Mpkt ({load_name})"),
                per_load["kernel_cpu_seconds_per_million_packets"].clone(),
            ));
            doc.insert(load_name.to_string(), per_load);
        }
        paths.insert(name.to_string(), Value::Object(doc));
    }
    let pps_of = |name: &str, load: &str| {
        paths
            .get(name)
            .map_or(f64::NAN, |p| median(&p[load]["udp_64b_pps"]))
    };
    let mut ratios = serde_json::Map::new();
    for (_, load_name) in LOADS {
        for (label, over, under) in [
            ("fast path / plain", FAST, PLAIN),
            ("fast path / VXLAN", FAST, VXLAN),
            ("stack / plain", STACK, PLAIN),
            ("stack / VXLAN", STACK, VXLAN),
            ("floor / plain", FLOOR, PLAIN),
            ("fast path / floor", FAST, FLOOR),
        ] {
            let ratio = pps_of(over, load_name) / pps_of(under, load_name);
            let label = format!("{label} ({load_name})");
            rows.push((
                "gateway ratio (pps)".into(),
                label.clone(),
                json!({ "median": ratio, "min": null, "max": null, "n": 1 }),
            ));
            ratios.insert(label, json!(ratio));
        }
    }
    Ok(json!({
        "generators": {
            "trafgen": "trafgen, 1 worker on CPU 0 at high priority, 64-byte frames, one UDP flow",
            "XDP frames": "BPF_PROG_TEST_RUN live frames sent from the client's veth, on CPU 0 at high priority, the same 64-byte frame",
        },
        "rounds": rounds,
        "seconds": seconds,
        "paths": paths,
        "ratios": ratios,
    }))
}

/// The drops each path counted over all its rounds, hop by hop.
pub fn print_drops(gateway: &Value) {
    let Some(paths) = gateway["paths"].as_object() else {
        return;
    };
    println!("\ngateway drops (all rounds; devices, then xtun's counters):");
    for (name, load_name, doc) in paths.iter().flat_map(|(name, doc)| {
        LOADS
            .iter()
            .map(move |(_, load_name)| (name, *load_name, &doc[*load_name]))
    }) {
        let drops = doc["drops"].as_object();
        let listed: Vec<String> = drops
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let listed = if listed.is_empty() {
            "none".to_string()
        } else {
            listed.join(", ")
        };
        println!("  {:<48} {listed}", format!("{name} ({load_name})"));
    }
}
