//! `xtun neigh add|del|show`: the per-tunnel neighbour table of multipoint
//! (`remote any`) and ISATAP tunnels, as `ip neigh` drives the kernel's NBMA
//! GRE: an inner prefix maps to the outer (IPv4) address of its remote.

use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::{addr_from_wire, validate_ifname, Prefix},
    dataplane::{Dataplane, NeighbourBatch},
    netlink::Netlink,
};

use super::output::Format;

const NEIGH_HELP: &str = "\
Examples:
  xtun neigh add 10.20.0.0/16 lladdr 192.0.2.20 dev mgre0
  xtun neigh add fd00:30::/32 lladdr 192.0.2.30 dev mgre0
  xtun neigh del 10.20.0.0/16 dev mgre0
  xtun neigh show dev mgre0

The longest matching prefix picks the remote of each inner packet; a packet
with no match is dropped and counted (tx_no_neighbour). For large tables
put one command per line in a file and run `xtun -batch FILE`.";

#[derive(Subcommand)]
pub enum NeighCommand {
    /// Map an inner prefix to a remote: PREFIX lladdr REMOTE dev NAME.
    #[command(after_help = NEIGH_HELP)]
    Add {
        #[arg(required = true, trailing_var_arg = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Remove a prefix: PREFIX dev NAME.
    #[command(after_help = NEIGH_HELP)]
    Del {
        #[arg(required = true, trailing_var_arg = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// List neighbours, of one tunnel with `dev NAME`.
    #[command(visible_alias = "list", visible_alias = "ls", after_help = NEIGH_HELP)]
    Show {
        #[arg(trailing_var_arg = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

impl NeighCommand {
    pub fn changes_state(&self) -> bool {
        !matches!(self, Self::Show { .. })
    }
}

/// One parsed `neigh add|del` line.
struct NeighArgs {
    prefix: Prefix,
    remote: Option<Ipv4Addr>,
    dev: String,
}

fn parse_args<S: AsRef<str>>(args: &[S], want_remote: bool) -> Result<NeighArgs> {
    let mut prefix = None;
    let mut remote = None;
    let mut dev = None;
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(word) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| anyhow!("\"{word}\" needs an argument"))
        };
        match word {
            "lladdr" => {
                let v = value()?;
                remote = Some(v.parse::<Ipv4Addr>().map_err(|_| {
                    anyhow!("invalid lladdr \"{v}\": expected the remote's IPv4 address")
                })?);
            }
            "dev" => {
                let v = value()?;
                validate_ifname(v)?;
                dev = Some(v.to_string());
            }
            "to" => prefix = Some(value()?.parse()?),
            other if prefix.is_none() => prefix = Some(other.parse()?),
            other => bail!("unknown argument \"{other}\""),
        }
    }
    let prefix = prefix.ok_or_else(|| anyhow!("missing prefix"))?;
    let dev = dev.ok_or_else(|| anyhow!("missing `dev NAME` (the tunnel)"))?;
    match (want_remote, remote) {
        (true, None) => bail!("missing `lladdr REMOTE`"),
        (true, Some(r)) if r.is_unspecified() || r.is_multicast() || r.is_broadcast() => {
            bail!("invalid lladdr {r}: the remote must be a unicast address")
        }
        (false, Some(_)) => bail!("`lladdr` is not taken by `neigh del`"),
        _ => {}
    }
    Ok(NeighArgs {
        prefix,
        remote,
        dev,
    })
}

/// What consecutive neighbour commands in one process (`-batch`) share:
/// the data plane, the tunnels looked up so far, and the adds not yet
/// written with the batch line of each. A batch drops it at any other
/// command, which may change the tunnels.
pub struct Session {
    nl: Netlink,
    dp: Dataplane,
    tunnels: BTreeMap<String, u32>,
    pending: NeighbourBatch,
    lines: Vec<usize>,
}

/// Neighbour adds written per batch update.
const BATCH: usize = 8192;

impl Session {
    pub fn open() -> Result<Self> {
        let mut nl = Netlink::new()?;
        let dp = Dataplane::find(&mut nl)?
            .ok_or_else(|| anyhow!("xtun is not attached in this network namespace"))?;
        Ok(Self {
            nl,
            dp,
            tunnels: BTreeMap::new(),
            pending: NeighbourBatch::default(),
            lines: Vec::new(),
        })
    }

    /// The ifindex of multipoint tunnel `dev`.
    fn tunnel_index(&mut self, dev: &str) -> Result<u32> {
        if let Some(&ifindex) = self.tunnels.get(dev) {
            return Ok(ifindex);
        }
        let link = self
            .nl
            .link_by_name(dev)?
            .ok_or_else(|| anyhow!("Cannot find device \"{dev}\""))?;
        let cfg = self
            .dp
            .tunnel(link.index)
            .ok_or_else(|| anyhow!("{dev} is not an xtun tunnel"))?;
        if cfg.remote != 0 && cfg.mode != MODE_ISATAP {
            bail!(
                "{dev} has a fixed remote ({}); neighbours are for `remote any` tunnels",
                addr_from_wire(cfg.remote)
            );
        }
        self.tunnels.insert(dev.to_string(), link.index);
        Ok(link.index)
    }

    /// `neigh add` on batch line `line`: checked now, written with others
    /// in one batch update (see `flush`).
    pub fn queue_add(&mut self, words: &[&str], line: usize) -> Result<()> {
        let a = parse_args(words, true)?;
        let ifindex = self.tunnel_index(&a.dev)?;
        let remote = a.remote.expect("checked by parse_args");
        self.pending.push(ifindex, &a.prefix, remote);
        self.lines.push(line);
        if self.lines.len() >= BATCH {
            self.flush().map_err(|(_, e)| e)?;
        }
        Ok(())
    }

    /// Writes the queued neighbour adds. On failure: the batch line of the
    /// first that did not go in, and why.
    pub fn flush(&mut self) -> Result<(), (usize, anyhow::Error)> {
        let pending = std::mem::take(&mut self.pending);
        let lines = std::mem::take(&mut self.lines);
        self.dp.add_neighbours(&pending).map_err(|(done, e)| {
            let line = lines.get(done).or(lines.first()).copied().unwrap_or(0);
            (line, anyhow!("adding the neighbour: {e}"))
        })
    }

    pub fn run(&mut self, cmd: NeighCommand, format: Format) -> Result<()> {
        match cmd {
            NeighCommand::Add { args } => {
                let a = parse_args(&args, true)?;
                let ifindex = self.tunnel_index(&a.dev)?;
                let remote = a.remote.expect("checked by parse_args");
                self.dp
                    .add_neighbour(ifindex, &a.prefix, remote)
                    .with_context(|| format!("adding {}/{}", a.prefix.addr, a.prefix.len))
            }
            NeighCommand::Del { args } => {
                let a = parse_args(&args, false)?;
                let ifindex = self.tunnel_index(&a.dev)?;
                if !self.dp.remove_neighbour(ifindex, &a.prefix) {
                    bail!(
                        "no neighbour {}/{} on {}",
                        a.prefix.addr,
                        a.prefix.len,
                        a.dev
                    );
                }
                Ok(())
            }
            NeighCommand::Show { args } => self.show(&args, format),
        }
    }

    fn show(&mut self, args: &[String], format: Format) -> Result<()> {
        let dev = match args {
            [] => None,
            [word, dev] if word == "dev" => Some(dev.as_str()),
            _ => bail!("usage: xtun neigh show [dev NAME]"),
        };
        let only = dev.map(|d| self.tunnel_index(d)).transpose()?;
        let names: BTreeMap<u32, String> = self
            .nl
            .links()?
            .into_iter()
            .map(|l| (l.index, l.name))
            .collect();
        let mut rows: Vec<(String, String, u32, String)> = Vec::new();
        for n in self.dp.neighbours()? {
            if only.is_some_and(|i| i != n.ifindex) {
                continue;
            }
            let name = names
                .get(&n.ifindex)
                .cloned()
                .unwrap_or_else(|| n.ifindex.to_string());
            rows.push((name, n.prefix.to_string(), n.ifindex, n.remote.to_string()));
        }
        rows.sort();
        if format.json {
            let docs: Vec<Value> = rows
                .iter()
                .map(|(dev, prefix, ifindex, remote)| {
                    json!({ "dst": prefix, "lladdr": remote, "dev": dev, "ifindex": ifindex })
                })
                .collect();
            format.print_json(&Value::Array(docs));
        } else {
            for (dev, prefix, _, remote) in rows {
                println!("{prefix} dev {dev} lladdr {remote} PERMANENT");
            }
        }
        Ok(())
    }
}

/// `neigh add|del` from already split words (`apply`).
pub fn run_words(verb: &str, words: &[&str]) -> Result<()> {
    let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    match verb {
        "add" => run(NeighCommand::Add { args }, Format::default()),
        _ => run(NeighCommand::Del { args }, Format::default()),
    }
}

pub fn run(cmd: NeighCommand, format: Format) -> Result<()> {
    // Bad words are reported before anything is looked up, as before.
    match &cmd {
        NeighCommand::Add { args } => {
            parse_args(args, true)?;
        }
        NeighCommand::Del { args } => {
            parse_args(args, false)?;
        }
        NeighCommand::Show { .. } => {}
    }
    Session::open()?.run(cmd, format)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_need_prefix_lladdr_and_dev() {
        let words = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let a = parse_args(&words("10.0.0.0/8 lladdr 192.0.2.1 dev m0"), true).unwrap();
        assert_eq!(
            (a.dev.as_str(), a.remote),
            ("m0", Some(Ipv4Addr::new(192, 0, 2, 1)))
        );
        for bad in [
            "10.0.0.0/8 dev m0",
            "10.0.0.0/8 lladdr 192.0.2.1",
            "10.0.0.0/8 lladdr 0.0.0.0 dev m0",
            "10.0.0.0/8 lladdr 00:11:22:33:44:55 dev m0",
            "lladdr 192.0.2.1 dev m0",
            "10.0.0.0/8 lladdr 192.0.2.1 dev m0 extra",
        ] {
            assert!(parse_args(&words(bad), true).is_err(), "{bad}");
        }
    }
}
