//! `xtun neigh add|del|show`: the per-tunnel neighbour table of multipoint
//! (`remote any`) and ISATAP tunnels, as `ip neigh` drives the kernel's NBMA
//! GRE: an inner prefix maps to the outer (IPv4) address of its remote.

use std::{cell::RefCell, collections::HashMap, net::Ipv4Addr};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::{addr_from_wire, validate_ifname, wire_addr, Prefix},
    dataplane::Dataplane,
    netlink::Netlink,
};

use super::{map::neigh_prefix, output::Format};

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

/// What consecutive commands in one process (`-batch`) share: the data
/// plane's maps and the tunnels looked up so far.
struct Session {
    nl: Netlink,
    dp: Dataplane,
    tunnels: HashMap<String, u32>,
    /// `-batch` neighbour adds not yet written: packed keys and values, and
    /// the batch line of each.
    pending: Pending,
}

#[derive(Default)]
struct Pending {
    keys: Vec<u8>,
    values: Vec<u8>,
    lines: Vec<usize>,
}

/// Neighbour adds written per BPF_MAP_UPDATE_BATCH call.
const BATCH: usize = 8192;

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

fn with_session<T>(f: impl FnOnce(&mut Session) -> Result<T>) -> Result<T> {
    SESSION.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            let mut nl = Netlink::new()?;
            let dp = Dataplane::find(&mut nl)?
                .ok_or_else(|| anyhow!("xtun is not attached in this network namespace"))?;
            *slot = Some(Session {
                nl,
                dp,
                tunnels: HashMap::new(),
                pending: Pending::default(),
            });
        }
        f(slot.as_mut().expect("just filled"))
    })
}

/// Forgets the cached state (after tunnels are added or deleted).
pub fn invalidate() {
    SESSION.with(|cell| cell.borrow_mut().take());
}

/// The ifindex of multipoint tunnel `dev`.
fn tunnel_index(session: &mut Session, dev: &str) -> Result<u32> {
    if let Some(&ifindex) = session.tunnels.get(dev) {
        return Ok(ifindex);
    }
    let link = session
        .nl
        .link_by_name(dev)?
        .ok_or_else(|| anyhow!("Cannot find device \"{dev}\""))?;
    let cfg = session
        .dp
        .tunnels
        .get(&link.index, 0)
        .map_err(|_| anyhow!("{dev} is not an xtun tunnel"))?;
    if cfg.remote != 0 && cfg.mode != MODE_ISATAP {
        bail!(
            "{dev} has a fixed remote ({}); neighbours are for `remote any` tunnels",
            addr_from_wire(cfg.remote)
        );
    }
    session.tunnels.insert(dev.to_string(), link.index);
    Ok(link.index)
}

/// `neigh add` on batch line `line`: checked now, written to the trie with
/// others in one BPF_MAP_UPDATE_BATCH call (see `flush`).
pub fn queue_add(words: &[&str], line: usize) -> Result<()> {
    let a = parse_args(words, true)?;
    let full = with_session(|s| {
        let ifindex = match s.tunnels.get(&a.dev) {
            Some(&i) => i,
            None => tunnel_index(s, &a.dev)?,
        };
        let key = a.prefix.key(ifindex);
        let data = key.data();
        let p = &mut s.pending;
        p.keys.extend_from_slice(&key.prefix_len().to_ne_bytes());
        p.keys.extend_from_slice(&data.ifindex.to_ne_bytes());
        p.keys.extend_from_slice(&data.family.to_ne_bytes());
        p.keys.extend_from_slice(&data.addr);
        let remote = wire_addr(a.remote.expect("checked by parse_args"));
        p.values.extend_from_slice(&remote.to_ne_bytes());
        p.lines.push(line);
        Ok(p.lines.len() >= BATCH)
    })?;
    if full {
        flush().map_err(|(_, e)| e)?;
    }
    Ok(())
}

/// Writes the queued neighbour adds. On failure: the batch line of the
/// first that did not go in, and why.
pub fn flush() -> Result<(), (usize, anyhow::Error)> {
    SESSION.with(|cell| {
        let mut slot = cell.borrow_mut();
        let Some(s) = slot.as_mut() else {
            return Ok(());
        };
        if s.pending.lines.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut s.pending);
        let first = pending.lines[0];
        let fd =
            s.dp.map_infos()
                .map_err(|e| (first, e.into()))?
                .into_iter()
                .find(|m| m.name_as_str() == Some(MAP_NEIGH))
                .ok_or_else(|| (first, anyhow!("the neighbour map is missing")))
                .and_then(|m| aya::maps::MapData::from_id(m.id()).map_err(|e| (first, e.into())))?;
        use std::os::fd::{AsFd as _, AsRawFd as _};
        tunnel_userspace::bpf_sys::map_update_batch(
            fd.fd().as_fd().as_raw_fd(),
            &pending.keys,
            &pending.values,
            pending.lines.len(),
        )
        .map_err(|(done, e)| {
            let line = pending.lines.get(done).copied().unwrap_or(first);
            (line, anyhow!("adding the neighbour: {e}"))
        })
    })
}

/// `neigh add|del` from already split words (the `-batch` fast path).
pub fn run_words(verb: &str, words: &[&str]) -> Result<()> {
    let args: Vec<String> = words.iter().map(|w| w.to_string()).collect();
    match verb {
        "add" => run(NeighCommand::Add { args }, Format::default()),
        _ => run(NeighCommand::Del { args }, Format::default()),
    }
}

pub fn run(cmd: NeighCommand, format: Format) -> Result<()> {
    match cmd {
        NeighCommand::Add { args } => {
            let a = parse_args(&args, true)?;
            with_session(|s| {
                let ifindex = tunnel_index(s, &a.dev)?;
                let remote = a.remote.expect("checked by parse_args");
                s.dp.neigh
                    .insert(
                        &a.prefix.key(ifindex),
                        NeighEntry {
                            remote: wire_addr(remote),
                        },
                        0,
                    )
                    .with_context(|| format!("adding {}/{}", a.prefix.addr, a.prefix.len))?;
                Ok(())
            })
        }
        NeighCommand::Del { args } => {
            let a = parse_args(&args, false)?;
            with_session(|s| {
                let ifindex = tunnel_index(s, &a.dev)?;
                s.dp.neigh.remove(&a.prefix.key(ifindex)).map_err(|_| {
                    anyhow!(
                        "no neighbour {}/{} on {}",
                        a.prefix.addr,
                        a.prefix.len,
                        a.dev
                    )
                })
            })
        }
        NeighCommand::Show { args } => show(&args, format),
    }
}

fn show(args: &[String], format: Format) -> Result<()> {
    let dev = match args {
        [] => None,
        [word, dev] if word == "dev" => Some(dev.as_str()),
        _ => bail!("usage: xtun neigh show [dev NAME]"),
    };
    with_session(|s| {
        let only = dev.map(|d| tunnel_index(s, d)).transpose()?;
        let names: HashMap<u32, String> =
            s.nl.links()?
                .into_iter()
                .map(|l| (l.index, l.name))
                .collect();
        let mut rows: Vec<(String, String, u32, String)> = Vec::new();
        for entry in s.dp.neigh.iter() {
            let (key, value) = entry?;
            let k = key.data();
            if only.is_some_and(|i| i != k.ifindex) {
                continue;
            }
            let name = names
                .get(&k.ifindex)
                .cloned()
                .unwrap_or_else(|| k.ifindex.to_string());
            rows.push((
                name,
                neigh_prefix(&k, key.prefix_len()),
                k.ifindex,
                addr_from_wire(value.remote).to_string(),
            ));
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
    })
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
