//! `xtun attach DEV` / `xtun detach DEV`.

use anyhow::{bail, Context as _, Result};
use tunnel_userspace::{
    dataplane::{Dataplane, DecapChoice, DecapMode},
    netlink::{Link, Netlink},
};

pub fn lookup(nl: &mut Netlink, dev: &str) -> Result<Link> {
    tunnel_userspace::config::validate_ifname(dev)?;
    match nl.link_by_name(dev).context("listing interfaces")? {
        Some(link) => Ok(link),
        None => bail!("Cannot find device \"{dev}\""),
    }
}

/// `--decap`: where an underlay decapsulates.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Decap {
    /// tc on veth (native XDP would cost the veth peer its GSO), XDP elsewhere.
    Auto,
    /// XDP, natively where the driver can, generically otherwise.
    Xdp,
    /// tc ingress.
    Tc,
}

pub fn attach(dev: &str, decap: Decap) -> Result<()> {
    let mut nl = Netlink::new()?;
    let link = lookup(&mut nl, dev)?;
    if link.kind.as_deref() == Some("tun") {
        let dp = Dataplane::find(&mut nl)?;
        if let Some(dp) = dp {
            if dp.is_tunnel(link.index) {
                bail!("{dev} is an xtun tunnel, not an underlay");
            }
        }
    }
    let mut dp = Dataplane::find_or_load(&mut nl).context("loading the data plane")?;
    let choice = match decap {
        Decap::Auto => DecapChoice::Auto,
        Decap::Xdp => DecapChoice::Xdp,
        Decap::Tc => DecapChoice::Tc,
    };
    match dp
        .attach_underlay(&mut nl, &link, true, choice)
        .with_context(|| format!("attaching to {dev}"))?
    {
        Some(DecapMode::Tc) => println!("attached to {dev}: decapsulation in tc ingress"),
        Some(mode) => println!(
            "attached to {dev}: decapsulation in {} + tc ingress delivery",
            mode.describe()
        ),
        None => println!("already attached to {dev}"),
    }
    Ok(())
}

pub fn detach(dev: &str) -> Result<()> {
    let mut nl = Netlink::new()?;
    let link = lookup(&mut nl, dev)?;
    let Some(mut dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached to {dev}");
    };
    if dp.underlay_filter(&mut nl, &link)?.is_none() && link.xdp_prog_id.is_none() {
        bail!("xtun is not attached to {dev}");
    }
    if dp.is_tunnel(link.index) {
        bail!("{dev} is an xtun tunnel: delete it with `xtun tunnel del {dev}`");
    }
    dp.detach_underlay(&mut nl, &link)
        .with_context(|| format!("detaching from {dev}"))?;
    Ok(())
}

pub fn upgrade() -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(mut dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let (old_xdp, old_tc) = dp.program_ids();
    let replaced = dp.upgrade(&mut nl).context("upgrading the data plane")?;
    let (new_xdp, new_tc) = dp.program_ids();
    let ids = |xdp: Option<u32>, tc: u32| match xdp {
        Some(xdp) => format!("xdp {xdp}, tc {tc}"),
        None => format!("tc {tc}"),
    };
    println!(
        "upgraded {replaced} attachments: programs {} -> {}",
        ids(old_xdp, old_tc),
        ids(new_xdp, new_tc)
    );
    Ok(())
}
