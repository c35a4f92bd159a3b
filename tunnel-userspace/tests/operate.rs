//! Operating xtun: the Debian package, `apply`/`export`, Prometheus metrics
//! and a fleet of hosts configured from one inventory. Needs root; every
//! network test runs in namespaces it creates.

mod common;

use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::net::{exec_line, ping_with, spawn_in, status_of, stdout, xtun_json, XTUN};
use tunnel_userspace::testbed::{unique_prefix, Lan, Netns, SeedTopology};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique_prefix(tag));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Scratch, name: &str, text: &str) -> String {
    let path = dir.0.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_debian_package_installs_and_documents_every_command() {
    let dist = workspace().join("target/dist");
    let deb = std::fs::read_dir(&dist)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap_or_else(|| panic!("no package in {}: run `cargo xtask dist`", dist.display()));
    let listing = stdout(
        Command::new("dpkg-deb")
            .arg("-c")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    for path in [
        "./usr/bin/xtun",
        "./usr/lib/systemd/system/xtun.service",
        "./usr/share/doc/xtun/copyright",
        "./etc/xtun/xtun.toml",
        "./usr/share/doc/xtun/examples/xtun.toml",
        "./usr/share/bash-completion/completions/xtun",
        "./usr/share/zsh/vendor-completions/_xtun",
        "./usr/share/fish/vendor_completions.d/xtun.fish",
        "./usr/share/man/man1/xtun.1.gz",
        "./usr/share/man/man1/xtun-apply.1.gz",
        "./usr/share/man/man1/xtun-tunnel-add.1.gz",
    ] {
        assert!(
            listing.contains(&format!(" {path}\n")),
            "{path} missing:\n{listing}"
        );
    }
    // The unit lives where systemd looks for packaged units, and nothing
    // under the legacy /lib.
    assert!(!listing.contains(" ./lib/"), "{listing}");
    // /etc/xtun/xtun.toml is a conffile: upgrades keep local edits.
    let conffiles = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .arg("conffiles")
            .output()
            .unwrap(),
    );
    assert_eq!(conffiles, "/etc/xtun/xtun.toml\n");
    let info = stdout(
        Command::new("dpkg-deb")
            .arg("-I")
            .arg(&deb)
            .output()
            .unwrap(),
    );
    assert!(info.contains(" Package: xtun\n"), "{info}");
    assert!(info.contains(" conffiles"), "{info}");
    // Installed into a scratch root, the binary runs.
    let root = Scratch::new("deb");
    let status = Command::new("dpkg")
        .arg("-x")
        .arg(&deb)
        .arg(&root.0)
        .status()
        .unwrap();
    assert!(status.success());
    let xtun = root.0.join("usr/bin/xtun");
    let version = stdout(Command::new(&xtun).arg("--version").output().unwrap());
    assert_eq!(version, format!("xtun {}\n", env!("CARGO_PKG_VERSION")));
    // The copyright file names the dual license, carries the MIT text and
    // points at the system's GPL-2.
    let copyright = std::fs::read_to_string(root.0.join("usr/share/doc/xtun/copyright")).unwrap();
    for needed in [
        "MIT OR GPL-2.0",
        "/usr/share/common-licenses/GPL-2",
        "Permission is hereby granted, free of charge",
    ] {
        assert!(copyright.contains(needed), "{needed}:\n{copyright}");
    }
    // The shipped configuration declares nothing: applying it as it is
    // plans no change.
    let shipped = root.0.join("etc/xtun/xtun.toml");
    let empty_ns = Netns::new(format!("{}-etc", unique_prefix("deb"))).unwrap();
    // The installed binary's plan for a configuration file.
    let dry_run = |ns: &Netns, file: &Path| {
        let (xtun, file) = (xtun.to_str().unwrap(), file.to_str().unwrap());
        stdout(ns.exec(&[xtun, "apply", "-f", file, "--dry-run"]).unwrap())
    };
    let plan = dry_run(&empty_ns, &shipped);
    assert!(!plan.contains("would:"), "{plan}");
    let unit = std::fs::read_to_string(root.0.join("usr/lib/systemd/system/xtun.service")).unwrap();
    for line in [
        "After=network-online.target",
        "ExecStart=/usr/bin/xtun apply -f /etc/xtun/xtun.toml",
        "ExecReload=/usr/bin/xtun apply -f /etc/xtun/xtun.toml",
        "WantedBy=multi-user.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}:\n{unit}");
    }
    // Every man page documents a command whose --help has examples, and
    // the page carries the same examples.
    let man = root.0.join("usr/share/man/man1");
    let mut pages = 0;
    for page in std::fs::read_dir(&man).unwrap().flatten() {
        let file = page.file_name().to_string_lossy().into_owned();
        let words: Vec<String> = file
            .trim_end_matches(".1.gz")
            .split('-')
            .skip(1)
            .map(String::from)
            .collect();
        let mut text = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(page.path()).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let help = stdout(
            Command::new(&xtun)
                .args(&words)
                .arg("--help")
                .output()
                .unwrap(),
        );
        assert!(
            help.contains("Example"),
            "xtun {words:?} --help has no example:\n{help}"
        );
        let first_example = help
            .lines()
            .skip_while(|l| !l.starts_with("Example"))
            .nth(1)
            .unwrap()
            .trim()
            .to_string();
        let unescaped = text.replace("\\-", "-");
        assert!(
            unescaped.contains(&first_example),
            "{file} lacks \"{first_example}\""
        );
        pages += 1;
    }
    assert!(pages >= 20, "{pages} man pages");
    // The completion scripts know the commands.
    let bash =
        std::fs::read_to_string(root.0.join("usr/share/bash-completion/completions/xtun")).unwrap();
    assert!(bash.contains("apply") && bash.contains("neigh"));
    // The example configuration is valid: a dry run in a namespace that has
    // the interface it names plans without changing anything.
    let ns = Netns::new(format!("{}-ex", unique_prefix("deb"))).unwrap();
    exec_line(&ns, "ip link add eth0 type veth peer name eth0p");
    exec_line(&ns, "ip addr add 192.0.2.1/24 dev eth0");
    exec_line(&ns, "ip link set eth0 up");
    let example = root.0.join("usr/share/doc/xtun/examples/xtun.toml");
    let plan = dry_run(&ns, &example);
    assert!(plan.contains("would: tunnel add gre1 mode gre"), "{plan}");
    assert!(
        plan.contains("would: -6 tunnel add gre6 mode ip6gre remote 2001:db8::2 "),
        "{plan}"
    );
    assert!(
        plan.contains("would: neigh add 10.30.0.0/16 lladdr 192.0.2.30 dev mgre0"),
        "{plan}"
    );
    let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
    assert!(
        !links.contains("gre1"),
        "a dry run changed nothing: {links}"
    );
}

/// `ping -c COUNT -i INTERVAL`; its output.
fn ping(ns: &Netns, dst: &str, count: u32, interval: &str) -> String {
    ping_with(ns, dst, count, &["-i", interval])
}

/// The walkthrough's two sides as apply files, with `extra` TOML lines in
/// each tunnel.
fn seed_files(dir: &Scratch, extra: &str) -> (String, String) {
    let side = |name: &str, remote: &str, local: &str, addr: &str, peer: &str| {
        format!(
            "[[tunnel]]\nname = \"{name}\"\nmode = \"gre\"\nremote = \"{remote}\"\nlocal = \"{local}\"\nup = true\naddresses = [\"{addr} peer {peer}\"]\n{extra}\n"
        )
    };
    (
        write(
            dir,
            "ns1.toml",
            &side(
                "tun1",
                "10.10.20.2",
                "10.10.10.2",
                "10.10.100.10",
                "10.10.200.10",
            ),
        ),
        write(
            dir,
            "ns2.toml",
            &side(
                "tun2",
                "10.10.10.2",
                "10.10.20.2",
                "10.10.200.10",
                "10.10.100.10",
            ),
        ),
    )
}

/// The seed topology, and in a scratch directory the apply files of its
/// GRE tunnels (`seed_files` with `extra`).
fn seed_with_files(tag: &str, extra: &str) -> (SeedTopology, Scratch, String, String) {
    let topo = SeedTopology::new(tag).unwrap();
    let dir = Scratch::new(tag);
    let (f1, f2) = seed_files(&dir, extra);
    (topo, dir, f1, f2)
}

#[test]
fn apply_converges_touches_only_differences_and_export_round_trips() {
    let (topo, dir, f1, f2) = seed_with_files("apl", "key = 5");
    // Dry run: the plan, and nothing done.
    let plan = stdout(
        topo.ns1
            .exec(&[XTUN, "apply", "-f", &f1, "--dry-run"])
            .unwrap(),
    );
    assert_eq!(
        plan,
        "would: tunnel add tun1 mode gre remote 10.10.20.2 local 10.10.10.2 ikey 5 okey 5 nocsum noseq ttl inherit tos 0x0 pmtudisc norpfilter\nwould: link set tun1 up\nwould: addr add 10.10.100.10/32 peer 10.10.200.10 dev tun1\n"
    );
    assert!(stdout(topo.ns1.exec(&[XTUN, "tunnel", "show"]).unwrap()).is_empty());
    topo.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap();
    topo.ns2.exec(&[XTUN, "apply", "-f", &f2]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 3, "0.2").contains("3 received"));
    // Twice: nothing to do, and it says so.
    let again = stdout(topo.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap());
    assert_eq!(
        again,
        format!("no changes: the namespace already matches {f1}\n")
    );
    // export, then apply of what it wrote: nothing to do.
    let exported = stdout(topo.ns1.exec(&[XTUN, "export"]).unwrap());
    let f_export = write(&dir, "export.toml", &exported);
    let round = stdout(topo.ns1.exec(&[XTUN, "apply", "-f", &f_export]).unwrap());
    assert!(round.starts_with("no changes"), "{round}\n{exported}");

    // Only what differs is touched: a second tunnel is added, a key
    // changed, then both undone. (Loss on unchanged tunnels: see
    // apply_never_disturbs_an_unchanged_tunnel.)
    let with_second = std::fs::read_to_string(&f1).unwrap()
        + "\n[[tunnel]]\nname = \"tun9\"\nmode = \"ipip\"\nremote = \"10.10.20.2\"\nlocal = \"10.10.10.2\"\n";
    // ipip and gre between the same ends do not clash: different protocols.
    let f_two = write(&dir, "two.toml", &with_second);
    let out = stdout(topo.ns1.exec(&[XTUN, "apply", "-f", &f_two]).unwrap());
    assert_eq!(
        out,
        format!("done: tunnel add tun9 mode ipip remote 10.10.20.2 local 10.10.10.2 noikey nookey nocsum noseq ttl inherit tos 0x0 pmtudisc norpfilter\napplied 1 changes from {f_two}\n")
    );
    let changed = with_second.replace("key = 5", "key = 6");
    let f_changed = write(&dir, "changed.toml", &changed);
    let out = stdout(topo.ns1.exec(&[XTUN, "apply", "-f", &f_changed]).unwrap());
    assert!(out.contains("done: tunnel change tun1 "), "{out}");
    let f_back = write(&dir, "back.toml", &std::fs::read_to_string(&f1).unwrap());
    let out = stdout(topo.ns1.exec(&[XTUN, "apply", "-f", &f_back]).unwrap());
    assert!(out.contains("done: tunnel del tun9"), "{out}");
    assert!(out.contains("done: tunnel change tun1 "), "{out}");
    assert!(ping(&topo.ns1, "10.10.200.10", 2, "0.2").contains("2 received"));

    // A file with any error changes nothing, and says where.
    let bad = std::fs::read_to_string(&f1)
        .unwrap()
        .replace("key = 5", "key = 5\nttl = 300");
    let f_bad = write(&dir, "bad.toml", &bad);
    let out = topo.ns1.try_exec(&[XTUN, "apply", "-f", &f_bad]).unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("xtun: {f_bad}:9:7: key `ttl`: invalid TTL \"300\": expected 1..255 or inherit\n")
    );
    let after = stdout(topo.ns1.exec(&[XTUN, "export"]).unwrap());
    assert_eq!(after, exported, "the bad file changed nothing");
}

#[test]
fn apply_never_disturbs_an_unchanged_tunnel() {
    let (topo, dir, f1, f2) = seed_with_files("apq", "");
    topo.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap();
    topo.ns2.exec(&[XTUN, "apply", "-f", &f2]).unwrap();
    let flood = spawn_in(
        &topo.ns1,
        &[
            "ping",
            "-c",
            "1000",
            "-i",
            "0.002",
            "-W",
            "2",
            "10.10.200.10",
        ],
    );
    thread::sleep(Duration::from_millis(200));
    // Other tunnels come, change and go; tun1 is in every file unchanged.
    let base = std::fs::read_to_string(&f1).unwrap();
    for round in 0..5 {
        let extra = format!(
            "\n[[tunnel]]\nname = \"x{round}\"\nmode = \"gre\"\nremote = \"10.10.20.{}\"\nlocal = \"10.10.10.2\"\nkey = {round}\n",
            10 + round
        );
        let with = write(&dir, &format!("with{round}.toml"), &(base.clone() + &extra));
        topo.ns1.exec(&[XTUN, "apply", "-f", &with]).unwrap();
        topo.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap();
    }
    let out = stdout(flood.wait_with_output());
    assert!(
        out.contains("1000 packets transmitted, 1000 received, 0% packet loss"),
        "{out}"
    );
}

#[test]
fn metrics_are_scraped_over_http_and_match_the_traffic() {
    let topo = SeedTopology::new("met").unwrap();
    topo.add_tunnels(XTUN, "gre", &["key", "3"]).unwrap();
    assert!(ping(&topo.ns1, "10.10.200.10", 7, "0.1").contains("7 received"));
    let port = 19_000 + (std::process::id() % 1000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let server = spawn_in(&topo.ns1, &[XTUN, "metrics", "--listen", &listen]);
    // A real HTTP client inside the namespace.
    let fetch = format!(
        "import urllib.request,time\nfor i in range(50):\n try:\n  r=urllib.request.urlopen('http://{listen}/metrics',timeout=5);break\n except OSError: time.sleep(0.1)\nassert r.status==200 and r.headers['Content-Type'].startswith('text/plain; version=0.0.4')\nprint(r.read().decode(),end='')"
    );
    let body = topo.ns1.exec(&["/usr/bin/python3", "-c", &fetch]);
    drop(server);
    let body = stdout(body.unwrap());
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"));
        match sample.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    let tun = [("tunnel", "tun1"), ("mode", "gre"), ("interface", "v1")];
    assert_eq!(value("xtun_tunnel_tx_packets_total", &tun), 7.0);
    assert_eq!(value("xtun_tunnel_rx_packets_total", &tun), 7.0);
    assert_eq!(value("xtun_tunnel_tx_bytes_total", &tun), 7.0 * 84.0);
    assert_eq!(value("xtun_tunnel_rx_errors_total", &tun), 0.0);
    assert_eq!(
        value(
            "xtun_datapath_packets_total",
            &[("interface", "v1"), ("reason", "rx_decapsulated")]
        ),
        7.0
    );
    assert_eq!(
        value(
            "xtun_datapath_packets_total",
            &[("interface", "tun1"), ("reason", "tx_encapsulated")]
        ),
        7.0
    );
    // The textfile-collector form is the same exposition.
    let text = stdout(topo.ns1.exec(&[XTUN, "stats", "--prometheus"]).unwrap());
    let again = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(again.samples.len(), scrape.samples.len());
    assert!(text.contains(
        "xtun_tunnel_tx_packets_total{tunnel=\"tun1\",mode=\"gre\",interface=\"v1\"} 7\n"
    ));
}

#[test]
fn metrics_serve_a_scrape_while_another_client_idles_and_answer_head_and_queries() {
    let topo = SeedTopology::new("metc").unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    let port = 20_000 + (std::process::id() % 1000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &topo.ns1.name,
            XTUN,
            "metrics",
            "--listen",
            &listen,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once it answers: one client connects and sends half a request, another
    // only connects; a scrape with a query string must still come back at
    // once. Then HEAD by hand, to see that no body follows the headers.
    let script = format!(
        r#"import socket,time,urllib.request,urllib.error
url='http://{listen}'
for i in range(100):
 try:
  urllib.request.urlopen(url+'/metrics',timeout=5).read();break
 except OSError: time.sleep(0.1)
half=socket.create_connection(('127.0.0.1',{port}));half.sendall(b'GET /metr')
silent=socket.create_connection(('127.0.0.1',{port}))
t=time.monotonic()
r=urllib.request.urlopen(url+'/metrics?x=1',timeout=3)
body=r.read()
took=time.monotonic()-t
assert r.status==200 and b'xtun_up 1' in body and took<1.5,(r.status,took)
h=socket.create_connection(('127.0.0.1',{port}),timeout=3)
h.sendall(b'HEAD /metrics?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
got=b''
while True:
 c=h.recv(65536)
 if not c: break
 got+=c
head,_,rest=got.partition(b'\r\n\r\n')
assert head.startswith(b'HTTP/1.1 200'),got
assert b'text/plain; version=0.0.4' in head,head
assert rest==b'',rest
try:
 urllib.request.urlopen(url+'/nope',timeout=3);assert False
except urllib.error.HTTPError as e: assert e.code==404
print('ok',end='')"#
    );
    let result = topo.ns1.exec(&["/usr/bin/python3", "-c", &script]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(stdout(result.unwrap()), "ok");
}

/// One inventory, eight hosts on one segment, a full mesh of keyed GRE.
fn host_file(hosts: &[usize], me: usize, lan: &Lan) -> String {
    let mut out = String::from("# generated from the fleet inventory\n");
    for &other in hosts.iter().filter(|&&h| h != me) {
        let (lo, hi) = (me.min(other), me.max(other));
        out.push_str(&format!(
            "\n[[tunnel]]\nname = \"to{other}\"\nmode = \"gre\"\nremote = \"{}\"\nlocal = \"{}\"\nkey = {}\nup = true\naddresses = [\"10.{}.{}.{me} peer 10.{}.{}.{other}\"]\n",
            lan.addr(other),
            lan.addr(me),
            lo * 100 + hi,
            100 + lo,
            hi,
            100 + lo,
            hi,
        ));
    }
    out
}

fn tunnel_addr(a: usize, b: usize) -> String {
    let (lo, hi) = (a.min(b), a.max(b));
    format!("10.{}.{}.{b}", 100 + lo, hi)
}

#[test]
fn a_fleet_of_eight_hosts_converges_from_one_inventory() {
    let lan = Lan::new("flt", 8, "10.79.0").unwrap();
    let dir = Scratch::new("flt");
    let apply_all = |hosts: &[usize]| -> Duration {
        let start = Instant::now();
        let mut children = Vec::new();
        for &h in hosts {
            let file = write(&dir, &format!("host{h}.toml"), &host_file(hosts, h, &lan));
            children.push(
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &lan.hosts[h].name,
                        XTUN,
                        "apply",
                        "-f",
                        &file,
                    ])
                    .stdout(Stdio::null())
                    .output()
                    .unwrap(),
            );
        }
        for out in children {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        start.elapsed()
    };
    let everyone: Vec<usize> = (0..8).collect();
    let first = apply_all(&everyone);
    let pings: BTreeMap<(usize, usize), bool> = everyone
        .iter()
        .flat_map(|&a| {
            everyone
                .iter()
                .filter(move |&&b| b > a)
                .map(move |&b| (a, b))
        })
        .map(|(a, b)| {
            let ok = ping(&lan.hosts[a], &tunnel_addr(a, b), 1, "0.2").contains("1 received");
            ((a, b), ok)
        })
        .collect();
    let failed: Vec<_> = pings.iter().filter(|(_, ok)| !**ok).collect();
    assert!(failed.is_empty(), "pairs that did not ping: {failed:?}");
    assert_eq!(pings.len(), 28);

    // Host 7 leaves the inventory: everyone re-applies, while host 0 pings
    // host 1 over their tunnel without pause.
    let flood = spawn_in(
        &lan.hosts[0],
        &[
            "ping",
            "-c",
            "400",
            "-i",
            "0.005",
            "-W",
            "2",
            &tunnel_addr(0, 1),
        ],
    );
    thread::sleep(Duration::from_millis(200));
    let remaining: Vec<usize> = (0..7).collect();
    let second = apply_all(&remaining);
    let flood = stdout(flood.wait_with_output());
    assert!(
        flood.contains("400 packets transmitted, 400 received, 0% packet loss"),
        "{flood}"
    );
    for &h in &remaining {
        let shown = stdout(lan.hosts[h].exec(&[XTUN, "tunnel", "show"]).unwrap());
        assert_eq!(shown.lines().count(), 6, "host {h}: {shown}");
        assert!(
            !shown.contains("to7:"),
            "host {h} still has a tunnel to 7: {shown}"
        );
    }
    assert!(ping(&lan.hosts[2], &tunnel_addr(2, 5), 1, "0.2").contains("1 received"));
    println!(
        "fleet: 8 hosts, 28 tunnels each way, converged in {:.2} s; 7 hosts after one left in {:.2} s",
        first.as_secs_f64(),
        second.as_secs_f64()
    );
}

/// `[[attach]]` in an apply file: an attachment changes where it
/// decapsulates when the file says so, and one the file no longer lists is
/// detached, unless a tunnel still leaves by it.
#[test]
fn apply_changes_and_removes_explicit_attachments() {
    let (topo, dir, f1, f2) = seed_with_files("apat", "");
    topo.ns1.exec(&[XTUN, "apply", "-f", &f1]).unwrap();
    let ns2 = &topo.ns2;
    exec_line(ns2, "ip link add sp0 type veth peer name sp1");
    exec_line(ns2, "ip link set sp0 up");
    let tunnel = std::fs::read_to_string(&f2).unwrap();
    let apply = |attach: &[(&str, &str)]| {
        let mut text = tunnel.clone();
        for (dev, decap) in attach {
            text += &format!("\n[[attach]]\ndev = \"{dev}\"\ndecap = \"{decap}\"\n");
        }
        let file = write(&dir, "attach.toml", &text);
        ns2.exec(&[XTUN, "apply", "-f", &file]).unwrap();
    };
    let decap = |dev: &str| status_of(ns2, dev)["decap"].clone();

    apply(&[("v2", "xdp"), ("sp0", "xdp")]);
    assert_eq!((decap("v2"), decap("sp0")), ("xdp".into(), "xdp".into()));
    assert!(ping(&topo.ns1, "10.10.200.10", 2, "0.2").contains("2 received"));
    apply(&[("v2", "tc"), ("sp0", "tc")]);
    assert_eq!((decap("v2"), decap("sp0")), ("tc".into(), "tc".into()));
    assert!(ping(&topo.ns1, "10.10.200.10", 2, "0.2").contains("2 received"));

    // Neither listed any more: sp0 is detached; v2 stays, tun2 leaves by it.
    apply(&[]);
    let interfaces = xtun_json(ns2, &["status"])["interfaces"].clone();
    let names: Vec<&str> = interfaces
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ifname"].as_str().unwrap())
        .collect();
    assert!(!names.contains(&"sp0"), "{interfaces}");
    assert!(names.contains(&"v2"), "{interfaces}");
    let link = stdout(ns2.exec(&["ip", "-d", "link", "show", "sp0"]).unwrap());
    assert!(!link.contains("prog/xdp"), "{link}");
    let filters = stdout(
        ns2.exec(&["tc", "filter", "show", "dev", "sp0", "ingress"])
            .unwrap(),
    );
    assert_eq!(filters, "", "nothing of xtun on sp0");
    assert!(ping(&topo.ns1, "10.10.200.10", 2, "0.2").contains("2 received"));
}
