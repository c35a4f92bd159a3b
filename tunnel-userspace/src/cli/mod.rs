//! One module per command group.

pub mod attach;
pub mod stats;
pub mod tunnel;
