//! Builds the eBPF programs (nightly cargo, `-Z build-std=core`, for
//! bpfel-unknown-none, linked by bpf-linker) and embeds them in `xtun`.
//!
//! This does what aya-build does, plus `-C target-cpu=v3`: BPF ISA v3 has
//! the atomic compare-and-swap that GRE sequence numbers
//! need, and 32-bit subregisters (Linux 5.1 and later). aya-build sets
//! RUSTFLAGS itself and leaves no way to add that.
//!
//! With `AYA_BUILD_SKIP=1` (host-only `cargo check`/`clippy`), an empty stub
//! object is written instead so the crate still compiles.

use std::{
    env, fs,
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _};

const PACKAGE: &str = "tunnel-ebpf";
const BINARY: &str = "tunnel";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out_dir.join(BINARY), []).context("writing stub eBPF object")?;
        return Ok(());
    }
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest_dir.join("../tunnel-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../tunnel-common").display()
    );

    let arch = env::var("CARGO_CFG_TARGET_ARCH").context("CARGO_CFG_TARGET_ARCH not set")?;
    let target = match env::var("CARGO_CFG_TARGET_ENDIAN").as_deref() {
        Ok("big") => "bpfeb-unknown-none",
        _ => "bpfel-unknown-none",
    };
    let target_dir = out_dir.join("ebpf-target");
    let rustflags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".into(),
        "-Clink-arg=--btf".into(),
        "-Ctarget-cpu=v3".into(),
    ]
    .join("\x1f");

    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", PACKAGE])
        .args(["--bins", "--release", "--target", target])
        .args(["-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&ebpf_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        // The host build's compiler and wrappers are not for this target.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = cmd
        .output()
        .context("running `rustup run nightly cargo` (run `cargo xtask setup`)")?;
    if !output.status.success() {
        for line in String::from_utf8_lossy(&output.stderr).lines() {
            println!("cargo:warning={line}");
        }
        bail!("building the eBPF programs failed: {}", output.status);
    }
    let built = target_dir.join(target).join("release").join(BINARY);
    fs::copy(&built, out_dir.join(BINARY))
        .with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}
