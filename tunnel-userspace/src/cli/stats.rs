//! `xtun stats`: data-plane counters by reason, per interface.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use tunnel_common::stats::COUNTER_NAMES;
use tunnel_userspace::{dataplane::Dataplane, netlink::Netlink};

use super::output::Format;

pub fn show(format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let links = nl.links()?;
    let mut rows: Vec<(Option<String>, Option<u32>, &str, Vec<u64>)> = dp
        .interface_totals()
        .into_iter()
        .map(|(ifindex, counts)| {
            let name = links
                .iter()
                .find(|l| l.index == ifindex)
                .map(|l| l.name.clone());
            let role = if dp.tunnels.get(&ifindex, 0).is_ok() {
                "tunnel"
            } else {
                "underlay"
            };
            (name, Some(ifindex), role, counts)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows.push((None, None, "other", dp.counter_totals()?));

    if format.json {
        let docs: Vec<Value> = rows
            .iter()
            .map(|(name, ifindex, role, counts)| {
                let counters: Map<String, Value> = COUNTER_NAMES
                    .iter()
                    .zip(counts)
                    .map(|(n, v)| (n.to_string(), json!(v)))
                    .collect();
                json!({ "ifname": name, "ifindex": ifindex, "role": role, "counters": counters })
            })
            .collect();
        format.print_json(&Value::Array(docs));
        return Ok(());
    }
    for (name, ifindex, role, counts) in &rows {
        match (name, ifindex) {
            (Some(name), _) => println!("{name} ({role}):"),
            (None, Some(ifindex)) => println!("ifindex {ifindex} ({role}, gone):"),
            (None, None) => println!("other interfaces:"),
        }
        let mut any = false;
        for (n, v) in COUNTER_NAMES.iter().zip(counts) {
            if *v != 0 {
                println!("    {n:<28} {v}");
                any = true;
            }
        }
        if !any {
            println!("    (no packets)");
        }
    }
    Ok(())
}
