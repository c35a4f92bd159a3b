//! `xtun map list` and `xtun map dump NAME [--raw]`: every map of the data
//! plane, with entries decoded (addresses as addresses, flags as words).

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
};

use anyhow::{anyhow, bail, Result};
use aya::maps::{MapData, MapInfo, MapType};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::{maps::*, stats::COUNTER_NAMES};
use tunnel_userspace::{
    bpf_sys,
    config::{addr_from_wire, Mode},
    dataplane::Dataplane,
    netlink::Netlink,
};

use super::output::{hex, Format};

#[derive(Subcommand)]
pub enum MapCommand {
    /// List the data plane's maps: type, key and value sizes, capacity, use.
    #[command(
        visible_alias = "ls",
        after_help = "Examples:\n  xtun map list\n  xtun -j -p map list"
    )]
    List,
    /// Print every entry of a map, decoded.
    #[command(
        after_help = "Examples:\n  xtun map dump XTUN_TUNNELS\n  xtun map dump XTUN_DECAP --raw\n  xtun -j map dump XTUN_TUN_STATS"
    )]
    Dump {
        /// Map name, as `xtun map list` shows it.
        name: String,
        /// Show the raw key and value bytes in hex beside the decoded form.
        #[arg(long)]
        raw: bool,
    },
}

pub fn run(cmd: MapCommand, format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let maps = dp.map_infos()?;
    // The tunnel (ifindex) using each `XTUN_TUN_STATS` slot.
    let slots: BTreeMap<u32, u32> = dp
        .tunnels
        .iter()
        .flatten()
        .map(|(ifindex, cfg)| (cfg.stats_slot, ifindex))
        .collect();
    match cmd {
        MapCommand::List => list(&maps, &slots, format),
        MapCommand::Dump { name, raw } => {
            let info = maps
                .into_iter()
                .find(|m| m.name_as_str() == Some(name.as_str()))
                .ok_or_else(|| anyhow!("no map named \"{name}\" (see `xtun map list`)"))?;
            dump(&mut nl, &info, &slots, raw, format)
        }
    }
}

fn type_name(info: &MapInfo) -> &'static str {
    match info.map_type() {
        Ok(MapType::Hash) => "hash",
        Ok(MapType::PerCpuHash) => "percpu_hash",
        Ok(MapType::Array) => "array",
        Ok(MapType::PerCpuArray) => "percpu_array",
        Ok(MapType::RingBuf) => "ringbuf",
        Ok(MapType::LpmTrie) => "lpm_trie",
        _ => "other",
    }
}

/// Whether an entry of an array indexed by tunnel slot or ifindex is in
/// use: a configured tunnel's slot, or a tracked interface (whose entry is
/// never all zero). Entries of other maps always are.
fn index_in_use(name: &str, slots: &BTreeMap<u32, u32>, key: &[u8], values: &[Vec<u8>]) -> bool {
    match name {
        MAP_TUNNEL_STATS => slots.contains_key(&read::<u32>(key)),
        MAP_IF_INDEXED | MAP_TUNNELS_BY_IF => values.iter().flatten().any(|b| *b != 0),
        _ => true,
    }
}

/// Entries in use. The arrays indexed by tunnel slot or ifindex have every
/// index: what counts there is the slots of configured tunnels, the
/// interfaces tracked, and the ifindexes with a tunnel.
fn entries_in_use(info: &MapInfo, slots: &BTreeMap<u32, u32>) -> Option<usize> {
    match info.name_as_str() {
        Some(MAP_TUNNEL_STATS) => return Some(slots.len()),
        Some(name @ (MAP_IF_INDEXED | MAP_TUNNELS_BY_IF)) => {
            let data = MapData::from_id(info.id()).ok()?;
            let cpus = aya::util::nr_cpus().ok()?;
            let entries = bpf_sys::map_entries(
                data.fd().as_fd().as_raw_fd(),
                info.key_size() as usize,
                info.value_size() as usize,
                name == MAP_IF_INDEXED,
                cpus,
            )
            .ok()?;
            return Some(
                entries
                    .iter()
                    .filter(|(key, values)| index_in_use(name, slots, key, values))
                    .count(),
            );
        }
        _ => {}
    }
    match info.map_type() {
        Ok(MapType::Hash) | Ok(MapType::PerCpuHash) | Ok(MapType::LpmTrie) => {
            let data = MapData::from_id(info.id()).ok()?;
            bpf_sys::map_keys(data.fd().as_fd().as_raw_fd(), info.key_size() as usize)
                .ok()
                .map(|k| k.len())
        }
        Ok(MapType::Array) | Ok(MapType::PerCpuArray) => Some(info.max_entries() as usize),
        _ => None,
    }
}

fn list(maps: &[MapInfo], slots: &BTreeMap<u32, u32>, format: Format) -> Result<()> {
    let rows: Vec<Value> = maps
        .iter()
        .map(|m| {
            json!({
                "id": m.id(),
                "name": m.name_as_str().unwrap_or(""),
                "type": type_name(m),
                "key_size": m.key_size(),
                "value_size": m.value_size(),
                "max_entries": m.max_entries(),
                "entries": entries_in_use(m, slots),
            })
        })
        .collect();
    if format.json {
        format.print_json(&Value::Array(rows));
        return Ok(());
    }
    println!(
        "{:<16} {:<13} {:>4} {:>6} {:>8} {:>8} {:>6}",
        "NAME", "TYPE", "KEY", "VALUE", "MAX", "ENTRIES", "ID"
    );
    for m in maps {
        let entries = entries_in_use(m, slots).map_or_else(|| "-".to_string(), |n| n.to_string());
        println!(
            "{:<16} {:<13} {:>4} {:>6} {:>8} {:>8} {:>6}",
            m.name_as_str().unwrap_or(""),
            type_name(m),
            m.key_size(),
            m.value_size(),
            m.max_entries(),
            entries,
            m.id()
        );
    }
    Ok(())
}

/// Reads a pod out of a byte slice (map values are plain integers).
fn read<T: Copy>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= std::mem::size_of::<T>());
    // SAFETY: length checked; T is a repr(C) integer aggregate, any bytes are valid.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const T) }
}

fn flag_words(flags: u32) -> Vec<&'static str> {
    let names = [
        (TUNNEL_F_IKEY, "ikey"),
        (TUNNEL_F_OKEY, "okey"),
        (TUNNEL_F_ICSUM, "icsum"),
        (TUNNEL_F_OCSUM, "ocsum"),
        (TUNNEL_F_ISEQ, "iseq"),
        (TUNNEL_F_OSEQ, "oseq"),
        (TUNNEL_F_PMTUDISC, "pmtudisc"),
        (TUNNEL_F_TOS_INHERIT, "tos-inherit"),
        (TUNNEL_F_BOUND_DEV, "bound-dev"),
        (TUNNEL_F_ETH_DEV, "eth-dev"),
        (TUNNEL_F_ISATAP, "isatap"),
        (TUNNEL_F_RPFILTER, "rpfilter"),
    ];
    names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn mode_name(mode: u8) -> &'static str {
    Mode::from_map(mode).map_or("unknown", Mode::name)
}

fn proto_name(proto: u8) -> String {
    match proto {
        47 => "gre".into(),
        4 => "ipip".into(),
        41 => "ipv6".into(),
        p => p.to_string(),
    }
}

/// A neighbour-table key as an inner prefix, e.g. `10.1.0.0/16`.
pub fn neigh_prefix(k: &NeighKey, prefix_len: u32) -> String {
    let bits = prefix_len.saturating_sub(NEIGH_KEY_FIXED_BITS);
    if k.family == 6 {
        format!("{}/{bits}", std::net::Ipv6Addr::from(k.addr))
    } else {
        let a = std::net::Ipv4Addr::new(k.addr[0], k.addr[1], k.addr[2], k.addr[3]);
        format!("{a}/{bits}")
    }
}

/// Decodes one (key, value) of a non-per-CPU map.
fn decode(name: &str, key: &[u8], value: &[u8], ifname: &dyn Fn(u32) -> String) -> (Value, String) {
    match name {
        MAP_TUNNELS | MAP_TUNNELS_BY_IF | MAP_PORTS => {
            let ifindex: u32 = read(key);
            let c: TunnelConfig = read(value);
            let key_text = |flag, k: u32| {
                if c.flags & flag != 0 {
                    u32::from_be(k).to_string()
                } else {
                    "-".into()
                }
            };
            let doc = json!({
                "ifindex": ifindex, "ifname": ifname(ifindex), "mode": mode_name(c.mode),
                "local": addr_from_wire(c.local).to_string(), "remote": addr_from_wire(c.remote).to_string(),
                "ikey": (c.flags & TUNNEL_F_IKEY != 0).then(|| u32::from_be(c.ikey)),
                "okey": (c.flags & TUNNEL_F_OKEY != 0).then(|| u32::from_be(c.okey)),
                "ttl": c.ttl, "tos": c.tos, "flags": flag_words(c.flags), "mtu": c.mtu,
                "underlay_ifindex": c.underlay_ifindex, "underlay": ifname(c.underlay_ifindex),
                "tunnel_ifindex": c.ifindex, "port_ifindex": c.port_ifindex,
                "port": (c.port_ifindex != 0).then(|| ifname(c.port_ifindex)),
            });
            let text = format!(
                "{} ({ifindex}): mode {} local {} remote {} ikey {} okey {} ttl {} tos 0x{:02x} mtu {} underlay {} ({}) port {} ({}) flags {}",
                ifname(ifindex), mode_name(c.mode), addr_from_wire(c.local), addr_from_wire(c.remote),
                key_text(TUNNEL_F_IKEY, c.ikey), key_text(TUNNEL_F_OKEY, c.okey),
                if c.ttl == 0 { "inherit".to_string() } else { c.ttl.to_string() }, c.tos, c.mtu,
                ifname(c.underlay_ifindex), c.underlay_ifindex, ifname(c.port_ifindex), c.port_ifindex,
                flag_words(c.flags).join(",")
            );
            (doc, text)
        }
        MAP_DECAP => {
            let k: DecapKey = read(key);
            let t: DecapTarget = read(value);
            let key_text = if k.has_key != 0 {
                u32::from_be(k.key).to_string()
            } else {
                "-".into()
            };
            let doc = json!({
                "local": addr_from_wire(k.local).to_string(), "remote": addr_from_wire(k.remote).to_string(),
                "proto": proto_name(k.proto), "key": (k.has_key != 0).then(|| u32::from_be(k.key)),
                "ifindex": t.ifindex, "ifname": ifname(t.ifindex), "flags": flag_words(t.flags),
            });
            let text = format!(
                "local {} remote {} proto {} key {} -> {} ({})",
                addr_from_wire(k.local),
                addr_from_wire(k.remote),
                proto_name(k.proto),
                key_text,
                ifname(t.ifindex),
                t.ifindex
            );
            (doc, text)
        }
        MAP_NEIGH => {
            let prefix_len: u32 = read(key);
            let k: NeighKey = read(&key[4..]);
            let e: NeighEntry = read(value);
            let prefix = neigh_prefix(&k, prefix_len);
            let doc = json!({
                "ifindex": k.ifindex, "ifname": ifname(k.ifindex), "prefix": prefix,
                "remote": addr_from_wire(e.remote).to_string(),
            });
            let text = format!(
                "{prefix} lladdr {} dev {} ({})",
                addr_from_wire(e.remote),
                ifname(k.ifindex),
                k.ifindex
            );
            (doc, text)
        }
        MAP_PRL => {
            let k: PrlKey = read(key);
            let e: PrlEntry = read(value);
            let kind = if e.flags & PRL_DEFAULT != 0 {
                "default"
            } else {
                "nodefault"
            };
            let doc = json!({
                "ifindex": k.ifindex, "ifname": ifname(k.ifindex),
                "router": addr_from_wire(k.addr).to_string(), "default": e.flags & PRL_DEFAULT != 0,
            });
            let text = format!(
                "{} ({}) router {} {kind}",
                ifname(k.ifindex),
                k.ifindex,
                addr_from_wire(k.addr)
            );
            (doc, text)
        }
        MAP_SEQ => {
            let ifindex: u32 = read(key);
            let s: SeqState = read(value);
            let doc = json!({
                "ifindex": ifindex, "ifname": ifname(ifindex),
                "next_out": s.o_seq as u32, "next_in": s.i_seq as u32,
            });
            let text = format!(
                "{} ({ifindex}): next out {} next in {}",
                ifname(ifindex),
                s.o_seq as u32,
                s.i_seq as u32
            );
            (doc, text)
        }
        MAP_SETTINGS => {
            let s: Settings = read(value);
            let doc =
                json!({ "log_level": s.log_level, "build_id": format!("{:016x}", s.build_id) });
            (
                doc,
                format!("log_level {} build_id {:016x}", s.log_level, s.build_id),
            )
        }
        _ => (
            json!({ "key": hex(key), "value": hex(value) }),
            format!("key {} value {}", hex(key), hex(value)),
        ),
    }
}

/// Decodes one CPU's value of a per-CPU map.
fn decode_per_cpu(name: &str, value: &[u8]) -> (Value, String) {
    match name {
        MAP_TUNNEL_STATS => {
            let s: TunnelStats = read(value);
            let doc = json!({
                "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes, "rx_errors": s.rx_errors,
                "rx_csum_errors": s.rx_csum_errors, "rx_out_of_seq": s.rx_out_of_seq, "rx_mcasts": s.rx_mcasts,
                "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "tx_errors": s.tx_errors,
                "tx_dead_loop": s.tx_dead_loop, "tx_no_route": s.tx_no_route, "tx_no_bufs": s.tx_no_bufs,
            });
            let text = format!(
                "rx {} pkts {} bytes {} errors, tx {} pkts {} bytes {} errors",
                s.rx_packets, s.rx_bytes, s.rx_errors, s.tx_packets, s.tx_bytes, s.tx_errors
            );
            (doc, text)
        }
        MAP_IF_COUNTERS | MAP_IF_INDEXED => {
            let c: IfCounters = read(value);
            let nonzero: BTreeMap<&str, u64> = COUNTER_NAMES
                .iter()
                .copied()
                .zip(c.counts)
                .filter(|(_, v)| *v != 0)
                .collect();
            let text = if nonzero.is_empty() {
                "-".into()
            } else {
                nonzero
                    .iter()
                    .map(|(n, v)| format!("{n} {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            (json!(nonzero), text)
        }
        _ => {
            let v: u64 = if value.len() >= 8 { read(value) } else { 0 };
            (json!(v), v.to_string())
        }
    }
}

/// `slots`: the tunnel (ifindex) using each `XTUN_TUN_STATS` slot.
fn dump(
    nl: &mut Netlink,
    info: &MapInfo,
    slots: &BTreeMap<u32, u32>,
    raw: bool,
    format: Format,
) -> Result<()> {
    let name = info.name_as_str().unwrap_or("").to_string();
    let links = nl.links()?;
    let ifname = |ifindex: u32| {
        links
            .iter()
            .find(|l| l.index == ifindex)
            .map_or_else(|| "?".to_string(), |l| l.name.clone())
    };
    let key_size = info.key_size() as usize;
    let value_size = info.value_size() as usize;
    let per_cpu = matches!(
        info.map_type(),
        Ok(MapType::PerCpuHash) | Ok(MapType::PerCpuArray)
    );
    if matches!(info.map_type(), Ok(MapType::RingBuf)) {
        bail!("{name} is a ring buffer of log records: stream it with `xtun log`");
    }
    let data = MapData::from_id(info.id())?;
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    let entries = bpf_sys::map_entries(
        data.fd().as_fd().as_raw_fd(),
        key_size,
        value_size,
        per_cpu,
        cpus,
    )?;

    let mut docs = Vec::new();
    // Arrays indexed by tunnel slot or ifindex have an entry for every
    // index: only the ones in use are worth printing.
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|(key, values)| index_in_use(&name, slots, key, values))
        .collect();
    for (key, values) in &entries {
        let mut doc;
        let mut lines = Vec::new();
        if per_cpu {
            let key_doc = match name.as_str() {
                MAP_COUNTERS => {
                    let slot: u32 = read(key);
                    json!(COUNTER_NAMES.get(slot as usize).copied().unwrap_or("?"))
                }
                MAP_TUNNEL_STATS => {
                    let slot: u32 = read(key);
                    let ifindex = slots.get(&slot).copied().unwrap_or(0);
                    json!({ "slot": slot, "ifindex": ifindex, "ifname": ifname(ifindex) })
                }
                _ => {
                    let ifindex: u32 = read(key);
                    json!({ "ifindex": ifindex, "ifname": ifname(ifindex) })
                }
            };
            let key_text = match &key_doc {
                Value::String(s) => s.clone(),
                v => format!("{} ({})", v["ifname"].as_str().unwrap_or("?"), v["ifindex"]),
            };
            lines.push(format!("{key_text}:"));
            let mut cpus = Vec::new();
            for (cpu, value) in values.iter().enumerate() {
                let (vdoc, text) = decode_per_cpu(&name, value);
                let mut line = format!("    cpu{cpu}: {text}");
                if raw {
                    line.push_str(&format!("  [{}]", hex(value)));
                }
                lines.push(line);
                cpus.push(vdoc);
            }
            doc = json!({ "key": key_doc, "per_cpu": cpus });
        } else {
            let (d, text) = decode(&name, key, &values[0], &ifname);
            doc = d;
            lines.push(text);
            if raw {
                lines.push(format!("    key: {}", hex(key)));
                lines.push(format!("    value: {}", hex(&values[0])));
            }
        }
        if raw {
            doc["raw"] = json!({ "key": hex(key), "values": values.iter().map(|v| hex(v)).collect::<Vec<_>>() });
        }
        if format.json {
            docs.push(doc);
        } else {
            for l in lines {
                println!("{l}");
            }
        }
    }
    if format.json {
        format.print_json(&json!({ "map": name, "id": info.id(), "entries": docs }));
    } else if entries.is_empty() {
        println!("(empty)");
    }
    Ok(())
}
