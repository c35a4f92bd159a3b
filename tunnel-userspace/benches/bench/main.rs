//! `cargo xtask bench [--quick]`: xtun's numbers, measured side by side in
//! one run. Prints a table and writes target/bench/results.json. Each figure
//! is a median over repeated runs, with min and max. Needs root.
//!
//! 1. Per-packet cost in the kernel (BPF_PROG_TEST_RUN, one fresh input per
//!    run): no-op floors, XDP and tc decap, tc encap, and lookups at scale.
//! 2. Throughput in the seed topology: routing, the kernel's VXLAN, xtun.
//! 3. Control plane: adding, showing and dumping many tunnels.

mod baselines;
mod frames;
mod gateway;

use std::{
    net::Ipv4Addr,
    os::fd::AsRawFd,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use baselines::{
    load_noop, load_tc_decap_calls, load_tc_encap_calls, load_xdp_decap_calls,
    load_xdp_helper_calls, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP,
};
use serde_json::{json, Value};
use tunnel_common::maps::*;
// The golden tests' harness: the bench measures the programs loaded and
// registered exactly as those tests do.
use tunnel_userspace::{
    bpf_sys::prog_test_run,
    config::{Prefix, TunnelSpec},
    dataplane::{Dataplane, TunnelDevice, FILTER_TUNNEL},
    netlink::{Netlink, TcHook},
    testbed::{NarrowPath, Netns, SeedTopology},
};
use xtun_test_support::*;

/// How long and how often to measure.
struct Plan {
    rounds: usize,
    runs_per_round: usize,
    scales: Vec<u32>,
    iperf_seconds: u32,
    iperf_repeats: usize,
    tunnels: usize,
    neighbours: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 3,
                runs_per_round: 200,
                scales: vec![1, 1000],
                iperf_seconds: 1,
                iperf_repeats: 1,
                tunnels: 50,
                neighbours: 10_000,
            }
        } else {
            Self {
                rounds: 9,
                runs_per_round: 2000,
                scales: vec![1, 1_000, 100_000, 1_000_000],
                iperf_seconds: 4,
                iperf_repeats: 5,
                tunnels: 1000,
                neighbours: 1_000_000,
            }
        }
    }
}

/// Median, min and max of a sample.
fn summary(mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = if v.is_empty() {
        f64::NAN
    } else {
        v[v.len() / 2]
    };
    json!({ "median": median, "min": v.first(), "max": v.last(), "n": v.len() })
}

fn median(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}

/// ns per packet for `prog_fd` on `input`: each round is the median of
/// `runs_per_round` single runs, each on a fresh copy of the input.
fn per_packet(
    plan: &Plan,
    prog_fd: i32,
    input: &[u8],
    verdict: u32,
    check: &dyn Fn(&[u8]) -> bool,
) -> Result<Value> {
    per_packet_on(plan, prog_fd, input, None, verdict, check)
}

/// `per_packet` with a context (`__sk_buff` or `xdp_md`) for every run.
fn per_packet_on(
    plan: &Plan,
    prog_fd: i32,
    input: &[u8],
    ctx: Option<&[u8]>,
    verdict: u32,
    check: &dyn Fn(&[u8]) -> bool,
) -> Result<Value> {
    let first = prog_test_run(prog_fd, input, ctx, 1)?;
    if first.retval != verdict || !check(&first.data) {
        bail!(
            "unexpected verdict {} (wanted {verdict}) or output",
            first.retval
        );
    }
    // Warm caches and clocks first, so the first case measured is not
    // penalised against the later ones.
    for _ in 0..plan.runs_per_round {
        prog_test_run(prog_fd, input, ctx, 1)?;
    }
    let mut rounds = Vec::new();
    for _ in 0..plan.rounds {
        let mut runs = Vec::with_capacity(plan.runs_per_round);
        for _ in 0..plan.runs_per_round {
            let run = prog_test_run(prog_fd, input, ctx, 1)?;
            if run.retval != verdict {
                bail!("verdict changed to {}", run.retval);
            }
            runs.push(run.duration_ns as f64);
        }
        runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rounds.push(runs[runs.len() / 2]);
    }
    Ok(summary(rounds))
}

/// Helper calls in the program that measures what one costs.
const HELPER_CALLS: usize = 8;

const GRE: &str = "t mode gre remote 10.10.10.2 local 10.10.20.2";
const GRE_KEY: &str = "t mode gre remote 10.10.10.2 local 10.10.20.2 key 42";
const IPIP: &str = "t mode ipip remote 10.10.10.2 local 10.10.20.2";

fn gre_frame(key: bool) -> Vec<u8> {
    let hdr: &[u8] = if key {
        &[0x20, 0, 8, 0, 0, 0, 0, 42]
    } else {
        &[0, 0, 8, 0]
    };
    frame(47, hdr, &inner_packet(0), 0)
}

/// Fills the tunnel maps with `n - 1` other tunnels besides ifindex 1/TUN_IFINDEX.
fn fill(h: &mut Harness, n: u32) -> Result<()> {
    for i in 1..n {
        let remote = Ipv4Addr::from(0x0b00_0000 + i);
        let spec = TunnelSpec::parse(&[
            "x",
            "mode",
            "gre",
            "remote",
            &remote.to_string(),
            "local",
            "10.10.20.2",
        ])?;
        let cfg = spec.to_config(Ipv4Addr::new(10, 10, 20, 2), 1, 1476);
        h.dp.add_tunnel(100_000 + i, TunnelDevice::Ethernet, cfg)?;
    }
    Ok(())
}

/// A multipoint neighbour of the tunnel on ifindex 1.
fn add_neighbour(h: &mut Harness, prefix: Ipv4Addr, len: u32, remote: Ipv4Addr) -> Result<()> {
    let prefix = Prefix {
        addr: prefix.into(),
        len: len as u8,
    };
    Ok(h.dp.add_neighbour(1, &prefix, remote)?)
}

fn micro(plan: &Plan, rows: &mut Vec<(String, String, Value)>) -> Result<Value> {
    let mut out = serde_json::Map::new();
    let xdp_noop = load_noop(BPF_PROG_TYPE_XDP, 2)?;
    let tc_noop = load_noop(BPF_PROG_TYPE_SCHED_CLS, -1)?;
    let any = |_: &[u8]| true;
    let gre = gre_frame(false);
    let xdp_floor = per_packet(plan, xdp_noop.as_raw_fd(), &gre, XDP_PASS, &any)?;
    let tc_floor = per_packet(plan, tc_noop.as_raw_fd(), &gre, TC_ACT_UNSPEC, &any)?;
    rows.push(("floor".into(), "XDP no-op".into(), xdp_floor.clone()));
    rows.push(("floor".into(), "TC no-op".into(), tc_floor.clone()));
    out.insert("xdp_noop".into(), xdp_floor.clone());
    out.insert("tc_noop".into(), tc_floor.clone());
    // What a helper call costs on this machine, and what the calls every
    // decapsulation and encapsulation must make cost by themselves, for
    // reading the figures below.
    let helper_calls = load_xdp_helper_calls(HELPER_CALLS)?;
    let xdp_decap_calls = load_xdp_decap_calls()?;
    let tc_encap_calls = load_tc_encap_calls()?;
    let tc_decap_calls = load_tc_decap_calls()?;
    let call_floors = [
        (
            format!("XDP no-op + {HELPER_CALLS} helper calls"),
            "xdp_noop_helper_calls",
            &helper_calls,
            XDP_PASS,
            gre.len(),
        ),
        (
            "XDP adjust_head + adjust_meta".into(),
            "xdp_decap_calls",
            &xdp_decap_calls,
            XDP_PASS,
            gre.len() - 24 + std::mem::size_of::<XdpMeta>(),
        ),
        (
            "TC adjust_room + redirect_neigh".into(),
            "tc_encap_calls",
            &tc_encap_calls,
            TC_ACT_REDIRECT,
            gre.len() + 24,
        ),
        (
            "TC adjust_room shrink + redirect".into(),
            "tc_decap_calls",
            &tc_decap_calls,
            TC_ACT_REDIRECT,
            gre.len() - 24,
        ),
    ];
    for (what, key, prog, verdict, out_len) in call_floors {
        let cost = per_packet(plan, prog.as_raw_fd(), &gre, verdict, &|out: &[u8]| {
            out.len() == out_len
        })?;
        rows.push(("floor".into(), what, cost.clone()));
        out.insert(key.into(), cost);
    }

    let inner = inner_packet(0);
    let mut tc_input = eth(0x0800);
    tc_input.extend_from_slice(&inner);
    // Tunnels from ifindex IF_INDEXED_MAX up are found by hash rather than
    // in the ifindex-indexed array. BPF_PROG_TEST_RUN runs on the device
    // the context names, looked up in the caller's namespace: veths with a
    // low and a high index in a namespace of our own, which the measuring
    // thread joins, compare the two lookups on the same kind of device.
    let veth_ns = Netns::new(tunnel_userspace::testbed::unique_prefix("benchix"))?;
    let (low, high) = (7, IF_INDEXED_MAX + 977);
    for (name, index) in [("ix0", low), ("ix1", high)] {
        veth_ns.exec(&[
            "ip",
            "link",
            "add",
            "name",
            name,
            "index",
            &index.to_string(),
            "type",
            "veth",
        ])?;
    }
    let skb_on = |ifindex: u32| {
        let mut ctx = [0u8; 44];
        // struct __sk_buff's `ifindex` is at offset 40.
        ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        ctx
    };
    for &n in &plan.scales {
        for (label, args, input) in [
            ("GRE", GRE, gre.clone()),
            ("GRE key", GRE_KEY, gre_frame(true)),
            ("IPIP", IPIP, frame(4, &[], &inner, 0)),
        ] {
            // Receiving side: the tunnel is one of n in the decap index.
            let mut rx = Harness::with_capacity(Some(n.max(1024)));
            rx.add(args, TUN_IFINDEX);
            fill(&mut rx, n)?;
            let decapsulated = |out: &[u8]| {
                let meta = std::mem::size_of::<XdpMeta>();
                out.len() == meta + 14 + inner.len() && out[meta + 14..] == inner[..]
            };
            let xdp = per_packet(
                plan,
                rx.dp.xdp_fd().unwrap().as_raw_fd(),
                &input,
                XDP_PASS,
                &decapsulated,
            )?;
            let tc_decapsulated =
                |out: &[u8]| out.len() == 14 + inner.len() && out[14..] == inner[..];
            let tcd = per_packet(
                plan,
                rx.dp.tc_fd().as_raw_fd(),
                &input,
                TC_ACT_REDIRECT,
                &tc_decapsulated,
            )?;
            drop(rx);
            // Sending side: BPF_PROG_TEST_RUN's device (lo, ifindex 1) is
            // one of n tunnels.
            let mut tx = Harness::with_capacity(Some(n.max(1024) + 2));
            let sending = args.replace(
                "remote 10.10.10.2 local 10.10.20.2",
                "remote 10.10.20.2 local 10.10.10.2",
            );
            tx.add(&sending, 1);
            if label == "GRE" {
                // The same tunnel again on the veths.
                tx.add(&sending, low);
                tx.add(&sending, high);
            }
            fill(&mut tx, n)?;
            let encapsulated = |out: &[u8]| out.len() > 14 + inner.len() && out.ends_with(&inner);
            let enc = per_packet(
                plan,
                tx.dp.tc_fd().as_raw_fd(),
                &tc_input,
                TC_ACT_REDIRECT,
                &encapsulated,
            )?;
            let scale = format!("{n} tunnels");
            if label == "GRE" {
                let fd = tx.dp.tc_fd().as_raw_fd();
                let path = format!("/run/netns/{}", veth_ns.name);
                let on_veths = std::thread::scope(|scope| {
                    scope
                        .spawn(|| -> Result<Vec<Value>> {
                            let netns = std::fs::File::open(&path)?;
                            // SAFETY: joins a namespace on this thread only.
                            if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                                bail!("setns: {}", std::io::Error::last_os_error());
                            }
                            [low, high]
                                .iter()
                                .map(|&ifindex| {
                                    per_packet_on(
                                        plan,
                                        fd,
                                        &tc_input,
                                        Some(&skb_on(ifindex)),
                                        TC_ACT_REDIRECT,
                                        &encapsulated,
                                    )
                                })
                                .collect()
                        })
                        .join()
                        .map_err(|_| anyhow::anyhow!("measuring thread panicked"))?
                })?;
                for (value, (what, key)) in on_veths.into_iter().zip([
                    ("TC encap GRE, veth ifindex 7", "veth_array"),
                    ("TC encap GRE, veth ifindex 2001", "veth_hash"),
                ]) {
                    rows.push((what.into(), scale.clone(), value.clone()));
                    out.insert(format!("tc_encap/GRE {key}/{n}"), value);
                }
            }
            rows.push((format!("XDP decap {label}"), scale.clone(), xdp.clone()));
            rows.push((format!("TC decap {label}"), scale.clone(), tcd.clone()));
            rows.push((format!("TC encap {label}"), scale.clone(), enc.clone()));
            out.insert(format!("xdp_decap/{label}/{n}"), xdp);
            out.insert(format!("tc_decap/{label}/{n}"), tcd);
            out.insert(format!("tc_encap/{label}/{n}"), enc);
        }
    }

    // Multipoint: encapsulation whose remote comes from the neighbour trie
    // holding n prefixes (n - 1 others, then the inner destination's /16).
    for &n in &plan.scales {
        let mut tx = Harness::with_capacity(None);
        tx.add("m mode gre remote any local 10.10.10.2 dev lo", 1);
        for i in 1..n {
            let other = 0x0b00_0000 + i;
            add_neighbour(&mut tx, Ipv4Addr::from(other), 32, Ipv4Addr::from(other))?;
        }
        add_neighbour(
            &mut tx,
            Ipv4Addr::new(10, 10, 0, 0),
            16,
            Ipv4Addr::new(10, 10, 20, 2),
        )?;
        let to_remote = |out: &[u8]| out.len() > 34 && out[30..34] == [10, 10, 20, 2];
        let enc = per_packet(
            plan,
            tx.dp.tc_fd().as_raw_fd(),
            &tc_input,
            TC_ACT_REDIRECT,
            &to_remote,
        )?;
        rows.push((
            "TC encap multipoint GRE".into(),
            format!("{n} neighbours"),
            enc.clone(),
        ));
        out.insert(format!("tc_encap/multipoint/{n}"), enc);
    }

    // What logging costs: the same decapsulation with aya-log at its
    // default level (off) and at trace (one record per packet).
    let mut h = Harness::new();
    h.add(GRE, TUN_IFINDEX);
    let any = |_: &[u8]| true;
    let off = per_packet(
        plan,
        h.dp.xdp_fd().unwrap().as_raw_fd(),
        &gre,
        XDP_PASS,
        &any,
    )?;
    h.dp.set_log_level(LOG_TRACE)?;
    let trace = per_packet(
        plan,
        h.dp.xdp_fd().unwrap().as_raw_fd(),
        &gre,
        XDP_PASS,
        &any,
    )?;
    rows.push((
        "XDP decap GRE, log off".into(),
        "1 tunnels".into(),
        off.clone(),
    ));
    rows.push((
        "XDP decap GRE, log trace".into(),
        "1 tunnels".into(),
        trace.clone(),
    ));
    out.insert("xdp_decap_log_off".into(), off);
    out.insert("xdp_decap_log_trace".into(), trace);
    h.dp.set_log_level(LOG_OFF)?;
    monitor_cost(plan, &mut h, rows, &mut out)?;
    Ok(Value::Object(out))
}

/// What `xtun monitor` costs per packet, side by side: a packet no tunnel
/// matches (XDP's pass path, where every monitor event starts) and a
/// decapsulated one, with no monitor, with one whose events are all
/// written (a thread drains its ring buffer), and with one over its rate
/// limit (each event refused by the token bucket).
fn monitor_cost(
    plan: &Plan,
    h: &mut Harness,
    rows: &mut Vec<(String, String, Value)>,
    out: &mut serde_json::Map<String, Value>,
) -> Result<()> {
    let xdp = h.dp.xdp_fd().unwrap().as_raw_fd();
    let any = |_: &[u8]| true;
    // Keyed GRE against the keyless tunnel: no tunnel matches.
    let unmatched = gre_frame(true);
    let decap = gre_frame(false);
    let measure = |label: &str, rows: &mut Vec<(String, String, Value)>| -> Result<[Value; 2]> {
        let pass = per_packet(plan, xdp, &unmatched, XDP_PASS, &any)?;
        let dec = per_packet(plan, xdp, &decap, XDP_PASS, &any)?;
        rows.push((
            format!("XDP no tunnel matched, {label}"),
            "1 tunnels".into(),
            pass.clone(),
        ));
        rows.push((
            format!("XDP decap GRE, {label}"),
            "1 tunnels".into(),
            dec.clone(),
        ));
        Ok([pass, dec])
    };
    let none = measure("no monitor", rows)?;
    // One monitor (--all), every event written and drained.
    let mut claim = h.dp.monitor_claim(true, 1_000_000_000, 1_000_000)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let listening = thread::scope(|scope| -> Result<[Value; 2]> {
        let drain = scope.spawn(|| {
            let mut drained = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                while claim.ring.next().is_some() {
                    drained += 1;
                }
                thread::sleep(Duration::from_micros(200));
            }
            drained
        });
        let r = measure("monitor --all listening", rows);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = drain.join();
        r
    })?;
    h.dp.monitor_release(&claim)?;
    // One monitor whose rate (1 event/s per CPU) is spent: the bucket refuses.
    let limited_claim = h.dp.monitor_claim(true, 1, 1)?;
    let limited = measure("monitor over its rate limit", rows)?;
    h.dp.monitor_release(&limited_claim)?;
    for (key, values) in [
        ("none", none),
        ("listening", listening),
        ("rate_limited", limited),
    ] {
        let [pass, dec] = values;
        out.insert(format!("xdp_no_tunnel_monitor_{key}"), pass);
        out.insert(format!("xdp_decap_monitor_{key}"), dec);
    }
    Ok(())
}

/// Busy CPU time of the whole machine so far, in seconds.
fn cpu_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

/// A child process killed (and reaped) on drop, so that a bench that fails
/// halfway leaves no server behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One iperf3 run from ns1 to `dst` in ns2; returns (Gbit/s, packets/s, cpu s per Gbit).
fn iperf(topo: &SeedTopology, dst: &str, args: &[&str], seconds: u32) -> Result<(f64, f64, f64)> {
    iperf_between(&topo.ns1, &topo.ns2, dst, args, seconds)
}

/// One iperf3 run from `client` to `dst` in `server_ns`.
fn iperf_between(
    client: &Netns,
    server_ns: &Netns,
    dst: &str,
    args: &[&str],
    seconds: u32,
) -> Result<(f64, f64, f64)> {
    let mut server = KillOnDrop(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &server_ns.name,
                "iperf3",
                "-s",
                "-1",
                "-B",
                dst,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    // Start only once the server listens; a loaded machine can be slow.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let listening = server_ns.try_exec(&["ss", "-ltnH", "sport", "= :5201"])?;
        if !listening.stdout.is_empty() || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let secs = seconds.to_string();
    let mut full = vec!["iperf3", "-c", dst, "-t", &secs, "-J"];
    full.extend_from_slice(args);
    let cpu0 = cpu_busy_seconds();
    let out = client.try_exec(&full)?;
    let cpu = cpu_busy_seconds() - cpu0;
    // A one-off server exits after its client; one whose client never
    // came is killed after a short grace rather than waited for.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.0.try_wait()?.is_none() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    drop(server);
    let doc: Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    if let Some(err) = doc["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let end = &doc["end"];
    let (bps, packets) = if args.contains(&"-u") {
        let sum = &end["sum"];
        let lost = sum["lost_packets"].as_f64().unwrap_or(0.0);
        let packets = sum["packets"].as_f64().unwrap_or(0.0) - lost;
        (
            sum["bits_per_second"].as_f64().unwrap_or(0.0),
            packets / seconds as f64,
        )
    } else {
        (
            end["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0),
            0.0,
        )
    };
    let gbit = bps / 1e9;
    let cpu_per_gbit = if gbit > 0.0 {
        cpu / (gbit * seconds as f64)
    } else {
        f64::NAN
    };
    Ok((gbit, packets, cpu_per_gbit))
}

/// A datapath to measure: how to build the path from ns1 to ns2.
struct Path {
    name: &'static str,
    setup: fn(&SeedTopology, &str) -> Result<&'static str>,
}

fn routed(_: &SeedTopology, _: &str) -> Result<&'static str> {
    Ok(SeedTopology::NS2_ADDR)
}

/// Plain routing held to a GRE tunnel's MTU (1476, so TCP's MSS is 1436):
/// the like-for-like ceiling, since the segment size alone moves TCP
/// throughput on this kind of machine.
fn routed_gre_mtu(topo: &SeedTopology, _: &str) -> Result<&'static str> {
    for (ns, dst, via) in [
        (&topo.ns1, "10.10.20.0/24", "10.10.10.1"),
        (&topo.ns2, "10.10.10.0/24", "10.10.20.1"),
    ] {
        ns.exec(&[
            "ip", "route", "change", dst, "via", via, "mtu", "lock", "1476",
        ])?;
    }
    Ok(SeedTopology::NS2_ADDR)
}

fn vxlan(topo: &SeedTopology, _: &str) -> Result<&'static str> {
    let sides = [
        (
            &topo.ns1,
            "10.10.20.2",
            "10.10.10.2",
            "10.10.100.10",
            "10.10.200.10",
            "v1",
        ),
        (
            &topo.ns2,
            "10.10.10.2",
            "10.10.20.2",
            "10.10.200.10",
            "10.10.100.10",
            "v2",
        ),
    ];
    for (ns, remote, local, addr, peer, dev) in sides {
        ns.exec(&[
            "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "remote", remote, "local",
            local, "dstport", "4789", "dev", dev,
        ])?;
        SeedTopology::bring_up(ns, "vx0", addr, peer)?;
    }
    Ok("10.10.200.10")
}

fn xtun_with(
    topo: &SeedTopology,
    xtun: &str,
    mode: &str,
    extra: &[&str],
    decap: &str,
) -> Result<&'static str> {
    for (ns, dev) in [(&topo.ns1, "v1"), (&topo.ns2, "v2")] {
        ns.exec(&[xtun, "attach", dev, "--decap", decap])?;
    }
    topo.add_tunnels(xtun, mode, extra)?;
    Ok("10.10.200.10")
}

/// Runs `f` on a thread inside the network namespace `ns`, where the
/// library's netlink sockets and data plane lookups then work.
fn in_netns<T: Send>(ns: &Netns, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name))?;
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on this thread only, with an open namespace fd.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .map_err(|_| anyhow::anyhow!("namespace thread panicked"))?
    })
}

/// The previous tunnel device, measured beside the current one: a
/// persistent TUN device whose tc egress encapsulates and into whose
/// ingress decapsulated packets are redirected. The data plane still
/// serves a tunnel without a port this way; the CLI no longer makes one,
/// so it is configured through the library.
fn xtun_gre_on_tun(topo: &SeedTopology, xtun: &str) -> Result<&'static str> {
    let sides = [
        (
            &topo.ns1,
            "v1",
            "10.10.20.2",
            "10.10.10.2",
            "10.10.100.10",
            "10.10.200.10",
        ),
        (
            &topo.ns2,
            "v2",
            "10.10.10.2",
            "10.10.20.2",
            "10.10.200.10",
            "10.10.100.10",
        ),
    ];
    for (ns, dev, remote, local, addr, peer) in sides {
        ns.exec(&[xtun, "attach", dev, "--decap", "auto"])?;
        ns.exec(&["ip", "tuntap", "add", "dev", "tun1", "mode", "tun"])?;
        ns.exec(&["ip", "link", "set", "tun1", "mtu", "1476"])?;
        in_netns(ns, || {
            let mut nl = Netlink::new()?;
            let mut dp = Dataplane::find(&mut nl)?.context("no data plane")?;
            let tun = nl.link_by_name("tun1")?.context("tun1")?;
            let underlay = nl.link_by_name(dev)?.context("underlay")?;
            let spec =
                TunnelSpec::parse(&["tun1", "mode", "gre", "remote", remote, "local", local])?;
            let cfg = spec.to_config(local.parse()?, underlay.index, 1476);
            dp.add_tunnel(tun.index, TunnelDevice::Tun, cfg)?;
            dp.track_interface(tun.index)?;
            nl.add_clsact(tun.index)?;
            nl.add_bpf_filter(
                tun.index,
                TcHook::Egress,
                dp.tc_fd().as_raw_fd(),
                FILTER_TUNNEL,
                CLASSID_TUNNEL,
                false,
            )?;
            Ok(())
        })?;
        SeedTopology::bring_up(ns, "tun1", addr, peer)?;
    }
    Ok("10.10.200.10")
}

fn xtun_gre(t: &SeedTopology, x: &str) -> Result<&'static str> {
    xtun_with(t, x, "gre", &[], "auto")
}
fn xtun_gre_key(t: &SeedTopology, x: &str) -> Result<&'static str> {
    xtun_with(t, x, "gre", &["key", "42"], "auto")
}
fn xtun_ipip(t: &SeedTopology, x: &str) -> Result<&'static str> {
    xtun_with(t, x, "ipip", &[], "auto")
}
fn xtun_gre_xdp(t: &SeedTopology, x: &str) -> Result<&'static str> {
    xtun_with(t, x, "gre", &[], "xdp")
}

fn throughput(plan: &Plan, xtun: &str, rows: &mut Vec<(String, String, Value)>) -> Result<Value> {
    let paths = [
        Path {
            name: "routed (no tunnel)",
            setup: routed,
        },
        Path {
            name: "routed, MTU 1476",
            setup: routed_gre_mtu,
        },
        Path {
            name: "kernel VXLAN",
            setup: vxlan,
        },
        Path {
            name: "xtun GRE (tc decap)",
            setup: xtun_gre,
        },
        Path {
            name: "xtun GRE on a TUN device (previous design)",
            setup: xtun_gre_on_tun,
        },
        Path {
            name: "xtun GRE key (tc decap)",
            setup: xtun_gre_key,
        },
        Path {
            name: "xtun IPIP (tc decap)",
            setup: xtun_ipip,
        },
        Path {
            name: "xtun GRE (XDP decap)",
            setup: xtun_gre_xdp,
        },
    ];
    // Every path is built first, each in namespaces of its own, and then
    // measured in turns: one round measures each path once, so drift of the
    // machine over the run hits all of them alike.
    let mut built = Vec::new();
    for path in &paths {
        let topo = SeedTopology::new("bench")?;
        let dst = (path.setup)(&topo, xtun)?;
        built.push((path.name, topo, dst));
    }
    let mut samples: Vec<[Vec<f64>; 4]> = vec![Default::default(); built.len()];
    for _ in 0..plan.iperf_repeats {
        for ((_, topo, dst), s) in built.iter().zip(samples.iter_mut()) {
            let (one, _, cpu) = iperf(topo, dst, &[], plan.iperf_seconds)?;
            s[0].push(one);
            s[3].push(cpu);
            s[1].push(iperf(topo, dst, &["-P", "4"], plan.iperf_seconds)?.0);
            let (_, pps, _) = iperf(
                topo,
                dst,
                &["-u", "-l", "64", "-b", "0"],
                plan.iperf_seconds,
            )?;
            s[2].push(pps);
        }
    }
    let mut out = serde_json::Map::new();
    for ((name, _, _), s) in built.iter().zip(samples) {
        let [one, four, udp, cpu] = s;
        let doc = json!({
            "tcp_1_stream_gbit": summary(one),
            "tcp_4_streams_gbit": summary(four),
            "udp_64b_pps": summary(udp),
            "cpu_seconds_per_gbit": summary(cpu),
        });
        for (key, label) in [
            ("tcp_1_stream_gbit", "TCP 1 stream Gbit/s"),
            ("tcp_4_streams_gbit", "TCP 4 streams Gbit/s"),
            ("udp_64b_pps", "UDP 64 B packets/s"),
            ("cpu_seconds_per_gbit", "CPU s per Gbit (1 stream)"),
        ] {
            rows.push((name.to_string(), label.into(), doc[key].clone()));
        }
        out.insert(name.to_string(), doc);
    }
    Ok(Value::Object(out))
}

/// TCP over a path whose middle link has a 1400-byte MTU (ns1 - rt1 - rt2 -
/// ns2, as in tests/pmtu.rs): plain routing against xtun GRE over the same
/// kind of path, measured in turns in one run; both learn the path MTU from
/// the routers' ICMP.
fn narrow_path(plan: &Plan, xtun: &str, rows: &mut Vec<(String, String, Value)>) -> Result<Value> {
    const MTU: u32 = 1400;
    let plain = NarrowPath::new("bnp", MTU)?;
    let tunnel = NarrowPath::new("bnt", MTU)?;
    tunnel.add_tunnels(xtun, "gre", &[])?;
    let paths = [
        ("routed over a 1400-byte path", &plain, "10.10.20.2"),
        ("xtun GRE over a 1400-byte path", &tunnel, "10.10.200.10"),
    ];
    // One unmeasured run on each first: the tunnel learns the path MTU
    // from the routers' ICMP on its first large packets, and TCP recovers
    // from those losses before the measured runs.
    for (_, path, dst) in &paths {
        iperf_between(&path.ns1, &path.ns2, dst, &[], plan.iperf_seconds.max(2))?;
    }
    let mut samples: [Vec<f64>; 2] = Default::default();
    for _ in 0..plan.iperf_repeats {
        for ((_, path, dst), s) in paths.iter().zip(samples.iter_mut()) {
            s.push(iperf_between(&path.ns1, &path.ns2, dst, &[], plan.iperf_seconds)?.0);
        }
    }
    let [routed, gre] = samples.map(summary);
    let ratio = median(&gre) / median(&routed);
    for ((name, _, _), doc) in paths.iter().zip([&routed, &gre]) {
        rows.push((name.to_string(), "TCP 1 stream Gbit/s".into(), doc.clone()));
    }
    Ok(json!({
        "path_mtu": MTU,
        "routed_tcp_1_stream_gbit": routed,
        "xtun_gre_tcp_1_stream_gbit": gre,
        "xtun_gre_over_routed": ratio,
    }))
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed().as_secs_f64())
}

fn control_plane(
    plan: &Plan,
    xtun: &str,
    rows: &mut Vec<(String, String, Value)>,
) -> Result<Value> {
    let n = plan.tunnels;
    let remote = |i: usize| Ipv4Addr::from(0x0a14_0000 + i as u32 + 1).to_string();
    let add_line = |i: usize| {
        format!(
            "tunnel add t{i} mode gre remote {} local 10.10.10.2 key {i}",
            remote(i)
        )
    };
    let mut out = serde_json::Map::new();

    // One process per tunnel, as a shell loop would.
    let ns = Netns::new(format!(
        "{}-cp1",
        tunnel_userspace::testbed::unique_prefix("bench")
    ))?;
    prepare_underlay(&ns)?;
    let per_process = timed(|| {
        for i in 0..n {
            let line = add_line(i);
            let mut args = vec![xtun];
            args.extend(line.split_whitespace());
            ns.exec(&args)?;
        }
        Ok(())
    })?;
    drop(ns);

    // The same with -batch, in one process.
    let ns = Netns::new(format!(
        "{}-cp2",
        tunnel_userspace::testbed::unique_prefix("bench")
    ))?;
    prepare_underlay(&ns)?;
    let file = std::env::temp_dir().join(format!("{}-batch.txt", ns.name));
    std::fs::write(&file, (0..n).map(add_line).collect::<Vec<_>>().join("\n"))?;
    let file_str = file.to_str().unwrap().to_string();
    let batch = timed(|| {
        ns.exec(&[xtun, "-batch", &file_str])
            .map(drop)
            .map_err(Into::into)
    })?;
    let _ = std::fs::remove_file(&file);
    let show = timed(|| {
        ns.exec(&[xtun, "tunnel", "show"])
            .map(drop)
            .map_err(Into::into)
    })?;
    let dump = timed(|| {
        ns.exec(&[xtun, "map", "dump", "XTUN_TUNNELS"])
            .map(drop)
            .map_err(Into::into)
    })?;
    // Multipoint neighbours, loaded with -batch into one tunnel.
    let k = plan.neighbours;
    ns.exec(&[
        xtun,
        "tunnel",
        "add",
        "mp0",
        "mode",
        "gre",
        "remote",
        "any",
        "local",
        "10.10.10.2",
        "dev",
        "v1",
    ])?;
    let lines: Vec<String> = (0..k)
        .map(|i| {
            let inner = Ipv4Addr::from(0x6400_0000 + i as u32);
            let remote = Ipv4Addr::from(0x0a14_0000 + (i as u32 % 60_000) + 1);
            format!("neigh add {inner}/32 lladdr {remote} dev mp0")
        })
        .collect();
    std::fs::write(&file, lines.join("\n"))?;
    let neigh_load = timed(|| {
        ns.exec(&[xtun, "-batch", &file_str])
            .map(drop)
            .map_err(Into::into)
    })?;
    let _ = std::fs::remove_file(&file);
    let neigh_show = timed(|| {
        ns.exec(&[xtun, "neigh", "show"])
            .map(drop)
            .map_err(Into::into)
    })?;
    let listed = String::from_utf8(ns.exec(&[xtun, "-j", "map", "list"])?.stdout)?;
    let maps: Value = serde_json::from_str(&listed)?;
    let memory = map_memory(&maps)?;
    drop(ns);

    for (what, secs) in [
        (format!("add {n} tunnels, one process each"), per_process),
        (format!("add {n} tunnels with -batch"), batch),
        (format!("tunnel show of {n}"), show),
        (format!("map dump XTUN_TUNNELS of {n}"), dump),
        (format!("load {k} neighbours with -batch"), neigh_load),
        (format!("neigh show of {k}"), neigh_show),
    ] {
        rows.push((
            "control plane".into(),
            what.clone(),
            json!({ "median": secs, "min": secs, "max": secs, "n": 1 }),
        ));
        out.insert(what, json!(secs));
    }
    rows.push((
        "control plane".into(),
        "map memory (KiB)".into(),
        json!({ "median": memory as f64 / 1024.0, "min": null, "max": null, "n": 1 }),
    ));
    out.insert("map_memory_bytes".into(), json!(memory));
    Ok(Value::Object(out))
}

/// An underlay in `ns` from which 10.20.0.0/16 is routed, for many tunnels.
fn prepare_underlay(ns: &Netns) -> Result<()> {
    ns.exec(&[
        "ip", "link", "add", "v1", "type", "veth", "peer", "name", "v1p",
    ])?;
    ns.exec(&["ip", "addr", "add", "10.10.10.2/24", "dev", "v1"])?;
    ns.exec(&["ip", "link", "set", "v1", "up"])?;
    ns.exec(&["ip", "link", "set", "v1p", "up"])?;
    ns.exec(&["ip", "route", "add", "10.20.0.0/16", "via", "10.10.10.1"])?;
    Ok(())
}

/// Kernel memory of the maps listed by `xtun -j map list`.
fn map_memory(maps: &Value) -> Result<u64> {
    let mut total = 0;
    for m in maps.as_array().into_iter().flatten() {
        let Some(id) = m["id"].as_u64() else { continue };
        if let Ok(data) = aya::maps::MapData::from_id(id as u32) {
            use std::os::fd::AsFd as _;
            total += baselines::memlock(data.fd().as_fd().as_raw_fd()).unwrap_or(0);
        }
    }
    Ok(total)
}

fn print_table(rows: &[(String, String, Value)]) {
    println!(
        "{:<28} {:<34} {:>12} {:>12} {:>12}",
        "WHAT", "CASE", "MEDIAN", "MIN", "MAX"
    );
    for (what, case, v) in rows {
        let f = |x: &Value| {
            x.as_f64().map_or("-".to_string(), |x| {
                if x >= 1000.0 {
                    format!("{x:.0}")
                } else {
                    format!("{x:.2}")
                }
            })
        };
        println!(
            "{what:<28} {case:<34} {:>12} {:>12} {:>12}",
            f(&v["median"]),
            f(&v["min"]),
            f(&v["max"])
        );
    }
}

fn ratios(micro: &Value, tput: &Value) -> Value {
    let m = |k: &str| median(&micro[k]);
    let t = |path: &str, k: &str| median(&tput[path][k]);
    let mut r = serde_json::Map::new();
    r.insert(
        "helper_call_ns".into(),
        json!((m("xdp_noop_helper_calls") - m("xdp_noop")) / HELPER_CALLS as f64),
    );
    // Each measure above its floor: the program, and the helper calls that
    // any program doing the same job must make.
    for (name, measure, floor) in [
        ("xdp_decap_gre", "xdp_decap/GRE/1", "xdp_noop"),
        ("tc_decap_gre", "tc_decap/GRE/1", "tc_noop"),
        ("tc_encap_gre", "tc_encap/GRE/1", "tc_noop"),
        ("xdp_adjust_head_meta", "xdp_decap_calls", "xdp_noop"),
        (
            "tc_adjust_room_shrink_redirect",
            "tc_decap_calls",
            "tc_noop",
        ),
        ("tc_adjust_room_redirect_neigh", "tc_encap_calls", "tc_noop"),
    ] {
        r.insert(
            format!("{name}_minus_floor_ns"),
            json!(m(measure) - m(floor)),
        );
    }
    let largest = micro.as_object().and_then(|o| {
        o.keys()
            .filter_map(|k| k.strip_prefix("xdp_decap/GRE/"))
            .filter_map(|n| n.parse::<u64>().ok())
            .max()
    });
    if let Some(n) = largest {
        r.insert(
            format!("xdp_decap_gre_{n}_over_1"),
            json!(m(&format!("xdp_decap/GRE/{n}")) / m("xdp_decap/GRE/1")),
        );
        r.insert(
            format!("tc_encap_gre_{n}_over_1"),
            json!(m(&format!("tc_encap/GRE/{n}")) / m("tc_encap/GRE/1")),
        );
    }
    // (label, measure, baseline path, baseline label)
    let comparisons = [
        (
            "tcp_1_stream",
            "tcp_1_stream_gbit",
            "routed (no tunnel)",
            "routed",
        ),
        (
            "tcp_1_stream",
            "tcp_1_stream_gbit",
            "routed, MTU 1476",
            "routed at MTU 1476",
        ),
        (
            "tcp_4_streams",
            "tcp_4_streams_gbit",
            "routed, MTU 1476",
            "routed at MTU 1476",
        ),
        ("tcp_1_stream", "tcp_1_stream_gbit", "kernel VXLAN", "vxlan"),
        ("udp_64b_pps", "udp_64b_pps", "routed (no tunnel)", "routed"),
    ];
    r.insert(
        "veth pair / TUN device (previous design), TCP 1 stream".into(),
        json!(
            t("xtun GRE (tc decap)", "tcp_1_stream_gbit")
                / t(
                    "xtun GRE on a TUN device (previous design)",
                    "tcp_1_stream_gbit"
                )
        ),
    );
    r.insert(
        "veth pair / TUN device (previous design), UDP 64 B pps".into(),
        json!(
            t("xtun GRE (tc decap)", "udp_64b_pps")
                / t("xtun GRE on a TUN device (previous design)", "udp_64b_pps")
        ),
    );
    for path in ["xtun GRE (tc decap)", "xtun GRE (XDP decap)"] {
        for (label, key, base, base_label) in comparisons {
            r.insert(
                format!("{path} {label} / {base_label}"),
                json!(t(path, key) / t(base, key)),
            );
        }
    }
    Value::Object(r)
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut plan = Plan::new(quick);
    // `--iperf ROUNDS,SECONDS` overrides how long the throughput part runs.
    let args: Vec<String> = std::env::args().collect();
    if let Some(spec) = args
        .iter()
        .position(|a| a == "--iperf")
        .and_then(|i| args.get(i + 1))
    {
        let (rounds, seconds) = spec
            .split_once(',')
            .and_then(|(r, s)| Some((r.parse().ok()?, s.parse().ok()?)))
            .context("--iperf takes ROUNDS,SECONDS")?;
        plan.iperf_repeats = rounds;
        plan.iperf_seconds = seconds;
    }
    let xtun = std::env::var("XTUN").context("XTUN must name the xtun binary")?;
    let mut rows = Vec::new();
    // `--micro-only`, `--throughput-only` and `--gateway-only` run one part
    // alone, for quick comparisons while working on one side.
    let gateway_only = args.iter().any(|a| a == "--gateway-only");
    let throughput_only = gateway_only || args.iter().any(|a| a == "--throughput-only");
    let micro_only = args.iter().any(|a| a == "--micro-only");
    // `--monitor-only`: just what `xtun monitor` costs per packet.
    if args.iter().any(|a| a == "--monitor-only") {
        let mut h = Harness::new();
        h.add(GRE, TUN_IFINDEX);
        let mut out = serde_json::Map::new();
        monitor_cost(&plan, &mut h, &mut rows, &mut out)?;
        print_table(&rows);
        return Ok(());
    }
    let micro = if throughput_only {
        json!({})
    } else {
        eprintln!("bench: per-packet cost (BPF_PROG_TEST_RUN)...");
        micro(&plan, &mut rows)?
    };
    let (tput, control, narrow) = if micro_only || gateway_only {
        (json!({}), json!({}), json!({}))
    } else {
        eprintln!("bench: throughput in the seed topology...");
        let tput = throughput(&plan, &xtun, &mut rows)?;
        eprintln!("bench: TCP over a path with a 1400-byte MTU...");
        let narrow = narrow_path(&plan, &xtun, &mut rows)?;
        let control = if throughput_only {
            json!({})
        } else {
            eprintln!("bench: control plane...");
            control_plane(&plan, &xtun, &mut rows)?
        };
        (tput, control, narrow)
    };
    let gateway = if micro_only || args.iter().any(|a| a == "--throughput-only") {
        json!({})
    } else {
        eprintln!("bench: site gateway forwarding (trafgen, then XDP frames)...");
        gateway::run(quick, &xtun, &mut rows)?
    };
    let ratios = ratios(&micro, &tput);
    print_table(&rows);
    gateway::print_drops(&gateway);
    println!("\nratios (same run):");
    for (k, v) in ratios.as_object().unwrap() {
        println!("  {k:<52} {:.3}", v.as_f64().unwrap_or(f64::NAN));
    }
    if let Some(ratio) = narrow["xtun_gre_over_routed"].as_f64() {
        println!(
            "  {:<52} {ratio:.3}",
            "xtun GRE / routed, TCP over a 1400-byte path"
        );
    }
    let doc = json!({ "quick": quick, "per_packet_ns": micro, "throughput": tput, "narrow_path": narrow, "control_plane_seconds": control, "ratios": ratios, "gateway": gateway });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&doc)?,
    )?;
    println!("\nwritten: target/bench/results.json");
    Ok(())
}
