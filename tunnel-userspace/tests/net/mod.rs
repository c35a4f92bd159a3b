//! Helpers for the tests that drive the real `xtun` binary in namespaces.
#![allow(dead_code, reason = "each user takes what it needs")]

use std::{
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use tunnel_userspace::testbed::Netns;

pub const XTUN: &str = env!("CARGO_BIN_EXE_xtun");

pub fn stdout(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A child process killed (and reaped) on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `args` in `ns`, its output piped; killed when the guard drops.
pub fn spawn_in(ns: &Netns, args: &[&str]) -> Guard {
    Guard(
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
