//! SIGKILL at known points: `xtun` runs under strace, which kills it on
//! entry to its Nth call of one syscall, for every call that changes
//! something (a map write, a netlink request, a sysctl or mount; for
//! `attach` and `detach`, which load programs, all but the bpf calls). Each
//! kill must leave the old state or the new one, the next command must
//! repair exactly what a kill left, and traffic that is not touched keeps
//! flowing. Also: forwarding across upgrades, changes and kills loses
//! nothing.

mod common;

use std::{os::unix::process::ExitStatusExt as _, sync::MutexGuard, thread, time::Duration};

use common::net::{
    exec_line, heavy_traffic, ping, spawn_in, stdout, words, xtun, xtun_json, xtun_line, XTUN,
};
use serde_json::Value;
use tunnel_userspace::testbed::{unique_prefix, Netns, SeedTopology};

/// The syscalls whose calls are kill points.
const TRACED: &str = "bpf,sendto,sendmsg,write,mkdir,mkdirat,mount,umount2,rmdir,unlinkat";

/// Where a kill lands: on entry to the `nth` call of `syscall`.
#[derive(Debug, Clone)]
struct KillPoint {
    syscall: String,
    nth: usize,
    call: String,
}

/// A scratch file for strace's output, removed on drop.
struct TraceFile(std::path::PathBuf);

impl TraceFile {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("{}.strace", unique_prefix("kill"))))
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `args` (an xtun command line, which must succeed) once under strace
/// and returns every call that changes something, in order.
fn kill_points(ns: &Netns, args: &[&str]) -> Vec<KillPoint> {
    let trace = TraceFile::new();
    let mut full = vec!["strace", "-f", "-qq", "-o", trace.path(), "-e"];
    let set = format!("trace={TRACED}");
    full.push(&set);
    full.extend_from_slice(args);
    let out = ns.try_exec(&full).unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    let text = std::fs::read_to_string(&trace.0).unwrap();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    let mut points = Vec::new();
    for line in text.lines() {
        // "PID name(args...) = result"; skip resumptions and signals.
        let Some(call) = line.split_once(' ').map(|(_, c)| c.trim_start()) else {
            continue;
        };
        let Some((name, rest)) = call.split_once('(') else {
            continue;
        };
        if !TRACED.split(',').any(|t| t == name) {
            continue;
        }
        let n = seen.entry(name.to_string()).or_default();
        *n += 1;
        let changes = match name {
            "bpf" => ["UPDATE", "DELETE", "LINK_", "ATTACH", "DETACH", "PIN"]
                .iter()
                .any(|w| rest.split(',').next().unwrap_or("").contains(w)),
            "write" => !rest.starts_with("1,") && !rest.starts_with("2,"),
            _ => true,
        };
        if changes {
            points.push(KillPoint {
                syscall: name.to_string(),
                nth: *n,
                call: call.chars().take(120).collect(),
            });
        }
    }
    assert!(
        points
            .iter()
            .any(|p| p.syscall == "sendto" || p.syscall == "sendmsg"),
        "{args:?}: no netlink request traced:\n{text}"
    );
    points
}

/// Runs `args` in `ns` under strace, which SIGKILLs it on entry to the
/// call `point` names. Returns the pid if it was killed, and whether the
/// call it was killed on is `point`'s (the calls before it can differ from
/// the trace's when the system changed in between).
fn kill_at(ns: &Netns, args: &[&str], point: &KillPoint) -> (Option<u32>, bool) {
    let trace = TraceFile::new();
    let set = format!("trace={}", point.syscall);
    let inject = format!("inject={}:signal=KILL:when={}", point.syscall, point.nth);
    let mut full = vec![
        "strace",
        "-f",
        "-qq",
        "-o",
        trace.path(),
        "-e",
        &set,
        "-e",
        &inject,
    ];
    full.extend_from_slice(args);
    let out = ns.try_exec(&full).unwrap();
    let killed = out.status.signal() == Some(libc::SIGKILL) || out.status.code() == Some(128 + 9);
    if !killed {
        return (None, false);
    }
    let text = std::fs::read_to_string(&trace.0).unwrap();
    let pid = text
        .split_whitespace()
        .next()
        .and_then(|pid| pid.parse().ok())
        .expect("strace names the pid");
    // The last call strace saw is the one the kill landed on.
    // bpf calls differ by command; others by name alone (their arguments
    // hold pids and descriptors).
    let what = |call: &str| match call.split_once('(') {
        Some(("bpf", args)) => format!("bpf({}", args.split(',').next().unwrap_or("")),
        Some((name, _)) => name.to_string(),
        None => call.to_string(),
    };
    let last = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, c)| c.trim_start()))
        .rfind(|c| c.starts_with(&format!("{}(", point.syscall)))
        .map(what);
    (Some(pid), last == Some(what(&point.call)))
}

/// Kills `args` at each of its kill points in turn. After every run `after`
/// checks, and repairs, what it left (it gets the point and the killed
/// pid), then `reset` brings back the state the trace was taken in. A kill
/// that missed its point is retried on a fresh trace, ten times at most.
/// Returns the points.
fn kill_at_every_point(
    ns: &Netns,
    args: &[&str],
    mut reset: impl FnMut(),
    mut after: impl FnMut(&KillPoint, Option<u32>),
) -> Vec<KillPoint> {
    kill_at_points(ns, args, |_| true, &mut reset, &mut after)
}

/// As `kill_at_every_point`, but only at the points `select` keeps.
/// Loading programs makes a number of bpf calls that depends on every BPF
/// object on the machine (aya finds maps and programs by id), so the kills
/// of `attach` and `detach` land on their netlink requests, sysctls and
/// mounts, whose number depends on this namespace alone.
fn kill_at_points(
    ns: &Netns,
    args: &[&str],
    select: impl Fn(&KillPoint) -> bool,
    reset: &mut impl FnMut(),
    after: &mut impl FnMut(&KillPoint, Option<u32>),
) -> Vec<KillPoint> {
    let traced = |ns: &Netns| -> Vec<KillPoint> {
        kill_points(ns, args)
            .into_iter()
            .filter(|p| select(p))
            .collect()
    };
    let mut points = traced(ns);
    reset();
    let first = points.clone();
    let (mut i, mut misses) = (0, 0);
    while i < points.len() {
        let (pid, landed) = kill_at(ns, args, &points[i]);
        after(&points[i], pid);
        reset();
        if landed {
            i += 1;
        } else {
            misses += 1;
            assert!(misses <= 10, "{args:?}: kills keep missing {:?}", points[i]);
            points = traced(ns);
            reset();
        }
    }
    first
}

/// Whether the maps hold what no tunnel accounts for (the entries of a
/// deleted interface, a decapsulation entry no configuration implies), or
/// a half-made pair is left: what the next command must repair.
fn left_behind(ns: &Netns) -> bool {
    let links = stdout(ns.exec(&["ip", "-o", "link", "show"]).unwrap());
    let tunnels = xtun_json(ns, &["tunnel", "show"]).as_array().unwrap().len();
    let configured = xtun_json(ns, &["map", "dump", "XTUN_TUNNELS"])["entries"]
        .as_array()
        .unwrap()
        .len();
    links.contains(": xtnew") || configured != tunnels || inconsistency(ns).is_some()
}

/// Runs `args` (an xtun command line, which must succeed) and returns
/// whether it said it repaired something.
fn repairs(ns: &Netns, args: &[&str]) -> bool {
    let out = ns.try_exec(args).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    err.contains("xtun: repaired: ")
}

/// Kill points other than bpf calls.
fn not_bpf(point: &KillPoint) -> bool {
    point.syscall != "bpf"
}

/// The command that runs `repair` without changing anything else.
const TOUCH: [&str; 6] = [XTUN, "tunnel", "change", "tun1", "ttl", "inherit"];

/// The seed topology with its GRE tunnels, for a test that must run
/// alone while the guard lives: programs loaded by the other tests here
/// change how many bpf calls come before a kill point.
fn alone_with_gre(tag: &str) -> (MutexGuard<'static, ()>, SeedTopology) {
    let alone = heavy_traffic();
    let topo = SeedTopology::new(tag).unwrap();
    topo.add_tunnels(XTUN, "gre", &[]).unwrap();
    (alone, topo)
}

/// The `xtun tunnel add` of the tunnel a kill test adds, with GRE key `key`.
fn add_tk(key: u32) -> String {
    format!("{XTUN} tunnel add tk mode gre remote 10.10.20.2 local 10.10.10.2 key {key}")
}

#[test]
fn a_killed_add_leaves_the_tunnel_whole_or_absent() {
    let (_alone, topo) = alone_with_gre("kill");
    let (ns, add_line) = (&topo.ns1, add_tk(7));
    let add = words(&add_line);
    let mut repaired = 0;
    let points = kill_at_every_point(
        ns,
        &add,
        || {
            // After a trace, the tunnel it added goes.
            let _ = ns.try_exec(&[XTUN, "tunnel", "del", "tk"]).unwrap();
        },
        |point, _| {
            let link = ns.try_exec(&["ip", "link", "show", "tk"]).unwrap();
            let shown = ns.try_exec(&[XTUN, "tunnel", "show", "tk"]).unwrap();
            // Whole or absent: the interface exists exactly when xtun knows
            // it (`show NAME` lists it; as `ip tunnel show`, it prints
            // nothing for a name it does not know).
            assert!(shown.status.success(), "{point:?}");
            assert_eq!(link.status.success(), !shown.stdout.is_empty(), "{point:?}");
            if !link.status.success() {
                // Whatever the kill left does not block a retry, which
                // repairs exactly when something was left.
                let left = left_behind(ns);
                assert_eq!(repairs(ns, &add), left, "{point:?}");
                repaired += usize::from(left);
            }
            assert!(!left_behind(ns), "{point:?}");
            xtun(ns, &["tunnel", "del", "tk"]);
            assert_eq!(xtun(ns, &["map", "dump", "XTUN_DECAP"]).lines().count(), 1);
        },
    );
    // Every map write comes after the pair is created: a kill there leaves
    // the pair under its provisional name, and the retry removes it.
    let writes = points.iter().filter(|p| p.syscall == "bpf").count();
    assert!(writes >= 3, "{points:#?}");
    assert!(repaired >= writes, "{repaired} repairs: {points:#?}");
    assert!(ping(ns, "10.10.200.10", 1).contains("1 received"));
}

/// Where the decapsulation index differs from holding exactly one entry
/// per tunnel, the one its configuration implies, and nothing else.
fn inconsistency(ns: &Netns) -> Option<String> {
    let tunnels = xtun_json(ns, &["tunnel", "show"]);
    let decap = xtun_json(ns, &["map", "dump", "XTUN_DECAP"]);
    let entries = decap["entries"].as_array().unwrap();
    let tunnels = tunnels.as_array().unwrap();
    if entries.len() != tunnels.len() {
        return Some(format!("{decap} vs {tunnels:?}"));
    }
    tunnels.iter().find_map(|t| {
        // `ip -j` prints one "key" when the receive and send keys are equal.
        let ikey = t.get("key").unwrap_or(&t["ikey"]);
        let matching = entries
            .iter()
            .filter(|e| {
                e["ifname"] == t["ifname"] && e["key"] == *ikey && e["remote"] == t["remote"]
            })
            .count();
        (matching != 1).then(|| format!("{t} in {decap}"))
    })
}

fn assert_maps_consistent(ns: &Netns, what: &str) {
    if let Some(differs) = inconsistency(ns) {
        panic!("{what}: {differs}");
    }
}

#[test]
fn forwarding_loses_nothing_during_upgrades_changes_and_kills() {
    // A bulk transfer in another test shares the CPUs' receive backlogs;
    // the exact-loss count is only meaningful without one.
    let _heavy = heavy_traffic();
    let topo = SeedTopology::new("flood").unwrap();
    // ns2 decapsulates in XDP, ns1 in tc: both kinds of attachment get replaced.
    xtun_line(&topo.ns2, "attach v2 --decap xdp");
    topo.add_tunnels(XTUN, "gre", &["key", "5"]).unwrap();
    let status = |ns: &Netns| xtun_json(ns, &["status"]);
    let ids = |doc: &Value| -> Vec<u64> {
        doc["programs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_u64().unwrap())
            .collect()
    };
    let before = (ids(&status(&topo.ns1)), ids(&status(&topo.ns2)));

    // 3,000 pings at 1,000 per second through the tunnel while everything happens.
    let flood = spawn_in(
        &topo.ns1,
        &["ping", "-i", "0.001", "-c", "3000", "-q", "10.10.200.10"],
    );
    thread::sleep(Duration::from_millis(300));
    for ns in [&topo.ns1, &topo.ns2] {
        let out = stdout(ns.exec(&[XTUN, "upgrade"]).unwrap());
        assert!(out.starts_with("upgraded "), "{out}");
    }
    for k in 1..=5 {
        topo.ns1
            .exec(&[
                XTUN,
                "tunnel",
                "add",
                &format!("tx{k}"),
                "mode",
                "ipip",
                "remote",
                &format!("10.10.20.{}", 10 + k),
                "local",
                "10.10.10.2",
            ])
            .unwrap();
    }
    // An add killed halfway through its map writes, then repaired.
    let add9_line = format!("{XTUN} tunnel add tx9 mode gre remote 10.10.20.9 local 10.10.10.2");
    let add9: Vec<&str> = add9_line.split(' ').collect();
    let points = kill_points(&topo.ns1, &add9);
    xtun(&topo.ns1, &["tunnel", "del", "tx9"]);
    let writes: Vec<&KillPoint> = points.iter().filter(|p| p.syscall == "bpf").collect();
    let (pid, _) = kill_at(&topo.ns1, &add9, writes[writes.len() / 2]);
    assert!(pid.is_some(), "the add was killed");
    let out = topo.ns1.try_exec(&add9).unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xtun: repaired: "),
        "{out:?}"
    );
    xtun(&topo.ns1, &["tunnel", "del", "tx9"]);
    for k in 1..=5 {
        topo.ns1
            .exec(&[XTUN, "tunnel", "del", &format!("tx{k}")])
            .unwrap();
    }
    xtun_line(&topo.ns1, "upgrade");

    let flood = stdout(flood.wait_with_output());
    assert!(
        flood.contains("3000 packets transmitted, 3000 received"),
        "{flood}"
    );
    let after = (status(&topo.ns1), status(&topo.ns2));
    assert_ne!(ids(&after.0), before.0, "new programs in ns1");
    assert_ne!(ids(&after.1), before.1, "new programs in ns2");
    assert_eq!(ids(&after.1).len(), 2, "XDP and tc in ns2: {}", after.1);
    for doc in [&after.0, &after.1] {
        assert_eq!(doc["build_matches"], true);
    }
    // The tunnel and its counters survived: 3,000+ each way.
    let shown = stdout(
        topo.ns1
            .exec(&[XTUN, "-s", "-j", "tunnel", "show", "tun1"])
            .unwrap(),
    );
    let doc: Value = serde_json::from_str(&shown).unwrap();
    assert!(
        doc[0]["stats"]["tx"]["packets"].as_u64().unwrap() >= 3000,
        "{doc}"
    );
}

/// SIGKILL at every point of `change`, `del`, `attach` and `detach`: each
/// leaves the old state or the new one, the next command repairs exactly
/// what a kill left in the maps, and the tunnel that is not touched keeps
/// working.
#[test]
fn killed_changes_deletes_and_attachments_leave_a_consistent_state() {
    let (_alone, topo) = alone_with_gre("kil2");
    let (ns, add_line) = (&topo.ns1, add_tk(100));
    let add = words(&add_line);
    xtun(ns, &add[1..]);
    let mut repaired = 0;

    // A second tunnel changed under a kill: old key or new, and a decap
    // entry the kill left is repaired by the next command.
    let change = [XTUN, "tunnel", "change", "tk", "key", "200"];
    kill_at_every_point(
        ns,
        &change,
        || {
            xtun(ns, &["tunnel", "change", "tk", "key", "100"]);
        },
        |point, _| {
            let shown = xtun(ns, &["tunnel", "show", "tk"]);
            assert!(
                shown.ends_with(" key 100\n") || shown.ends_with(" key 200\n"),
                "old or new key at {point:?}: {shown}"
            );
            let left = left_behind(ns);
            assert_eq!(repairs(ns, &TOUCH), left, "{point:?}");
            repaired += usize::from(left);
            assert_maps_consistent(ns, &format!("change killed at {point:?}"));
            assert!(
                ping(ns, "10.10.200.10", 1).contains("1 received"),
                "{point:?}"
            );
        },
    );

    // Deleted under a kill: the interface goes first, and map entries the
    // kill left are repaired by the next command.
    let del = [XTUN, "tunnel", "del", "tk"];
    kill_at_every_point(
        ns,
        &del,
        || assert!(!repairs(ns, &add)),
        |point, _| {
            let gone = !ns
                .try_exec(&["ip", "link", "show", "tk"])
                .unwrap()
                .status
                .success();
            let left = left_behind(ns);
            if gone {
                assert_eq!(repairs(ns, &TOUCH), left, "{point:?}");
                repaired += usize::from(left);
            } else {
                assert!(!left, "{point:?}");
                assert!(!repairs(ns, &del), "{point:?}");
            }
            assert_maps_consistent(ns, &format!("del killed at {point:?}"));
            assert!(
                ping(ns, "10.10.200.10", 1).contains("1 received"),
                "{point:?}"
            );
        },
    );
    assert!(repaired > 0, "no kill left anything to repair");

    // Switching where the other side's underlay decapsulates, killed at
    // every point each way: the next attach always completes it.
    let ns2 = &topo.ns2;
    for (from, to) in [("tc", "xdp"), ("xdp", "tc")] {
        // One switch each way first: the first load of a program makes
        // calls that later switches do not, and the trace must show the
        // calls the killed runs make.
        for decap in [from, to, from] {
            xtun(ns2, &["attach", "v2", "--decap", decap]);
        }
        let switch = [XTUN, "attach", "v2", "--decap", to];
        kill_at_points(
            ns2,
            &switch,
            not_bpf,
            &mut || {
                xtun(ns2, &["attach", "v2", "--decap", from]);
            },
            &mut |point, _| {
                xtun(ns2, &switch[1..]);
                let v2 = common::net::status_of(ns2, "v2");
                assert_eq!(v2["decap"], to, "{point:?}: {v2}");
                assert!(
                    ping(ns, "10.10.200.10", 1).contains("1 received"),
                    "{point:?}"
                );
            },
        );
    }

    // A spare interface attached under kills: a detach after each kill
    // leaves nothing of xtun on it.
    spare_interface(ns2);
    let (attach, detach) = SPARE;
    xtun(ns2, &attach[1..]);
    xtun(ns2, &detach[1..]);
    let mut killed = Vec::new();
    kill_at_points(
        ns2,
        &attach,
        not_bpf,
        &mut || {
            let _ = ns2.try_exec(&detach).unwrap();
        },
        &mut |point, pid| {
            killed.extend(pid);
            let _ = ns2.try_exec(&detach).unwrap();
            assert_spare_clean(ns2, &format!("attach killed at {point:?}"));
            assert!(
                ping(ns, "10.10.200.10", 1).contains("1 received"),
                "{point:?}"
            );
        },
    );
    // A load killed halfway leaves an empty mount-point directory (its
    // private bpffs died with it); the next load removes it.
    xtun(ns2, &attach[1..]);
    let left: Vec<u32> = killed
        .into_iter()
        .filter(|pid| {
            std::env::temp_dir()
                .join(format!("xtun-bpffs-{pid}"))
                .exists()
        })
        .collect();
    assert_eq!(left, Vec::<u32>::new());
}

/// `xtun attach` and `detach` of the spare interface `spare_interface` makes.
const SPARE: ([&str; 5], [&str; 3]) = (
    [XTUN, "attach", "sp0", "--decap", "xdp"],
    [XTUN, "detach", "sp0"],
);

/// A spare veth end, sp0, up in `ns`.
fn spare_interface(ns: &Netns) {
    exec_line(ns, "ip link add sp0 type veth peer name sp1");
    exec_line(ns, "ip link set sp0 up");
}

/// Nothing of xtun is left on sp0: no XDP program, no tc filter.
fn assert_spare_clean(ns: &Netns, what: &str) {
    let link = stdout(ns.exec(&["ip", "-d", "link", "show", "sp0"]).unwrap());
    assert!(!link.contains("prog/xdp"), "{what}: {link}");
    let filters = stdout(
        ns.exec(&["tc", "filter", "show", "dev", "sp0", "ingress"])
            .unwrap(),
    );
    assert!(!filters.contains("xtun"), "{what}: {filters}");
}

/// A detach killed at each of its points, then run again, leaves nothing of
/// xtun on the interface.
#[test]
fn a_killed_detach_run_again_leaves_nothing_on_the_interface() {
    let (_alone, topo) = alone_with_gre("kil3");
    let ns2 = &topo.ns2;
    spare_interface(ns2);
    let (attach, detach) = SPARE;
    xtun(ns2, &attach[1..]);
    kill_at_points(
        ns2,
        &detach,
        not_bpf,
        &mut || {
            xtun(ns2, &attach[1..]);
        },
        &mut |point, _| {
            let _ = ns2.try_exec(&detach).unwrap();
            assert_spare_clean(ns2, &format!("detach killed at {point:?}"));
            assert!(
                ping(&topo.ns1, "10.10.200.10", 1).contains("1 received"),
                "{point:?}"
            );
        },
    );
}
