//! One module per command group.

pub mod apply;
pub mod attach;
pub mod link;
pub mod log;
pub mod map;
pub mod metrics;
pub mod monitor;
pub mod neigh;
pub mod output;
pub mod stats;
pub mod status;
pub mod tunnel;
pub mod tunnel6;
pub mod words;

/// How long `monitor` and `log` wait for the namespace lock when they
/// stop, before leaving the rest to their lease's lapse.
pub const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
