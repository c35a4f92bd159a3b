//! `xtun status`: where the data plane is attached, with which programs and
//! maps, and whether they come from this `xtun`'s build.

use std::time::SystemTime;

use anyhow::{bail, Result};
use aya::programs::loaded_programs;
use serde_json::{json, Value};
use tunnel_common::maps::{
    CLASSID_XDP_UNDERLAY, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_OFF, LOG_TRACE, LOG_WARN,
};
use tunnel_userspace::{
    dataplane::{build_id, Dataplane, OBJECT},
    netlink::{Netlink, TcHook, FILTER_PRIO, XDP_ATTACHED_SKB},
};

use super::output::Format;

pub fn level_name(level: u32) -> &'static str {
    match level {
        LOG_OFF => "off",
        LOG_ERROR => "error",
        LOG_WARN => "warn",
        LOG_INFO => "info",
        LOG_DEBUG => "debug",
        LOG_TRACE => "trace",
        _ => "?",
    }
}

fn rfc3339(t: Option<SystemTime>) -> Option<String> {
    t.map(|t| humantime::format_rfc3339_seconds(t).to_string())
}

pub fn show(format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let (xdp_id, tc_id) = dp.program_ids();
    let ipv6_ids: Vec<u32> = dp.ipv6_program_ids().iter().map(|(_, id)| *id).collect();
    let mut interfaces = Vec::new();
    let links = nl.links()?;
    // Tunnel interfaces, by their ports: a port is shown with its tunnel.
    let ports: std::collections::BTreeMap<u32, u32> = dp
        .tunnels()
        .into_iter()
        .filter(|(_, cfg)| cfg.port_ifindex != 0)
        .map(|(ifindex, cfg)| (cfg.port_ifindex, ifindex))
        .collect();
    let mut hooks_of = |index: u32| -> Result<serde_json::Map<String, Value>> {
        let mut hooks = serde_json::Map::new();
        for (hook, key) in [
            (TcHook::Ingress, "tc_ingress"),
            (TcHook::Egress, "tc_egress"),
        ] {
            let ours = nl
                .bpf_filters(index, hook)?
                .into_iter()
                .find(|f| f.prio == FILTER_PRIO && f.prog_id == Some(tc_id));
            hooks.insert(
                key.into(),
                ours.map_or(
                    Value::Null,
                    |f| json!({ "id": tc_id, "filter": f.name, "classid": f.classid }),
                ),
            );
        }
        Ok(hooks)
    };
    for link in &links {
        if ports.contains_key(&link.index) {
            continue;
        }
        let xdp = link.xdp_prog_id.filter(|id| Some(*id) == xdp_id).map(|id| {
            let mode = if link.xdp_attached == XDP_ATTACHED_SKB {
                "generic"
            } else {
                "native"
            };
            json!({ "id": id, "mode": mode })
        });
        let hooks = hooks_of(link.index)?;
        let tunnel = dp.tunnel(link.index);
        // A tunnel's port: the other end of its pair, where it encapsulates.
        let port = match tunnel.filter(|cfg| cfg.port_ifindex != 0) {
            Some(cfg) => {
                let name = links
                    .iter()
                    .find(|l| l.index == cfg.port_ifindex)
                    .map(|l| l.name.clone());
                let mut port = hooks_of(cfg.port_ifindex)?;
                port.insert("ifname".into(), json!(name));
                port.insert("ifindex".into(), json!(cfg.port_ifindex));
                Value::Object(port)
            }
            None => Value::Null,
        };
        if xdp.is_none() && hooks.values().all(Value::is_null) && port.is_null() {
            continue;
        }
        let role = if tunnel.is_some() {
            "tunnel"
        } else {
            "underlay"
        };
        // Where an underlay decapsulates: its tc filter's classid says.
        let decap = match (role, &hooks["tc_ingress"]) {
            ("underlay", Value::Object(f)) if f["classid"] == CLASSID_XDP_UNDERLAY => json!("xdp"),
            ("underlay", Value::Object(_)) => json!("tc"),
            _ => Value::Null,
        };
        // A LAN with the XDP forwarding fast path.
        let forward = dp.forwards(link.index).then_some("xdp");
        interfaces.push(json!({
            "ifname": link.name, "ifindex": link.index, "role": role, "decap": decap, "xdp": xdp,
            "forward": forward,
            "tc_ingress": hooks["tc_ingress"], "tc_egress": hooks["tc_egress"], "port": port,
        }));
    }
    let programs: Vec<Value> = loaded_programs()
        .flatten()
        .filter(|p| Some(p.id()) == xdp_id || p.id() == tc_id || ipv6_ids.contains(&p.id()))
        .map(|p| {
            json!({
                "id": p.id(),
                "name": p.name_as_str(),
                "type": if Some(p.id()) == xdp_id { "xdp" } else { "sched_cls" },
                "loaded_at": rfc3339(p.loaded_at()),
                // Each eBPF instruction is 8 bytes.
                "instructions": p.size_translated().map(|bytes| bytes / 8),
            })
        })
        .collect();
    let maps: Vec<Value> = dp
        .map_names()?
        .iter()
        .map(|(id, name)| json!({ "id": id, "name": name }))
        .collect();
    let settings = dp.current_settings()?;
    let running = format!("{:016x}", settings.build_id);
    let ours = format!("{:016x}", build_id(OBJECT));
    let forward_lans: Vec<&Value> = interfaces
        .iter()
        .filter(|i| !i["forward"].is_null())
        .map(|i| &i["ifname"])
        .collect();
    let forward = json!({
        "lans": forward_lans,
        "note": (!forward_lans.is_empty()).then_some(super::attach::FORWARD_NOTE),
    });
    let doc = json!({
        "interfaces": interfaces,
        "forward": forward,
        "programs": programs,
        "maps": maps,
        "log_level": level_name(dp.effective_log_level()?),
        "monitors": dp.monitor_slots()?.iter().filter(|s| s.active).map(|s| json!({
            "slot": s.slot, "pid": s.pid, "all": s.all, "lease_ms": s.remaining_ns / 1_000_000,
            "events": s.events, "lost": s.lost_rate_limit + s.lost_ring_full,
        })).collect::<Vec<_>>(),
        "build_id": running,
        "binary_build_id": ours,
        "build_matches": running == ours,
        "version": env!("CARGO_PKG_VERSION"),
    });
    if format.json {
        format.print_json(&doc);
    } else {
        print_text(&doc);
    }
    if running != ours {
        eprintln!(
            "xtun: warning: the running data plane was loaded from another build ({running}); this xtun embeds {ours}"
        );
    }
    Ok(())
}

fn print_text(doc: &Value) {
    for i in doc["interfaces"].as_array().into_iter().flatten() {
        let mut parts = Vec::new();
        if let Some(decap) = i["decap"].as_str() {
            parts.push(format!("decap {decap}"));
        }
        if let Some(forward) = i["forward"].as_str() {
            parts.push(format!("forward {forward}"));
        }
        if let Some(x) = i["xdp"].as_object() {
            parts.push(format!(
                "xdp {} id {}",
                x["mode"].as_str().unwrap_or(""),
                x["id"]
            ));
        }
        for (key, word) in [("tc_ingress", "tc ingress"), ("tc_egress", "tc egress")] {
            if let Some(t) = i[key].as_object() {
                parts.push(format!(
                    "{word} id {} ({})",
                    t["id"],
                    t["filter"].as_str().unwrap_or("")
                ));
            }
        }
        if let Some(port) = i["port"].as_object() {
            let filter = port["tc_ingress"]
                .as_object()
                .map_or("no filter".to_string(), |t| {
                    format!(
                        "tc ingress id {} ({})",
                        t["id"],
                        t["filter"].as_str().unwrap_or("")
                    )
                });
            parts.push(format!(
                "port {}: {filter}",
                port["ifname"].as_str().unwrap_or("?")
            ));
        }
        println!(
            "{} ({}): {}",
            i["ifname"].as_str().unwrap_or(""),
            i["role"].as_str().unwrap_or(""),
            parts.join(", ")
        );
    }
    let lans: Vec<&str> = doc["forward"]["lans"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !lans.is_empty() {
        println!(
            "forwarding fast path (XDP) on: {} ({})",
            lans.join(", "),
            doc["forward"]["note"].as_str().unwrap_or("")
        );
    }
    println!("programs:");
    for p in doc["programs"].as_array().into_iter().flatten() {
        println!(
            "    {} {} {} loaded {} ({} insns)",
            p["id"],
            p["name"].as_str().unwrap_or(""),
            p["type"].as_str().unwrap_or(""),
            p["loaded_at"].as_str().unwrap_or("?"),
            p["instructions"]
        );
    }
    let maps: Vec<String> = doc["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| format!("{} {}", m["name"].as_str().unwrap_or(""), m["id"]))
        .collect();
    println!("maps: {}", maps.join(", "));
    println!("log level: {}", doc["log_level"].as_str().unwrap_or(""));
    let monitors: Vec<String> = doc["monitors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            format!(
                "slot {} pid {}{} ({} events, {} lost)",
                m["slot"],
                m["pid"],
                if m["all"] == true { " --all" } else { "" },
                m["events"],
                m["lost"]
            )
        })
        .collect();
    if !monitors.is_empty() {
        println!("monitors: {}", monitors.join(", "));
    }
    let matches = if doc["build_matches"].as_bool() == Some(true) {
        "same as this xtun"
    } else {
        "DIFFERS from this xtun"
    };
    println!(
        "build: {} ({matches}), xtun {}",
        doc["build_id"].as_str().unwrap_or(""),
        doc["version"].as_str().unwrap_or("")
    );
}
