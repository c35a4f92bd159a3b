//! `xtun link add|del|show` for Ethernet over GRE, with `ip link`'s
//! grammar for `type gretap` and `type ip6gretap` and their lines of
//! `ip -d link show`.

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::{self, LinkLine, TunnelSpec},
    config6::{self, Link6Line, Tunnel6Spec},
    dataplane::Dataplane,
    netlink::{Link, Netlink},
};

use super::{output::Format, tunnel, tunnel6, words::Words};

const ADD_HELP: &str = "\
Arguments, as for `ip link add NAME type gretap`:
  [name] NAME type gretap
  remote ADDR            outer destination (required)
  local { ADDR | any }   outer source (default any: the route's source)
  key KEY | ikey KEY okey KEY   GRE keys; a number or a dotted quad
  csum | icsum | ocsum   GRE checksums
  seq | iseq | oseq      GRE sequence numbers
  ttl { 1..255 | inherit }   outer TTL (default inherit; 64 for frames that are not IP)
  tos { 00..ff | inherit }   outer TOS
  [no]pmtudisc           set DF on the outer header (default pmtudisc)
  dev PHYS               underlay NIC (default: where the route to remote leaves)

Example:
  xtun link add gtap type gretap remote 10.10.20.2 local 10.10.10.2 key 9
  ip link set gtap master br0 up

The interface is an Ethernet one (ARP, broadcast, multicast, a random MAC)
whose frames travel whole in GRE (protocol 0x6558), with the underlay MTU
minus 38 bytes (42 with a key).

Arguments, as for `ip link add NAME type ip6gretap` (over an IPv6 underlay):
  [name] NAME type ip6gretap
  remote ADDR            outer IPv6 destination (required)
  local { ADDR | any }   outer IPv6 source (default any: the route's source)
  key KEY | ikey KEY okey KEY   GRE keys; a number or a dotted quad
  csum | icsum | ocsum   GRE checksums (over the whole frame)
  seq | iseq | oseq      GRE sequence numbers
  hoplimit { 0..255 | inherit }   outer hop limit (default 64)
  tclass { 00..ff | inherit }     outer traffic class (default 0)
  flowlabel { 0..fffff | inherit }   outer flow label (default 0)
  encaplimit { none | 0..255 }    RFC 2473 encapsulation limit (default 4)
  allow-localremote      allow a remote that is an address of this host
  dev PHYS               underlay NIC (default: where the route to remote leaves)

Example:
  xtun link add g6tap type ip6gretap remote fd00:20::2 local fd00:10::2
  ip link set g6tap master br0 up

An ip6gretap interface has the underlay MTU minus 66 bytes (70 with a key,
58 with encaplimit none).";

/// The words `xtun link add` completes to: both link types' keywords.
const LINK_WORDS: &[&str] = &[
    "type",
    "gretap",
    "ip6gretap",
    "key",
    "ikey",
    "okey",
    "seq",
    "iseq",
    "oseq",
    "csum",
    "icsum",
    "ocsum",
    "nopmtudisc",
    "pmtudisc",
    "remote",
    "local",
    "dev",
    "ttl",
    "hoplimit",
    "tos",
    "tclass",
    "flowlabel",
    "encaplimit",
    "allow-localremote",
];

#[derive(Subcommand)]
pub enum LinkCommand {
    /// Create a gretap or ip6gretap interface.
    #[command(after_help = ADD_HELP)]
    Add {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS",
            value_parser = Words(LINK_WORDS),
            hide_possible_values = true
        )]
        args: Vec<String>,
    },
    /// Delete a gretap or ip6gretap interface and its data-plane state.
    #[command(
        visible_alias = "delete",
        after_help = "Example:\n  xtun link del gtap"
    )]
    Del {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "NAME"
        )]
        args: Vec<String>,
    },
    /// List gretap and ip6gretap interfaces, as `ip -d link show` shows them.
    #[command(
        visible_alias = "list",
        visible_alias = "ls",
        after_help = "Arguments: [ [dev] NAME ]\n\nExamples:\n  xtun link show\n  xtun -j link show gtap"
    )]
    Show {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

impl LinkCommand {
    pub fn changes_state(&self) -> bool {
        !matches!(self, Self::Show { .. })
    }
}

pub fn run(cmd: LinkCommand, stats: bool, format: Format) -> Result<()> {
    match cmd {
        LinkCommand::Add { args } => {
            if link_type(&args) == Some("ip6gretap") {
                tunnel6::create(&Tunnel6Spec::parse_link(&args)?)
            } else {
                tunnel::create(&TunnelSpec::parse_link(&args)?)
            }
        }
        LinkCommand::Del { args } => {
            let name = link_name(&args)?.ok_or(config::ConfigError::MissingName)?;
            let mut nl = Netlink::new()?;
            let (dp, link, cfg) = tunnel::find_any(&mut nl, &name, "delete")?;
            if !is_link(&cfg) {
                bail!("{name} is an xtun tunnel, not a gretap or ip6gretap link (use `xtun tunnel del`)");
            }
            tunnel::remove(nl, dp, &link, &cfg)
        }
        LinkCommand::Show { args } => show(link_name(&args)?, stats, format),
    }
}

/// The link modes `xtun link` manages.
fn is_link(cfg: &TunnelConfig) -> bool {
    cfg.mode == MODE_GRETAP || cfg.mode == MODE_IP6GRETAP
}

/// The word after `type`, if any.
fn link_type(args: &[String]) -> Option<&str> {
    args.iter()
        .position(|w| w == "type")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// `[dev] NAME`, or nothing.
fn link_name(args: &[String]) -> Result<Option<String>> {
    let name = match args {
        [] => return Ok(None),
        [dev, name] if dev == "dev" || dev == "name" => name,
        [name] => name,
        [_, extra, ..] => bail!("unknown argument \"{extra}\""),
    };
    config::validate_ifname(name)?;
    Ok(Some(name.clone()))
}

fn show(name: Option<String>, stats: bool, format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let links = nl.links()?;
    let mut found: Vec<(Link, TunnelConfig)> = match &name {
        Some(name) => {
            let not_a_link = || {
                anyhow!("Device \"{name}\" does not exist or is not a gretap or ip6gretap link.")
            };
            let (_, link, cfg) =
                tunnel::find_any(&mut nl, name, "show").map_err(|_| not_a_link())?;
            if !is_link(&cfg) {
                return Err(not_a_link());
            }
            vec![(link, cfg)]
        }
        None => match Dataplane::find(&mut nl)? {
            None => vec![],
            Some(dp) => dp
                .tunnels()
                .into_iter()
                .filter(|(_, cfg)| is_link(cfg))
                .filter_map(|(ifindex, cfg)| {
                    let link = links.iter().find(|l| l.index == ifindex)?;
                    Some((link.clone(), cfg))
                })
                .collect(),
        },
    };
    found.sort_by_key(|(link, _)| link.index);
    let dp = if stats || found.iter().any(|(_, cfg)| cfg.mode == MODE_IP6GRETAP) {
        Dataplane::find(&mut nl)?
    } else {
        None
    };
    let mut docs = Vec::new();
    for (link, cfg) in &found {
        let cfg6 = match cfg.mode {
            MODE_IP6GRETAP => match dp.as_ref().and_then(|dp| dp.tunnel6(link.index)) {
                Some(cfg6) => Some(cfg6),
                // Its IPv6 half is gone (a kill halfway): nothing to show.
                None => continue,
            },
            _ => None,
        };
        let dev = tunnel::bound_dev(&links, cfg);
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", link.name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        // `-s`: the data plane's counters, as `tunnel show -s` has them.
        let counters = stats
            .then(|| dp.as_ref().and_then(|dp| dp.tunnel_totals(link.index)))
            .flatten();
        if format.json {
            let mut doc = match &cfg6 {
                Some(cfg6) => link6_json(link, &mac, cfg, cfg6, dev),
                None => link_json(link, &mac, cfg, dev),
            };
            if let (Some(s), Some(doc)) = (&counters, doc.as_object_mut()) {
                doc.insert("stats".into(), tunnel::stats_json(s));
            }
            docs.push(doc);
            continue;
        }
        let line = match &cfg6 {
            Some(cfg6) => Link6Line { cfg, cfg6, dev }.to_string(),
            None => LinkLine { cfg, dev }.to_string(),
        };
        let counters = counters
            .as_ref()
            .map(tunnel::stats_text)
            .unwrap_or_default();
        format.print_record(&format!(
            "{}: {}: mtu {}\n    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n    {line}{counters}",
            link.index, link.name, link.mtu,
        ));
    }
    if format.json {
        format.print_json(&docs);
    }
    Ok(())
}

/// One gretap link as `ip -j -d link show` prints it (the fields xtun knows).
fn link_json(link: &Link, mac: &str, cfg: &TunnelConfig, dev: Option<&str>) -> Value {
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        data.insert(k.to_string(), v);
    };
    put("remote", json!(config::any_or_addr(cfg.remote)));
    put("local", json!(config::any_or_addr(cfg.local)));
    if let Some(dev) = dev {
        put("link", json!(dev));
    }
    put("ttl", json!(cfg.ttl));
    let tos = config::link_tos(cfg);
    if tos != 0 {
        put("tos", json!(format!("{tos:#x}")));
    }
    put("pmtudisc", json!(cfg.flags & TUNNEL_F_PMTUDISC != 0));
    for (word, key) in config::link_keys(cfg) {
        put(word, json!(key.to_string()));
    }
    for word in config::link_flag_words(cfg) {
        put(word, json!(true));
    }
    json!({
        "ifindex": link.index,
        "ifname": link.name,
        "mtu": link.mtu,
        "link_type": "ether",
        "address": mac,
        "linkinfo": { "info_kind": "gretap", "info_data": Value::Object(data) },
    })
}

/// One ip6gretap link as `ip -j -d link show` prints it (the fields xtun
/// knows, with link_gre6.c's names).
fn link6_json(
    link: &Link,
    mac: &str,
    cfg: &TunnelConfig,
    cfg6: &Tunnel6Config,
    dev: Option<&str>,
) -> Value {
    let flag = |f: u32| cfg.flags & f != 0;
    let addr = |a: [u8; 16]| {
        let a = std::net::Ipv6Addr::from(a);
        if a.is_unspecified() {
            "any".to_string()
        } else {
            a.to_string()
        }
    };
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: Value| {
        data.insert(k.to_string(), v);
    };
    put("remote", json!(addr(cfg6.remote)));
    put("local", json!(addr(cfg6.local)));
    if let Some(dev) = dev {
        put("link", json!(dev));
    }
    put("ttl", json!(cfg.ttl));
    if flag(TUNNEL_F_IGN_ENCAP_LIMIT) {
        put("ip6_tnl_f_ign_encap_limit", json!(true));
    } else {
        put("encap_limit", json!(cfg6.encap_limit));
    }
    if flag(TUNNEL_F_TOS_INHERIT) {
        put("ip6_tnl_f_use_orig_tclass", json!(true));
    } else {
        put("tclass", json!(format!("0x{:02x}", cfg.tos)));
    }
    if flag(TUNNEL_F_FLOWLABEL_INHERIT) {
        put("ip6_tnl_f_use_orig_flowlabel", json!(true));
    } else {
        put(
            "flowlabel",
            json!(format!("0x{:05x}", cfg6.flowlabel & config6::FLOWLABEL_MAX)),
        );
    }
    for (word, key) in config::link_keys(cfg) {
        put(word, json!(key.to_string()));
    }
    for word in config::link_flag_words(cfg) {
        put(word, json!(true));
    }
    if flag(TUNNEL_F_ALLOW_LOCALREMOTE) {
        put("ip6_tnl_f_allow_local_remote", json!(true));
    }
    json!({
        "ifindex": link.index,
        "ifname": link.name,
        "mtu": link.mtu,
        "link_type": "ether",
        "address": mac,
        "linkinfo": { "info_kind": "ip6gretap", "info_data": Value::Object(data) },
    })
}
