//! `xtun map list` and `xtun map dump NAME [--raw]`: every map of the data
//! plane, with entries decoded (addresses as addresses, flags as words).

use std::{collections::BTreeMap, net::Ipv6Addr};

use anyhow::{bail, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::{
    maps::*,
    stats::COUNTER_NAMES,
    wire::{IPPROTO_GRE, IPPROTO_IPIP, IPPROTO_IPV6},
};
use tunnel_userspace::{
    config::{addr_from_wire, Mode},
    config6::Mode6,
    dataplane::{Dataplane, MapDump, MapEntries, MapSummary},
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
    match cmd {
        MapCommand::List => list(&dp.map_list()?, format),
        // The IPv6 underlay's tunnels and receive index, decoded (`--raw`
        // for their bytes).
        MapCommand::Dump { name, raw } if !raw && (name == MAP_DECAP6 || name == MAP_TUNNELS6) => {
            print_ipv6_map(&mut nl, &dp, &name, format)
        }
        MapCommand::Dump { name, raw } => match dp.map_dump(&name)? {
            Some(dump) => print_dump(&mut nl, &dump, raw, format),
            None => bail!("no map named \"{name}\" (see `xtun map list`)"),
        },
    }
}

fn list(maps: &[MapSummary], format: Format) -> Result<()> {
    let rows: Vec<Value> = maps
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "name": m.name,
                "type": m.kind,
                "key_size": m.key_size,
                "value_size": m.value_size,
                "max_entries": m.max_entries,
                "entries": m.in_use,
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
        let entries = m.in_use.map_or_else(|| "-".to_string(), |n| n.to_string());
        println!(
            "{:<16} {:<13} {:>4} {:>6} {:>8} {:>8} {:>6}",
            m.name, m.kind, m.key_size, m.value_size, m.max_entries, entries, m.id
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
        (TUNNEL_F_TEB, "teb"),
        (TUNNEL_F_IGN_ENCAP_LIMIT, "encaplimit-none"),
        (TUNNEL_F_FLOWLABEL_INHERIT, "flowlabel-inherit"),
        (TUNNEL_F_ALLOW_LOCALREMOTE, "allow-localremote"),
    ];
    names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect()
}

fn mode_name(mode: u8) -> &'static str {
    Mode::from_map(mode)
        .map(Mode::name)
        .or_else(|| Mode6::from_map(mode).map(Mode6::name))
        .unwrap_or("unknown")
}

/// An IPv6 address of a map, `any` when unspecified.
fn any_or_addr6(addr: [u8; 16]) -> String {
    let addr = Ipv6Addr::from(addr);
    if addr.is_unspecified() {
        "any".into()
    } else {
        addr.to_string()
    }
}

fn proto_name(proto: u8) -> String {
    match proto {
        IPPROTO_GRE => "gre".into(),
        IPPROTO_IPIP => "ipip".into(),
        IPPROTO_IPV6 => "ipv6".into(),
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
        MAP_DECAP6 => decap6_entry(&read(key), &read(value), ifname),
        MAP_TUNNELS6 => tunnel6_entry(read(key), &read(value), ifname),
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
            let listening: Vec<u32> = (0..MONITOR_SLOTS)
                .filter(|i| s.monitors & (1 << i) != 0)
                .collect();
            let doc = json!({
                "log_level": s.log_level, "monitors": format!("{:#x}", s.monitors),
                "monitor_slots": listening, "build_id": format!("{:016x}", s.build_id),
            });
            (
                doc,
                format!(
                    "log_level {} monitors {:#x} build_id {:016x}",
                    s.log_level, s.monitors, s.build_id
                ),
            )
        }
        MAP_MON_LEASES => {
            let slot: u32 = read(key);
            let l: MonitorLease = read(value);
            let left = l
                .deadline_ns
                .saturating_sub(tunnel_userspace::dataplane::monotonic_ns());
            let what = if slot == LOG_LEASE_SLOT {
                "log"
            } else {
                "monitor"
            };
            let doc = json!({
                "slot": slot, "holder": what, "deadline_ns": l.deadline_ns, "remaining_ms": left / 1_000_000,
                "cost_ns": l.cost_ns, "burst_ns": l.burst_ns, "fallback_level": l.fallback_level, "pid": l.pid,
            });
            let text = format!(
                "{slot} ({what}): pid {} deadline {} ({} ms left) cost {} ns burst {} ns fallback_level {}",
                l.pid,
                l.deadline_ns,
                left / 1_000_000,
                l.cost_ns,
                l.burst_ns,
                l.fallback_level
            );
            (doc, text)
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
        MAP_MON_STATS => {
            let s: MonitorCpu = read(value);
            let doc = json!({
                "events": s.events, "lost_rate_limit": s.lost_rate_limit,
                "lost_ring_full": s.lost_ring_full, "credit_ns": s.credit_ns, "last_ns": s.last_ns,
            });
            let text = format!(
                "events {} lost: rate limit {} ring full {}",
                s.events, s.lost_rate_limit, s.lost_ring_full
            );
            (doc, text)
        }
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

/// One entry of the IPv6 underlay's decapsulation index, one line per
/// entry as the IPv4 index.
fn decap6_entry(k: &DecapKey6, t: &DecapTarget, ifname: &dyn Fn(u32) -> String) -> (Value, String) {
    let key_text = if k.has_key != 0 {
        u32::from_be(k.key).to_string()
    } else {
        "-".into()
    };
    let doc = json!({
        "local": Ipv6Addr::from(k.local).to_string(), "remote": Ipv6Addr::from(k.remote).to_string(),
        "proto": proto_name(k.proto), "key": (k.has_key != 0).then(|| u32::from_be(k.key)),
        "ifindex": t.ifindex, "ifname": ifname(t.ifindex), "flags": flag_words(t.flags),
    });
    let text = format!(
        "local {} remote {} proto {} key {} -> {} ({})",
        any_or_addr6(k.local),
        any_or_addr6(k.remote),
        proto_name(k.proto),
        key_text,
        ifname(t.ifindex),
        t.ifindex
    );
    (doc, text)
}

/// The IPv6 part of one tunnel over IPv6.
fn tunnel6_entry(
    ifindex: u32,
    c: &Tunnel6Config,
    ifname: &dyn Fn(u32) -> String,
) -> (Value, String) {
    let doc = json!({
        "ifindex": ifindex, "ifname": ifname(ifindex),
        "local": Ipv6Addr::from(c.local).to_string(), "remote": Ipv6Addr::from(c.remote).to_string(),
        "default_src": Ipv6Addr::from(c.default_src).to_string(),
        "flowlabel": c.flowlabel, "encap_limit": c.encap_limit,
    });
    let text = format!(
        "{} ({ifindex}): local {} remote {} default_src {} flowlabel 0x{:05x} encaplimit {}",
        ifname(ifindex),
        any_or_addr6(c.local),
        any_or_addr6(c.remote),
        any_or_addr6(c.default_src),
        c.flowlabel,
        c.encap_limit
    );
    (doc, text)
}

/// `map dump XTUN_DECAP6|XTUN_TUNNELS6` through the data plane's handle.
fn print_ipv6_map(nl: &mut Netlink, dp: &Dataplane, name: &str, format: Format) -> Result<()> {
    let links = nl.links()?;
    let ifname = |ifindex: u32| {
        links
            .iter()
            .find(|l| l.index == ifindex)
            .map_or_else(|| "?".to_string(), |l| l.name.clone())
    };
    let entries: Vec<(Value, String)> = if name == MAP_DECAP6 {
        dp.decap_index6()
            .iter()
            .map(|(k, t)| decap6_entry(k, t, &ifname))
            .collect()
    } else {
        dp.tunnels6()
            .iter()
            .map(|(i, c)| tunnel6_entry(*i, c, &ifname))
            .collect()
    };
    if format.json {
        let docs: Vec<&Value> = entries.iter().map(|(d, _)| d).collect();
        format.print_json(&json!({ "map": name, "entries": docs }));
    } else if entries.is_empty() {
        println!("(empty)");
    } else {
        for (_, text) in &entries {
            println!("{text}");
        }
    }
    Ok(())
}

/// A key and its value, or its value on each CPU.
type KeyValues<'a> = (&'a [u8], Vec<&'a [u8]>);

fn print_dump(nl: &mut Netlink, dump: &MapDump, raw: bool, format: Format) -> Result<()> {
    let name = dump.summary.name.as_str();
    let slots = &dump.slot_owners;
    let links = nl.links()?;
    let ifname = |ifindex: u32| {
        links
            .iter()
            .find(|l| l.index == ifindex)
            .map_or_else(|| "?".to_string(), |l| l.name.clone())
    };
    // One shape for both kinds: a key and its value (per CPU or not).
    let (per_cpu, entries): (bool, Vec<KeyValues>) = match &dump.entries {
        MapEntries::Plain(entries) => (
            false,
            entries
                .iter()
                .map(|(k, v)| (k.as_slice(), vec![v.as_slice()]))
                .collect(),
        ),
        MapEntries::PerCpu(entries) => (
            true,
            entries
                .iter()
                .map(|(k, vs)| (k.as_slice(), vs.iter().map(Vec::as_slice).collect()))
                .collect(),
        ),
    };
    let mut docs = Vec::new();
    for (key, values) in &entries {
        let key = *key;
        let mut doc;
        let mut lines = Vec::new();
        if per_cpu {
            let key_doc = match name {
                MAP_COUNTERS => {
                    let slot: u32 = read(key);
                    json!(COUNTER_NAMES.get(slot as usize).copied().unwrap_or("?"))
                }
                MAP_MON_STATS => {
                    let slot: u32 = read(key);
                    json!(format!("monitor slot {slot}"))
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
                let (vdoc, text) = decode_per_cpu(name, value);
                let mut line = format!("    cpu{cpu}: {text}");
                if raw {
                    line.push_str(&format!("  [{}]", hex(value)));
                }
                lines.push(line);
                cpus.push(vdoc);
            }
            doc = json!({ "key": key_doc, "per_cpu": cpus });
        } else {
            let (d, text) = decode(name, key, values[0], &ifname);
            doc = d;
            lines.push(text);
            if raw {
                lines.push(format!("    key: {}", hex(key)));
                lines.push(format!("    value: {}", hex(values[0])));
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
        format.print_json(&json!({ "map": name, "id": dump.summary.id, "entries": docs }));
    } else if entries.is_empty() {
        println!("(empty)");
    }
    Ok(())
}
