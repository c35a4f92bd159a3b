//! The `ip tunnel` grammar: parsing and validation of tunnel parameters, and
//! their `ip tunnel show` rendering.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    str::FromStr,
};

use thiserror::Error;
use tunnel_common::{maps::*, wire};

use crate::grammar::{self, IpError};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
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
    #[error("unknown tunnel mode \"{0}\" (xtun supports gre, ipip, sit and isatap)")]
    UnknownMode(String),
    #[error("tunnel mode is required: mode {{ gre | ipip | sit | isatap }}")]
    MissingMode,
    #[error("more than one tunnel mode: \"{0}\" and \"{1}\"")]
    ModeConflict(String, String),
    #[error("Usage: xtun tunnel {{ add | change | del | show | prl }} [ NAME ] [ mode MODE ] ... (see `xtun tunnel add --help`)")]
    Help,
    #[error("invalid address \"{0}\"")]
    BadAddress(String),
    #[error("an isatap tunnel has no fixed remote (its remotes come from the inner destinations)")]
    IsatapRemote,
    #[error("\"{0}\" is a GRE option (not for ipip, sit or isatap)")]
    GreOnly(String),
    #[error("invalid {0} \"{1}\": expected a number or a dotted quad")]
    BadKey(String, String),
    #[error("keys are not allowed with ipip and sit tunnels")]
    KeyWithoutGre,
    #[error("invalid TTL \"{0}\": expected 1..255 or inherit")]
    BadTtl(String),
    #[error("invalid TOS \"{0}\": expected 00..ff, a DSCP name, inherit or inherit/00..ff")]
    BadTos(String),
    #[error("ttl != 0 and nopmtudisc are incompatible")]
    TtlWithNoPmtudisc,
    #[error("option \"{0}\" is not supported by xtun yet")]
    Unsupported(String),
    #[error("cannot change the tunnel mode (delete the tunnel and add it again)")]
    ModeChange,
    #[error("mode vti is an IPsec tunnel")]
    Vti,
    #[error("unknown argument \"{0}\"")]
    Unknown(String),
    #[error("invalid prefix \"{0}\": expected ADDR[/LEN]")]
    BadPrefix(String),
    #[error("invalid prefix length in \"{0}\": expected 0..{1}")]
    BadPrefixLen(String, u8),
    #[error("unknown link type \"{0}\" (xtun link supports gretap and ip6gretap)")]
    UnknownLinkType(String),
    #[error("link type is required: type gretap or type ip6gretap")]
    MissingLinkType,
    #[error("a gretap link needs remote ADDR (xtun has no remote any for Ethernet)")]
    GretapRemote,
}

impl ConfigError {
    /// A key error names the word that took the key (`key`, `ikey`, `okey`).
    fn for_word(self, word: &str) -> Self {
        match self {
            Self::BadKey(_, key) => Self::BadKey(word.to_string(), key),
            other => other,
        }
    }

    /// The same mistake in `ip tunnel`'s words, with its exit status, where
    /// `ip` has a message for it (xtun's own checks have none).
    pub fn as_iproute2(&self) -> Option<IpError> {
        use ConfigError::*;
        Some(match self {
            BadName(name) => IpError::invalid("\"name\" not a valid ifname", name),
            DuplicateName(_, word) | Unknown(word) => IpError::usage(format!(
                "Error: either \"name\" is duplicate, or \"{word}\" is a garbage."
            )),
            MissingArgument(_) => {
                IpError::usage("Command line is not complete. Try option \"help\"")
            }
            UnknownMode(mode) => IpError::usage(format!("Unknown tunnel mode \"{mode}\"")),
            ModeConflict(..) => IpError::usage("You managed to ask for more than one tunnel mode."),
            MissingMode => IpError::failed("cannot determine tunnel mode (ipip, gre, vti or sit)"),
            BadAddress(addr) => IpError::failed(format!(
                "Error: an IP address is expected rather than \"{addr}\""
            )),
            BadKey(_, key) if key.contains('.') => IpError::failed(format!(
                "Error: an IP address is expected rather than \"{key}\""
            )),
            BadKey(word, key) => IpError::usage(format!(
                "invalid value for \"{word}\": \"{key}\"; it should be an unsigned integer"
            )),
            KeyWithoutGre => IpError::failed("Keys are not allowed with ipip and sit tunnels"),
            BadTtl(ttl) => IpError::invalid("invalid TTL", ttl),
            BadTos(tos) => IpError::invalid("bad TOS value", tos.split('/').next().unwrap_or(tos)),
            TtlWithNoPmtudisc => IpError::failed("ttl != 0 and nopmtudisc are incompatible"),
            Help => IpError::usage(self.to_string()),
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Gre,
    Ipip,
    Sit,
    Isatap,
    /// Ethernet over GRE: `xtun link add ... type gretap`, not a `mode`.
    Gretap,
}

impl Mode {
    pub fn as_map(self) -> u8 {
        match self {
            Self::Gre => MODE_GRE,
            Self::Ipip => MODE_IPIP,
            Self::Sit => MODE_SIT,
            Self::Isatap => MODE_ISATAP,
            Self::Gretap => MODE_GRETAP,
        }
    }

    pub fn from_map(mode: u8) -> Option<Self> {
        match mode {
            MODE_GRE => Some(Self::Gre),
            MODE_IPIP => Some(Self::Ipip),
            MODE_SIT => Some(Self::Sit),
            MODE_ISATAP => Some(Self::Isatap),
            MODE_GRETAP => Some(Self::Gretap),
            _ => None,
        }
    }

    pub fn ip_proto(self) -> u8 {
        match self {
            Self::Gre | Self::Gretap => wire::IPPROTO_GRE,
            Self::Ipip => wire::IPPROTO_IPIP,
            Self::Sit | Self::Isatap => wire::IPPROTO_IPV6,
        }
    }

    /// Does it send GRE (and so take keys, checksums, sequence numbers)?
    pub fn is_gre(self) -> bool {
        matches!(self, Self::Gre | Self::Gretap)
    }

    /// The word `mode` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gre => "gre",
            Self::Ipip => "ipip",
            Self::Sit => "sit",
            Self::Isatap => "isatap",
            Self::Gretap => "gretap",
        }
    }

    /// The word `ip tunnel show` prints before "/ip".
    pub fn show_name(self) -> &'static str {
        match self {
            Self::Gre | Self::Gretap => "gre",
            Self::Ipip => "ip",
            Self::Sit | Self::Isatap => "ipv6",
        }
    }
}

impl FromStr for Mode {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "gre" | "gre/ip" => Ok(Self::Gre),
            "ipip" | "ip/ip" => Ok(Self::Ipip),
            "sit" | "ipv6/ip" => Ok(Self::Sit),
            "isatap" => Ok(Self::Isatap),
            "vti" => Err(ConfigError::Vti),
            _ => Err(ConfigError::UnknownMode(s.to_string())),
        }
    }
}

/// TOS of the outer header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tos {
    /// Copy the inner packet's; `inherit/T` names T for other inner
    /// protocols (the kernel's odd TOS values), plain `inherit` is T = 0.
    Inherit(u8),
    Value(u8),
}

/// One tunnel as `ip tunnel add` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelSpec {
    pub name: String,
    pub mode: Mode,
    /// None: `remote any` (multipoint; ISATAP always).
    pub remote: Option<Ipv4Addr>,
    /// None: `local any`, the source of the route to the remote, per packet.
    pub local: Option<Ipv4Addr>,
    /// Keys as numbers (host order), as `ip tunnel` prints them.
    pub ikey: Option<u32>,
    pub okey: Option<u32>,
    /// 0 means inherit.
    pub ttl: u8,
    pub tos: Tos,
    pub pmtudisc: bool,
    /// Accept only inner IPv4 sources that the tunnel's routes lead back to
    /// (strict rp_filter on the tunnel interface); xtun's own option.
    pub rpfilter: bool,
    /// GRE checksums: verify on receive, add on send.
    pub icsum: bool,
    pub ocsum: bool,
    /// GRE sequence numbers: drop out-of-sequence input, number output.
    pub iseq: bool,
    pub oseq: bool,
    pub dev: Option<String>,
}

/// Checks a Linux interface name.
pub fn validate_ifname(name: &str) -> Result<(), ConfigError> {
    let bad = name.is_empty()
        || name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        Err(ConfigError::BadName(name.to_string()))
    } else {
        Ok(())
    }
}

/// An IPv4 address as `ip` reads one (`get_addr32`): dotted quad, or
/// `any`/`all`/`default` for 0.0.0.0 (the caller decides what that means).
fn parse_addr(s: &str) -> Result<Ipv4Addr, ConfigError> {
    if matches!(s, "any" | "all" | "default") {
        return Ok(Ipv4Addr::UNSPECIFIED);
    }
    s.parse()
        .map_err(|_| ConfigError::BadAddress(s.to_string()))
}

/// `KEY := { DOTTED_QUAD | NUMBER }`, the number in C notation (`010` is 8,
/// `0x10` is 16), as `ip tunnel` reads it.
pub fn parse_key(s: &str) -> Result<u32, ConfigError> {
    if s.contains('.') {
        return s
            .parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| ConfigError::BadKey("key".into(), s.to_string()));
    }
    grammar::parse_u32(s).ok_or_else(|| ConfigError::BadKey("key".into(), s.to_string()))
}

/// `TTL := { 1..255 | inherit }`; 0 is inherit too, and numbers are in C
/// notation (`0x40` is 64), as `ip tunnel` reads them.
pub fn parse_ttl(s: &str) -> Result<u8, ConfigError> {
    if s == "inherit" {
        return Ok(0);
    }
    grammar::parse_u8(s).ok_or_else(|| ConfigError::BadTtl(s.to_string()))
}

/// `TOS := { NAME | 00..ff | inherit | inherit/NAME | inherit/00..ff }`:
/// hex with or without `0x`, or a DSCP name (`AF41`, `EF`, `CS6`) from
/// rt_dsfield. As in `ip tunnel` (and the kernel), an odd value means
/// inherit with the rest as the fallback; after a value, `/...` is ignored.
pub fn parse_tos(s: &str) -> Result<Tos, ConfigError> {
    let bad = || ConfigError::BadTos(s.to_string());
    let (head, tail) = match s.split_once('/') {
        Some((h, t)) => (h, Some(t)),
        None => (s, None),
    };
    let v = if head == "inherit" {
        match tail {
            None => 1,
            Some(t) => grammar::parse_dsfield(t).ok_or_else(bad)? | 1,
        }
    } else {
        grammar::parse_dsfield(head).ok_or_else(bad)?
    };
    Ok(if v & 1 != 0 {
        Tos::Inherit(v & !1)
    } else {
        Tos::Value(v)
    })
}

impl TunnelSpec {
    /// Parses the words after `xtun tunnel add`, in any order, as `ip tunnel` does.
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, ConfigError> {
        Self::parse_onto(None, args)
    }

    /// `ip tunnel change`: the words change `base`, the tunnel as it is;
    /// what they do not mention stays. The mode cannot change.
    pub fn parse_change<S: AsRef<str>>(base: &TunnelSpec, args: &[S]) -> Result<Self, ConfigError> {
        let spec = Self::parse_onto(Some(base), args)?;
        if spec.name != base.name {
            return Err(ConfigError::DuplicateName(base.name.clone(), spec.name));
        }
        if spec.mode != base.mode {
            return Err(ConfigError::ModeChange);
        }
        Ok(spec)
    }

    fn parse_onto<S: AsRef<str>>(
        base: Option<&TunnelSpec>,
        args: &[S],
    ) -> Result<Self, ConfigError> {
        let mut name: Option<String> = base.map(|b| b.name.clone());
        let mut mode = base.map(|b| b.mode);
        let mut remote = base.map(|b| b.remote);
        let mut local = base.and_then(|b| b.local);
        let (mut ikey, mut okey) = base.map_or((None, None), |b| (b.ikey, b.okey));
        let mut ttl = base.map_or(0u8, |b| b.ttl);
        let mut tos = base.map_or(Tos::Value(0), |b| b.tos);
        let mut pmtudisc = base.is_none_or(|b| b.pmtudisc);
        let mut rpfilter = base.is_some_and(|b| b.rpfilter);
        let (mut icsum, mut ocsum) = base.map_or((false, false), |b| (b.icsum, b.ocsum));
        let (mut iseq, mut oseq) = base.map_or((false, false), |b| (b.iseq, b.oseq));
        let mut gre_words: Vec<String> = Vec::new();
        let mut dev = base.and_then(|b| b.dev.clone());

        let mut it = args.iter().map(AsRef::as_ref);
        // The mode words name, as given (for the error on a second one).
        let mut mode_word: Option<&str> = None;
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| ConfigError::MissingArgument(word.to_string()))
            };
            match word {
                "mode" => {
                    let v = value()?;
                    let new = v.parse::<Mode>()?;
                    match (mode_word, mode) {
                        // `ip` refuses a second mode of another protocol;
                        // sit and isatap are both IPv6-in-IPv4.
                        (Some(old), Some(m)) if m.ip_proto() != new.ip_proto() => {
                            return Err(ConfigError::ModeConflict(old.to_string(), v.to_string()))
                        }
                        (Some(_), Some(Mode::Isatap)) if new == Mode::Sit => {}
                        _ => mode = Some(new),
                    }
                    mode_word = Some(v);
                }
                "remote" => {
                    let a = parse_addr(value()?)?;
                    remote = Some((!a.is_unspecified()).then_some(a));
                }
                "local" => {
                    let a = parse_addr(value()?)?;
                    local = (!a.is_unspecified()).then_some(a);
                }
                "key" => {
                    let k = parse_key(value()?).map_err(|e| e.for_word(word))?;
                    ikey = Some(k);
                    okey = Some(k);
                }
                "nokey" => (ikey, okey) = (None, None),
                "noikey" => ikey = None,
                "nookey" => okey = None,
                "ikey" => ikey = Some(parse_key(value()?).map_err(|e| e.for_word(word))?),
                "okey" => okey = Some(parse_key(value()?).map_err(|e| e.for_word(word))?),
                "ttl" | "hoplimit" | "hlim" => ttl = parse_ttl(value()?)?,
                "dev" => {
                    let v = value()?;
                    validate_ifname(v)?;
                    dev = Some(v.to_string());
                }
                // `ip` takes any abbreviation of dsfield (`d`, `ds`), after `dev`.
                w if w == "tos" || w == "tclass" || grammar::matches(w, "dsfield") => {
                    let v = value()?;
                    // `ip link`'s gre options know `inherit` alone, no
                    // `inherit/T` nor anything after a value.
                    if mode == Some(Mode::Gretap) && v.contains('/') {
                        return Err(ConfigError::BadTos(v.to_string()));
                    }
                    tos = parse_tos(v)?
                }
                "pmtudisc" => pmtudisc = true,
                "rpfilter" => rpfilter = true,
                "norpfilter" => rpfilter = false,
                "nopmtudisc" => pmtudisc = false,
                "csum" | "icsum" | "ocsum" | "seq" | "iseq" | "oseq" => {
                    match word {
                        "csum" => (icsum, ocsum) = (true, true),
                        "icsum" => icsum = true,
                        "ocsum" => ocsum = true,
                        "seq" => (iseq, oseq) = (true, true),
                        "iseq" => iseq = true,
                        _ => oseq = true,
                    }
                    gre_words.push(word.to_string());
                }
                // Only `ip link`'s gre options have the one-sided words.
                "noicsum" | "noocsum" | "noiseq" | "nooseq" if mode == Some(Mode::Gretap) => {
                    match word {
                        "noicsum" => icsum = false,
                        "noocsum" => ocsum = false,
                        "noiseq" => iseq = false,
                        _ => oseq = false,
                    }
                }
                "nocsum" => (icsum, ocsum) = (false, false),
                "noseq" => (iseq, oseq) = (false, false),
                "prl-default" | "prl-nodefault" | "prl-delete" => {
                    return Err(ConfigError::Unsupported(format!(
                        "{word} (use `xtun tunnel prl {word} ADDR dev NAME`)"
                    )))
                }
                "6rd-prefix" | "6rd-relay_prefix" => {
                    return Err(ConfigError::Unsupported(word.to_string()))
                }
                "name" => {
                    let v = value()?;
                    set_name(&mut name, v)?;
                }
                // As in `ip`, any abbreviation of `help` asks for usage.
                w if grammar::matches(w, "help") => return Err(ConfigError::Help),
                other
                    if other.starts_with('-')
                        || (name.is_some() && name.as_deref() != Some(other)) =>
                {
                    return Err(ConfigError::Unknown(other.to_string()))
                }
                other => set_name(&mut name, other)?,
            }
        }

        let name = name.ok_or(ConfigError::MissingName)?;
        // No mode given: the one the name implies, as `ip tunnel` infers it.
        let mode = match mode {
            Some(m) => Some(m),
            None => grammar::mode_from_name(&name)
                .map(str::parse::<Mode>)
                .transpose()?,
        };
        if let (Some(b), Some(m)) = (base, mode) {
            if b.mode != m {
                return Err(ConfigError::ModeChange);
            }
        }
        // In the order `ip tunnel` checks them.
        if !mode.is_some_and(Mode::is_gre) && (ikey.is_some() || okey.is_some()) {
            return Err(ConfigError::KeyWithoutGre);
        }
        // `ip tunnel`'s rule; `ip link` and the kernel allow both.
        if ttl != 0 && !pmtudisc && mode != Some(Mode::Gretap) {
            return Err(ConfigError::TtlWithNoPmtudisc);
        }
        let mode = mode.ok_or(ConfigError::MissingMode)?;
        // No `remote`: remote any, as in `ip tunnel`.
        let remote = match (mode, remote) {
            (Mode::Isatap, None | Some(None)) => None,
            (Mode::Isatap, Some(Some(_))) => return Err(ConfigError::IsatapRemote),
            (_, remote) => remote.flatten(),
        };
        if !mode.is_gre() {
            if let Some(word) = gre_words.into_iter().next() {
                return Err(ConfigError::GreOnly(word));
            }
        }
        Ok(Self {
            name,
            mode,
            remote,
            local,
            ikey,
            okey,
            ttl,
            tos,
            pmtudisc,
            rpfilter,
            icsum,
            ocsum,
            iseq,
            oseq,
            dev,
        })
    }

    /// The spec a running tunnel was made from (for `change`).
    pub fn from_config(name: &str, cfg: &TunnelConfig, dev: Option<String>) -> Option<Self> {
        Some(Self {
            name: name.to_string(),
            mode: Mode::from_map(cfg.mode)?,
            remote: (cfg.remote != 0).then(|| addr_from_wire(cfg.remote)),
            local: (cfg.local != 0).then(|| addr_from_wire(cfg.local)),
            ikey: (cfg.flags & TUNNEL_F_IKEY != 0).then(|| u32::from_be(cfg.ikey)),
            okey: (cfg.flags & TUNNEL_F_OKEY != 0).then(|| u32::from_be(cfg.okey)),
            ttl: cfg.ttl,
            tos: if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
                Tos::Inherit(cfg.tos)
            } else {
                Tos::Value(cfg.tos)
            },
            pmtudisc: cfg.flags & TUNNEL_F_PMTUDISC != 0,
            rpfilter: cfg.flags & TUNNEL_F_RPFILTER != 0,
            icsum: cfg.flags & TUNNEL_F_ICSUM != 0,
            ocsum: cfg.flags & TUNNEL_F_OCSUM != 0,
            iseq: cfg.flags & TUNNEL_F_ISEQ != 0,
            oseq: cfg.flags & TUNNEL_F_OSEQ != 0,
            dev,
        })
    }

    /// Outer GRE flags this tunnel sends: the data plane's own derivation.
    pub fn gre_flags(&self) -> u16 {
        self.to_config(Ipv4Addr::UNSPECIFIED, 0, 0)
            .gre_output_flags()
    }

    /// Words that give exactly this spec to `tunnel add`, or to `tunnel
    /// change` whatever the tunnel was before (negations included).
    pub fn to_words(&self) -> Vec<String> {
        let mut w: Vec<String> = vec![self.name.clone(), "mode".into(), self.mode.name().into()];
        let any_or = |a: Option<Ipv4Addr>| a.map_or("any".to_string(), |a| a.to_string());
        if self.mode != Mode::Isatap {
            w.extend(["remote".into(), any_or(self.remote)]);
        }
        w.extend(["local".into(), any_or(self.local)]);
        match self.ikey {
            Some(k) => w.extend(["ikey".into(), k.to_string()]),
            None => w.push("noikey".into()),
        }
        match self.okey {
            Some(k) => w.extend(["okey".into(), k.to_string()]),
            None => w.push("nookey".into()),
        }
        w.extend(["nocsum".into(), "noseq".into()]);
        for (on, word) in [
            (self.icsum, "icsum"),
            (self.ocsum, "ocsum"),
            (self.iseq, "iseq"),
            (self.oseq, "oseq"),
        ] {
            if on {
                w.push(word.into());
            }
        }
        let ttl = if self.ttl == 0 {
            "inherit".to_string()
        } else {
            self.ttl.to_string()
        };
        let tos = match self.tos {
            Tos::Inherit(0) => "inherit".to_string(),
            Tos::Inherit(t) => format!("inherit/0x{t:x}"),
            Tos::Value(t) => format!("0x{t:x}"),
        };
        w.extend(["ttl".into(), ttl, "tos".into(), tos]);
        w.push(
            if self.pmtudisc {
                "pmtudisc"
            } else {
                "nopmtudisc"
            }
            .into(),
        );
        w.push(
            if self.rpfilter {
                "rpfilter"
            } else {
                "norpfilter"
            }
            .into(),
        );
        if let Some(dev) = &self.dev {
            w.extend(["dev".into(), dev.clone()]);
        }
        w
    }

    /// Does this tunnel need one GRE header per segment (no GSO)?
    pub fn needs_per_packet_header(&self) -> bool {
        self.ocsum || self.oseq
    }

    /// MTU of the tunnel interface over an underlay of `underlay_mtu`.
    pub fn mtu(&self, underlay_mtu: u32) -> u32 {
        let overhead = wire::encap_overhead(self.mode.as_map(), self.gre_flags()) as u32;
        underlay_mtu.saturating_sub(overhead).max(68)
    }

    /// The data plane's view of this tunnel; `local` 0.0.0.0 is `local any`.
    pub fn to_config(&self, local: Ipv4Addr, underlay_ifindex: u32, mtu: u32) -> TunnelConfig {
        let mut flags = 0;
        for (on, flag) in [
            (self.icsum, TUNNEL_F_ICSUM),
            (self.ocsum, TUNNEL_F_OCSUM),
            (self.iseq, TUNNEL_F_ISEQ),
            (self.oseq, TUNNEL_F_OSEQ),
            (self.mode == Mode::Isatap, TUNNEL_F_ISATAP),
            (self.mode == Mode::Gretap, TUNNEL_F_TEB),
            (self.rpfilter, TUNNEL_F_RPFILTER),
        ] {
            if on {
                flags |= flag;
            }
        }
        if self.ikey.is_some() {
            flags |= TUNNEL_F_IKEY;
        }
        if self.okey.is_some() {
            flags |= TUNNEL_F_OKEY;
        }
        if self.pmtudisc {
            flags |= TUNNEL_F_PMTUDISC;
        }
        if self.dev.is_some() {
            flags |= TUNNEL_F_BOUND_DEV;
        }
        let tos = match self.tos {
            Tos::Inherit(fallback) => {
                flags |= TUNNEL_F_TOS_INHERIT;
                fallback
            }
            Tos::Value(v) => v,
        };
        TunnelConfig {
            local: wire_addr(local),
            remote: self.remote.map_or(0, wire_addr),
            ikey: self.ikey.unwrap_or(0).to_be(),
            okey: self.okey.unwrap_or(0).to_be(),
            underlay_ifindex,
            flags,
            mtu,
            mode: self.mode.as_map(),
            ttl: self.ttl,
            tos,
            _pad: 0,
            prl_default: 0,
            default_src: 0,
            stats_slot: 0,
            ifindex: 0,
            port_ifindex: 0,
        }
    }
}

/// The keywords of `ip link add NAME type gretap` that xtun takes, in the
/// order iproute2 tries them: an abbreviation means the first it starts.
pub const GRETAP_WORDS: &[&str] = &[
    "key",
    "nokey",
    "ikey",
    "noikey",
    "okey",
    "nookey",
    "seq",
    "noseq",
    "iseq",
    "noiseq",
    "oseq",
    "nooseq",
    "csum",
    "nocsum",
    "icsum",
    "noicsum",
    "ocsum",
    "noocsum",
    "nopmtudisc",
    "pmtudisc",
    "remote",
    "local",
    "dev",
    "ttl",
    "hoplimit",
    "hlim",
    "tos",
    "tclass",
    "dsfield",
];

/// Keywords of iproute2's gre links that xtun does not implement.
const GRETAP_UNSUPPORTED: &[&str] = &[
    "ignore-df",
    "noignore-df",
    "external",
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
    "fwmark",
];

impl TunnelSpec {
    /// Parses the words after `xtun link add`, as `ip link add` reads them:
    /// `[name] NAME type gretap`, then the gre link's options.
    pub fn parse_link<S: AsRef<str>>(args: &[S]) -> Result<Self, ConfigError> {
        let mut it = args.iter().map(AsRef::as_ref);
        let mut name: Option<String> = None;
        let kind = loop {
            let Some(word) = it.next() else {
                return Err(match name {
                    None => ConfigError::MissingName,
                    Some(_) => ConfigError::MissingLinkType,
                });
            };
            let mut value = || {
                it.next()
                    .ok_or_else(|| ConfigError::MissingArgument(word.to_string()))
            };
            match word {
                "type" => break value()?,
                "name" | "dev" => set_name(&mut name, value()?)?,
                w if grammar::matches(w, "help") => return Err(ConfigError::Help),
                w if name.is_none() && !w.starts_with('-') => set_name(&mut name, w)?,
                other => return Err(ConfigError::Unknown(other.to_string())),
            }
        };
        if kind != "gretap" {
            return Err(ConfigError::UnknownLinkType(kind.to_string()));
        }
        let name = name.ok_or(ConfigError::MissingName)?;
        let mut words: Vec<&str> = Vec::new();
        let takes_value = [
            "key", "ikey", "okey", "remote", "local", "dev", "ttl", "hoplimit", "hlim", "tos",
            "tclass", "dsfield",
        ];
        while let Some(word) = it.next() {
            if GRETAP_UNSUPPORTED.contains(&word) {
                return Err(ConfigError::Unsupported(word.to_string()));
            }
            let keyword = grammar::first_match(word, GRETAP_WORDS)
                .ok_or_else(|| ConfigError::Unknown(word.to_string()))?;
            if GRETAP_UNSUPPORTED.contains(&keyword) {
                return Err(ConfigError::Unsupported(keyword.to_string()));
            }
            words.push(keyword);
            if takes_value.contains(&keyword) {
                words.push(
                    it.next()
                        .ok_or_else(|| ConfigError::MissingArgument(keyword.to_string()))?,
                );
            }
        }
        let base = Self {
            name,
            mode: Mode::Gretap,
            remote: None,
            local: None,
            ikey: None,
            okey: None,
            ttl: 0,
            tos: Tos::Value(0),
            pmtudisc: true,
            rpfilter: false,
            icsum: false,
            ocsum: false,
            iseq: false,
            oseq: false,
            dev: None,
        };
        let spec = Self::parse_onto(Some(&base), &words)?;
        if spec.remote.is_none() {
            return Err(ConfigError::GretapRemote);
        }
        Ok(spec)
    }
}

/// The gretap line of `ip -d link show`: its options as iproute2's gre
/// link prints them.
pub struct LinkLine<'a> {
    pub cfg: &'a TunnelConfig,
    pub dev: Option<&'a str>,
}

impl fmt::Display for LinkLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = self.cfg;
        write!(
            f,
            "gretap remote {} local {}",
            any_or_addr(cfg.remote),
            any_or_addr(cfg.local)
        )?;
        if let Some(dev) = self.dev {
            write!(f, " dev {dev}")?;
        }
        match cfg.ttl {
            0 => write!(f, " ttl inherit")?,
            ttl => write!(f, " ttl {ttl}")?,
        }
        match link_tos(cfg) {
            0 => {}
            1 => write!(f, " tos inherit")?,
            tos => write!(f, " tos {tos:#x}")?,
        }
        if cfg.flags & TUNNEL_F_PMTUDISC == 0 {
            write!(f, " nopmtudisc")?;
        }
        for (word, key) in link_keys(cfg) {
            write!(f, " {word} {key}")?;
        }
        for word in link_flag_words(cfg) {
            write!(f, " {word}")?;
        }
        Ok(())
    }
}

/// An outer address as `ip` shows it: `any` for 0.
pub fn any_or_addr(addr: u32) -> String {
    if addr == 0 {
        "any".to_string()
    } else {
        addr_from_wire(addr).to_string()
    }
}

/// A gretap link's keys, as `ip -d link show` names them.
pub fn link_keys(cfg: &TunnelConfig) -> impl Iterator<Item = (&'static str, Ipv4Addr)> + '_ {
    [
        (TUNNEL_F_IKEY, cfg.ikey, "ikey"),
        (TUNNEL_F_OKEY, cfg.okey, "okey"),
    ]
    .into_iter()
    .filter(|(flag, _, _)| cfg.flags & flag != 0)
    .map(|(_, key, word)| (word, addr_from_wire(key)))
}

/// A gretap link's sequence and checksum flags, as `ip -d link show`
/// names them.
pub fn link_flag_words(cfg: &TunnelConfig) -> impl Iterator<Item = &'static str> + '_ {
    [
        (TUNNEL_F_ISEQ, "iseq"),
        (TUNNEL_F_OSEQ, "oseq"),
        (TUNNEL_F_ICSUM, "icsum"),
        (TUNNEL_F_OCSUM, "ocsum"),
    ]
    .into_iter()
    .filter(|(flag, _)| cfg.flags & flag != 0)
    .map(|(_, word)| word)
}

/// The TOS byte as the kernel keeps it: odd means inherit (1 alone, or
/// with a fallback value).
pub fn link_tos(cfg: &TunnelConfig) -> u8 {
    cfg.tos | u8::from(cfg.flags & TUNNEL_F_TOS_INHERIT != 0)
}

/// The words of `ip tunnel show` (and `del`): which tunnels they select.
/// Values are checked as for `add`; words that only describe a tunnel
/// (`ttl`, `csum`...) select nothing, as in `ip`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TunnelSelector {
    pub name: Option<String>,
    /// `mode M`, or the mode the name implies (`gre1`); `Some(None)`: a
    /// mode xtun has no tunnels of (vti).
    pub mode: Option<Option<Mode>>,
    pub remote: Option<Ipv4Addr>,
    pub local: Option<Ipv4Addr>,
    /// `key` or `ikey`: the receive key.
    pub ikey: Option<u32>,
    pub dev: Option<String>,
}

impl TunnelSelector {
    pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Self, ConfigError> {
        let mut sel = Self::default();
        let mut has_key = false;
        let mut it = args.iter().map(AsRef::as_ref);
        while let Some(word) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| ConfigError::MissingArgument(word.to_string()))
            };
            match word {
                "mode" => {
                    let mode = match value()?.parse::<Mode>() {
                        Ok(m) => Some(m),
                        Err(ConfigError::Vti) => None,
                        Err(e) => return Err(e),
                    };
                    sel.mode = Some(mode);
                }
                "remote" => {
                    let a = parse_addr(value()?)?;
                    sel.remote = (!a.is_unspecified()).then_some(a);
                }
                "local" => {
                    let a = parse_addr(value()?)?;
                    sel.local = (!a.is_unspecified()).then_some(a);
                }
                "key" | "ikey" => {
                    sel.ikey = Some(parse_key(value()?).map_err(|e| e.for_word(word))?);
                    has_key = true;
                }
                "okey" => {
                    parse_key(value()?).map_err(|e| e.for_word(word))?;
                    has_key = true;
                }
                "ttl" | "hoplimit" | "hlim" => {
                    parse_ttl(value()?)?;
                }
                "dev" => sel.dev = Some(value()?.to_string()),
                w if w == "tos" || w == "tclass" || grammar::matches(w, "dsfield") => {
                    parse_tos(value()?)?;
                }
                "seq" | "iseq" | "oseq" | "csum" | "icsum" | "ocsum" | "pmtudisc"
                | "nopmtudisc" => {}
                "name" => set_name(&mut sel.name, value()?)?,
                w if grammar::matches(w, "help") => return Err(ConfigError::Help),
                other if sel.name.is_some() => return Err(ConfigError::Unknown(other.to_string())),
                other => set_name(&mut sel.name, other)?,
            }
        }
        if sel.mode.is_none() {
            sel.mode = sel
                .name
                .as_deref()
                .and_then(grammar::mode_from_name)
                .map(|m| m.parse::<Mode>().ok());
        }
        if has_key && sel.mode != Some(Some(Mode::Gre)) {
            return Err(ConfigError::KeyWithoutGre);
        }
        Ok(sel)
    }

    /// Does a tunnel with this configuration (bound to `dev`) match?
    pub fn selects(&self, name: &str, cfg: &TunnelConfig, dev: Option<&str>) -> bool {
        let ikey = (cfg.flags & TUNNEL_F_IKEY != 0).then(|| u32::from_be(cfg.ikey));
        self.name.as_deref().is_none_or(|n| n == name)
            && self
                .mode
                .is_none_or(|m| m.is_some_and(|m| m.as_map() == cfg.mode))
            && self.remote.is_none_or(|a| wire_addr(a) == cfg.remote)
            && self.local.is_none_or(|a| wire_addr(a) == cfg.local)
            && self.ikey.is_none_or(|k| k == 0 || Some(k) == ikey)
            && self.dev.as_deref().is_none_or(|d| Some(d) == dev)
    }
}

fn set_name(name: &mut Option<String>, v: &str) -> Result<(), ConfigError> {
    if let Some(old) = name {
        if old != v {
            return Err(ConfigError::DuplicateName(old.clone(), v.to_string()));
        }
    }
    validate_ifname(v)?;
    *name = Some(v.to_string());
    Ok(())
}

/// An address as the maps store it: the wire bytes in a u32.
pub fn wire_addr(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

pub fn addr_from_wire(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a.to_ne_bytes())
}

/// The decapsulation-index key of a tunnel.
pub fn decap_key(cfg: &TunnelConfig) -> DecapKey {
    let has_key =
        (cfg.mode == MODE_GRE || cfg.mode == MODE_GRETAP) && cfg.flags & TUNNEL_F_IKEY != 0;
    DecapKey {
        local: cfg.local,
        remote: cfg.remote,
        key: if has_key { cfg.ikey } else { 0 },
        proto: Mode::from_map(cfg.mode).map_or(0, Mode::ip_proto),
        has_key: has_key as u8,
        _pad: [0; 2],
    }
}

/// An inner prefix with its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl FromStr for Prefix {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| ConfigError::BadPrefix(s.to_string()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| ConfigError::BadPrefixLen(s.to_string(), max))?,
        };
        // Only the prefix's own bits count, as for a route.
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Ok(Self { addr, len })
    }
}

impl Prefix {
    /// The neighbour-trie key of this prefix on tunnel `ifindex`.
    pub fn key(&self, ifindex: u32) -> aya::maps::lpm_trie::Key<NeighKey> {
        let mut addr = [0u8; 16];
        let family = match self.addr {
            IpAddr::V4(a) => {
                addr[..4].copy_from_slice(&a.octets());
                4
            }
            IpAddr::V6(a) => {
                addr = a.octets();
                6
            }
        };
        aya::maps::lpm_trie::Key::new(
            NEIGH_KEY_FIXED_BITS + self.len as u32,
            NeighKey {
                ifindex,
                family,
                addr,
            },
        )
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// One line of `ip tunnel show`.
pub struct ShowLine<'a> {
    pub name: &'a str,
    pub cfg: &'a TunnelConfig,
    pub dev: Option<&'a str>,
}

impl fmt::Display for ShowLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = self.cfg;
        let mode = Mode::from_map(cfg.mode).map_or("unknown", Mode::show_name);
        let addr = |a: u32| {
            if a == 0 {
                "any".to_string()
            } else {
                addr_from_wire(a).to_string()
            }
        };
        write!(
            f,
            "{}: {}/ip remote {} local {}",
            self.name,
            mode,
            addr(cfg.remote),
            addr(cfg.local)
        )?;
        if let Some(dev) = self.dev {
            write!(f, " dev {dev}")?;
        }
        if cfg.ttl == 0 {
            write!(f, " ttl inherit")?;
        } else {
            write!(f, " ttl {}", cfg.ttl)?;
        }
        // As `ip` prints the TOS byte: a DSCP name where it has one.
        if cfg.flags & TUNNEL_F_TOS_INHERIT != 0 {
            write!(f, " tos inherit")?;
            if cfg.tos != 0 {
                write!(f, "/{}", grammar::dsfield_name(cfg.tos))?;
            }
        } else if cfg.tos != 0 {
            write!(f, " tos {}", grammar::dsfield_name(cfg.tos))?;
        }
        if cfg.flags & TUNNEL_F_PMTUDISC == 0 {
            write!(f, " nopmtudisc")?;
        }
        if cfg.flags & TUNNEL_F_RPFILTER != 0 {
            write!(f, " rpfilter")?;
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
        // The continuation lines `ip tunnel show` prints for GRE options.
        for (flag, text) in [
            (TUNNEL_F_ISEQ, "Drop packets out of sequence."),
            (TUNNEL_F_ICSUM, "Checksum in received packet is required."),
            (TUNNEL_F_OSEQ, "Sequence packets on output."),
            (TUNNEL_F_OCSUM, "Checksum output packets."),
        ] {
            if cfg.flags & flag != 0 {
                write!(f, "\n  {text}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<TunnelSpec, ConfigError> {
        TunnelSpec::parse(&s.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn parses_the_seed_walkthrough() {
        let spec = parse("tun1 mode ipip remote 10.10.20.2 local 10.10.10.2").unwrap();
        assert_eq!(spec.name, "tun1");
        assert_eq!(spec.mode, Mode::Ipip);
        assert_eq!(spec.remote, Some(Ipv4Addr::new(10, 10, 20, 2)));
        assert_eq!(spec.local, Some(Ipv4Addr::new(10, 10, 10, 2)));
        assert_eq!(spec.ttl, 0);
        assert!(spec.pmtudisc);
        assert_eq!(spec.mtu(1500), 1480);
    }

    #[test]
    fn accepts_words_in_any_order_and_name_keyword() {
        let a = parse("remote 10.0.0.2 mode gre name t0 local 10.0.0.1 key 42").unwrap();
        let b = parse("t0 local 10.0.0.1 key 42 remote 10.0.0.2 mode gre").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ikey, Some(42));
        assert_eq!(a.mtu(1500), 1472);
    }

    #[test]
    fn keys_are_numbers_or_dotted_quads() {
        assert_eq!(parse_key("42"), Ok(42));
        assert_eq!(parse_key("0.0.0.42"), Ok(42));
        assert_eq!(parse_key("1.2.3.4"), Ok(0x0102_0304));
        assert_eq!(parse_key("4294967295"), Ok(u32::MAX));
        assert!(parse_key("4294967296").is_err());
        assert!(parse_key("1.2.3").is_err());
        assert!(parse_key("abc").is_err());
        let spec = parse("t mode gre remote 1.1.1.1 local 2.2.2.2 ikey 1.0.0.0 okey 7").unwrap();
        assert_eq!((spec.ikey, spec.okey), (Some(0x0100_0000), Some(7)));
        let cfg = spec.to_config(Ipv4Addr::new(2, 2, 2, 2), 3, 1472);
        // Keys are stored as they go on the wire.
        assert_eq!(cfg.ikey.to_ne_bytes(), [1, 0, 0, 0]);
        assert_eq!(cfg.okey.to_ne_bytes(), [0, 0, 0, 7]);
    }

    #[test]
    fn ttl_and_tos() {
        let spec = parse("t mode gre remote 1.1.1.1 ttl 64 tos inherit").unwrap();
        assert_eq!(spec.ttl, 64);
        assert_eq!(spec.tos, Tos::Inherit(0));
        assert_eq!(
            parse("t mode gre remote 1.1.1.1 ttl inherit tos 0x10")
                .unwrap()
                .tos,
            Tos::Value(0x10)
        );
        assert_eq!(
            parse("t mode gre remote 1.1.1.1 tos b8").unwrap().tos,
            Tos::Value(0xb8)
        );
    }

    #[test]
    fn reads_values_as_ip_tunnel_does() {
        // ttl 0 is inherit; numbers in C notation; no remote is remote any.
        let spec = parse("t mode gre ttl 0 key 010").unwrap();
        assert_eq!((spec.ttl, spec.ikey, spec.remote), (0, Some(8), None));
        assert_eq!(parse("t mode gre ttl 0x40").unwrap().ttl, 64);
        assert_eq!(parse("t mode gre ikey 0x10").unwrap().ikey, Some(16));
        // The mode from the name, unless given.
        assert_eq!(parse("gre5 remote 1.1.1.1").unwrap().mode, Mode::Gre);
        assert_eq!(parse("ipip0 remote 1.1.1.1").unwrap().mode, Mode::Ipip);
        assert_eq!(parse("sit1 remote 1.1.1.1").unwrap().mode, Mode::Sit);
        assert_eq!(parse("isatap0 local 1.1.1.1").unwrap().mode, Mode::Isatap);
        assert_eq!(
            parse("gre5 mode ipip remote 1.1.1.1").unwrap().mode,
            Mode::Ipip
        );
        assert_eq!(parse("vti0 remote 1.1.1.1"), Err(ConfigError::Vti));
        // DSCP names, `d`/`ds` for dsfield, and what follows a value's `/`.
        for (word, tos) in [
            ("tos AF41", Tos::Value(0x88)),
            ("tos EF", Tos::Value(0xb8)),
            ("tos ee", Tos::Value(0xee)),
            ("tos ef", Tos::Inherit(0xee)),
            ("d CS6", Tos::Value(0xc0)),
            ("ds 10", Tos::Value(0x10)),
            ("tos inherit/AF41", Tos::Inherit(0x88)),
            ("tos 0x10/whatever", Tos::Value(0x10)),
            ("tos default", Tos::Value(0)),
        ] {
            let spec = parse(&format!("t mode gre remote 1.1.1.1 {word}")).unwrap();
            assert_eq!(spec.tos, tos, "{word}");
        }
        // `remote 0.0.0.0` and `default` are any.
        assert_eq!(parse("t mode gre remote 0.0.0.0").unwrap().remote, None);
        assert_eq!(parse("t mode gre local default").unwrap().local, None);
        // What ip checks first wins: keys before ttl/nopmtudisc and the mode.
        assert_eq!(
            parse("t remote 1.1.1.1 key 1 ttl 3 nopmtudisc"),
            Err(ConfigError::KeyWithoutGre)
        );
        assert_eq!(
            parse("t remote 1.1.1.1 ttl 3 nopmtudisc"),
            Err(ConfigError::TtlWithNoPmtudisc)
        );
    }

    #[test]
    fn errors_in_ip_tunnel_words() {
        let line = |s: &str| parse(s).unwrap_err().as_iproute2().unwrap();
        assert_eq!(
            line("tun9 mode ipip remote 1.1.1.1 key 5"),
            IpError::failed("Keys are not allowed with ipip and sit tunnels")
        );
        assert_eq!(
            line("t mode bogus"),
            IpError::usage("Unknown tunnel mode \"bogus\"")
        );
        assert_eq!(
            line("t remote 1.1.1.1"),
            IpError::failed("cannot determine tunnel mode (ipip, gre, vti or sit)")
        );
        assert_eq!(
            line("t mode gre ttl 300"),
            IpError::usage("Error: argument \"300\" is wrong: invalid TTL")
        );
        assert_eq!(
            line("t mode gre tos inherit/zz"),
            IpError::usage("Error: argument \"inherit\" is wrong: bad TOS value")
        );
        assert_eq!(
            line("t mode gre key 1.2.3"),
            IpError::failed("Error: an IP address is expected rather than \"1.2.3\"")
        );
        // xtun's own checks have no ip wording.
        assert_eq!(
            parse("t mode ipip remote 1.1.1.1 csum")
                .unwrap_err()
                .as_iproute2(),
            None
        );
    }

    #[test]
    fn selectors_read_show_words() {
        let sel = TunnelSelector::parse(&["gre3"]).unwrap();
        assert_eq!(
            (sel.name.as_deref(), sel.mode),
            (Some("gre3"), Some(Some(Mode::Gre)))
        );
        let sel = TunnelSelector::parse(&["tun3", "remote", "1.1.1.1"]).unwrap();
        assert_eq!(sel.mode, None);
        assert_eq!(sel.remote, Some(Ipv4Addr::new(1, 1, 1, 1)));
        assert_eq!(
            TunnelSelector::parse(&["key", "5"]),
            Err(ConfigError::KeyWithoutGre)
        );
        let sel = TunnelSelector::parse(&["mode", "gre", "key", "5"]).unwrap();
        let spec = parse("t mode gre remote 1.1.1.1 key 5").unwrap();
        let cfg = spec.to_config(Ipv4Addr::UNSPECIFIED, 1, 1472);
        assert!(sel.selects("t", &cfg, None));
        let other = parse("t mode gre remote 1.1.1.1 key 6").unwrap();
        assert!(!sel.selects("t", &other.to_config(Ipv4Addr::UNSPECIFIED, 1, 1472), None));
        assert_eq!(
            TunnelSelector::parse(&["a", "b"]),
            Err(ConfigError::Unknown("b".into()))
        );
    }

    #[test]
    fn rejects_bad_input_like_ip_tunnel() {
        use ConfigError::*;
        let cases: &[(&str, ConfigError)] = &[
            (
                "t mode gre remote 10.0.0.300",
                BadAddress("10.0.0.300".into()),
            ),
            ("t mode foo remote 1.1.1.1", UnknownMode("foo".into())),
            ("t mode ipip remote 1.1.1.1 key 5", KeyWithoutGre),
            ("t mode sit remote 1.1.1.1 okey 5", KeyWithoutGre),
            (
                "averyveryverylongname mode gre remote 1.1.1.1",
                BadName("averyveryverylongname".into()),
            ),
            ("t mode gre remote 1.1.1.1 ttl 0x", BadTtl("0x".into())),
            ("t mode gre remote 1.1.1.1 ttl 256", BadTtl("256".into())),
            ("t mode gre remote 1.1.1.1 ttl 08", BadTtl("08".into())),
            ("t mode gre remote 1.1.1.1 tos 1ff", BadTos("1ff".into())),
            (
                "t mode gre remote 1.1.1.1 ttl 9 nopmtudisc",
                TtlWithNoPmtudisc,
            ),
            ("t remote 1.1.1.1", MissingMode),
            ("mode gre remote 1.1.1.1", MissingName),
            ("t mode gre remote", MissingArgument("remote".into())),
            ("t mode isatap remote 1.1.1.1", IsatapRemote),
            ("t mode ipip remote 1.1.1.1 csum", GreOnly("csum".into())),
            ("t mode sit remote 1.1.1.1 oseq", GreOnly("oseq".into())),
            (
                "t mode gre remote 1.1.1.1 tos inherit/zz",
                BadTos("inherit/zz".into()),
            ),
            (
                "t mode gre remote 1.1.1.1 key x",
                BadKey("key".into(), "x".into()),
            ),
            (
                "t mode gre remote 1.1.1.1 okey 010x",
                BadKey("okey".into(), "010x".into()),
            ),
            (
                "t mode gre mode sit remote 1.1.1.1",
                ModeConflict("gre".into(), "sit".into()),
            ),
            ("t mode gre remote 1.1.1.1 he", Help),
            ("t mode vti remote 1.1.1.1", Vti),
            ("t mode gre remote 1.1.1.1 bogus", Unknown("bogus".into())),
            ("t mode gre remote 1.1.1.1 dev a/b", BadName("a/b".into())),
        ];
        for (input, expected) in cases {
            assert_eq!(parse(input).as_ref().err(), Some(expected), "{input}");
        }
    }

    #[test]
    fn show_line_matches_ip_tunnel_show() {
        let spec = parse("tun1 mode gre remote 10.10.20.2 local 10.10.10.2 key 42").unwrap();
        let cfg = spec.to_config(spec.local.unwrap(), 2, 1472);
        let line = ShowLine {
            name: "tun1",
            cfg: &cfg,
            dev: None,
        }
        .to_string();
        assert_eq!(
            line,
            "tun1: gre/ip remote 10.10.20.2 local 10.10.10.2 ttl inherit key 42"
        );

        let spec =
            parse("t2 mode ipip remote 1.1.1.1 local 2.2.2.2 ttl 64 tos inherit dev v1").unwrap();
        let cfg = spec.to_config(spec.local.unwrap(), 2, 1480);
        let line = ShowLine {
            name: "t2",
            cfg: &cfg,
            dev: Some("v1"),
        }
        .to_string();
        assert_eq!(
            line,
            "t2: ip/ip remote 1.1.1.1 local 2.2.2.2 dev v1 ttl 64 tos inherit"
        );

        let spec =
            parse("t3 mode gre remote 1.1.1.1 local 2.2.2.2 ikey 1 okey 2 nopmtudisc").unwrap();
        let cfg = spec.to_config(spec.local.unwrap(), 2, 1468);
        let line = ShowLine {
            name: "t3",
            cfg: &cfg,
            dev: None,
        }
        .to_string();
        assert_eq!(
            line,
            "t3: gre/ip remote 1.1.1.1 local 2.2.2.2 ttl inherit nopmtudisc ikey 1 okey 2"
        );
    }

    #[test]
    fn change_keeps_what_it_does_not_mention() {
        let base = parse("tun1 mode gre remote 1.1.1.1 local 2.2.2.2 key 5 ttl 64").unwrap();
        let changed =
            TunnelSpec::parse_change(&base, &["tun1", "ttl", "inherit", "okey", "6"]).unwrap();
        assert_eq!(
            (changed.ikey, changed.okey, changed.ttl),
            (Some(5), Some(6), 0)
        );
        assert_eq!((changed.remote, changed.local), (base.remote, base.local));
        let changed =
            TunnelSpec::parse_change(&base, &["tun1", "remote", "3.3.3.3", "nokey"]).unwrap();
        assert_eq!(
            (changed.remote, changed.ikey, changed.okey),
            (Some(Ipv4Addr::new(3, 3, 3, 3)), None, None)
        );
        assert_eq!(
            TunnelSpec::parse_change(&base, &["tun1", "mode", "ipip"]),
            Err(ConfigError::ModeChange)
        );
        assert_eq!(
            TunnelSpec::parse_change(&base, &["tun1", "mode", "gre"]).unwrap(),
            base
        );
        let ipip = parse("t mode ipip remote 1.1.1.1 local 2.2.2.2").unwrap();
        assert_eq!(
            TunnelSpec::parse_change(&ipip, &["t", "key", "1"]),
            Err(ConfigError::KeyWithoutGre)
        );
        // Round trip through the data plane's view.
        let cfg = base.to_config(base.local.unwrap(), 2, 1472);
        assert_eq!(TunnelSpec::from_config("tun1", &cfg, None).unwrap(), base);
    }

    #[test]
    fn gre_options_tos_inherit_and_wildcards() {
        let spec = parse("t mode gre remote any local any key 1 csum iseq oseq").unwrap();
        assert_eq!((spec.remote, spec.local), (None, None));
        assert!(spec.icsum && spec.ocsum && spec.iseq && spec.oseq);
        // GRE 4 + key 4 + csum 4 + seq 4, outer IPv4 20.
        assert_eq!(spec.mtu(1500), 1464);
        let cfg = spec.to_config(Ipv4Addr::UNSPECIFIED, 2, 1464);
        assert_eq!((cfg.local, cfg.remote), (0, 0));
        let line = ShowLine {
            name: "t",
            cfg: &cfg,
            dev: None,
        }
        .to_string();
        assert_eq!(
            line,
            "t: gre/ip remote any local any ttl inherit key 1\n  Drop packets out of sequence.\n  Checksum in received packet is required.\n  Sequence packets on output.\n  Checksum output packets."
        );
        assert_eq!(TunnelSpec::from_config("t", &cfg, None).unwrap(), spec);
        let changed = TunnelSpec::parse_change(&spec, &["t", "noseq", "nocsum"]).unwrap();
        assert!(!(changed.icsum || changed.ocsum || changed.iseq || changed.oseq));

        for (word, tos) in [
            ("inherit", Tos::Inherit(0)),
            ("inherit/0x10", Tos::Inherit(0x10)),
            ("inherit/b8", Tos::Inherit(0xb8)),
            ("0x11", Tos::Inherit(0x10)),
            ("0x10", Tos::Value(0x10)),
        ] {
            let spec = parse(&format!("t mode gre remote 1.1.1.1 tos {word}")).unwrap();
            assert_eq!(spec.tos, tos, "{word}");
        }
        let spec = parse("t mode gre remote 1.1.1.1 local 2.2.2.2 tos inherit/0x10").unwrap();
        let cfg = spec.to_config(spec.local.unwrap(), 2, 1476);
        assert!(ShowLine {
            name: "t",
            cfg: &cfg,
            dev: None
        }
        .to_string()
        .ends_with("ttl inherit tos inherit/0x10"));

        let isatap = parse("is0 mode isatap local 10.0.0.1").unwrap();
        assert_eq!((isatap.mode, isatap.remote), (Mode::Isatap, None));
        assert_eq!(isatap.mtu(1500), 1480);
        let cfg = isatap.to_config(isatap.local.unwrap(), 2, 1480);
        assert_ne!(cfg.flags & TUNNEL_F_ISATAP, 0);
        assert_eq!(decap_key(&cfg).remote, 0);
    }

    #[test]
    fn prefixes_parse_and_lose_host_bits() {
        let p: Prefix = "10.1.2.3/16".parse().unwrap();
        assert_eq!(p.addr, "10.1.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(p.len, 16);
        let p: Prefix = "10.1.2.3".parse().unwrap();
        assert_eq!(p.len, 32);
        let p: Prefix = "fd00:1:2::5/48".parse().unwrap();
        assert_eq!(p.addr, "fd00:1:2::".parse::<IpAddr>().unwrap());
        let p: Prefix = "0.0.0.0/0".parse().unwrap();
        assert_eq!(p.key(7).prefix_len(), 64);
        for bad in ["10.0.0.0/33", "fd00::/129", "x/8", "10.0.0.0/-1", ""] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad}");
        }
    }

    #[test]
    fn words_rebuild_the_spec_from_anything() {
        for text in [
            "t mode gre remote 1.1.1.1 local 2.2.2.2 ikey 1 okey 2 csum oseq ttl 9 tos inherit/0x10 dev v1",
            "t mode gre remote any local any key 7 nopmtudisc",
            "t mode isatap local 10.0.0.1 tos 0x20",
            "t mode sit remote 1.1.1.1",
        ] {
            let spec = parse(text).unwrap();
            assert_eq!(TunnelSpec::parse(&spec.to_words()).unwrap(), spec, "{text}");
            let other = parse("t mode gre remote 9.9.9.9 local 8.8.8.8 key 3 seq ttl 4").unwrap();
            if spec.mode == Mode::Gre {
                assert_eq!(TunnelSpec::parse_change(&other, &spec.to_words()).unwrap(), spec);
            }
        }
    }

    #[test]
    fn decap_key_includes_key_only_for_keyed_gre() {
        let spec = parse("t mode gre remote 1.1.1.1 local 2.2.2.2 ikey 9").unwrap();
        let key = decap_key(&spec.to_config(spec.local.unwrap(), 1, 1472));
        assert_eq!((key.has_key, key.key, key.proto), (1, 9u32.to_be(), 47));
        let spec = parse("t mode ipip remote 1.1.1.1 local 2.2.2.2").unwrap();
        let key = decap_key(&spec.to_config(spec.local.unwrap(), 1, 1480));
        assert_eq!((key.has_key, key.key, key.proto), (0, 0, 4));
    }
}
