//! The xtun control plane: the `ip tunnel` grammar, netlink, and the eBPF
//! data plane's loader. The `xtun` binary is a thin CLI over this library;
//! tests and benchmarks use it directly.

pub mod bpf_sys;
pub mod btf;
pub mod caps;
pub mod config;
pub mod config6;
pub mod dataplane;
pub mod desired;
pub mod device;
pub mod grammar;
pub mod lock;
pub mod netlink;
pub mod netns;
pub mod testbed;
