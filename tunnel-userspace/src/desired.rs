//! The declarative configuration of `xtun apply -f FILE` and `xtun export`:
//! a TOML file listing the underlays to attach to and the tunnels, with
//! their neighbours, potential routers, state and addresses. Every tunnel
//! is checked by the same grammar as `xtun tunnel add` (`xtun -6 tunnel
//! add` for the modes over IPv6), and every error names the file, line,
//! column and key.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr},
    ops::Range,
};

use serde::Deserialize;
use thiserror::Error;
use toml::{Spanned, Value};

use crate::{
    config::{validate_ifname, ConfigError, Mode, Prefix, Tos, TunnelSpec},
    config6::{Mode6, Tunnel6Spec},
};

/// An error at a place in the file.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{file}:{line}:{column}: {what}")]
pub struct FileError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub what: String,
}

/// `decap` of an attachment, as `xtun attach --decap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapPref {
    Auto,
    Xdp,
    Tc,
}

impl DecapPref {
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Xdp => "xdp",
            Self::Tc => "tc",
        }
    }
}

/// An address on a tunnel interface: `ADDR[/LEN] [peer PEER]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    pub local: IpAddr,
    pub len: u8,
    pub peer: Option<IpAddr>,
}

impl std::str::FromStr for Address {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid address \"{s}\": expected ADDR[/LEN] [peer PEER]");
        let words: Vec<&str> = s.split_whitespace().collect();
        let (addr, peer) = match words.as_slice() {
            [addr] => (*addr, None),
            [addr, "peer", peer] => (*addr, Some(peer.parse::<IpAddr>().map_err(|_| bad())?)),
            _ => return Err(bad()),
        };
        let (local, len) = match addr.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (addr, None),
        };
        let local: IpAddr = local.parse().map_err(|_| bad())?;
        let max = if local.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
        };
        if peer.is_some_and(|p| p.is_ipv4() != local.is_ipv4()) {
            return Err(bad());
        }
        Ok(Self { local, len, peer })
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.local, self.len)?;
        if let Some(peer) = self.peer {
            write!(f, " peer {peer}")?;
        }
        Ok(())
    }
}

/// One tunnel of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelEntry {
    pub spec: TunnelSpec,
    /// Bring the interface up (true) or leave its state alone (false).
    pub up: bool,
    /// Addresses to have on the interface (others are left alone).
    pub addresses: BTreeSet<Address>,
    /// Multipoint neighbours: exactly these, inner prefix -> remote.
    pub neighbours: BTreeMap<Prefix, Ipv4Addr>,
    /// ISATAP potential routers: exactly these, router -> may be default.
    pub routers: BTreeMap<Ipv4Addr, bool>,
}

/// One tunnel over IPv6 of the file: a `[[tunnel]]` whose mode is one of
/// `ip -6 tunnel`'s (ip6gre, ip6ip6, ipip6, any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tunnel6Entry {
    pub spec: Tunnel6Spec,
    pub up: bool,
    pub addresses: BTreeSet<Address>,
}

/// The whole file, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Underlays attached explicitly (as `xtun attach`).
    pub attach: BTreeMap<String, DecapPref>,
    /// Attached LANs with the XDP forwarding fast path (`forward = "xdp"`,
    /// as `xtun attach LAN --forward xdp`).
    pub forward: BTreeSet<String>,
    pub tunnels: Vec<TunnelEntry>,
    pub tunnels6: Vec<Tunnel6Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    attach: Vec<Spanned<RawAttach>>,
    #[serde(default)]
    tunnel: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttach {
    dev: Spanned<String>,
    #[serde(default)]
    decap: Option<Spanned<String>>,
    #[serde(default)]
    forward: Option<Spanned<String>>,
}

/// Where an error is: turns byte offsets into lines and columns.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    fn error(&self, span: Range<usize>, what: impl Into<String>) -> FileError {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        FileError {
            file: self.file.to_string(),
            line,
            column,
            what: what.into(),
        }
    }
}

/// Parses and validates `text`, read from `file`. Nothing is applied here:
/// a file with any error is rejected whole.
pub fn parse(file: &str, text: &str) -> Result<Desired, FileError> {
    let at = Locator { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        at.error(span, e.message().trim().to_string())
    })?;
    let mut desired = Desired::default();
    for entry in &raw.attach {
        let a = entry.get_ref();
        validate_ifname(a.dev.get_ref())
            .map_err(|e| at.error(a.dev.span(), format!("key `dev`: {e}")))?;
        let decap = match a.decap.as_ref().map(|d| (d.get_ref().as_str(), d.span())) {
            None | Some(("auto", _)) => DecapPref::Auto,
            Some(("xdp", _)) => DecapPref::Xdp,
            Some(("tc", _)) => DecapPref::Tc,
            Some((other, span)) => {
                return Err(at.error(
                    span,
                    format!("key `decap`: \"{other}\" is not auto, xdp or tc"),
                ))
            }
        };
        let forward = match a.forward.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
            None | Some(("off", _)) => false,
            Some(("xdp", _)) if decap == DecapPref::Tc => {
                let span = a.forward.as_ref().map_or(0..0, |f| f.span());
                return Err(at.error(
                    span,
                    "key `forward`: \"xdp\" runs in XDP, it cannot go with decap = \"tc\"",
                ));
            }
            Some(("xdp", _)) => true,
            Some((other, span)) => {
                return Err(at.error(
                    span,
                    format!("key `forward`: \"{other}\" is not xdp or off"),
                ))
            }
        };
        if forward {
            desired.forward.insert(a.dev.get_ref().clone());
        }
        if desired
            .attach
            .insert(a.dev.get_ref().clone(), decap)
            .is_some()
        {
            return Err(at.error(
                a.dev.span(),
                format!("key `dev`: {} is listed twice", a.dev.get_ref()),
            ));
        }
    }
    let mut names = BTreeSet::new();
    for table in &raw.tunnel {
        let name = if is_over_ipv6(table.get_ref()) {
            let entry = tunnel6_entry(&at, table)?;
            let name = entry.spec.name.clone();
            desired.tunnels6.push(entry);
            name
        } else {
            let entry = tunnel_entry(&at, table)?;
            let name = entry.spec.name.clone();
            desired.tunnels.push(entry);
            name
        };
        if !names.insert(name.clone()) {
            return Err(at.error(table.span(), format!("tunnel \"{name}\" is listed twice")));
        }
    }
    Ok(desired)
}

/// Is `table` a tunnel over IPv6, by its mode?
fn is_over_ipv6(table: &BTreeMap<Spanned<String>, Spanned<Value>>) -> bool {
    table
        .iter()
        .find(|(k, _)| k.get_ref() == "mode")
        .and_then(|(_, v)| v.get_ref().as_str())
        .is_some_and(|mode| mode.parse::<Mode6>().is_ok())
}

fn boolean(at: &Locator, key: &Spanned<String>, value: &Spanned<Value>) -> Result<bool, FileError> {
    value
        .get_ref()
        .as_bool()
        .ok_or_else(|| type_error(at, key, value, "true or false"))
}

/// `addresses = ["ADDR[/LEN] [peer PEER]", ...]`.
fn address_list(
    at: &Locator,
    key: &Spanned<String>,
    value: &Spanned<Value>,
) -> Result<BTreeSet<Address>, FileError> {
    let list = value
        .get_ref()
        .as_array()
        .ok_or_else(|| type_error(at, key, value, "a list of \"ADDR[/LEN] [peer PEER]\""))?;
    let mut addresses = BTreeSet::new();
    for item in list {
        let text = item
            .as_str()
            .ok_or_else(|| type_error(at, key, value, "a list of strings"))?;
        let address = text
            .parse::<Address>()
            .map_err(|e| at.error(value.span(), format!("key `addresses`: {e}")))?;
        addresses.insert(address);
    }
    Ok(addresses)
}

/// The grammar's error for the words of a table, blamed on the key whose
/// words the message quotes, else on the table.
fn blame(
    at: &Locator,
    table: Range<usize>,
    words_by_key: &[(String, Range<usize>, Vec<String>)],
    message: String,
) -> FileError {
    let culprit = words_by_key.iter().find(|(_, _, w)| {
        w.iter()
            .skip(1)
            .chain(w.first().filter(|_| w.len() == 1))
            .any(|word| message.contains(&format!("\"{word}\"")))
    });
    match culprit {
        Some((key, span, _)) => at.error(span.clone(), format!("key `{key}`: {message}")),
        None => at.error(table, format!("tunnel: {message}")),
    }
}

/// One `[[tunnel]]` table over IPv6: its words for the `ip -6 tunnel`
/// grammar, checked by `Tunnel6Spec::parse`, then `up` and `addresses`.
fn tunnel6_entry(
    at: &Locator,
    table: &Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>,
) -> Result<Tunnel6Entry, FileError> {
    let mut words_by_key: Vec<(String, Range<usize>, Vec<String>)> = Vec::new();
    let mut up = false;
    let mut addresses = BTreeSet::new();
    for (key, value) in table.get_ref() {
        let name = key.get_ref().as_str();
        let words: Vec<String> = match (name, value.get_ref()) {
            ("name" | "mode" | "remote" | "local" | "dev", Value::String(s)) => {
                vec![name.to_string(), s.clone()]
            }
            ("name" | "mode" | "remote" | "local" | "dev", _) => {
                return Err(type_error(at, key, value, "a string"))
            }
            ("key" | "ikey" | "okey", Value::Integer(n)) => vec![name.to_string(), n.to_string()],
            ("key" | "ikey" | "okey", Value::String(s)) => vec![name.to_string(), s.clone()],
            ("key" | "ikey" | "okey", _) => {
                return Err(type_error(at, key, value, "a number or a dotted quad"))
            }
            ("csum" | "icsum" | "ocsum" | "seq" | "iseq" | "oseq", _) => {
                if boolean(at, key, value)? {
                    vec![name.to_string()]
                } else {
                    vec![]
                }
            }
            ("allow-localremote", _) => {
                let on = boolean(at, key, value)?;
                vec![if on { name } else { "noallow-localremote" }.to_string()]
            }
            // `ip -6 tunnel` writes a hop limit of 0 as "inherit".
            ("hoplimit", Value::String(s)) if s == "inherit" => vec![name.to_string(), "0".into()],
            ("tclass" | "flowlabel", Value::Integer(n)) => {
                vec![name.to_string(), format!("0x{n:x}")]
            }
            ("hoplimit" | "encaplimit", Value::Integer(n)) => vec![name.to_string(), n.to_string()],
            ("hoplimit" | "encaplimit" | "tclass" | "flowlabel", Value::String(s)) => {
                vec![name.to_string(), s.clone()]
            }
            ("hoplimit" | "encaplimit" | "tclass" | "flowlabel", _) => {
                return Err(type_error(at, key, value, "a number or a string"))
            }
            ("up", _) => {
                up = boolean(at, key, value)?;
                vec![]
            }
            ("addresses", _) => {
                addresses = address_list(at, key, value)?;
                vec![]
            }
            (other, _) => {
                return Err(at.error(
                    key.span(),
                    format!("unknown key `{other}` for a tunnel over IPv6"),
                ));
            }
        };
        words_by_key.push((name.to_string(), value.span(), words));
    }
    let words: Vec<String> = words_by_key
        .iter()
        .flat_map(|(_, _, w)| w.clone())
        .collect();
    let spec = Tunnel6Spec::parse(&words)
        .map_err(|e| blame(at, table.span(), &words_by_key, e.to_string()))?;
    Ok(Tunnel6Entry {
        spec,
        up,
        addresses,
    })
}

fn type_error(
    at: &Locator,
    key: &Spanned<String>,
    value: &Spanned<Value>,
    want: &str,
) -> FileError {
    at.error(
        value.span(),
        format!("key `{}`: expected {want}", key.get_ref()),
    )
}

/// One `[[tunnel]]` table: its words for the `ip tunnel` grammar, checked
/// by `TunnelSpec::parse`, then the extras.
fn tunnel_entry(
    at: &Locator,
    table: &Spanned<BTreeMap<Spanned<String>, Spanned<Value>>>,
) -> Result<TunnelEntry, FileError> {
    // (key, its span, the words it stands for)
    let mut words_by_key: Vec<(String, Range<usize>, Vec<String>)> = Vec::new();
    let mut up = false;
    let mut addresses = BTreeSet::new();
    let mut neighbours = BTreeMap::new();
    let mut routers = BTreeMap::new();
    for (key, value) in table.get_ref() {
        let name = key.get_ref().as_str();
        let string = || value.get_ref().as_str().map(str::to_string);
        let words: Vec<String> = match name {
            "name" | "mode" | "remote" | "local" | "dev" => {
                let v = string().ok_or_else(|| type_error(at, key, value, "a string"))?;
                vec![name.to_string(), v]
            }
            "key" | "ikey" | "okey" => match value.get_ref() {
                Value::Integer(n) => vec![name.to_string(), n.to_string()],
                Value::String(s) => vec![name.to_string(), s.clone()],
                _ => return Err(type_error(at, key, value, "a number or a dotted quad")),
            },
            "ttl" | "tos" => match value.get_ref() {
                Value::Integer(n) if name == "tos" => vec![name.to_string(), format!("0x{n:x}")],
                Value::Integer(n) => vec![name.to_string(), n.to_string()],
                Value::String(s) => vec![name.to_string(), s.clone()],
                _ => return Err(type_error(at, key, value, "a number or a string")),
            },
            "csum" | "icsum" | "ocsum" | "seq" | "iseq" | "oseq" => {
                if boolean(at, key, value)? {
                    vec![name.to_string()]
                } else {
                    vec![]
                }
            }
            "pmtudisc" | "rpfilter" => {
                let on = boolean(at, key, value)?;
                vec![if on {
                    name.to_string()
                } else {
                    format!("no{name}")
                }]
            }
            "up" => {
                up = boolean(at, key, value)?;
                vec![]
            }
            "addresses" => {
                addresses = address_list(at, key, value)?;
                vec![]
            }
            "neigh" => {
                for (prefix, remote) in pairs(at, key, value, "prefix", "remote")? {
                    let prefix: Prefix = prefix.parse().map_err(|e: ConfigError| {
                        at.error(value.span(), format!("key `neigh`: {e}"))
                    })?;
                    let remote: Ipv4Addr = remote.parse().map_err(|_| {
                        at.error(
                            value.span(),
                            format!("key `neigh`: invalid remote \"{remote}\""),
                        )
                    })?;
                    if neighbours.insert(prefix, remote).is_some() {
                        return Err(at.error(
                            value.span(),
                            format!("key `neigh`: {prefix} is listed twice"),
                        ));
                    }
                }
                vec![]
            }
            "prl" => {
                for (router, default) in pairs(at, key, value, "router", "default")? {
                    let router: Ipv4Addr = router.parse().map_err(|_| {
                        at.error(
                            value.span(),
                            format!("key `prl`: invalid router \"{router}\""),
                        )
                    })?;
                    routers.insert(router, default == "true");
                }
                vec![]
            }
            other => {
                return Err(at.error(key.span(), format!("unknown key `{other}`")));
            }
        };
        words_by_key.push((name.to_string(), value.span(), words));
    }
    let words: Vec<String> = words_by_key
        .iter()
        .flat_map(|(_, _, w)| w.clone())
        .collect();
    let spec = TunnelSpec::parse(&words)
        .map_err(|e| blame(at, table.span(), &words_by_key, e.to_string()))?;
    if !neighbours.is_empty() && spec.remote.is_some() && spec.mode != Mode::Isatap {
        return Err(at.error(
            table.span(),
            format!(
                "tunnel \"{}\": `neigh` is for `remote = \"any\"` tunnels",
                spec.name
            ),
        ));
    }
    if !routers.is_empty() && spec.mode != Mode::Isatap {
        return Err(at.error(
            table.span(),
            format!("tunnel \"{}\": `prl` is for isatap tunnels", spec.name),
        ));
    }
    Ok(TunnelEntry {
        spec,
        up,
        addresses,
        neighbours,
        routers,
    })
}

/// A list of two-key tables (`[{ prefix = "...", remote = "..." }]`) as
/// string pairs; booleans become "true"/"false".
fn pairs(
    at: &Locator,
    key: &Spanned<String>,
    value: &Spanned<Value>,
    first: &str,
    second: &str,
) -> Result<Vec<(String, String)>, FileError> {
    let want = format!("a list of {{ {first} = ..., {second} = ... }}");
    let list = value
        .get_ref()
        .as_array()
        .ok_or_else(|| type_error(at, key, value, &want))?;
    let mut out = Vec::new();
    for item in list {
        let table = item
            .as_table()
            .ok_or_else(|| type_error(at, key, value, &want))?;
        if let Some(extra) = table.keys().find(|k| *k != first && *k != second) {
            return Err(at.error(
                value.span(),
                format!("key `{}`: unknown key `{extra}`", key.get_ref()),
            ));
        }
        let text = |k: &str| match table.get(k) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Boolean(b)) => Some(b.to_string()),
            _ => None,
        };
        let a = text(first).ok_or_else(|| type_error(at, key, value, &want))?;
        let b = text(second).unwrap_or_else(|| "false".to_string());
        out.push((a, b));
    }
    Ok(out)
}

/// `s` as a TOML string, escaped.
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// The file `export` writes: what `parse` reads back as `desired`.
pub fn render(desired: &Desired) -> String {
    let mut out = String::from(
        "# xtun configuration, as written by `xtun export`; `xtun apply -f` reads it.\n",
    );
    for (dev, decap) in &desired.attach {
        let _ = writeln!(
            out,
            "\n[[attach]]\ndev = {}\ndecap = \"{}\"",
            quote(dev),
            decap.name()
        );
        if desired.forward.contains(dev) {
            out.push_str("forward = \"xdp\"\n");
        }
    }
    for t in &desired.tunnels {
        let s = &t.spec;
        let _ = writeln!(
            out,
            "\n[[tunnel]]\nname = {}\nmode = \"{}\"",
            quote(&s.name),
            s.mode.name()
        );
        if s.mode != Mode::Isatap {
            let remote = s.remote.map_or("any".to_string(), |r| r.to_string());
            let _ = writeln!(out, "remote = \"{remote}\"");
        }
        let local = s.local.map_or("any".to_string(), |l| l.to_string());
        let _ = writeln!(out, "local = \"{local}\"");
        if let Some(dev) = &s.dev {
            let _ = writeln!(out, "dev = {}", quote(dev));
        }
        render_keys(&mut out, (s.ikey, s.okey));
        render_flags(
            &mut out,
            &[
                (s.icsum, "icsum"),
                (s.ocsum, "ocsum"),
                (s.iseq, "iseq"),
                (s.oseq, "oseq"),
            ],
        );
        if s.ttl == 0 {
            out.push_str("ttl = \"inherit\"\n");
        } else {
            let _ = writeln!(out, "ttl = {}", s.ttl);
        }
        let tos = match s.tos {
            Tos::Inherit(0) => "inherit".to_string(),
            Tos::Inherit(t) => format!("inherit/0x{t:x}"),
            Tos::Value(t) => format!("0x{t:x}"),
        };
        let _ = writeln!(out, "tos = \"{tos}\"\npmtudisc = {}", s.pmtudisc);
        if s.rpfilter {
            out.push_str("rpfilter = true\n");
        }
        if t.up {
            out.push_str("up = true\n");
        }
        if !t.addresses.is_empty() {
            let list: Vec<String> = t.addresses.iter().map(|a| format!("\"{a}\"")).collect();
            let _ = writeln!(out, "addresses = [{}]", list.join(", "));
        }
        if !t.neighbours.is_empty() {
            out.push_str("neigh = [\n");
            for (prefix, remote) in &t.neighbours {
                let _ = writeln!(out, "  {{ prefix = \"{prefix}\", remote = \"{remote}\" }},");
            }
            out.push_str("]\n");
        }
        if !t.routers.is_empty() {
            out.push_str("prl = [\n");
            for (router, default) in &t.routers {
                let _ = writeln!(out, "  {{ router = \"{router}\", default = {default} }},");
            }
            out.push_str("]\n");
        }
    }
    for t in &desired.tunnels6 {
        render6(&mut out, t);
    }
    out
}

/// `key`, or `ikey` and `okey` when they differ.
fn render_keys(out: &mut String, (ikey, okey): (Option<u32>, Option<u32>)) {
    match (ikey, okey) {
        (Some(i), Some(o)) if i == o => {
            let _ = writeln!(out, "key = {i}");
        }
        (i, o) => {
            for (word, k) in [("ikey", i), ("okey", o)] {
                if let Some(k) = k {
                    let _ = writeln!(out, "{word} = {k}");
                }
            }
        }
    }
}

/// The boolean keys that are on.
fn render_flags(out: &mut String, flags: &[(bool, &str)]) {
    for (on, word) in flags {
        if *on {
            let _ = writeln!(out, "{word} = true");
        }
    }
}

/// A tunnel over IPv6 as its `[[tunnel]]` table.
fn render6(out: &mut String, t: &Tunnel6Entry) {
    let s = &t.spec;
    let addr = |a: Option<std::net::Ipv6Addr>| a.map_or("any".to_string(), |a| a.to_string());
    let _ = writeln!(
        out,
        "\n[[tunnel]]\nname = {}\nmode = \"{}\"\nremote = \"{}\"\nlocal = \"{}\"",
        quote(&s.name),
        s.mode.name(),
        addr(s.remote),
        addr(s.local)
    );
    if let Some(dev) = &s.dev {
        let _ = writeln!(out, "dev = {}", quote(dev));
    }
    render_keys(out, (s.ikey, s.okey));
    render_flags(
        out,
        &[
            (s.icsum, "icsum"),
            (s.ocsum, "ocsum"),
            (s.iseq, "iseq"),
            (s.oseq, "oseq"),
            (s.allow_localremote, "allow-localremote"),
        ],
    );
    match s.encap_limit {
        Some(limit) => {
            let _ = writeln!(out, "encaplimit = {limit}");
        }
        None => out.push_str("encaplimit = \"none\"\n"),
    }
    if s.hop_limit == 0 {
        out.push_str("hoplimit = \"inherit\"\n");
    } else {
        let _ = writeln!(out, "hoplimit = {}", s.hop_limit);
    }
    let tclass = s.tclass.map_or("inherit".into(), |t| format!("0x{t:02x}"));
    let flowlabel = s
        .flowlabel
        .map_or("inherit".into(), |l| format!("0x{l:05x}"));
    let _ = writeln!(out, "tclass = \"{tclass}\"\nflowlabel = \"{flowlabel}\"");
    if t.up {
        out.push_str("up = true\n");
    }
    if !t.addresses.is_empty() {
        let list: Vec<String> = t.addresses.iter().map(|a| format!("\"{a}\"")).collect();
        let _ = writeln!(out, "addresses = [{}]", list.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[[attach]]
dev = "eth0"

[[attach]]
dev = "lan0"
forward = "xdp"

[[tunnel]]
name = "gre1"
mode = "gre"
remote = "10.10.20.2"
local = "10.10.10.2"
key = 5
csum = true
ttl = 64
up = true
addresses = ["10.10.100.10 peer 10.10.200.10", "fd00:100::10/128"]

[[tunnel]]
name = "mgre0"
mode = "gre"
remote = "any"
local = "192.0.2.1"
dev = "eth0"
neigh = [{ prefix = "10.20.0.0/16", remote = "192.0.2.20" }]

[[tunnel]]
name = "t6k"
mode = "ip6gre"
remote = "fd00:20::6"
local = "fd00:10::2"
key = 5
encaplimit = "none"
hoplimit = 32
tclass = "inherit"
flowlabel = 0x12345
up = true
addresses = ["10.10.106.10 peer 10.10.206.10"]

[[tunnel]]
name = "t4ip6"
mode = "ipip6"
remote = "fd00:20::4"
local = "any"
hoplimit = "inherit"
allow-localremote = true
"#;

    #[test]
    fn parses_tunnels_with_the_ip_tunnel_grammar() {
        let d = parse("x.toml", EXAMPLE).unwrap();
        assert_eq!(d.attach.get("eth0"), Some(&DecapPref::Auto));
        assert_eq!(d.attach.get("lan0"), Some(&DecapPref::Auto));
        assert_eq!(d.forward, BTreeSet::from(["lan0".to_string()]));
        let gre = &d.tunnels[0];
        assert_eq!(gre.spec.name, "gre1");
        assert_eq!((gre.spec.ikey, gre.spec.okey), (Some(5), Some(5)));
        assert!(gre.spec.icsum && gre.spec.ocsum && gre.up);
        assert_eq!(gre.spec.ttl, 64);
        assert_eq!(gre.addresses.len(), 2);
        let mgre = &d.tunnels[1];
        assert_eq!(mgre.spec.remote, None);
        assert_eq!(mgre.neighbours.len(), 1);
        // Modes over IPv6 take `ip -6 tunnel`'s grammar.
        let t6k = &d.tunnels6[0];
        assert_eq!(
            t6k.spec,
            Tunnel6Spec::parse(&[
                "t6k",
                "mode",
                "ip6gre",
                "remote",
                "fd00:20::6",
                "local",
                "fd00:10::2",
                "key",
                "5",
                "encaplimit",
                "none",
                "hoplimit",
                "32",
                "tclass",
                "inherit",
                "flowlabel",
                "0x12345",
            ])
            .unwrap()
        );
        assert!(t6k.up && t6k.addresses.len() == 1);
        let t4ip6 = &d.tunnels6[1];
        assert_eq!((t4ip6.spec.mode, t4ip6.spec.local), (Mode6::IpIp6, None));
        assert_eq!(t4ip6.spec.hop_limit, 0);
        assert!(t4ip6.spec.allow_localremote && !t4ip6.up);
    }

    #[test]
    fn render_then_parse_is_the_same() {
        let d = parse("x.toml", EXAMPLE).unwrap();
        let again = parse("export.toml", &render(&d)).unwrap();
        assert_eq!(again, d);
    }

    /// Found by tests/parsers.rs: names may hold `\` and `"`, which
    /// `export` wrote into TOML strings unescaped.
    #[test]
    fn render_escapes_interface_names() {
        let text = "[[attach]]\ndev = \"e\\\\th0\"\n\n[[tunnel]]\nname = \"a\\\"b\"\nmode = \"ipip\"\nremote = \"10.0.0.1\"\n";
        let d = parse("x.toml", text).unwrap();
        assert!(d.attach.contains_key("e\\th0"));
        assert_eq!(d.tunnels[0].spec.name, "a\"b");
        assert_eq!(parse("again.toml", &render(&d)).unwrap(), d);
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let cases = [
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gre\"\nremote = \"10.0.0.300\"\n",
                "f.toml:4:10: key `remote`: invalid address \"10.0.0.300\"",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"bogus\"\nremote = \"10.0.0.1\"\n",
                "f.toml:3:8: key `mode`: unknown tunnel mode \"bogus\" (xtun supports gre, ipip, sit and isatap)",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gre\"\nremote = \"10.0.0.1\"\nttl = true\n",
                "f.toml:5:7: key `ttl`: expected a number or a string",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gre\"\nremote = \"10.0.0.1\"\ncolour = 1\n",
                "f.toml:5:1: unknown key `colour`",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nremote = \"10.0.0.1\"\n",
                "f.toml:1:1: tunnel: tunnel mode is required: mode { gre | ipip | sit | isatap }",
            ),
            ("[[tunnel]\n", "f.toml:1:9: invalid table header\nexpected `.`, `]]`"),
            (
                "[[attach]]\ndev = \"eth0\"\ndecap = \"fast\"\n",
                "f.toml:3:9: key `decap`: \"fast\" is not auto, xdp or tc",
            ),
            (
                "[[attach]]\ndev = \"lan0\"\nforward = \"on\"\n",
                "f.toml:3:11: key `forward`: \"on\" is not xdp or off",
            ),
            (
                "[[attach]]\ndev = \"lan0\"\ndecap = \"tc\"\nforward = \"xdp\"\n",
                "f.toml:4:11: key `forward`: \"xdp\" runs in XDP, it cannot go with decap = \"tc\"",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"ip6gre\"\nremote = \"fd00::1\"\nencaplimit = 300\n",
                "f.toml:5:14: key `encaplimit`: invalid encaplimit \"300\": expected none or 0..255",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"ip6ip6\"\nremote = \"10.0.0.1\"\n",
                "f.toml:4:10: key `remote`: invalid IPv6 address \"10.0.0.1\"",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"any\"\nremote = \"fd00::1\"\nneigh = []\n",
                "f.toml:5:1: unknown key `neigh` for a tunnel over IPv6",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gre\"\nremote = \"1.1.1.1\"\n\n[[tunnel]]\nname = \"t\"\nmode = \"ip6gre\"\nremote = \"fd00::1\"\n",
                "f.toml:6:1: tunnel \"t\" is listed twice",
            ),
            (
                "[[tunnel]]\nname = \"t\"\nmode = \"gre\"\nremote = \"1.1.1.1\"\naddresses = [\"1.2.3.4/40\"]\n",
                "f.toml:5:13: key `addresses`: invalid address \"1.2.3.4/40\": expected ADDR[/LEN] [peer PEER]",
            ),
        ];
        for (text, expected) in cases {
            let err = parse("f.toml", text).unwrap_err().to_string();
            assert_eq!(err, expected, "{text}");
        }
    }
}
