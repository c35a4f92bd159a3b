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
