//! The reference walkthrough over xtun: two namespaces joined through a
//! router, a GRE tunnel between them made with `xtun tunnel add`, a ping
//! through it, and a capture on the router that shows both IP headers.
//!
//! Run with `cargo xtask demo` (as root). `MODE=ipip` switches the mode.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{bail, Context as _, Result};
use tunnel_userspace::testbed::{Netns, SeedTopology};

fn xtun_path() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("XTUN") {
        return Ok(path.into());
    }
    // examples live in target/<profile>/examples/, the binary one level up.
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("xtun"))
        .context("locating the xtun binary")?;
    if !path.exists() {
        bail!(
            "{} not found; build it with `cargo build --release`",
            path.display()
        );
    }
    Ok(path)
}

fn step(ns: &Netns, label: &str, args: &[&str]) -> Result<String> {
    println!("$ ip netns exec {label} {}", args.join(" "));
    let out = ns.exec(args)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    Ok(text)
}

fn main() -> Result<()> {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "gre".into());
    let xtun = xtun_path()?;
    let xtun = xtun.to_str().context("non-UTF-8 path")?;

    println!("== Topology: ns1 (10.10.10.2) -- router -- ns2 (10.10.20.2), in fresh namespaces");
    let topo = SeedTopology::new("demo")?;
    println!(
        "   ns1 = {}, router = {}, ns2 = {}\n",
        topo.ns1.name, topo.router.name, topo.ns2.name
    );

    println!("== The walkthrough, with `xtun tunnel` in place of `ip tunnel` (mode {mode})");
    let add = |name, remote, local| {
        [
            xtun, "tunnel", "add", name, "mode", &mode, "remote", remote, "local", local,
        ]
    };
    step(&topo.ns1, "ns1", &add("tun1", "10.10.20.2", "10.10.10.2"))?;
    step(&topo.ns1, "ns1", &["ip", "l", "s", "tun1", "up"])?;
    step(
        &topo.ns1,
        "ns1",
        &[
            "ip",
            "a",
            "a",
            "10.10.100.10",
            "peer",
            "10.10.200.10",
            "dev",
            "tun1",
        ],
    )?;
    step(&topo.ns2, "ns2", &add("tun2", "10.10.10.2", "10.10.20.2"))?;
    step(&topo.ns2, "ns2", &["ip", "l", "s", "tun2", "up"])?;
    step(
        &topo.ns2,
        "ns2",
        &[
            "ip",
            "a",
            "a",
            "10.10.200.10",
            "peer",
            "10.10.100.10",
            "dev",
            "tun2",
        ],
    )?;
    step(&topo.ns1, "ns1", &[xtun, "tunnel", "show"])?;
    step(&topo.ns1, "ns1", &["ip", "-d", "link", "show", "tun1"])?;
    step(&topo.ns1, "ns1", &["ip", "route"])?;
    println!();

    println!("== Capture on the router's interface toward ns1 while pinging");
    let dir = std::env::temp_dir().join(format!("{}-capture", topo.router.name));
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join("r1.pcap");
    let pcap_str = pcap.to_str().context("non-UTF-8 path")?;
    let mut tcpdump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.router.name,
            "tcpdump",
            "-i",
            "r1",
            "-nn",
            "--immediate-mode",
            "-U",
            "-c",
            "8",
            "-w",
            pcap_str,
        ])
        .args(["ip proto 47 or ip proto 4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tcpdump")?;
    thread::sleep(Duration::from_secs(1));
    let ping = step(
        &topo.ns1,
        "ns1",
        &["ping", "-c", "4", "-i", "0.2", "10.10.200.10"],
    );
    thread::sleep(Duration::from_millis(500));
    let _ = tcpdump.kill();
    let _ = tcpdump.wait();
    let ping = ping?;
    println!("\n== What crossed the router (tcpdump -v): outer header, then inner");
    let decoded = Command::new("tcpdump")
        .args(["-nn", "-v", "-r", pcap_str])
        .output()?;
    print!("{}", String::from_utf8_lossy(&decoded.stdout));
    let _ = std::fs::remove_dir_all(&dir);

    println!("\n== Counters");
    step(&topo.ns1, "ns1", &[xtun, "-s", "tunnel", "show", "tun1"])?;
    step(&topo.ns1, "ns1", &["ip", "-s", "link", "show", "tun1"])?;

    println!("\n== Cleanup: xtun tunnel del, then the namespaces");
    step(&topo.ns1, "ns1", &[xtun, "tunnel", "del", "tun1"])?;
    step(&topo.ns2, "ns2", &[xtun, "tunnel", "del", "tun2"])?;
    drop(topo);

    if !ping.contains(" 0% packet loss") {
        bail!("the ping through the tunnel lost packets");
    }
    println!("demo ok: 4/4 replies through the xtun {mode} tunnel");
    Ok(())
}
