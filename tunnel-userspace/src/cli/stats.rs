//! `xtun stats`: the data plane's counters by reason.

use anyhow::{bail, Result};
use tunnel_common::stats::COUNTER_NAMES;
use tunnel_userspace::{dataplane::Dataplane, netlink::Netlink};

pub fn show() -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    for (name, value) in COUNTER_NAMES.iter().zip(dp.counter_totals()?) {
        println!("{name:<28} {value}");
    }
    Ok(())
}
