//! Helpers for the tests that drive the real `xtun` binary in namespaces:
//! running it, pinging, capturing, and guards that kill what a test spawned
//! even when the test fails.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{mpsc, Mutex, MutexGuard, OnceLock},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tunnel_userspace::testbed::{Netns, SeedTopology};

/// The `xtun` binary cargo builds beside the test and bench executables:
/// `target/<profile>/xtun` for `target/<profile>/deps/<test>`, the file a
/// test's `env!("CARGO_BIN_EXE_xtun")` names (a library has no such
/// variable).
pub fn xtun_binary() -> &'static str {
    static PATH: OnceLock<String> = OnceLock::new();
    PATH.get_or_init(|| {
        let exe = std::env::current_exe().expect("the test executable's path");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("a test executable under target/<profile>/deps")
            .join("xtun");
        assert!(
            bin.is_file(),
            "no xtun binary at {} (cargo builds it for integration tests and benches)",
            bin.display()
        );
        bin.into_os_string()
            .into_string()
            .expect("a UTF-8 target directory")
    })
}

pub fn stdout(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The words of `line`: an argument list written as one string.
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The standard output of a process that must have exited 0 (its
/// standard error says why not).
pub fn succeeded(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(out)
}

/// The words of `line` run in `ns`, which must succeed; its standard
/// output.
pub fn exec_line(ns: &Netns, line: &str) -> String {
    stdout(ns.exec(&words(line)).unwrap())
}

/// `xtun ARGS` in `ns`, which must succeed; its standard output.
pub fn xtun(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec![xtun_binary()];
    full.extend_from_slice(args);
    stdout(ns.exec(&full).unwrap())
}

/// `xtun` with the words of `line` in `ns`, which must succeed; its
/// standard output.
pub fn xtun_line(ns: &Netns, line: &str) -> String {
    xtun(ns, &words(line))
}

/// `xtun` with the words of `line` in `ns`, whatever happens.
pub fn try_xtun_line(ns: &Netns, line: &str) -> Output {
    let mut full = vec![xtun_binary()];
    full.extend(words(line));
    ns.try_exec(&full).unwrap()
}

/// A data-plane counter summed over every interface of `xtun -j stats`.
pub fn counter(ns: &Netns, name: &str) -> u64 {
    xtun_json(ns, &["stats"])
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["counters"][name].as_u64().unwrap_or(0))
        .sum()
}

/// `xtun -j ARGS` in `ns`, parsed.
pub fn xtun_json(ns: &Netns, args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let text = xtun(ns, &full);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"))
}

/// The entry of `xtun -j status`'s interfaces named `dev`.
pub fn status_of(ns: &Netns, dev: &str) -> Value {
    let status = xtun_json(ns, &["status"]);
    status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["ifname"] == dev)
        .unwrap_or_else(|| panic!("{dev} not in {status}"))
        .clone()
}

/// Serializes the tests that push bulk traffic or count every packet.
pub fn heavy_traffic() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A child process killed (and reaped) on drop.
pub struct Guard(Option<Child>);

impl Guard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is still guarded")
    }

    /// Waits for the child to finish by itself and returns its output.
    pub fn wait_with_output(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts `args` in `ns`, its output piped; killed when the guard drops.
pub fn spawn_in(ns: &Netns, args: &[&str]) -> Guard {
    Guard::new(
        Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// `ping -c COUNT` at 5 per second with `extra` options; its output.
pub fn ping_with(ns: &Netns, dst: &str, count: u32, extra: &[&str]) -> String {
    let count = count.to_string();
    let mut args = vec!["ping", "-c", &count, "-i", "0.2", "-W", "2"];
    args.extend_from_slice(extra);
    args.push(dst);
    stdout(ns.try_exec(&args).unwrap())
}

/// `ping -c COUNT` at 5 per second; its output.
pub fn ping(ns: &Netns, dst: &str, count: u32) -> String {
    ping_with(ns, dst, count, &[])
}

/// Waits for a ping of `count` echoes started with `spawn_in`, and checks
/// that every one was answered.
pub fn assert_all_answered(ping: Guard, count: u32) {
    let out = stdout(ping.wait_with_output());
    assert!(
        out.contains(&format!(
            "{count} packets transmitted, {count} received, 0% packet loss"
        )),
        "{out}"
    );
}

/// "N received" from ping's summary.
pub fn received(out: &str) -> u32 {
    out.split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ping summary in {out}"))
}

/// Waits until `f` holds, for at most five seconds; returns whether it held.
pub fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Polls `value` until it equals `expected` (five seconds at most), then
/// checks it once more after a short while, so that a value that would
/// overshoot is caught too; returns the last value read.
pub fn settles_at(expected: u64, mut value: impl FnMut() -> u64) -> u64 {
    eventually(|| value() >= expected);
    thread::sleep(Duration::from_millis(100));
    value()
}

/// A counter of the kernel's SNMP tables in `ns`: `table` is the line
/// prefix of /proc/net/snmp or /proc/net/netstat (`Icmp:`, `TcpExt:`), or
/// a name of /proc/net/snmp6 (`Icmp6InEchos`).
pub fn snmp(ns: &Netns, table: &str, name: &str) -> u64 {
    if table == "snmp6" {
        let text = stdout(ns.exec(&["cat", "/proc/net/snmp6"]).unwrap());
        return text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in snmp6"));
    }
    let file = if table == "TcpExt:" || table == "IpExt:" {
        "/proc/net/netstat"
    } else {
        "/proc/net/snmp"
    };
    let text = stdout(ns.exec(&["cat", file]).unwrap());
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(table)).collect();
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    let values: Vec<&str> = lines[1].split_whitespace().collect();
    let i = names
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no {table} {name}"));
    values[i].parse().unwrap()
}

/// Runs a Python script in `ns`, which must succeed; its standard output.
pub fn python(ns: &Netns, script: &str) -> String {
    succeeded(ns.try_exec(&["/usr/bin/python3", "-c", script]).unwrap())
}

/// Runs a scapy script in `ns`, which must succeed.
pub fn scapy(ns: &Netns, script: &str) {
    python(ns, &format!("from scapy.all import *\n{script}"));
}

/// Ids of the xtun programs attached in a namespace.
pub fn attached_program_ids(ns: &Netns) -> Vec<String> {
    let links = stdout(ns.exec(&["ip", "-d", "link", "show"]).unwrap());
    let mut ids: Vec<String> = links
        .split("prog/xdp id ")
        .skip(1)
        .filter_map(|s| s.split_whitespace().next().map(str::to_owned))
        .collect();
    for dev in ["v1", "v2", "tun1", "tun2"] {
        for hook in ["ingress", "egress"] {
            let out = ns
                .try_exec(&["tc", "filter", "show", "dev", dev, hook])
                .unwrap();
            let text = stdout(out);
            ids.extend(
                text.split(" id ")
                    .skip(1)
                    .filter_map(|s| s.split_whitespace().next().map(str::to_owned)),
            );
        }
    }
    ids
}

/// Whether the kernel still holds the BPF object (`prog` or `map`) `id`;
/// bpftool must be installed (`cargo xtask setup` installs it), or the
/// answer would be a vacuous "no".
pub fn bpf_object_exists(kind: &str, id: &str) -> bool {
    let out = Command::new("bpftool")
        .args([kind, "show", "id", id])
        .output()
        .expect("bpftool is needed to see which BPF objects the kernel holds");
    out.status.success()
}

pub fn program_exists(id: &str) -> bool {
    bpf_object_exists("prog", id)
}

/// A tcpdump writing a pcap in a namespace; stopped on drop.
pub struct Capture {
    child: Child,
    path: PathBuf,
}

impl Capture {
    /// Starts tcpdump and returns once it says it is listening.
    pub fn start(ns: &Netns, dev: &str, filter: &str) -> Self {
        let path = std::env::temp_dir().join(format!("{}-{dev}.pcap", ns.name));
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "tcpdump",
                "-i",
                dev,
                "-nn",
                "--immediate-mode",
                "-U",
                "-w",
            ])
            .arg(&path)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        // tcpdump prints "listening on" once its filter is in place.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("tcpdump did not start listening");
        Self { child, path }
    }

    /// Packets written to the capture file so far.
    fn packets(&self) -> usize {
        let Ok(pcap) = std::fs::read(&self.path) else {
            return 0;
        };
        let big_endian = pcap.starts_with(&[0xa1, 0xb2]);
        let mut at = 24;
        let mut n = 0;
        while at + 16 <= pcap.len() {
            let len: [u8; 4] = pcap[at + 8..at + 12].try_into().unwrap();
            let len = if big_endian {
                u32::from_be_bytes(len)
            } else {
                u32::from_le_bytes(len)
            };
            at += 16 + len as usize;
            n += 1;
        }
        n
    }

    /// Waits until `expected` packets are captured (five seconds at most),
    /// stops the capture and decodes it with tshark: one line per packet,
    /// the requested fields separated by `;`, repeated fields (outer and
    /// inner IP) joined by `,`.
    pub fn decode(mut self, expected: usize, fields: &[&str]) -> Vec<String> {
        eventually(|| self.packets() >= expected);
        // SIGINT lets tcpdump flush what it has captured.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let mut cmd = Command::new("tshark");
        cmd.args(["-r"]).arg(&self.path);
        cmd.args([
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-E",
            "separator=;",
            "-E",
            "aggregator=,",
        ]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().expect("tshark");
        assert!(
            out.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(out).lines().map(str::to_owned).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `size` random bytes over TCP from `sender` to `addr`:5201 in
/// `receiver`, and checks they arrive whole (length and SHA-256).
pub fn transfer(sender: &Netns, receiver: &Netns, addr: &str, size: usize) {
    let server = format!(
        "import socket,hashlib\n\
s=socket.socket(socket.AF_INET6 if ':' in '{addr}' else socket.AF_INET);s.settimeout(90);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{addr}',5201));s.listen(1)\n\
c,_=s.accept();c.settimeout(90);h=hashlib.sha256();n=0\n\
while True:\n d=c.recv(1<<16)\n if not d: break\n h.update(d);n+=len(d)\n\
print(n,h.hexdigest())"
    );
    let client = format!(
        "import socket,hashlib,os,time\n\
data=os.urandom({size})\n\
for i in range(50):\n try:\n  c=socket.create_connection(('{addr}',5201),timeout=90);break\n except OSError: time.sleep(0.1)\n\
c.sendall(data);c.close();print(len(data),hashlib.sha256(data).hexdigest())"
    );
    let srv = spawn_in(receiver, &["/usr/bin/python3", "-c", &server]);
    let sent = stdout(sender.exec(&["/usr/bin/python3", "-c", &client]).unwrap());
    let received = stdout(srv.wait_with_output());
    assert_eq!(received, sent, "transfer to {addr}");
    assert!(sent.starts_with(&format!("{size} ")), "{sent}");
}

/// `local/128` on `dev` in each namespace, and a route to the other's
/// address through it: IPv6 inside a tunnel.
pub fn address_ipv6(sides: [(&Netns, &str, &str); 2]) {
    for (i, (ns, dev, local)) in sides.iter().enumerate() {
        let peer = sides[1 - i].2;
        ns.exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{local}/128"),
            "dev",
            dev,
            "nodad",
        ])
        .unwrap();
        ns.exec(&[
            "ip",
            "-6",
            "route",
            "add",
            &format!("{peer}/128"),
            "dev",
            dev,
        ])
        .unwrap();
    }
}

/// The seed's IPv6 addresses inside its tunnels: fd00:100::10 on tun1 in
/// `ns1`, fd00:200::10 on tun2 in `ns2`, each routed to the other.
pub fn address_tunnels_ipv6(ns1: &Netns, ns2: &Netns) {
    address_ipv6([(ns1, "tun1", "fd00:100::10"), (ns2, "tun2", "fd00:200::10")]);
}

/// One side of the walkthrough: a GRE tunnel `name` with `extra` options,
/// up and addressed like the seed's (tun1 10.10.100.10, tun2 10.10.200.10).
pub fn add_side(ns: &Netns, name: &str, remote: &str, local: &str, extra: &[&str]) {
    let mut args = vec![
        xtun_binary(),
        "tunnel",
        "add",
        name,
        "mode",
        "gre",
        "remote",
        remote,
        "local",
        local,
    ];
    args.extend_from_slice(extra);
    ns.exec(&args).unwrap();
    let (addr, peer) = if name == "tun1" {
        ("10.10.100.10", "10.10.200.10")
    } else {
        ("10.10.200.10", "10.10.100.10")
    };
    SeedTopology::bring_up(ns, name, addr, peer).unwrap();
}

/// `xtun tunnel show NAME` prints `shown`, and the interface has `mtu`.
pub fn assert_shown_with_mtu(ns: &Netns, name: &str, shown: &str, mtu: u32) {
    let out = stdout(ns.exec(&[xtun_binary(), "tunnel", "show", name]).unwrap());
    assert_eq!(out, shown);
    let link = stdout(ns.exec(&["ip", "-o", "link", "show", name]).unwrap());
    assert!(link.contains(&format!("mtu {mtu} ")), "{link}");
}

/// 16 MiB of random bytes from ns1 to ns2 through the tunnel, with sha256
/// compared on both ends (TCP with GSO/GRO across encap and decap).
pub fn transfer_16mib(topo: &SeedTopology) {
    let _heavy = heavy_traffic();
    transfer(&topo.ns1, &topo.ns2, "10.10.200.10", 16 << 20);
}
