//! `xtun link add|del|show` for Ethernet over GRE, with `ip link`'s
//! grammar for `type gretap` and the gretap line of `ip -d link show`.

use anyhow::{anyhow, bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::{self, LinkLine, TunnelSpec},
    dataplane::Dataplane,
    netlink::{Link, Netlink},
};

use super::{output::Format, tunnel, words::Words};

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
minus 38 bytes (42 with a key).";

#[derive(Subcommand)]
pub enum LinkCommand {
    /// Create a gretap interface.
    #[command(after_help = ADD_HELP)]
    Add {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS",
            value_parser = Words(config::GRETAP_WORDS),
            hide_possible_values = true
        )]
        args: Vec<String>,
    },
    /// Delete a gretap interface and its data-plane state.
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
    /// List gretap interfaces, as `ip -d link show` shows them.
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

pub fn run(cmd: LinkCommand, format: Format) -> Result<()> {
    match cmd {
        LinkCommand::Add { args } => tunnel::create(&TunnelSpec::parse_link(&args)?),
        LinkCommand::Del { args } => {
            let name = link_name(&args)?.ok_or(config::ConfigError::MissingName)?;
            let mut nl = Netlink::new()?;
            let (dp, link, cfg) = tunnel::find_any(&mut nl, &name, "delete")?;
            if cfg.mode != MODE_GRETAP {
                bail!("{name} is an xtun tunnel, not a gretap link (use `xtun tunnel del`)");
            }
            tunnel::remove(nl, dp, &link, &cfg)
        }
        LinkCommand::Show { args } => show(link_name(&args)?, format),
    }
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

fn show(name: Option<String>, format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let links = nl.links()?;
    let mut found: Vec<(Link, TunnelConfig)> = match &name {
        Some(name) => {
            let (_, link, cfg) = tunnel::find_any(&mut nl, name, "show").map_err(|_| {
                anyhow!("Device \"{name}\" does not exist or is not a gretap link.")
            })?;
            if cfg.mode != MODE_GRETAP {
                bail!("Device \"{name}\" does not exist or is not a gretap link.");
            }
            vec![(link, cfg)]
        }
        None => match Dataplane::find(&mut nl)? {
            None => vec![],
            Some(dp) => dp
                .tunnels()
                .into_iter()
                .filter(|(_, cfg)| cfg.mode == MODE_GRETAP)
                .filter_map(|(ifindex, cfg)| {
                    let link = links.iter().find(|l| l.index == ifindex)?;
                    Some((link.clone(), cfg))
                })
                .collect(),
        },
    };
    found.sort_by_key(|(link, _)| link.index);
    let mut docs = Vec::new();
    for (link, cfg) in &found {
        let dev = tunnel::bound_dev(&links, cfg);
        let mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", link.name))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        if format.json {
            docs.push(link_json(link, &mac, cfg, dev));
            continue;
        }
        format.print_record(&format!(
            "{}: {}: mtu {}\n    link/ether {mac} brd ff:ff:ff:ff:ff:ff\n    {}",
            link.index,
            link.name,
            link.mtu,
            LinkLine { cfg, dev }
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
