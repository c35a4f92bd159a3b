//! Types shared by the xtun kernel programs (`tunnel-ebpf`) and the `xtun` CLI.
//!
//! Everything here is `no_std` and allocation free. Map keys and values are
//! `#[repr(C)]` with explicit padding so both sides agree on the layout byte
//! for byte; the wire-format helpers are pure functions tested on the host.
#![no_std]

pub mod maps;
pub mod stats;
pub mod wire;
