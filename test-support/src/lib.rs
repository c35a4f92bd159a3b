//! The harness shared by xtun's tests and its bench: frames built with
//! etherparse, a harness that loads the real programs and runs them through
//! BPF_PROG_TEST_RUN, (`net`) the helpers of the tests that drive the `xtun`
//! binary in namespaces, and (`raw_bpf`, `other_version`) programs and maps
//! made by hand.

pub mod net;
pub mod other_version;
pub mod raw_bpf;

/// `#[test]` functions that each run `$run` with their own arguments: a
/// table of cases, one a line.
#[macro_export]
macro_rules! test_cases {
    ($run:ident: $($name:ident($($arg:expr),* $(,)?);)+) => {
        $(
            #[test]
            fn $name() {
                $run($($arg),*);
            }
        )+
    };
}

use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::TunnelSpec,
    dataplane::{Dataplane, TestRun, TunnelDevice},
};

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const TC_ACT_UNSPEC: u32 = u32::MAX;
pub const TC_ACT_REDIRECT: u32 = 7;
pub const TC_ACT_SHOT: u32 = 2;
pub const TUN_IFINDEX: u32 = 4242;

const LOCAL: [u8; 4] = [10, 10, 20, 2];
const REMOTE: [u8; 4] = [10, 10, 10, 2];
const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x22];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];

/// An ICMP echo request 10.10.100.10 -> 10.10.200.10 as an IPv4 packet.
pub fn inner_packet(tos_ecn: u8) -> Vec<u8> {
    let builder =
        PacketBuilder::ipv4([10, 10, 100, 10], [10, 10, 200, 10], 64).icmpv4_echo_request(7, 1);
    let payload = [0xabu8; 56];
    let mut out = Vec::new();
    builder.write(&mut out, &payload).unwrap();
    if tos_ecn != 0 {
        let mut hdr = Ipv4Header::from_slice(&out).unwrap().0;
        hdr.ecn = etherparse::Ipv4Ecn::try_new(tos_ecn).unwrap();
        hdr.header_checksum = hdr.calc_header_checksum();
        out.splice(0..20, hdr.to_bytes());
    }
    out
}

pub fn outer_ipv4(proto: u8, payload_len: usize, tos: u8) -> Vec<u8> {
    let mut hdr = Ipv4Header::new(payload_len as u16, 63, IpNumber(proto), REMOTE, LOCAL).unwrap();
    hdr.dont_fragment = true;
    hdr.dscp = etherparse::Ipv4Dscp::try_new(tos >> 2).unwrap();
    hdr.ecn = etherparse::Ipv4Ecn::try_new(tos & 3).unwrap();
    hdr.header_checksum = hdr.calc_header_checksum();
    hdr.to_bytes().to_vec()
}

pub fn eth(ether_type: u16) -> Vec<u8> {
    let mut v = MAC_DST.to_vec();
    v.extend_from_slice(&MAC_SRC);
    v.extend_from_slice(&ether_type.to_be_bytes());
    v
}

/// A frame: Ethernet, outer IPv4 with `proto`, `tunnel` bytes, `inner`.
pub fn frame(proto: u8, tunnel: &[u8], inner: &[u8], outer_tos: u8) -> Vec<u8> {
    let mut f = eth(0x0800);
    f.extend(outer_ipv4(proto, tunnel.len() + inner.len(), outer_tos));
    f.extend_from_slice(tunnel);
    f.extend_from_slice(inner);
    f
}

/// Bytes of XDP metadata in front of a decapsulated frame.
pub const XDP_META_LEN: usize = std::mem::size_of::<XdpMeta>();

/// The XDP metadata of a frame XDP leaves whole for tc to decapsulate (a
/// GRE checksum that may be pending offload).
pub fn checksum_in_tc_tag() -> Vec<u8> {
    [XDP_META_CSUM_IN_TC, 0, 0, 0, 0]
        .iter()
        .flat_map(|w: &u32| w.to_ne_bytes())
        .collect()
}

/// What a decapsulated frame must look like: the XDP metadata `tag`
/// (BPF_PROG_TEST_RUN returns it in front of the frame), then the same
/// MACs, the inner packet's EtherType and the inner packet.
pub fn decapsulated_as(tag: Vec<u8>, ether_type: u16, inner: &[u8]) -> Vec<u8> {
    let mut f = tag;
    f.extend(eth(ether_type));
    f.extend_from_slice(inner);
    f
}

pub struct Harness {
    pub dp: Dataplane,
    /// What each registered tunnel's XDP tag must say, worked out here
    /// rather than read back from the maps: (ifindex, flags, counter slot).
    expected: Vec<(u32, u32, u32)>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// A freshly loaded data plane with the default capacity.
    pub fn new() -> Self {
        Self::with_capacity(None)
    }

    /// A data plane whose tunnel maps hold `tunnels` entries.
    pub fn with_capacity(tunnels: Option<u32>) -> Self {
        Self {
            dp: Dataplane::load_with_capacity(tunnels)
                .expect("loading the data plane (run as root)"),
            expected: Vec::new(),
        }
    }

    /// Registers a tunnel as `xtun tunnel add` does (`Dataplane::add_tunnel`),
    /// on `ifindex` with no port: a test run has no veth pair, so the data
    /// plane delivers to the interface itself.
    pub fn add(&mut self, args: &str, ifindex: u32) -> TunnelConfig {
        let words: Vec<&str> = args.split_whitespace().collect();
        let spec = TunnelSpec::parse(&words).unwrap();
        let local = spec.local.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let cfg = spec.to_config(local, 1, 1476);
        // Every tunnel interface carries an Ethernet header; counter slots
        // are handed out lowest free first.
        let flags = cfg.flags | TUNNEL_F_ETH_DEV;
        let slot = (0..)
            .find(|s| !self.expected.iter().any(|(_, _, used)| used == s))
            .unwrap();
        self.expected.push((ifindex, flags, slot));
        self.dp
            .add_tunnel(ifindex, TunnelDevice::Ethernet, cfg)
            .unwrap()
    }

    /// Registers a tunnel over IPv6 as `xtun -6 tunnel add` does
    /// (`Dataplane::add_tunnel6`) on `ifindex`, with no port: `mode` one of
    /// the `MODE_IP6*`/`MODE_IPIP6`/`MODE_ANY6`, `flags` `TUNNEL_F_*`, the
    /// key (host order) on both sides, hop limit 64 and `encaplimit` 4
    /// unless `flags` say none.
    pub fn add6(
        &mut self,
        ifindex: u32,
        mode: u8,
        local: std::net::Ipv6Addr,
        remote: std::net::Ipv6Addr,
        flags: u32,
        key: Option<u32>,
    ) -> TunnelConfig {
        let key_flags = if key.is_some() {
            TUNNEL_F_IKEY | TUNNEL_F_OKEY
        } else {
            0
        };
        let cfg = TunnelConfig {
            mode,
            ttl: 64,
            flags: flags | key_flags,
            ikey: key.unwrap_or(0).to_be(),
            okey: key.unwrap_or(0).to_be(),
            mtu: 1448,
            underlay_ifindex: 1,
            ..TunnelConfig::default()
        };
        let cfg6 = Tunnel6Config {
            local: local.octets(),
            remote: remote.octets(),
            encap_limit: 4,
            ..Tunnel6Config::default()
        };
        let slot = (0..)
            .find(|s| !self.expected.iter().any(|(_, _, used)| used == s))
            .unwrap();
        self.expected
            .push((ifindex, cfg.flags | TUNNEL_F_ETH_DEV, slot));
        self.dp
            .add_tunnel6(ifindex, TunnelDevice::Ethernet, cfg, cfg6)
            .unwrap()
    }

    /// `xtun_tc6`'s verdict on `input`, and its output bytes.
    pub fn tc6(&self, input: &[u8]) -> (u32, Vec<u8>) {
        verdict_and_bytes(self.dp.test_run_tc6(input, 1), "tc6")
    }

    /// `xtun_tap6`'s verdict on `input`, and its output bytes.
    pub fn tap6(&self, input: &[u8]) -> (u32, Vec<u8>) {
        verdict_and_bytes(self.dp.test_run_tap6(input, 1), "tap6")
    }

    /// Deletes a tunnel as `xtun tunnel del` does.
    pub fn remove(&mut self, ifindex: u32) {
        self.dp.forget_tunnel(ifindex);
        self.expected.retain(|(i, _, _)| *i != ifindex);
    }

    /// The XDP metadata tag naming the tunnel on `ifindex`: its ifindex,
    /// flags and counter slot, and no port.
    pub fn tag(&self, ifindex: u32) -> Vec<u8> {
        let &(_, flags, slot) = self
            .expected
            .iter()
            .find(|(i, _, _)| *i == ifindex)
            .expect("no tunnel registered on that ifindex");
        [XDP_META_MAGIC, ifindex, flags, slot, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect()
    }

    /// The XDP program's verdict on `input`, and its output bytes.
    pub fn xdp(&self, input: &[u8]) -> (u32, Vec<u8>) {
        verdict_and_bytes(self.dp.test_run_xdp(input, 1), "xdp")
    }

    /// The tc program's verdict on `input`, and its output bytes.
    pub fn tc(&self, input: &[u8]) -> (u32, Vec<u8>) {
        verdict_and_bytes(self.dp.test_run_tc(input, 1), "tc")
    }
}

fn verdict_and_bytes(
    run: tunnel_userspace::dataplane::Result<TestRun>,
    hook: &str,
) -> (u32, Vec<u8>) {
    let run = run.unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN ({hook}): {e:?}"));
    (run.retval, run.data)
}

/// Rewrites the outer IPv4 header checksum of an Ethernet frame after a
/// test has edited the header (options included).
pub fn fix_outer_checksum(f: &mut [u8]) {
    if f.len() < 34 {
        return;
    }
    let ihl = (((f[14] & 0x0f) as usize) * 4).max(20);
    if f.len() < 14 + ihl {
        return;
    }
    f[24] = 0;
    f[25] = 0;
    let mut sum: u32 = f[14..14 + ihl]
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}
