//! A VM running Debian's kernel, with ip_gre, ipip, sit, ip6_gre and
//! ip6_tunnel loaded, as the peer of xtun: its assets (found where `cargo xtask setup` unpacks them),
//! the initramfs the test builds from installed Debian packages, and the VM
//! itself, driven over its serial console.
//!
//! Nothing here skips: a missing piece fails with what to run.

use std::{
    collections::BTreeSet,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        mpsc::{self, Receiver, RecvTimeoutError},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use tunnel_userspace::testbed::Netns;

/// The VM's /init.
const INIT: &str = include_str!("init.sh");

/// Modules the VM needs; their dependencies come from each module's own
/// `depends=` and are loaded first.
const MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "ip_gre",
    "ipip",
    "sit",
    "ip6_gre",
    "ip6_tunnel",
];

/// Where `cargo xtask setup` unpacks the kernel and qemu packages.
fn vm_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop-vm/root")
}

/// The kernel, its modules and the qemu to boot them with.
pub struct Assets {
    pub kernel: PathBuf,
    /// The kernel's release, which the VM must report.
    pub release: String,
    modules: PathBuf,
    qemu: PathBuf,
    /// LD_LIBRARY_PATH and firmware directory of an unpacked qemu.
    qemu_libs: Option<PathBuf>,
    qemu_firmware: Option<PathBuf>,
}

impl Assets {
    /// The unpacked packages under target/interop-vm/root, or else an
    /// installed kernel and qemu. Panics, saying what to run, if neither.
    pub fn find() -> Self {
        let root = vm_root();
        let (kernel, release, modules) = find_kernel(&root.join("boot"), &root.join("lib/modules"))
            .or_else(|| find_kernel(Path::new("/boot"), Path::new("/lib/modules")))
            .unwrap_or_else(|| {
                panic!(
                    "interop: no Debian kernel with ip_gre, ipip and sit (looked in {} and /boot): \
                     run `cargo xtask setup` as root, which unpacks linux-image-amd64 there",
                    root.display()
                )
            });
        let unpacked = root.join("usr/bin/qemu-system-x86_64");
        let (qemu, qemu_libs, qemu_firmware) = if unpacked.exists() {
            (
                unpacked,
                Some(root.join("usr/lib/x86_64-linux-gnu")),
                Some(root.join("usr/share/qemu")),
            )
        } else {
            let found = Command::new("sh")
                .args(["-c", "command -v qemu-system-x86_64"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
                .unwrap_or_else(|| {
                    panic!(
                        "interop: no qemu-system-x86_64 (looked in {} and on PATH): run \
                         `cargo xtask setup` as root, which unpacks qemu-system-x86 there",
                        root.display()
                    )
                });
            (found, None, None)
        };
        for tool in ["/bin/busybox", "/usr/sbin/ip"] {
            assert!(
                Path::new(tool).exists(),
                "interop: {tool} is missing: run `cargo xtask setup` (busybox-static, iproute2)"
            );
        }
        assert!(
            Command::new("cpio").arg("--version").output().is_ok(),
            "interop: cpio is missing: run `cargo xtask setup`"
        );
        Self {
            kernel,
            release,
            modules,
            qemu,
            qemu_libs,
            qemu_firmware,
        }
    }

    /// Builds the initramfs in `dir`: busybox, iproute2's ip with the
    /// libraries ldd names, the modules in dependency order, and /init.
    pub fn initramfs(&self, dir: &Path) -> PathBuf {
        let stage = dir.join("initramfs");
        for d in ["bin", "sbin", "proc", "sys", "dev", "tmp", "mods"] {
            fs::create_dir_all(stage.join(d)).unwrap();
        }
        fs::copy("/bin/busybox", stage.join("bin/busybox")).unwrap();
        fs::copy("/usr/sbin/ip", stage.join("sbin/ip")).unwrap();
        for lib in shared_libraries("/usr/sbin/ip") {
            let to = stage.join(lib.strip_prefix("/").unwrap());
            fs::create_dir_all(to.parent().unwrap()).unwrap();
            // ldd names the paths the loader will open; copy what they point at.
            fs::copy(&lib, &to).unwrap_or_else(|e| panic!("copying {}: {e}", lib.display()));
        }
        let order = self.module_order();
        for (name, path) in &order {
            let to = stage.join("mods").join(format!("{name}.ko"));
            let file = path.to_string_lossy();
            if let Some(tool) = [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")]
                .iter()
                .find(|(ext, _)| file.ends_with(ext))
                .map(|(_, tool)| tool)
            {
                // busybox insmod takes plain ELF objects.
                let out = Command::new(tool).arg("-dc").arg(path).output().unwrap();
                assert!(out.status.success(), "{tool} -dc {file} failed");
                fs::write(&to, out.stdout).unwrap();
            } else {
                fs::copy(path, &to).unwrap();
            }
        }
        let names: Vec<&str> = order.iter().map(|(n, _)| n.as_str()).collect();
        fs::write(stage.join("mods/order"), names.join("\n") + "\n").unwrap();
        let init = stage.join("init");
        fs::write(&init, INIT).unwrap();
        chmod_x(&init);

        let image = dir.join("initramfs.cpio");
        let out = Command::new("sh")
            .current_dir(&stage)
            .arg("-c")
            .arg(format!(
                "find . | cpio --quiet -o -H newc > '{}'",
                image.display()
            ))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cpio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        image
    }

    /// MODULES and everything they depend on, dependencies first.
    fn module_order(&self) -> Vec<(String, PathBuf)> {
        let mut files = std::collections::HashMap::new();
        index_modules(&self.modules.join("kernel"), &mut files);
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for m in MODULES {
            visit_module(m, &files, &mut seen, &mut order);
        }
        order
    }
}

/// (vmlinuz, release, lib/modules/RELEASE) of the newest `*-amd64` kernel
/// in `boot` whose modules include ip_gre.
fn find_kernel(boot: &Path, modules: &Path) -> Option<(PathBuf, String, PathBuf)> {
    let mut found: Vec<(PathBuf, String, PathBuf)> = fs::read_dir(boot)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            let dir = modules.join(&release);
            let has_gre = ["ip_gre.ko", "ip_gre.ko.xz", "ip_gre.ko.zst"]
                .iter()
                .any(|f| dir.join("kernel/net/ipv4").join(f).exists());
            (release.ends_with("-amd64") && has_gre).then(|| (e.path(), release, dir))
        })
        .collect();
    found.sort_by(|a, b| a.1.cmp(&b.1));
    found.pop()
}

fn index_modules(dir: &Path, into: &mut std::collections::HashMap<String, PathBuf>) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = e.path();
        if path.is_dir() {
            index_modules(&path, into);
        } else if let Some(name) = e
            .file_name()
            .to_str()
            .and_then(|n| n.split(".ko").next().filter(|_| n.contains(".ko")))
        {
            into.insert(name.replace('-', "_"), path);
        }
    }
}

fn visit_module(
    name: &str,
    files: &std::collections::HashMap<String, PathBuf>,
    seen: &mut BTreeSet<String>,
    order: &mut Vec<(String, PathBuf)>,
) {
    let name = name.replace('-', "_");
    if !seen.insert(name.clone()) {
        return;
    }
    let path = files
        .get(&name)
        .unwrap_or_else(|| panic!("interop: module {name} is not in the kernel package"));
    for dep in module_depends(path) {
        visit_module(&dep, files, seen, order);
    }
    order.push((name, path.clone()));
}

/// The module's `depends=` from its .modinfo strings.
fn module_depends(path: &Path) -> Vec<String> {
    let name = path.to_string_lossy();
    let bytes = if name.ends_with(".ko") {
        fs::read(path).unwrap()
    } else {
        let tool = if name.ends_with(".xz") {
            "xz"
        } else if name.ends_with(".zst") {
            "zstd"
        } else {
            "gzip"
        };
        Command::new(tool)
            .arg("-dc")
            .arg(path)
            .output()
            .unwrap()
            .stdout
    };
    bytes
        .split(|b| *b == 0)
        .find_map(|s| s.strip_prefix(b"depends="))
        .map(|deps| {
            String::from_utf8_lossy(deps)
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The libraries (and loader) `ldd` names for a binary.
fn shared_libraries(binary: &str) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    assert!(out.status.success(), "ldd {binary} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(PathBuf::from)
        .collect()
}

fn chmod_x(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtun-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// How long the VM may take to boot to its prompt, under TCG on a busy
/// machine (it takes about 6-10 s alone).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// A running VM, killed on drop.
pub struct Vm {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    transcript: Arc<Mutex<Vec<String>>>,
    seq: u64,
}

impl Vm {
    /// Boots the VM under `ip netns exec NS`, with its NIC on a new tap in
    /// NS, and waits for its prompt.
    pub fn boot(assets: &Assets, initramfs: &Path, ns: &Netns, tap: &str, mac: &str) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]).arg(&assets.qemu);
        if let Some(fw) = &assets.qemu_firmware {
            cmd.arg("-L").arg(fw);
        }
        if let Some(libs) = &assets.qemu_libs {
            cmd.env("LD_LIBRARY_PATH", libs);
        }
        cmd.args([
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-m",
            "512",
            "-smp",
            "1",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-nodefaults",
            "-netdev",
            &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
            "-device",
            &format!("virtio-net-pci,netdev=n0,mac={mac}"),
            "-append",
            "console=ttyS0 quiet loglevel=1 panic=-1",
        ])
        .arg("-kernel")
        .arg(&assets.kernel)
        .arg("-initrd")
        .arg(initramfs)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        // SAFETY: prctl is async-signal-safe. qemu dies with the test thread
        // even when the test is killed before Drop can run (`ip netns exec`
        // execs qemu, which keeps the setting).
        unsafe {
            use std::os::unix::process::CommandExt as _;
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("starting qemu");
        let stdin = child.stdin.take().unwrap();
        let (tx, lines) = mpsc::channel();
        let transcript = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            let transcript = transcript.clone();
            thread::spawn(move || {
                for line in BufReader::new(stream).split(b'\n').map_while(Result::ok) {
                    let line = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_owned();
                    transcript.lock().unwrap().push(line.clone());
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut vm = Self {
            child,
            stdin,
            lines,
            transcript,
            seq: 0,
        };
        let start = Instant::now();
        loop {
            let line = vm.next_line(start + BOOT_TIMEOUT, "booting");
            assert!(
                !line.starts_with("@@FAIL"),
                "VM: {line}\n{}",
                vm.transcript_tail()
            );
            if let Some(release) = line.strip_prefix("@@READY ") {
                assert_eq!(release, assets.release, "the VM runs another kernel");
                eprintln!(
                    "interop: VM {release} up in {:.1} s",
                    start.elapsed().as_secs_f64()
                );
                break;
            }
        }
        vm
    }

    fn next_line(&mut self, deadline: Instant, doing: &str) -> String {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                panic!("VM: timed out {doing}\n{}", self.transcript_tail())
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait();
                panic!(
                    "VM: qemu exited ({status:?}) while {doing}\n{}",
                    self.transcript_tail()
                )
            }
        }
    }

    /// The console's last lines, for failure messages.
    pub fn transcript_tail(&self) -> String {
        let t = self.transcript.lock().unwrap();
        let from = t.len().saturating_sub(60);
        format!("--- VM console (last lines) ---\n{}", t[from..].join("\n"))
    }

    /// Runs a shell command in the VM: (exit status, output).
    pub fn sh_timeout(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        assert!(
            !cmd.contains('\n') && cmd.len() < 3000,
            "one short line: {cmd}"
        );
        self.seq += 1;
        let seq = self.seq;
        writeln!(self.stdin, "{seq} {cmd}").expect("writing to the VM's console");
        self.stdin.flush().unwrap();
        let deadline = Instant::now() + timeout;
        let begin = format!("@@BEGIN {seq}");
        while self.next_line(deadline, cmd) != begin {}
        let end = format!("@@END {seq} ");
        let mut out = String::new();
        loop {
            let line = self.next_line(deadline, cmd);
            if let Some(rc) = line.strip_prefix(&end) {
                return (rc.trim().parse().unwrap_or(-1), out);
            }
            out.push_str(&line);
            out.push('\n');
        }
    }

    pub fn sh(&mut self, cmd: &str) -> (i32, String) {
        self.sh_timeout(cmd, Duration::from_secs(60))
    }

    /// Runs a command that must succeed; returns its output.
    pub fn ok(&mut self, cmd: &str) -> String {
        let (rc, out) = self.sh(cmd);
        assert_eq!(rc, 0, "VM: `{cmd}` exited {rc}:\n{out}");
        out
    }

    /// Ends the input: the VM powers itself off. Waits for qemu to exit.
    pub fn power_off(mut self) {
        writeln!(self.stdin, "0 poweroff -f").unwrap();
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(status.success(), "qemu exited with {status}");
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("VM: did not power off\n{}", self.transcript_tail());
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // qemu runs as a child of `ip netns exec`, which execs it: the pid
        // is qemu's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on a thread inside the network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns on this thread only, with a valid namespace fd.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}
