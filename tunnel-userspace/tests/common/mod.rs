//! `mod common;` in a test file: the shared harness of the
//! `xtun-test-support` crate (which the bench uses too), and in `net` the
//! path of the `xtun` binary cargo built for this test.
#![allow(
    dead_code,
    unused_imports,
    reason = "each test file takes what it needs"
)]

pub use xtun_test_support::*;

pub mod net {
    pub use xtun_test_support::net::*;

    /// The `xtun` binary under test, as a constant for argument lists.
    pub const XTUN: &str = env!("CARGO_BIN_EXE_xtun");
}
