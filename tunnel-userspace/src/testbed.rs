//! Throw-away network namespaces for the demo, the tests and the benchmarks.
//!
//! Everything is created inside namespaces with unique names, and removed
//! when the value is dropped, so a failing test still cleans up. Removing a
//! namespace removes its interfaces, and with them every attachment.

use std::{
    io,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique prefix for this process's namespaces.
pub fn unique_prefix(tag: &str) -> String {
    format!(
        "xt{tag}{}n{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and fails with its stderr if it exits nonzero.
pub fn run(args: &[&str]) -> io::Result<Output> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "`{}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> io::Result<Self> {
        run(&["ip", "netns", "add", &name])?;
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip netns exec NAME args…`, failing on a nonzero exit.
    pub fn exec(&self, args: &[&str]) -> io::Result<Output> {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    /// `ip netns exec NAME args…`, returning whatever happened.
    pub fn try_exec(&self, args: &[&str]) -> io::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The reference topology: ns1 (v1 10.10.10.2/24) — router (10.10.10.1,
/// 10.10.20.1, forwarding) — ns2 (v2 10.10.20.2/24), with routes between
/// ns1 and ns2 through the router.
pub struct SeedTopology {
    pub ns1: Netns,
    pub ns2: Netns,
    pub router: Netns,
}

impl SeedTopology {
    pub const NS1_ADDR: &'static str = "10.10.10.2";
    pub const NS2_ADDR: &'static str = "10.10.20.2";

    pub fn new(tag: &str) -> io::Result<Self> {
        let prefix = unique_prefix(tag);
        let topo = Self {
            ns1: Netns::new(format!("{prefix}-ns1"))?,
            ns2: Netns::new(format!("{prefix}-ns2"))?,
            router: Netns::new(format!("{prefix}-rt"))?,
        };
        let (n1, n2, r) = (&topo.ns1.name, &topo.ns2.name, &topo.router.name);
        run(&[
            "ip", "link", "add", "v1", "netns", n1, "type", "veth", "peer", "name", "r1", "netns",
            r,
        ])?;
        run(&[
            "ip", "link", "add", "v2", "netns", n2, "type", "veth", "peer", "name", "r2", "netns",
            r,
        ])?;
        topo.ns1
            .exec(&["ip", "addr", "add", "10.10.10.2/24", "dev", "v1"])?;
        topo.ns1.exec(&["ip", "link", "set", "v1", "up"])?;
        topo.ns1
            .exec(&["ip", "route", "add", "10.10.20.0/24", "via", "10.10.10.1"])?;
        topo.ns2
            .exec(&["ip", "addr", "add", "10.10.20.2/24", "dev", "v2"])?;
        topo.ns2.exec(&["ip", "link", "set", "v2", "up"])?;
        topo.ns2
            .exec(&["ip", "route", "add", "10.10.10.0/24", "via", "10.10.20.1"])?;
        topo.router
            .exec(&["ip", "addr", "add", "10.10.10.1/24", "dev", "r1"])?;
        topo.router
            .exec(&["ip", "addr", "add", "10.10.20.1/24", "dev", "r2"])?;
        topo.router.exec(&["ip", "link", "set", "r1", "up"])?;
        topo.router.exec(&["ip", "link", "set", "r2", "up"])?;
        topo.router
            .exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for ns in [&topo.ns1, &topo.ns2] {
            // As strict as a careful host: tunnel traffic must pass rp_filter.
            ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])?;
        }
        Ok(topo)
    }

    /// Brings up the walkthrough's tunnel on both sides with `xtun` at
    /// `xtun_path`; `extra` goes after `mode M remote … local …`.
    pub fn add_tunnels(&self, xtun_path: &str, mode: &str, extra: &[&str]) -> io::Result<()> {
        add_walkthrough_tunnels(&self.ns1, &self.ns2, xtun_path, mode, extra)
    }

    /// Another link from ns1 to the router: `dev` in ns1 with `{net}.2/24`,
    /// `peer` in the router with `{net}.1/24`, both up.
    pub fn link_ns1_to_router(&self, dev: &str, peer: &str, net: &str) -> io::Result<()> {
        run(&[
            "ip",
            "link",
            "add",
            dev,
            "netns",
            &self.ns1.name,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            &self.router.name,
        ])?;
        for (ns, name, host) in [(&self.ns1, dev, 2), (&self.router, peer, 1)] {
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{net}.{host}/24"),
                "dev",
                name,
            ])?;
            ns.exec(&["ip", "link", "set", name, "up"])?;
        }
        Ok(())
    }

    /// `ip link set NAME up` and `ip addr add ADDR peer PEER dev NAME`.
    pub fn bring_up(ns: &Netns, name: &str, addr: &str, peer: &str) -> io::Result<()> {
        ns.exec(&["ip", "link", "set", name, "up"])?;
        ns.exec(&["ip", "addr", "add", addr, "peer", peer, "dev", name])?;
        Ok(())
    }
}

/// The walkthrough with two routers whose link to each other has a smaller
/// MTU (on both ends), as a real path often does: ns1 - rt1 - rt2 - ns2,
/// 10.10.10.0/24, 10.10.15.0/24 (the narrow link) and 10.10.20.0/24.
pub struct NarrowPath {
    pub ns1: Netns,
    pub ns2: Netns,
    pub rt1: Netns,
    pub rt2: Netns,
}

impl NarrowPath {
    pub fn new(tag: &str, mtu: u32) -> io::Result<Self> {
        let prefix = unique_prefix(tag);
        let path = Self {
            ns1: Netns::new(format!("{prefix}-ns1"))?,
            ns2: Netns::new(format!("{prefix}-ns2"))?,
            rt1: Netns::new(format!("{prefix}-r1"))?,
            rt2: Netns::new(format!("{prefix}-r2"))?,
        };
        let links = [
            (&path.ns1, "v1", "10.10.10.2", &path.rt1, "r1", "10.10.10.1"),
            (&path.rt1, "n1", "10.10.15.1", &path.rt2, "n2", "10.10.15.2"),
            (&path.rt2, "r2", "10.10.20.1", &path.ns2, "v2", "10.10.20.2"),
        ];
        for (a, a_dev, a_addr, b, b_dev, b_addr) in links {
            run(&[
                "ip", "link", "add", a_dev, "netns", &a.name, "type", "veth", "peer", "name",
                b_dev, "netns", &b.name,
            ])?;
            for (ns, dev, addr) in [(a, a_dev, a_addr), (b, b_dev, b_addr)] {
                ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev])?;
                ns.exec(&["ip", "link", "set", dev, "up"])?;
            }
        }
        for dev in [(&path.rt1, "n1"), (&path.rt2, "n2")] {
            dev.0
                .exec(&["ip", "link", "set", dev.1, "mtu", &mtu.to_string()])?;
        }
        for (ns, dst, via) in [
            (&path.ns1, "default", "10.10.10.1"),
            (&path.ns2, "default", "10.10.20.1"),
            (&path.rt1, "10.10.20.0/24", "10.10.15.2"),
            (&path.rt2, "10.10.10.0/24", "10.10.15.1"),
        ] {
            ns.exec(&["ip", "route", "add", dst, "via", via])?;
        }
        for rt in [&path.rt1, &path.rt2] {
            rt.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        }
        for ns in [&path.ns1, &path.ns2] {
            ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])?;
        }
        Ok(path)
    }

    /// The walkthrough's tunnels over the path, as `SeedTopology::add_tunnels`.
    pub fn add_tunnels(&self, xtun_path: &str, mode: &str, extra: &[&str]) -> io::Result<()> {
        add_walkthrough_tunnels(&self.ns1, &self.ns2, xtun_path, mode, extra)
    }
}

/// tun1 in ns1 (10.10.10.2, inner 10.10.100.10) and tun2 in ns2
/// (10.10.20.2, inner 10.10.200.10), each the other's remote, up and
/// addressed; `extra` goes after `mode M remote … local …`.
fn add_walkthrough_tunnels(
    ns1: &Netns,
    ns2: &Netns,
    xtun_path: &str,
    mode: &str,
    extra: &[&str],
) -> io::Result<()> {
    let sides = [
        (
            ns1,
            "tun1",
            "10.10.20.2",
            "10.10.10.2",
            "10.10.100.10",
            "10.10.200.10",
        ),
        (
            ns2,
            "tun2",
            "10.10.10.2",
            "10.10.20.2",
            "10.10.200.10",
            "10.10.100.10",
        ),
    ];
    for (ns, name, remote, local, addr, peer) in sides {
        let mut args = vec![
            xtun_path, "tunnel", "add", name, "mode", mode, "remote", remote, "local", local,
        ];
        args.extend_from_slice(extra);
        ns.exec(&args)?;
        SeedTopology::bring_up(ns, name, addr, peer)?;
    }
    Ok(())
}

/// Hosts on one shared segment: a bridge in a namespace of its own, and each
/// host's `eth0` (`{subnet}.N/24`, N from 1) plugged into it.
pub struct Lan {
    pub hosts: Vec<Netns>,
    pub switch: Netns,
    subnet: String,
}

impl Lan {
    /// `subnet` is the first three octets, e.g. "10.77.0".
    pub fn new(tag: &str, count: usize, subnet: &str) -> io::Result<Self> {
        let prefix = unique_prefix(tag);
        let switch = Netns::new(format!("{prefix}-sw"))?;
        switch.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        switch.exec(&["ip", "link", "set", "br0", "up"])?;
        let mut hosts = Vec::new();
        for i in 1..=count {
            let host = Netns::new(format!("{prefix}-h{i}"))?;
            let port = format!("p{i}");
            run(&[
                "ip",
                "link",
                "add",
                "eth0",
                "netns",
                &host.name,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &switch.name,
            ])?;
            switch.exec(&["ip", "link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{subnet}.{i}/24");
            host.exec(&["ip", "addr", "add", &addr, "dev", "eth0"])?;
            host.exec(&["ip", "link", "set", "eth0", "up"])?;
            host.exec(&["ip", "link", "set", "lo", "up"])?;
            host.exec(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])?;
            hosts.push(host);
        }
        Ok(Self {
            hosts,
            switch,
            subnet: subnet.to_string(),
        })
    }

    /// The underlay address of host `i` (from 0).
    pub fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 1)
    }
}
