//! Prometheus metrics: `xtun stats --prometheus` (for node_exporter's
//! textfile collector) and `xtun metrics --listen ADDR` (an HTTP endpoint),
//! both in the Prometheus text format.

use std::fmt::Write as _;

use anyhow::{anyhow, Result};
use tiny_http::{Method, Response};
use tunnel_common::{maps::*, stats::COUNTER_NAMES};
use tunnel_userspace::{config::Mode, config6::Mode6, dataplane::Dataplane, netlink::Netlink};

/// Label values: backslash, quote and newline escaped.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
}

/// The whole exposition, read from the data plane now.
pub fn render(nl: &mut Netlink) -> Result<String> {
    let mut out = String::new();
    let Some(dp) = Dataplane::find(nl)? else {
        let _ = writeln!(
            out,
            "# HELP xtun_up Whether xtun is attached in this network namespace.\n# TYPE xtun_up gauge\nxtun_up 0"
        );
        return Ok(out);
    };
    let _ = writeln!(
        out,
        "# HELP xtun_up Whether xtun is attached in this network namespace.\n# TYPE xtun_up gauge\nxtun_up 1"
    );
    let links = nl.links()?;
    let name_of = |i: u32| {
        links
            .iter()
            .find(|l| l.index == i)
            .map_or_else(|| i.to_string(), |l| l.name.clone())
    };

    let mut tunnels: Vec<(String, String, String, TunnelStats)> = Vec::new();
    for (ifindex, cfg) in dp.tunnels() {
        let mode = Mode::from_map(cfg.mode)
            .map(Mode::name)
            .or_else(|| Mode6::from_map(cfg.mode).map(Mode6::name))
            .unwrap_or("unknown");
        let stats = dp.tunnel_totals(ifindex).unwrap_or_default();
        tunnels.push((
            name_of(ifindex),
            mode.to_string(),
            name_of(cfg.underlay_ifindex),
            stats,
        ));
    }
    tunnels.sort_by(|a, b| a.0.cmp(&b.0));
    type Field = fn(&TunnelStats) -> u64;
    let fields: [(&str, &str, Field); 12] = [
        ("rx_packets", "Inner packets received on the tunnel.", |s| {
            s.rx_packets
        }),
        ("rx_bytes", "Inner bytes received on the tunnel.", |s| {
            s.rx_bytes
        }),
        (
            "rx_errors",
            "Packets for the tunnel that were dropped.",
            |s| s.rx_errors,
        ),
        (
            "rx_csum_errors",
            "Received packets with a bad or unexpected GRE checksum.",
            |s| s.rx_csum_errors,
        ),
        (
            "rx_out_of_sequence",
            "Received packets with a missing or old GRE sequence number.",
            |s| s.rx_out_of_seq,
        ),
        (
            "rx_multicast",
            "Multicast packets received on the tunnel.",
            |s| s.rx_mcasts,
        ),
        ("tx_packets", "Inner packets sent into the tunnel.", |s| {
            s.tx_packets
        }),
        ("tx_bytes", "Inner bytes sent into the tunnel.", |s| {
            s.tx_bytes
        }),
        ("tx_errors", "Packets the tunnel could not send.", |s| {
            s.tx_errors
        }),
        (
            "tx_dead_loop",
            "Packets whose outer route led back into the tunnel.",
            |s| s.tx_dead_loop,
        ),
        (
            "tx_no_route",
            "Packets with no route, neighbour or source for the outer header.",
            |s| s.tx_no_route,
        ),
        (
            "tx_no_buffers",
            "Packets dropped for lack of buffer room.",
            |s| s.tx_no_bufs,
        ),
    ];
    for (field, help, get) in fields {
        let name = format!("xtun_tunnel_{field}_total");
        family(&mut out, &name, help);
        for (tunnel, mode, underlay, stats) in &tunnels {
            let _ = writeln!(
                out,
                "{name}{{tunnel=\"{}\",mode=\"{mode}\",interface=\"{}\"}} {}",
                label(tunnel),
                label(underlay),
                get(stats)
            );
        }
    }

    family(
        &mut out,
        "xtun_datapath_packets_total",
        "Packets the data plane handled, by interface and by what it did (see `xtun stats`).",
    );
    let mut rows: Vec<(String, Vec<u64>)> = dp
        .interface_totals()
        .into_iter()
        .map(|(i, counts)| (name_of(i), counts))
        .collect();
    rows.sort();
    rows.push(("other".to_string(), dp.counter_totals()?));
    for (interface, counts) in rows {
        for (reason, count) in COUNTER_NAMES.iter().zip(counts) {
            let _ = writeln!(
                out,
                "xtun_datapath_packets_total{{interface=\"{}\",reason=\"{reason}\"}} {count}",
                label(&interface)
            );
        }
    }
    Ok(out)
}

/// `xtun stats --prometheus`.
pub fn print() -> Result<()> {
    let mut nl = Netlink::new()?;
    print!("{}", render(&mut nl)?);
    Ok(())
}

/// `xtun metrics --listen ADDR`: serves GET and HEAD of /metrics (and /)
/// until killed. tiny_http reads each connection on a thread of its own,
/// so a client that holds a connection open without asking anything does
/// not keep the next scrape waiting; the answers are written here, one at
/// a time, each read from the data plane as it is asked for.
pub fn serve(listen: &str) -> Result<()> {
    let server =
        tiny_http::Server::http(listen).map_err(|e| anyhow!("listening on {listen}: {e}"))?;
    eprintln!("xtun: serving metrics on http://{listen}/metrics");
    let mut nl = Netlink::new()?;
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = match request.method() {
            Method::Get | Method::Head if path == "/metrics" || path == "/" => {
                match render(&mut nl) {
                    Ok(body) => Response::from_string(body).with_header(header(
                        "Content-Type",
                        "text/plain; version=0.0.4; charset=utf-8",
                    )),
                    Err(e) => Response::from_string(format!("{e:#}\n")).with_status_code(500),
                }
            }
            Method::Get | Method::Head => Response::from_string("").with_status_code(404),
            _ => Response::from_string("")
                .with_status_code(405)
                .with_header(header("Allow", "GET, HEAD")),
        };
        // A client that went away takes nothing else with it.
        let _ = request.respond(response);
    }
    Ok(())
}

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}
