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

/// Sends `size` random bytes over TCP from `sender` to `addr`:5201 in
/// `receiver`, and checks they arrive whole (length and SHA-256).
pub fn transfer(sender: &Netns, receiver: &Netns, addr: &str, size: usize) {
    let server = format!(
        "import socket,hashlib\n\
s=socket.socket();s.settimeout(90);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('{addr}',5201));s.listen(1)\n\
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
    let srv = Command::new("ip")
        .args([
            "netns",
            "exec",
            &receiver.name,
            "/usr/bin/python3",
            "-c",
            &server,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let srv = Guard(srv);
    let sent = stdout(sender.exec(&["/usr/bin/python3", "-c", &client]).unwrap());
    let mut srv = srv;
    let mut received = String::new();
    std::io::Read::read_to_string(srv.0.stdout.as_mut().unwrap(), &mut received).unwrap();
    assert_eq!(received, sent, "transfer to {addr}");
    assert!(sent.starts_with(&format!("{size} ")), "{sent}");
}
