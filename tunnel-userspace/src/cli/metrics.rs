//! Prometheus metrics: `xtun stats --prometheus` (for node_exporter's
//! textfile collector) and `xtun metrics --listen ADDR` (an HTTP endpoint),
//! both in the Prometheus text format.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::TcpListener,
    time::Duration,
};

use anyhow::{Context as _, Result};
use tunnel_common::{maps::*, stats::COUNTER_NAMES};
use tunnel_userspace::{config::Mode, dataplane::Dataplane, netlink::Netlink};

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
        let mode = Mode::from_map(cfg.mode).map_or("unknown", Mode::name);
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

/// `xtun metrics --listen ADDR`: serves GET /metrics until killed.
pub fn serve(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("listening on {listen}"))?;
    eprintln!("xtun: serving metrics on http://{listen}/metrics");
    let mut nl = Netlink::new()?;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let first = String::from_utf8_lossy(&request);
        let path = first.split_whitespace().nth(1).unwrap_or("");
        let response = if !first.starts_with("GET ") {
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_string()
        } else if path == "/metrics" || path == "/" {
            match render(&mut nl) {
                Ok(body) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                Err(e) => {
                    let body = format!("{e:#}\n");
                    format!(
                        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
            }
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        };
        let _ = stream.write_all(response.as_bytes());
    }
    Ok(())
}
