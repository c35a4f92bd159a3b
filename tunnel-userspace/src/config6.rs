//! The `ip -6 tunnel` grammar (iproute2's ip/ip6tunnel.c): tunnels over an
//! IPv6 underlay, their parameters, and their `ip -6 tunnel show` line.

use std::{fmt, net::Ipv6Addr, str::FromStr};

use thiserror::Error;
use tunnel_common::maps::*;

use crate::{
    config::validate_ifname,
    grammar::{self, IpError},
};

/// The kernel's default encapsulation limit (IPV6_DEFAULT_TNL_ENCAP_LIMIT).
pub const DEFAULT_ENCAP_LIMIT: u8 = 4;
/// `ip -6 tunnel add`'s default hop limit (DEFAULT_TNL_HOP_LIMIT).
pub const DEFAULT_HOP_LIMIT: u8 = 64;
/// The largest flow label (20 bits).
pub const FLOWLABEL_MAX: u32 = 0xfffff;
/// The outer IPv6 header.
const IPV6_HEADER: u32 = 40;
/// The destination-options header carrying the RFC 2473 tunnel
/// encapsulation limit option (padded to 8 bytes).
const ENCAP_LIMIT_HEADER: u32 = 8;
/// The Ethernet header an ip6gretap frame carries inside.
const ETH_HEADER: u32 = 14;
/// The kernel never gives an IPv6 tunnel less (IPV6_MIN_MTU).
const IPV6_MIN_MTU: u32 = 1280;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Config6Error {
    #[error("missing tunnel name")]
    MissingName,
    #[error(
        "tunnel name \"{0}\" is not a valid interface name (1-15 bytes, no '/', ':' or spaces)"
    )]
    BadName(String),
    #[error("duplicate tunnel name: \"{0}\" and \"{1}\"")]
    DuplicateName(String, String),
    #[error("\"{0}\" needs an argument")]
    MissingArgument(String),
    #[error("unknown tunnel mode \"{0}\" (xtun -6 supports ip6gre, ip6ip6, ipip6 and any)")]
    UnknownMode(String),
    #[error("mode vti6 is an IPsec tunnel")]
    Vti6,
    #[error("invalid IPv6 address \"{0}\"")]
    BadAddress(String),
    #[error("invalid encaplimit \"{0}\": expected none or 0..255")]
    BadEncapLimit(String),
    #[error("invalid hoplimit \"{0}\": expected 0..255")]
    BadHopLimit(String),
    #[error("invalid tclass \"{0}\": expected 0x0..0xff or inherit")]
    BadTclass(String),
    #[error("invalid flowlabel \"{0}\": expected 0x0..0xfffff or inherit")]
    BadFlowlabel(String),
    #[error("invalid {0} \"{1}\": expected a number or a dotted quad")]
    BadKey(String, String),
    #[error("dscp takes only \"inherit\", not \"{0}\"")]
    BadDscp(String),
    #[error("option \"{0}\" is not supported by xtun yet")]
    Unsupported(String),
    #[error("cannot change the tunnel mode from {0} to {1} (delete the tunnel and add it again)")]
    ModeChange(&'static str, &'static str),
    #[error("Usage: xtun -6 tunnel {{ add | change | del | show }} [ NAME ] [ mode MODE ] ... (see `xtun tunnel add --help`)")]
    Help,
    #[error("unknown argument \"{0}\"")]
    Unknown(String),
    #[error("invalid hoplimit \"{0}\": expected 0..255 or inherit")]
    BadHlim(String),
    #[error("an ip6gretap link needs remote ADDR (xtun has no remote any for Ethernet)")]
    TapRemote,
    #[error("unknown link type \"{0}\" (xtun link supports gretap and ip6gretap)")]
    UnknownLinkType(String),
}

impl Config6Error {
    /// The same mistake in `ip -6 tunnel`'s words, with its exit status,
    /// where `ip` has a message for it.
    pub fn as_iproute2(&self) -> Option<IpError> {
        use Config6Error::*;
        Some(match self {
            BadName(name) => IpError::invalid("\"name\" not a valid ifname", name),
            DuplicateName(_, word) | Unknown(word) => IpError::usage(format!(
                "Error: either \"name\" is duplicate, or \"{word}\" is a garbage."
            )),
            MissingName => IpError::failed("Tunnel interface name not specified"),
            MissingArgument(_) => {
                IpError::usage("Command line is not complete. Try option \"help\"")
            }
            UnknownMode(mode) => IpError::usage(format!("Unknown tunnel mode \"{mode}\"")),
            BadAddress(addr) => IpError::failed(format!(
                "Error: inet6 address is expected rather than \"{addr}\"."
            )),
            BadEncapLimit(v) => IpError::invalid("invalid ELIM", v),
            BadHopLimit(v) => IpError::invalid("invalid TTL", v),
            BadHlim(v) => IpError::invalid("invalid HLIM", v),
            BadTclass(v) => IpError::invalid("invalid TClass", v),
            BadFlowlabel(v) => IpError::invalid("invalid Flowlabel", v),
            BadKey(_, key) if key.contains('.') => IpError::failed(format!(
                "Error: an IP address is expected rather than \"{key}\""
            )),
            BadKey(word, key) => IpError::usage(format!(
                "invalid value for \"{word}\": \"{key}\"; it should be an unsigned integer"
            )),
            BadDscp(v) => IpError::invalid("not inherit", v),
            Help => IpError::usage(self.to_string()),
            _ => return None,
        })
    }
}

/// What an IPv6 underlay carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode6 {
    /// GRE over IPv6 (`ip6gre`).
    Ip6Gre,
    /// IPv6 over IPv6 (`ip6ip6`, the default).
    Ip6Ip6,
    /// IPv4 over IPv6 (`ipip6`).
    IpIp6,
    /// IPv4 or IPv6 over IPv6 (`any`).
    Any,
    /// Ethernet over GRE over IPv6: `xtun link add ... type ip6gretap`,
    /// not a mode `ip -6 tunnel` takes.
    Ip6GreTap,
}

impl Mode6 {
    pub fn as_map(self) -> u8 {
        match self {
            Self::Ip6Gre => MODE_IP6GRE,
            Self::Ip6Ip6 => MODE_IP6IP6,
            Self::IpIp6 => MODE_IPIP6,
            Self::Any => MODE_ANY6,
            Self::Ip6GreTap => MODE_IP6GRETAP,
        }
    }

    pub fn from_map(mode: u8) -> Option<Self> {
        match mode {
            MODE_IP6GRE => Some(Self::Ip6Gre),
            MODE_IP6IP6 => Some(Self::Ip6Ip6),
            MODE_IPIP6 => Some(Self::IpIp6),
            MODE_ANY6 => Some(Self::Any),
            MODE_IP6GRETAP => Some(Self::Ip6GreTap),
            _ => None,
        }
    }

    pub fn is_gre(self) -> bool {
        matches!(self, Self::Ip6Gre | Self::Ip6GreTap)
    }

    /// Carries whole Ethernet frames (ip6gretap).
    pub fn is_tap(self) -> bool {
        self == Self::Ip6GreTap
    }

    /// The word `mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ip6Gre => "ip6gre",
            Self::Ip6Ip6 => "ip6ip6",
            Self::IpIp6 => "ipip6",
            Self::Any => "any",
            Self::Ip6GreTap => "ip6gretap",
        }
    }

    /// The word `ip -6 tunnel show` prints before "/ipv6" (`tnl_strproto`).
    pub fn show_name(self) -> &'static str {
        match self {
            Self::Ip6Gre | Self::Ip6GreTap => "gre",
            Self::Ip6Ip6 => "ipv6",
            Self::IpIp6 => "ip",
            Self::Any => "any",
        }
    }

    /// The kernel driver: ip6gre, or ip6tnl for the others. Within ip6tnl
    /// `ip -6 tunnel change` may switch the mode; not across drivers.
    pub fn driver(self) -> &'static str {
        match self {
            Self::Ip6Gre => "ip6gre",
            Self::Ip6GreTap => "ip6gretap",
            _ => "ip6tnl",
        }
    }
}

impl FromStr for Mode6 {
    type Err = Config6Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ip6ip6" | "ipv6/ipv6" => Ok(Self::Ip6Ip6),
            "ipip6" | "ip4ip6" | "ip/ipv6" | "ipv4/ipv6" => Ok(Self::IpIp6),
            "ip6gre" | "gre/ipv6" => Ok(Self::Ip6Gre),
            "any" | "any/ipv6" => Ok(Self::Any),
            "vti6" => Err(Config6Error::Vti6),
            _ => Err(Config6Error::UnknownMode(s.to_string())),
        }
    }
}

/// One tunnel over IPv6 as `ip -6 tunnel add` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel6Spec {
    pub name: String,
    pub mode: Mode6,
    /// None: `remote any` (receives from any remote; cannot send).
    pub remote: Option<Ipv6Addr>,
    /// None: `local any`, the source of the route to the remote.
    pub local: Option<Ipv6Addr>,
    pub dev: Option<String>,
    /// The encapsulation limit sent; None: `encaplimit none` (no
    /// destination-options header at all).
    pub encap_limit: Option<u8>,
    /// 0: the inner packet's (`ip` prints "hoplimit inherit").
    pub hop_limit: u8,
    /// None: `tclass inherit`.
    pub tclass: Option<u8>,
    /// None: `flowlabel inherit`.
    pub flowlabel: Option<u32>,
    /// GRE keys (host order); ip6gre only, as the kernel's ip6tnl ignores them.
    pub ikey: Option<u32>,
    pub okey: Option<u32>,
    pub icsum: bool,
    pub ocsum: bool,
    pub iseq: bool,
    pub oseq: bool,
    pub allow_localremote: bool,
}

/// An IPv6 address as `get_addr(_, s, AF_INET6)` reads one: `any`, `all`
/// and `default` are `::`, returned as None.
fn parse_addr6(s: &str) -> Result<Option<Ipv6Addr>, Config6Error> {
    if matches!(s, "any" | "all" | "default") {
        return Ok(None);
    }
    let addr: Ipv6Addr = s
        .parse()
        .map_err(|_| Config6Error::BadAddress(s.to_string()))?;
    Ok((!addr.is_unspecified()).then_some(addr))
}

fn parse_key6(word: &str, s: &str) -> Result<u32, Config6Error> {
    crate::config::parse_key(s).map_err(|_| Config6Error::BadKey(word.to_string(), s.to_string()))
}

impl Tunnel6Spec {
    /// The words after `xtun -6 tunnel add`, in any order, as `ip -6 tunnel` reads them.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, Config6Error> {
        Self::parse_onto(None, args)
    }

    /// `ip -6 tunnel change`: the words change `base`, the tunnel as it is.
    pub fn parse_change<S: AsRef<str>>(
        base: &Tunnel6Spec,
        args: &[S],
    ) -> Result<Self, Config6Error> {
        let spec = Self::parse_onto(Some(base), args)?;
        if spec.name != base.name {
            return Err(Config6Error::DuplicateName(base.name.clone(), spec.name));
        }
        if spec.mode.driver() != base.mode.driver() {
            return Err(Config6Error::ModeChange(base.mode.name(), spec.mode.name()));
        }
        Ok(spec)
    }

    fn parse_onto<S: AsRef<str>>(
        base: Option<&Tunnel6Spec>,
        args: &[S],
    ) -> Result<Self, Config6Error> {
        let mut spec = base.cloned().unwrap_or(Tunnel6Spec {
            name: String::new(),
            mode: Mode6::Ip6Ip6,
            remote: None,
            local: None,
            dev: None,
            encap_limit: Some(DEFAULT_ENCAP_LIMIT),
            hop_limit: DEFAULT_HOP_LIMIT,
            tclass: Some(0),
            flowlabel: Some(0),
            ikey: None,
            okey: None,
            icsum: false,
            ocsum: false,
            iseq: false,
            oseq: false,
            allow_localremote: false,
        });
        let mut name: Option<String> = base.map(|b| b.name.clone());
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| Config6Error::MissingArgument(word.to_string()))
            };
            match word {
                "mode" => spec.mode = value()?.parse()?,
                "remote" => spec.remote = parse_addr6(value()?)?,
                "local" => spec.local = parse_addr6(value()?)?,
                "dev" => {
                    let v = value()?;
                    validate_ifname(v).map_err(|_| Config6Error::BadName(v.to_string()))?;
                    spec.dev = Some(v.to_string());
                }
                "encaplimit" => {
                    let v = value()?;
                    spec.encap_limit = match v {
                        "none" => None,
                        _ => Some(
                            grammar::parse_u8(v)
                                .ok_or_else(|| Config6Error::BadEncapLimit(v.to_string()))?,
                        ),
                    };
                }
                // `ip -6 tunnel` has no `hoplimit inherit`: 0 is that.
                "hoplimit" | "ttl" | "hlim" => {
                    let v = value()?;
                    spec.hop_limit = grammar::parse_u8(v)
                        .ok_or_else(|| Config6Error::BadHopLimit(v.to_string()))?;
                }
                // `ip` takes any abbreviation of dsfield, after the others.
                w if w == "tclass" || w == "tc" || w == "tos" || grammar::matches(w, "dsfield") => {
                    let v = value()?;
                    spec.tclass = match v {
                        "inherit" => None,
                        _ => Some(
                            grammar::parse_hex(v)
                                .and_then(|t| u8::try_from(t).ok())
                                .ok_or_else(|| Config6Error::BadTclass(v.to_string()))?,
                        ),
                    };
                }
                "flowlabel" | "fl" => {
                    let v = value()?;
                    spec.flowlabel = match v {
                        "inherit" => None,
                        _ => Some(
                            grammar::parse_hex(v)
                                .filter(|l| *l <= u64::from(FLOWLABEL_MAX))
                                .map(|l| l as u32)
                                .ok_or_else(|| Config6Error::BadFlowlabel(v.to_string()))?,
                        ),
                    };
                }
                "dscp" => {
                    let v = value()?;
                    if v != "inherit" {
                        return Err(Config6Error::BadDscp(v.to_string()));
                    }
                    // The kernel copies the outer DSCP inward on receive;
                    // the data plane does not (yet).
                    return Err(Config6Error::Unsupported("dscp inherit".into()));
                }
                "allow-localremote" => spec.allow_localremote = true,
                "noallow-localremote" => spec.allow_localremote = false,
                "key" => {
                    let k = parse_key6(word, value()?)?;
                    (spec.ikey, spec.okey) = (Some(k), Some(k));
                }
                "ikey" => spec.ikey = Some(parse_key6(word, value()?)?),
                "okey" => spec.okey = Some(parse_key6(word, value()?)?),
                "seq" => (spec.iseq, spec.oseq) = (true, true),
                "iseq" => spec.iseq = true,
                "oseq" => spec.oseq = true,
                "csum" => (spec.icsum, spec.ocsum) = (true, true),
                "icsum" => spec.icsum = true,
                "ocsum" => spec.ocsum = true,
                "name" => set_name(&mut name, value()?)?,
                w if grammar::matches(w, "help") => return Err(Config6Error::Help),
                other
                    if other.starts_with('-')
                        || (name.is_some() && name.as_deref() != Some(other)) =>
                {
                    return Err(Config6Error::Unknown(other.to_string()))
                }
                other => set_name(&mut name, other)?,
            }
        }
        spec.name = name.ok_or(Config6Error::MissingName)?;
        // The kernel's ip6tnl (ip6ip6, ipip6, any) takes no GRE parameters:
        // it ignores them, and so does xtun.
        if !spec.mode.is_gre() {
            (spec.ikey, spec.okey) = (None, None);
            (spec.icsum, spec.ocsum, spec.iseq, spec.oseq) = (false, false, false, false);
        }
        Ok(spec)
    }

    /// The spec a running tunnel was made from (for `change`, `export`).
    pub fn from_config(
        name: &str,
        cfg: &TunnelConfig,
        cfg6: &Tunnel6Config,
        dev: Option<String>,
    ) -> Option<Self> {
        let flag = |f: u32| cfg.flags & f != 0;
        let addr = |a: [u8; 16]| {
            let a = Ipv6Addr::from(a);
            (!a.is_unspecified()).then_some(a)
        };
        Some(Self {
            name: name.to_string(),
            mode: Mode6::from_map(cfg.mode)?,
            remote: addr(cfg6.remote),
            local: addr(cfg6.local),
            dev,
            encap_limit: (!flag(TUNNEL_F_IGN_ENCAP_LIMIT)).then_some(cfg6.encap_limit),
            hop_limit: cfg.ttl,
            tclass: (!flag(TUNNEL_F_TOS_INHERIT)).then_some(cfg.tos),
            flowlabel: (!flag(TUNNEL_F_FLOWLABEL_INHERIT)).then_some(cfg6.flowlabel),
            ikey: flag(TUNNEL_F_IKEY).then(|| u32::from_be(cfg.ikey)),
            okey: flag(TUNNEL_F_OKEY).then(|| u32::from_be(cfg.okey)),
            icsum: flag(TUNNEL_F_ICSUM),
            ocsum: flag(TUNNEL_F_OCSUM),
            iseq: flag(TUNNEL_F_ISEQ),
            oseq: flag(TUNNEL_F_OSEQ),
            allow_localremote: flag(TUNNEL_F_ALLOW_LOCALREMOTE),
        })
    }

    /// The words `xtun -6 tunnel add` takes to make this tunnel again.
    pub fn to_words(&self) -> Vec<String> {
        // ip6gretap is made by `xtun link add NAME type ip6gretap ...`.
        let kind = if self.mode.is_tap() { "type" } else { "mode" };
        // A name the grammar would read as a keyword (`encaplimit`, `seq`)
        // goes after `name`, as `ip -6 tunnel` lets one say.
        let bare = self.mode.is_tap()
            || Self::parse(&[self.name.as_str()]).is_ok_and(|s| s.name == self.name);
        let mut w: Vec<String> = if bare {
            vec![self.name.clone()]
        } else {
            vec!["name".into(), self.name.clone()]
        };
        w.extend([kind.into(), self.mode.name().into()]);
        let addr = |a: Option<Ipv6Addr>| a.map_or("any".to_string(), |a| a.to_string());
        w.extend(["remote".into(), addr(self.remote)]);
        w.extend(["local".into(), addr(self.local)]);
        if let Some(dev) = &self.dev {
            w.extend(["dev".into(), dev.clone()]);
        }
        let encap = self.encap_limit.map_or("none".into(), |e| e.to_string());
        w.extend(["encaplimit".into(), encap]);
        w.extend(["hoplimit".into(), self.hop_limit.to_string()]);
        let tclass = self
            .tclass
            .map_or("inherit".into(), |t| format!("0x{t:02x}"));
        w.extend(["tclass".into(), tclass]);
        let label = self
            .flowlabel
            .map_or("inherit".into(), |l| format!("0x{l:05x}"));
        w.extend(["flowlabel".into(), label]);
        match (self.ikey, self.okey) {
            (Some(i), Some(o)) if i == o => w.extend(["key".into(), i.to_string()]),
            (ikey, okey) => {
                if let Some(k) = ikey {
                    w.extend(["ikey".into(), k.to_string()]);
                }
                if let Some(k) = okey {
                    w.extend(["okey".into(), k.to_string()]);
                }
            }
        }
        for (on, word) in [
            (self.icsum, "icsum"),
            (self.ocsum, "ocsum"),
            (self.iseq, "iseq"),
            (self.oseq, "oseq"),
            (self.allow_localremote, "allow-localremote"),
        ] {
            if on {
                w.push(word.into());
            }
        }
        w
    }

    /// The tunnel interface's MTU over an underlay of `underlay_mtu`, as
    /// the kernel computes it: the IPv6 header, the encapsulation-limit
    /// option's header unless `encaplimit none`, and for ip6gre the GRE
    /// header with what it sends (key, checksum, sequence number).
    pub fn mtu(&self, underlay_mtu: u32) -> u32 {
        let mut overhead = IPV6_HEADER;
        if self.encap_limit.is_some() {
            overhead += ENCAP_LIMIT_HEADER;
        }
        if self.mode.is_gre() {
            overhead += 4;
            overhead += 4 * [self.okey.is_some(), self.ocsum, self.oseq]
                .iter()
                .filter(|on| **on)
                .count() as u32;
        }
        if self.mode.is_tap() {
            overhead += ETH_HEADER;
        }
        underlay_mtu.saturating_sub(overhead).max(IPV6_MIN_MTU)
    }

    /// The data plane's two halves of this tunnel: its `TunnelConfig`
    /// (IPv4 addresses 0, `ttl` the hop limit, `tos` the traffic class)
    /// and its `Tunnel6Config`. `default_src` is the route's source for
    /// `local any`.
    pub fn to_config(
        &self,
        underlay_ifindex: u32,
        mtu: u32,
        default_src: Option<Ipv6Addr>,
    ) -> (TunnelConfig, Tunnel6Config) {
        let mut flags = 0;
        for (on, flag) in [
            (self.ikey.is_some(), TUNNEL_F_IKEY),
            (self.okey.is_some(), TUNNEL_F_OKEY),
            (self.icsum, TUNNEL_F_ICSUM),
            (self.ocsum, TUNNEL_F_OCSUM),
            (self.iseq, TUNNEL_F_ISEQ),
            (self.oseq, TUNNEL_F_OSEQ),
            (self.dev.is_some(), TUNNEL_F_BOUND_DEV),
            (self.encap_limit.is_none(), TUNNEL_F_IGN_ENCAP_LIMIT),
            (self.tclass.is_none(), TUNNEL_F_TOS_INHERIT),
            (self.flowlabel.is_none(), TUNNEL_F_FLOWLABEL_INHERIT),
            (self.allow_localremote, TUNNEL_F_ALLOW_LOCALREMOTE),
            (self.mode.is_tap(), TUNNEL_F_TEB),
        ] {
            if on {
                flags |= flag;
            }
        }
        let octets = |a: Option<Ipv6Addr>| a.map_or([0; 16], |a| a.octets());
        let cfg = TunnelConfig {
            ikey: self.ikey.unwrap_or(0).to_be(),
            okey: self.okey.unwrap_or(0).to_be(),
            underlay_ifindex,
            flags,
            mtu,
            mode: self.mode.as_map(),
            ttl: self.hop_limit,
            tos: self.tclass.unwrap_or(0),
            ..Default::default()
        };
        let cfg6 = Tunnel6Config {
            local: octets(self.local),
            remote: octets(self.remote),
            default_src: if self.local.is_none() {
                octets(default_src)
            } else {
                [0; 16]
            },
            flowlabel: self.flowlabel.unwrap_or(0),
            // Kept when `none`, as the kernel keeps it, for a later change.
            encap_limit: self.encap_limit.unwrap_or(DEFAULT_ENCAP_LIMIT),
            _pad: [0; 3],
        };
        (cfg, cfg6)
    }
}

/// The keywords of `ip link add NAME type ip6gretap` (iproute2's
/// ip/link_gre6.c) that `ip` matches by prefix, in the order it tries
/// them: an abbreviation means the first it starts.
pub const IP6GRETAP_WORDS: &[&str] = &[
    "key", "nokey", "ikey", "noikey", "okey", "nookey", "seq", "noseq", "iseq", "noiseq", "oseq",
    "nooseq", "csum", "nocsum", "icsum", "noicsum", "ocsum", "noocsum", "remote", "local", "dev",
    "ttl", "hoplimit", "hlim", "tos", "tclass", "dsfield",
];

/// The keywords of ip6gretap that `ip` takes only whole.
pub const IP6GRETAP_EXACT: &[&str] = &[
    "flowlabel",
    "fl",
    "encaplimit",
    "allow-localremote",
    "noallow-localremote",
];

/// Keywords of iproute2's ip6gretap that xtun does not implement.
const IP6GRETAP_UNSUPPORTED: &[&str] = &[
    "dscp",
    "noencap",
    "encap",
    "encap-sport",
    "encap-dport",
    "encap-csum",
    "noencap-csum",
    "encap-udp6-csum",
    "noencap-udp6-csum",
    "encap-remcsum",
    "noencap-remcsum",
    "external",
    "fwmark",
    "erspan",
    "erspan_ver",
    "erspan_dir",
    "erspan_hwid",
];

impl Tunnel6Spec {
    /// The words after `xtun link add` for `type ip6gretap`, as `ip link
    /// add` reads them: `[name] NAME type ip6gretap`, then link_gre6.c's
    /// options, with its defaults (hoplimit 64, encaplimit 4).
    pub fn parse_link<S: AsRef<str>>(args: &[S]) -> Result<Self, Config6Error> {
        let mut it = args.iter().map(AsRef::as_ref);
        let mut name: Option<String> = None;
        let kind = loop {
            let Some(word) = it.next() else {
                return Err(Config6Error::MissingName);
            };
            let mut value = || {
                it.next()
                    .ok_or_else(|| Config6Error::MissingArgument(word.to_string()))
            };
            match word {
                "type" => break value()?,
                "name" | "dev" => set_name(&mut name, value()?)?,
                w if grammar::matches(w, "help") => return Err(Config6Error::Help),
                w if name.is_none() && !w.starts_with('-') => set_name(&mut name, w)?,
                other => return Err(Config6Error::Unknown(other.to_string())),
            }
        };
        if kind != "ip6gretap" {
            return Err(Config6Error::UnknownLinkType(kind.to_string()));
        }
        let mut spec = Tunnel6Spec {
            name: name.ok_or(Config6Error::MissingName)?,
            mode: Mode6::Ip6GreTap,
            remote: None,
            local: None,
            dev: None,
            encap_limit: Some(DEFAULT_ENCAP_LIMIT),
            hop_limit: DEFAULT_HOP_LIMIT,
            tclass: Some(0),
            flowlabel: Some(0),
            ikey: None,
            okey: None,
            icsum: false,
            ocsum: false,
            iseq: false,
            oseq: false,
            allow_localremote: false,
        };
        while let Some(word) = it.next() {
            if IP6GRETAP_UNSUPPORTED.contains(&word) {
                return Err(Config6Error::Unsupported(word.to_string()));
            }
            let keyword = if IP6GRETAP_EXACT.contains(&word) {
                word
            } else {
                grammar::first_match(word, IP6GRETAP_WORDS)
                    .ok_or_else(|| Config6Error::Unknown(word.to_string()))?
            };
            let mut value = || {
                it.next()
                    .ok_or_else(|| Config6Error::MissingArgument(keyword.to_string()))
            };
            match keyword {
                "key" => {
                    let k = parse_key6(keyword, value()?)?;
                    (spec.ikey, spec.okey) = (Some(k), Some(k));
                }
                "nokey" => (spec.ikey, spec.okey) = (None, None),
                "ikey" => spec.ikey = Some(parse_key6(keyword, value()?)?),
                "noikey" => spec.ikey = None,
                "okey" => spec.okey = Some(parse_key6(keyword, value()?)?),
                "nookey" => spec.okey = None,
                "seq" => (spec.iseq, spec.oseq) = (true, true),
                "noseq" => (spec.iseq, spec.oseq) = (false, false),
                "iseq" => spec.iseq = true,
                "noiseq" => spec.iseq = false,
                "oseq" => spec.oseq = true,
                "nooseq" => spec.oseq = false,
                "csum" => (spec.icsum, spec.ocsum) = (true, true),
                "nocsum" => (spec.icsum, spec.ocsum) = (false, false),
                "icsum" => spec.icsum = true,
                "noicsum" => spec.icsum = false,
                "ocsum" => spec.ocsum = true,
                "noocsum" => spec.ocsum = false,
                "remote" => spec.remote = parse_addr6(value()?)?,
                "local" => spec.local = parse_addr6(value()?)?,
                "dev" => {
                    let v = value()?;
                    validate_ifname(v).map_err(|_| Config6Error::BadName(v.to_string()))?;
                    spec.dev = Some(v.to_string());
                }
                "ttl" | "hoplimit" | "hlim" => {
                    let v = value()?;
                    spec.hop_limit = match v {
                        "inherit" => 0,
                        _ => grammar::parse_u8(v)
                            .ok_or_else(|| Config6Error::BadHlim(v.to_string()))?,
                    };
                }
                "tos" | "tclass" | "dsfield" => {
                    let v = value()?;
                    spec.tclass = match v {
                        "inherit" => None,
                        _ => Some(
                            grammar::parse_hex(v)
                                .and_then(|t| u8::try_from(t).ok())
                                .ok_or_else(|| Config6Error::BadTclass(v.to_string()))?,
                        ),
                    };
                }
                "flowlabel" | "fl" => {
                    let v = value()?;
                    spec.flowlabel = match v {
                        "inherit" => None,
                        _ => Some(
                            grammar::parse_hex(v)
                                .filter(|l| *l <= u64::from(FLOWLABEL_MAX))
                                .map(|l| l as u32)
                                .ok_or_else(|| Config6Error::BadFlowlabel(v.to_string()))?,
                        ),
                    };
                }
                "encaplimit" => {
                    let v = value()?;
                    spec.encap_limit = match v {
                        "none" => None,
                        _ => Some(
                            grammar::parse_u8(v)
                                .ok_or_else(|| Config6Error::BadEncapLimit(v.to_string()))?,
                        ),
                    };
                }
                "allow-localremote" => spec.allow_localremote = true,
                "noallow-localremote" => spec.allow_localremote = false,
                other => return Err(Config6Error::Unknown(other.to_string())),
            }
        }
        if spec.remote.is_none() {
            return Err(Config6Error::TapRemote);
        }
        Ok(spec)
    }
}

/// The ip6gretap line of `ip -d link show` (link_gre6.c's print_opt).
pub struct Link6Line<'a> {
    pub cfg: &'a TunnelConfig,
    pub cfg6: &'a Tunnel6Config,
    pub dev: Option<&'a str>,
}

impl fmt::Display for Link6Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cfg, cfg6) = (self.cfg, self.cfg6);
        let flag = |b: u32| cfg.flags & b != 0;
        let addr = |a: [u8; 16]| {
            let a = Ipv6Addr::from(a);
            if a.is_unspecified() {
                "any".to_string()
            } else {
                a.to_string()
            }
        };
        write!(
            f,
            "ip6gretap remote {} local {}",
            addr(cfg6.remote),
            addr(cfg6.local)
        )?;
        if let Some(dev) = self.dev {
            write!(f, " dev {dev}")?;
        }
        match cfg.ttl {
            0 => write!(f, " hoplimit inherit")?,
            ttl => write!(f, " hoplimit {ttl}")?,
        }
        if flag(TUNNEL_F_IGN_ENCAP_LIMIT) {
            write!(f, " encaplimit none")?;
        } else {
            write!(f, " encaplimit {}", cfg6.encap_limit)?;
        }
        if flag(TUNNEL_F_TOS_INHERIT) {
            write!(f, " tclass inherit")?;
        } else {
            write!(f, " tclass 0x{:02x}", cfg.tos)?;
        }
        if flag(TUNNEL_F_FLOWLABEL_INHERIT) {
            write!(f, " flowlabel inherit")?;
        } else {
            write!(f, " flowlabel 0x{:05x}", cfg6.flowlabel & FLOWLABEL_MAX)?;
        }
        for (word, key) in crate::config::link_keys(cfg) {
            write!(f, " {word} {key}")?;
        }
        for word in crate::config::link_flag_words(cfg) {
            write!(f, " {word}")?;
        }
        if flag(TUNNEL_F_ALLOW_LOCALREMOTE) {
            write!(f, " allow-localremote")?;
        }
        Ok(())
    }
}

fn set_name(name: &mut Option<String>, v: &str) -> Result<(), Config6Error> {
    if let Some(old) = name {
        if old != v {
            return Err(Config6Error::DuplicateName(old.clone(), v.to_string()));
        }
    }
    validate_ifname(v).map_err(|_| Config6Error::BadName(v.to_string()))?;
    *name = Some(v.to_string());
    Ok(())
}

/// What `ip -6 tunnel show` words select (`ip6_tnl_parm_match`): each
/// given one must match; none given selects every tunnel over IPv6.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tunnel6Selector {
    pub name: Option<String>,
    pub mode: Option<Mode6>,
    pub remote: Option<Ipv6Addr>,
    pub local: Option<Ipv6Addr>,
    pub dev: Option<String>,
    pub encap_limit: Option<u8>,
    pub hop_limit: Option<u8>,
}

impl Tunnel6Selector {
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, Config6Error> {
        let mut sel = Self::default();
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| Config6Error::MissingArgument(word.to_string()))
            };
            match word {
                "mode" => sel.mode = Some(value()?.parse()?),
                "remote" => sel.remote = parse_addr6(value()?)?,
                "local" => sel.local = parse_addr6(value()?)?,
                "dev" => {
                    let v = value()?;
                    validate_ifname(v).map_err(|_| Config6Error::BadName(v.to_string()))?;
                    sel.dev = Some(v.to_string());
                }
                "encaplimit" => {
                    let v = value()?;
                    if v != "none" {
                        sel.encap_limit = Some(
                            grammar::parse_u8(v)
                                .ok_or_else(|| Config6Error::BadEncapLimit(v.to_string()))?,
                        );
                    }
                }
                "hoplimit" | "ttl" | "hlim" => {
                    let v = value()?;
                    let hop = grammar::parse_u8(v)
                        .ok_or_else(|| Config6Error::BadHopLimit(v.to_string()))?;
                    // 0 selects any, as in `ip`.
                    sel.hop_limit = (hop != 0).then_some(hop);
                }
                "name" => set_name(&mut sel.name, value()?)?,
                w if grammar::matches(w, "help") => return Err(Config6Error::Help),
                other if other.starts_with('-') || sel.name.is_some() => {
                    return Err(Config6Error::Unknown(other.to_string()))
                }
                other => set_name(&mut sel.name, other)?,
            }
        }
        Ok(sel)
    }

    /// Does the tunnel `name` (bound to `dev`) match every given word?
    pub fn selects(
        &self,
        name: &str,
        cfg: &TunnelConfig,
        cfg6: &Tunnel6Config,
        dev: Option<&str>,
    ) -> bool {
        let ign_encap_limit = cfg.flags & TUNNEL_F_IGN_ENCAP_LIMIT != 0;
        self.name.as_deref().is_none_or(|n| n == name)
            && self.mode.is_none_or(|m| m.as_map() == cfg.mode)
            && self.remote.is_none_or(|r| r.octets() == cfg6.remote)
            && self.local.is_none_or(|l| l.octets() == cfg6.local)
            && self.dev.as_deref().is_none_or(|d| Some(d) == dev)
            && self
                .encap_limit
                .is_none_or(|e| e == 0 || (!ign_encap_limit && e == cfg6.encap_limit))
            && self.hop_limit.is_none_or(|h| h == cfg.ttl)
    }
}

/// The flowinfo word `ip -6 tunnel show` prints: traffic class and flow
/// label as they would stand in the outer header (0 where inherited).
pub fn flowinfo(cfg: &TunnelConfig, cfg6: &Tunnel6Config) -> u32 {
    let tclass = if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
        0
    } else {
        u32::from(cfg.tos)
    };
    let label = if cfg.flags & TUNNEL_F_FLOWLABEL_INHERIT != 0 {
        0
    } else {
        cfg6.flowlabel & FLOWLABEL_MAX
    };
    tclass << 20 | label
}

/// A tunnel over IPv6 as `ip -6 tunnel show` prints it.
pub struct Show6Line<'a> {
    pub name: &'a str,
    pub cfg: &'a TunnelConfig,
    pub cfg6: &'a Tunnel6Config,
    pub dev: Option<&'a str>,
}

impl fmt::Display for Show6Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (cfg, cfg6) = (self.cfg, self.cfg6);
        let mode = Mode6::from_map(cfg.mode).map_or("unknown", Mode6::show_name);
        write!(
            f,
            "{}: {mode}/ipv6 remote {} local {}",
            self.name,
            Ipv6Addr::from(cfg6.remote),
            Ipv6Addr::from(cfg6.local)
        )?;
        if let Some(dev) = self.dev {
            write!(f, " dev {dev}")?;
        }
        if cfg.flags & TUNNEL_F_IGN_ENCAP_LIMIT != 0 {
            write!(f, " encaplimit none")?;
        } else {
            write!(f, " encaplimit {}", cfg6.encap_limit)?;
        }
        if cfg.ttl == 0 {
            write!(f, " hoplimit inherit")?;
        } else {
            write!(f, " hoplimit {}", cfg.ttl)?;
        }
        if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
            write!(f, " tclass inherit")?;
        } else {
            write!(f, " tclass 0x{:02x}", cfg.tos)?;
        }
        if cfg.flags & TUNNEL_F_FLOWLABEL_INHERIT != 0 {
            write!(f, " flowlabel inherit")?;
        } else {
            write!(f, " flowlabel 0x{:05x}", cfg6.flowlabel & FLOWLABEL_MAX)?;
        }
        write!(f, " (flowinfo 0x{:08x})", flowinfo(cfg, cfg6))?;
        if cfg.flags & TUNNEL_F_ALLOW_LOCALREMOTE != 0 {
            write!(f, " allow-localremote")?;
        }
        let ikey = (cfg.flags & TUNNEL_F_IKEY != 0).then(|| u32::from_be(cfg.ikey));
        let okey = (cfg.flags & TUNNEL_F_OKEY != 0).then(|| u32::from_be(cfg.okey));
        match (ikey, okey) {
            (Some(i), Some(o)) if i == o => write!(f, " key {i}")?,
            _ => {
                if let Some(i) = ikey {
                    write!(f, " ikey {i}")?;
                }
                if let Some(o) = okey {
                    write!(f, " okey {o}")?;
                }
            }
        }
        if cfg.mode == MODE_IP6GRE {
            for (flag, text) in GRE_FLAG_LINES {
                if cfg.flags & flag != 0 {
                    write!(f, "\n  {text}")?;
                }
            }
        }
        Ok(())
    }
}

/// The GRE flags as `ip tunnel show` prints them: continuation lines in
/// text, and their JSON names, in its order.
pub const GRE_FLAG_LINES: [(u32, &str); 4] = [
    (TUNNEL_F_ISEQ, "Drop packets out of sequence."),
    (TUNNEL_F_ICSUM, "Checksum in received packet is required."),
    (TUNNEL_F_OSEQ, "Sequence packets on output."),
    (TUNNEL_F_OCSUM, "Checksum output packets."),
];
pub const GRE_FLAG_JSON: [(u32, &str); 4] = [
    (TUNNEL_F_ISEQ, "rx_drop_ooseq"),
    (TUNNEL_F_ICSUM, "rx_csum"),
    (TUNNEL_F_OSEQ, "tx_seq"),
    (TUNNEL_F_OCSUM, "tx_csum"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Tunnel6Spec, Config6Error> {
        Tunnel6Spec::parse(&s.split_whitespace().collect::<Vec<_>>())
    }

    fn line(s: &str) -> String {
        let spec = parse(s).unwrap();
        let (cfg, cfg6) = spec.to_config(2, spec.mtu(1500), None);
        Show6Line {
            name: &spec.name,
            cfg: &cfg,
            cfg6: &cfg6,
            dev: None,
        }
        .to_string()
    }

    #[test]
    fn defaults_are_the_kernels() {
        let spec = parse("t6 remote fd00::2 local fd00::1").unwrap();
        assert_eq!(spec.mode, Mode6::Ip6Ip6);
        assert_eq!(spec.encap_limit, Some(4));
        assert_eq!(spec.hop_limit, 64);
        assert_eq!((spec.tclass, spec.flowlabel), (Some(0), Some(0)));
        assert_eq!(spec.mtu(1500), 1452);
    }

    #[test]
    fn the_show_lines_of_issue_17() {
        assert_eq!(
            line("t6gre mode ip6gre remote fd00:20::2 local fd00:10::2"),
            "t6gre: gre/ipv6 remote fd00:20::2 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000)"
        );
        assert_eq!(
            line("t4ip6 mode ipip6 remote fd00:20::4 local fd00:10::2"),
            "t4ip6: ip/ipv6 remote fd00:20::4 local fd00:10::2 encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000)"
        );
        assert_eq!(
            line("t6k mode ip6gre remote fd00:20::6 local fd00:10::2 key 5 encaplimit none hoplimit 32 tclass inherit flowlabel 0x12345"),
            "t6k: gre/ipv6 remote fd00:20::6 local fd00:10::2 encaplimit none hoplimit 32 tclass inherit flowlabel 0x12345 (flowinfo 0x00012345) key 5"
        );
        assert_eq!(
            line("x mode any remote any hlim 0 tc 0xb8 fl inherit allow-localremote"),
            "x: any/ipv6 remote :: local :: encaplimit 4 hoplimit inherit tclass 0xb8 flowlabel inherit (flowinfo 0x0b800000) allow-localremote"
        );
        assert_eq!(
            line("g mode gre/ipv6 remote fd00::1 ikey 1 okey 2 seq ocsum"),
            "g: gre/ipv6 remote fd00::1 local :: encaplimit 4 hoplimit 64 tclass 0x00 flowlabel 0x00000 (flowinfo 0x00000000) ikey 1 okey 2\n  Drop packets out of sequence.\n  Sequence packets on output.\n  Checksum output packets."
        );
    }

    #[test]
    fn mtus_count_every_header() {
        let mtu = |s: &str| parse(s).unwrap().mtu(1500);
        assert_eq!(mtu("a mode ip6gre"), 1448);
        assert_eq!(mtu("a mode ip6gre key 5 encaplimit none"), 1452);
        assert_eq!(mtu("a mode ip6gre okey 5 ocsum oseq"), 1436);
        // Only what is sent counts.
        assert_eq!(mtu("a mode ip6gre ikey 5 icsum iseq"), 1448);
        assert_eq!(mtu("a mode ip6ip6 encaplimit none"), 1460);
        assert_eq!(parse("a").unwrap().mtu(1300), 1280);
    }

    #[test]
    fn values_read_as_ip6tunnel_reads_them() {
        let spec =
            parse("name t mode ip4ip6 encaplimit 0x10 ttl 010 tos 1f flowlabel fffff").unwrap();
        assert_eq!(spec.mode, Mode6::IpIp6);
        assert_eq!(spec.encap_limit, Some(16));
        assert_eq!(spec.hop_limit, 8);
        assert_eq!(spec.tclass, Some(0x1f));
        assert_eq!(spec.flowlabel, Some(0xfffff));
        assert_eq!(parse("t dsf 0x20").unwrap().tclass, Some(0x20));
        assert_eq!(
            parse("t key 1.2.3.4 mode ip6gre").unwrap().ikey,
            Some(0x01020304)
        );
        // ip6tnl ignores GRE parameters, as the kernel does.
        let plain = parse("t mode ip6ip6 key 5 csum seq").unwrap();
        assert_eq!((plain.ikey, plain.okey, plain.ocsum), (None, None, false));
    }

    #[test]
    fn bad_values_in_ip6tunnel_words() {
        let err = |s: &str| parse(s).unwrap_err().as_iproute2().unwrap().message;
        assert_eq!(
            err("t remote 10.0.0.1"),
            "Error: inet6 address is expected rather than \"10.0.0.1\"."
        );
        assert_eq!(
            err("t encaplimit 256"),
            "Error: argument \"256\" is wrong: invalid ELIM"
        );
        assert_eq!(
            err("t hoplimit inherit"),
            "Error: argument \"inherit\" is wrong: invalid TTL"
        );
        assert_eq!(
            err("t tclass 0x100"),
            "Error: argument \"0x100\" is wrong: invalid TClass"
        );
        assert_eq!(
            err("t flowlabel 0x100000"),
            "Error: argument \"0x100000\" is wrong: invalid Flowlabel"
        );
        assert_eq!(err("t mode bogus"), "Unknown tunnel mode \"bogus\"");
        assert_eq!(
            err("t u"),
            "Error: either \"name\" is duplicate, or \"u\" is a garbage."
        );
        assert_eq!(
            err("t mode ip6gre key x"),
            "invalid value for \"key\": \"x\"; it should be an unsigned integer"
        );
        assert_eq!(err("mode ip6gre"), "Tunnel interface name not specified");
        assert_eq!(
            err("t remote"),
            "Command line is not complete. Try option \"help\""
        );
        assert_eq!(parse("t mode vti6"), Err(Config6Error::Vti6));
    }

    #[test]
    fn change_keeps_what_it_does_not_mention_and_its_driver() {
        let base = parse("t mode ip6gre remote fd00::2 key 5 hoplimit 9").unwrap();
        let changed = Tunnel6Spec::parse_change(&base, &["t", "remote", "fd00::3"]).unwrap();
        assert_eq!(changed.remote, Some("fd00::3".parse().unwrap()));
        assert_eq!((changed.ikey, changed.hop_limit), (Some(5), 9));
        assert_eq!(
            Tunnel6Spec::parse_change(&base, &["t", "mode", "ip6ip6"]),
            Err(Config6Error::ModeChange("ip6gre", "ip6ip6"))
        );
        let plain = parse("t mode ip6ip6").unwrap();
        let any = Tunnel6Spec::parse_change(&plain, &["t", "mode", "any"]).unwrap();
        assert_eq!(any.mode, Mode6::Any);
    }

    fn link(s: &str) -> Result<Tunnel6Spec, Config6Error> {
        Tunnel6Spec::parse_link(&s.split_whitespace().collect::<Vec<_>>())
    }

    fn link_line(s: &str) -> String {
        let spec = link(s).unwrap();
        let (cfg, cfg6) = spec.to_config(2, spec.mtu(1500), None);
        Link6Line {
            cfg: &cfg,
            cfg6: &cfg6,
            dev: None,
        }
        .to_string()
    }

    #[test]
    fn ip6gretap_reads_link_gre6s_words_and_defaults() {
        let spec = link("g6tap type ip6gretap remote fd00:20::2 local fd00:10::2").unwrap();
        assert_eq!(spec.mode, Mode6::Ip6GreTap);
        assert_eq!((spec.hop_limit, spec.encap_limit), (64, Some(4)));
        assert_eq!(spec.mtu(1500), 1434);
        let (cfg, cfg6) = spec.to_config(7, 1434, None);
        assert_eq!(cfg.mode, MODE_IP6GRETAP);
        assert_eq!(cfg.flags, TUNNEL_F_TEB);
        assert_eq!(
            (cfg.ttl, cfg.tos, cfg.mtu, cfg.underlay_ifindex),
            (64, 0, 1434, 7)
        );
        assert_eq!((cfg.local, cfg.remote), (0, 0));
        assert_eq!(
            cfg6.remote,
            "fd00:20::2".parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(cfg6.encap_limit, 4);

        let keyed = link("name t dev t type ip6gretap rem fd00::2 k 9 s hl inherit tc inherit fl inherit encaplimit none").unwrap();
        assert_eq!((keyed.ikey, keyed.okey), (Some(9), Some(9)));
        assert!(keyed.iseq && keyed.oseq);
        assert_eq!(keyed.hop_limit, 0);
        let (cfg, _) = keyed.to_config(7, 1400, None);
        assert_eq!(cfg.ikey, 9u32.to_be());
        assert_eq!(
            cfg.flags,
            TUNNEL_F_TEB
                | TUNNEL_F_IKEY
                | TUNNEL_F_OKEY
                | TUNNEL_F_ISEQ
                | TUNNEL_F_OSEQ
                | TUNNEL_F_IGN_ENCAP_LIMIT
                | TUNNEL_F_TOS_INHERIT
                | TUNNEL_F_FLOWLABEL_INHERIT
        );
        let mtu = |s: &str| link(s).unwrap().mtu(1500);
        // The kernel counts 4 bytes for the key (ip6gre_calc_hlen).
        assert_eq!(mtu("t type ip6gretap remote fd00::2 key 9"), 1430);
        assert_eq!(mtu("t type ip6gretap remote fd00::2 key 9 seq"), 1426);
        assert_eq!(mtu("t type ip6gretap remote fd00::2 key 9 csum seq"), 1422);
        assert_eq!(mtu("t type ip6gretap remote fd00::2 encaplimit none"), 1442);
        assert_eq!(mtu("t type ip6gretap remote fd00::2 okey 1 oseq"), 1426);
        assert_eq!(mtu("t type ip6gretap remote fd00::2 ikey 1 nokey"), 1434);
    }

    #[test]
    fn ip6gretap_refuses_what_it_cannot_do() {
        // GRE checksums: xtun_tap6 sums whole frames.
        let csum = link("t type ip6gretap remote fd00::2 cs noicsum").unwrap();
        assert_eq!((csum.icsum, csum.ocsum), (false, true));
        assert_eq!(csum.mtu(1500), 1430);
        assert_eq!(link("t type ip6gretap"), Err(Config6Error::TapRemote));
        assert_eq!(
            link("t type ip6gretap remote any"),
            Err(Config6Error::TapRemote)
        );
        assert_eq!(
            link("t type ip6gretap remote fd00::2 external"),
            Err(Config6Error::Unsupported("external".into()))
        );
        assert_eq!(
            link("t type vxlan remote fd00::2"),
            Err(Config6Error::UnknownLinkType("vxlan".into()))
        );
        let err = |s: &str| link(s).unwrap_err().as_iproute2().unwrap().message;
        assert_eq!(
            err("t type ip6gretap remote fd00::2 hoplimit 256"),
            "Error: argument \"256\" is wrong: invalid HLIM"
        );
        assert_eq!(
            err("t type ip6gretap remote fd00::2 encaplimit x"),
            "Error: argument \"x\" is wrong: invalid ELIM"
        );
        assert_eq!(
            err("t type ip6gretap remote 10.0.0.1"),
            "Error: inet6 address is expected rather than \"10.0.0.1\"."
        );
        assert_eq!(
            err("t type ip6gretap remote fd00::2 flowlabel 0x100000"),
            "Error: argument \"0x100000\" is wrong: invalid Flowlabel"
        );
        assert_eq!(
            err("t type ip6gretap remote fd00::2 bogus"),
            "Error: either \"name\" is duplicate, or \"bogus\" is a garbage."
        );
    }

    #[test]
    fn ip6gretap_shows_as_ip_d_link_show() {
        assert_eq!(
            link_line("g6tap type ip6gretap remote fd00:20::2 local fd00:10::2"),
            "ip6gretap remote fd00:20::2 local fd00:10::2 hoplimit 64 encaplimit 4 tclass 0x00 flowlabel 0x00000"
        );
        assert_eq!(
            link_line("g type ip6gretap remote fd00:20::2 key 9 seq hoplimit 0 encaplimit none tclass 0x10 flowlabel inherit"),
            "ip6gretap remote fd00:20::2 local any hoplimit inherit encaplimit none tclass 0x10 flowlabel inherit ikey 0.0.0.9 okey 0.0.0.9 iseq oseq"
        );
    }

    #[test]
    fn configs_round_trip() {
        for words in [
            "t mode ip6gre remote fd00::2 local fd00::1 ikey 1 okey 2 csum seq encaplimit none hoplimit 0 tclass inherit flowlabel 0x12345 allow-localremote dev eth0",
            "t mode any remote any tclass 0x10 flowlabel inherit",
        ] {
            let spec = parse(words).unwrap();
            let (cfg, cfg6) = spec.to_config(3, 1400, None);
            let back = Tunnel6Spec::from_config("t", &cfg, &cfg6, spec.dev.clone()).unwrap();
            assert_eq!(back, spec, "{words}");
            assert_eq!(Tunnel6Spec::parse(&back.to_words()).unwrap(), spec);
        }
        let spec =
            link("t type ip6gretap remote fd00::2 ikey 3 oseq encaplimit none tclass inherit")
                .unwrap();
        let (cfg, cfg6) = spec.to_config(3, 1400, None);
        let back = Tunnel6Spec::from_config("t", &cfg, &cfg6, None).unwrap();
        assert_eq!(back, spec);
        assert_eq!(Tunnel6Spec::parse_link(&back.to_words()).unwrap(), spec);
    }
}
