//! Project tasks: `cargo xtask setup|demo|test|lint|bench|dist`.
//!
//! Every task that builds first runs `setup`, which installs what is missing
//! (nightly rust-src, bpf-linker built against rustc's own LLVM, and the
//! Debian packages the tests use) and skips what is already there.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain pieces and packages that are missing.
    Setup,
    /// Build, then run the seed walkthrough over xtun in fresh namespaces.
    Demo {
        /// Tunnel mode for the demo.
        #[arg(long, default_value = "gre")]
        mode: String,
    },
    /// Build, then run every test (unit, BPF_PROG_TEST_RUN, end to end). Needs root.
    Test,
    /// Build the Debian package target/dist/xtun_VERSION_ARCH.deb: the
    /// binary, the systemd unit, an example config, completions, man pages.
    Dist,
    /// rustfmt check and clippy for the host crates and the eBPF crate.
    Lint,
    /// Benchmarks, side by side in one run; writes target/bench/results.json.
    Bench {
        /// Every measurement, briefly: a smoke test.
        #[arg(long)]
        quick: bool,
        /// Only the site gateway: packets per second forwarded between two
        /// sites, plain, over the kernel's VXLAN and over xtun.
        #[arg(long)]
        gateway: bool,
    },
}

/// (shell test that succeeds when present, Debian package).
const APT_PACKAGES: &[(&str, &str)] = &[
    ("command -v ping", "iputils-ping"),
    ("command -v tcpdump", "tcpdump"),
    ("command -v tshark", "tshark"),
    ("command -v iperf3", "iperf3"),
    ("command -v ip", "iproute2"),
    ("command -v bpftool", "bpftool"),
    ("command -v nft", "nftables"),
    // OSPF over a tunnel, from FRR's own daemons.
    ("test -x /usr/lib/frr/ospfd", "frr"),
    // Tests craft hostile packets with scapy, for the system python3.
    ("/usr/bin/python3 -c 'import scapy.all'", "python3-scapy"),
    // The interop suite's VM: busybox and cpio build its initramfs.
    ("test -x /bin/busybox", "busybox-static"),
    ("command -v cpio", "cpio"),
    // The gateway bench: trafgen generates, ethtool turns on veth GRO.
    ("command -v trafgen", "netsniff-ng"),
    ("command -v ethtool", "ethtool"),
];

/// What the interop suite (tunnel-userspace/tests/interop.rs) boots: Debian's
/// kernel (with ip_gre, ipip and sit as modules) under Debian's qemu. They are
/// not installed but unpacked (`apt-get download` + `dpkg -x`) into
/// `target/interop-vm/root`: installing linux-image-amd64 runs
/// update-initramfs and bootloader hooks and upgrades systemd, and
/// qemu-system-x86 would remove the machine's newer qemu-utils.
const VM_ROOT: &str = "target/interop-vm/root";

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup(),
        Task::Demo { mode } => {
            setup()?;
            build()?;
            let demo = build_example("seed_demo")?;
            run(Command::new(demo).env("MODE", mode))
        }
        Task::Test => {
            setup()?;
            build()?;
            // The packaging test installs the package this builds.
            dist()?;
            test()
        }
        Task::Dist => {
            setup()?;
            build()?;
            dist().map(|deb| println!("xtask: built {}", deb.display()))
        }
        Task::Bench { quick, gateway } => {
            setup()?;
            build()?;
            // A bench target (harness = false) outside the xtun library;
            // cargo builds it with the release settings.
            let mut cmd = Command::new("cargo");
            cmd.current_dir(workspace_root())
                .args(["bench", "-p", "tunnel-userspace", "--bench", "bench", "--"])
                .env("XTUN", workspace_root().join("target/release/xtun"));
            if quick {
                cmd.arg("--quick");
            }
            if gateway {
                cmd.arg("--gateway-only");
            }
            run(&mut cmd)
        }
        Task::Lint => {
            cargo(&["fmt", "--all", "--check"])?;
            cargo(&[
                "clippy",
                "--release",
                "--workspace",
                "--exclude",
                "tunnel-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            let ebpf = workspace_root().join("tunnel-ebpf");
            run(Command::new("cargo").current_dir(ebpf).args([
                "+nightly",
                "clippy",
                "-Z",
                "build-std=core",
                "--target",
                "bpfel-unknown-none",
                "--release",
                "--",
                "-D",
                "warnings",
            ]))
        }
    }
}

/// Stages the package tree and builds it with dpkg-deb (cargo-deb would
/// need its own build on every fresh machine, CI's included, for what
/// these few lines do; the generated man pages and completions would still
/// need staging first).
fn dist() -> Result<PathBuf> {
    let root = workspace_root();
    let xtun = root.join("target/release/xtun");
    let version = env!("CARGO_PKG_VERSION");
    let arch_out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("dpkg --print-architecture")?;
    let arch = String::from_utf8(arch_out.stdout)?.trim().to_string();
    let out_dir = root.join("target/dist");
    let stage = out_dir.join(format!("xtun_{version}_{arch}"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)?;
    }
    let dir = |rel: &str| -> Result<PathBuf> {
        let d = stage.join(rel);
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        Ok(d)
    };
    let copy = |from: &Path, to: PathBuf| -> Result<()> {
        std::fs::copy(from, &to).with_context(|| format!("copying to {}", to.display()))?;
        Ok(())
    };
    copy(&xtun, dir("usr/bin")?.join("xtun"))?;
    copy(
        &root.join("dist/xtun.service"),
        dir("usr/lib/systemd/system")?.join("xtun.service"),
    )?;
    let doc = dir("usr/share/doc/xtun")?;
    copy(&root.join("README.md"), doc.join("README.md"))?;
    // Debian's copyright file: who holds it, the dual license, and the
    // license text (GPL-2 by reference to the system's copy).
    let copyright = std::fs::read_to_string(root.join("dist/copyright"))?
        + &std::fs::read_to_string(root.join("LICENSE"))?;
    std::fs::write(doc.join("copyright"), copyright)?;
    copy(
        &root.join("dist/xtun.toml"),
        dir("usr/share/doc/xtun/examples")?.join("xtun.toml"),
    )?;
    // What the unit applies; a conffile, so an upgrade keeps local edits.
    copy(
        &root.join("dist/etc-xtun.toml"),
        dir("etc/xtun")?.join("xtun.toml"),
    )?;
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/xtun"),
        ("zsh", "usr/share/zsh/vendor-completions/_xtun"),
        ("fish", "usr/share/fish/vendor_completions.d/xtun.fish"),
    ] {
        let target = stage.join(path);
        std::fs::create_dir_all(target.parent().unwrap())?;
        let out = Command::new(&xtun).args(["completion", shell]).output()?;
        if !out.status.success() {
            bail!("xtun completion {shell} failed");
        }
        std::fs::write(&target, out.stdout)?;
    }
    let man = dir("usr/share/man/man1")?;
    run(Command::new(&xtun).arg("manpages").arg(&man))?;
    for page in std::fs::read_dir(&man)? {
        run(Command::new("gzip").args(["-9n"]).arg(page?.path()))?;
    }
    let size_kib: u64 = walk_size(&stage)? / 1024;
    let control = format!(
        "Package: xtun\nVersion: {version}\nArchitecture: {arch}\nMaintainer: xtun developers <xtun@localhost>\nSection: net\nPriority: optional\nDepends: libc6\nInstalled-Size: {size_kib}\nDescription: IP tunnels (GRE, IPIP, SIT, ISATAP) with an eBPF data path\n xtun creates GRE, IPIP, SIT and ISATAP tunnels whose encapsulation and\n decapsulation run in XDP and tc programs, with the grammar of `ip tunnel`,\n a declarative configuration (`xtun apply`) and Prometheus metrics.\n"
    );
    std::fs::write(dir("DEBIAN")?.join("control"), control)?;
    std::fs::write(stage.join("DEBIAN/conffiles"), "/etc/xtun/xtun.toml\n")?;
    let deb = out_dir.join(format!("xtun_{version}_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&stage)
        .arg(&deb))?;
    Ok(deb)
}

fn walk_size(path: &Path) -> Result<u64> {
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        return Ok(meta.len());
    }
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        total += walk_size(&entry?.path())?;
    }
    Ok(total)
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn cargo(args: &[&str]) -> Result<()> {
    run(
        Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace_root())
            .args(args),
    )
}

/// Runs the whole test suite, echoing it, and closes with one summary line
/// over every test binary (cargo's own last line is the doc-test binary's).
fn test() -> Result<()> {
    use std::io::{BufRead as _, BufReader};

    let mut child = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args([
            "test",
            "--release",
            "--no-fail-fast",
            "--workspace",
            "--exclude",
            "tunnel-ebpf",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("\nall tests: {passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() {
        bail!("cargo test failed with {status}");
    }
    Ok(())
}

/// Builds one of tunnel-userspace's examples; returns its path.
fn build_example(name: &str) -> Result<PathBuf> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "tunnel-userspace",
        "--example",
        name,
    ])?;
    Ok(workspace_root().join("target/release/examples").join(name))
}

fn build() -> Result<()> {
    cargo(&["build", "--release", "-p", "tunnel-userspace"])
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn setup() -> Result<()> {
    if !is_root() {
        bail!("xtun's tasks load eBPF programs and create namespaces: run them as root");
    }
    // Nightly with rust-src, for -Z build-std=core.
    if !succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        println!("xtask: installing the nightly toolchain");
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .output()?;
    if !String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.starts_with("rust-src"))
    {
        println!("xtask: installing nightly rust-src");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    install_bpf_linker()?;
    install_packages()?;
    unpack_vm_packages()
}

/// Unpacks the kernel package that `linux-image-amd64` points at, and
/// qemu-system-x86 with whatever of its dependencies this machine lacks,
/// into VM_ROOT. Skipped when VM_ROOT holds a kernel and qemu already.
fn unpack_vm_packages() -> Result<()> {
    let root = workspace_root().join(VM_ROOT);
    let done = root.join(".unpacked");
    if done.exists() {
        return Ok(());
    }
    // Fresh lists: a download names exact versions, which mirrors rotate.
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    let depends = Command::new("apt-cache")
        .args(["depends", "linux-image-amd64"])
        .output()
        .context("apt-cache depends linux-image-amd64")?;
    let kernel = String::from_utf8_lossy(&depends.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
        .context("linux-image-amd64 names no kernel package")?;
    // What installing qemu would bring in, as apt resolves it here.
    let plan = Command::new("apt-get")
        .args([
            "install",
            "-s",
            "--no-install-recommends",
            "qemu-system-x86",
        ])
        .output()
        .context("apt-get install -s qemu-system-x86")?;
    let mut packages: Vec<String> = String::from_utf8_lossy(&plan.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Inst "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    // No plan for qemu itself: it is installed, and the tests use that one.
    if !packages.iter().any(|p| p == "qemu-system-x86")
        && !succeeds(Command::new("qemu-system-x86_64").arg("--version"))
    {
        bail!(
            "apt-get plans no qemu-system-x86: {}",
            String::from_utf8_lossy(&plan.stderr)
        );
    }
    packages.push(kernel);
    println!("xtask: unpacking {} into {VM_ROOT}", packages.join(" "));
    let debs = root.with_file_name("debs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(&root)?;
    // apt fetches as its own user `_apt`, which must be able to write here.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&debs, std::fs::Permissions::from_mode(0o777))?;
    }
    run(Command::new("apt-get")
        .current_dir(&debs)
        .args(["download", "-qq"])
        .args(&packages))?;
    for deb in std::fs::read_dir(&debs)? {
        run(Command::new("dpkg").arg("-x").arg(deb?.path()).arg(&root))?;
    }
    std::fs::remove_dir_all(&debs)?;
    std::fs::write(done, packages.join("\n"))?;
    Ok(())
}

/// bpf-linker must link rustc's own LLVM (22); Debian has no such LLVM, so
/// point LLVM_PREFIX at a directory whose lib/ holds nightly's libLLVM.
fn install_bpf_linker() -> Result<()> {
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        return Ok(());
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()?;
    let sysroot = PathBuf::from(String::from_utf8(sysroot.stdout)?.trim());
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let home = env::var("HOME").unwrap_or_else(|_| "/root".into());
    let prefix = PathBuf::from(home).join(".local/share/xtun/llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    for link in [
        prefix_lib.join("libLLVM.so"),
        prefix_lib.join(llvm.file_name().unwrap()),
    ] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)?;
    }
    println!(
        "xtask: building bpf-linker against {} (a few minutes)",
        llvm.display()
    );
    run(Command::new("cargo").env("LLVM_PREFIX", &prefix).args([
        "install",
        "bpf-linker",
        "--version",
        "0.13.0",
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))
}

fn install_packages() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(probe, _)| !succeeds(Command::new("sh").args(["-c", probe])))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("xtask: installing {}", missing.join(" "));
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(&missing))
}
