//! `xtun stats`: data-plane counters by reason, per interface.

use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use tunnel_common::stats::COUNTER_NAMES;
use tunnel_userspace::{dataplane::Dataplane, netlink::Netlink};

use super::output::Format;

/// One row: interface name (None once gone, or for "other"), ifindex,
/// role, and the counters by reason.
struct Row {
    name: Option<String>,
    ifindex: Option<u32>,
    role: &'static str,
    counts: Vec<u64>,
}

pub fn show(format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let links = nl.links()?;
    let mut rows: Vec<Row> = dp
        .interface_totals()
        .into_iter()
        .map(|(ifindex, counts)| {
            let name = links
                .iter()
                .find(|l| l.index == ifindex)
                .map(|l| l.name.clone());
            let role = if dp.is_tunnel(ifindex) {
                "tunnel"
            } else {
                "underlay"
            };
            Row {
                name,
                ifindex: Some(ifindex),
                role,
                counts,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows.push(Row {
        name: None,
        ifindex: None,
        role: "other",
        counts: dp.counter_totals()?,
    });

    // Monitor slots that have counted anything: events written, and lost
    // (over the rate limit, or the ring buffer full).
    let monitors: Vec<_> = dp
        .monitor_slots()?
        .into_iter()
        .filter(|s| s.events + s.lost_rate_limit + s.lost_ring_full != 0)
        .collect();
    if format.json {
        let mut docs: Vec<Value> = rows
            .iter()
            .map(|row| {
                let counters: Map<String, Value> = COUNTER_NAMES
                    .iter()
                    .zip(&row.counts)
                    .map(|(n, v)| (n.to_string(), json!(v)))
                    .collect();
                json!({ "ifname": row.name, "ifindex": row.ifindex, "role": row.role, "counters": counters })
            })
            .collect();
        docs.extend(monitors.iter().map(|s| {
            json!({ "ifname": null, "ifindex": null, "role": "monitor", "slot": s.slot, "counters": {
                "monitor_events": s.events, "monitor_lost_rate_limit": s.lost_rate_limit,
                "monitor_lost_ring_full": s.lost_ring_full,
            }})
        }));
        format.print_json(&Value::Array(docs));
        return Ok(());
    }
    for row in &rows {
        let role = row.role;
        match (&row.name, row.ifindex) {
            (Some(name), _) => println!("{name} ({role}):"),
            (None, Some(ifindex)) => println!("ifindex {ifindex} ({role}, gone):"),
            (None, None) => println!("other interfaces:"),
        }
        let mut any = false;
        for (n, v) in COUNTER_NAMES.iter().zip(&row.counts) {
            if *v != 0 {
                println!("    {n:<28} {v}");
                any = true;
            }
        }
        if !any {
            println!("    (no packets)");
        }
    }
    for s in &monitors {
        let state = if s.active { "listening" } else { "ended" };
        println!("monitor slot {} ({state}):", s.slot);
        println!("    {:<28} {}", "monitor_events", s.events);
        println!(
            "    {:<28} {}",
            "monitor_lost_rate_limit", s.lost_rate_limit
        );
        println!("    {:<28} {}", "monitor_lost_ring_full", s.lost_ring_full);
    }
    Ok(())
}
