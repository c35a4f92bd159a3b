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

/// `--forward`: the XDP forwarding fast path for a LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Forward {
    /// Forward in XDP to and from tunnels.
    Xdp,
    /// Forward through the kernel, as without the fast path.
    Off,
}

/// What `xtun status` and `attach` say about the fast path.
pub const FORWARD_NOTE: &str =
    "bypasses netfilter FORWARD and the tunnel interface's counters; xtun's counters count it";

pub fn attach(dev: &str, decap: Decap, forward: Option<Forward>) -> Result<()> {
    if forward == Some(Forward::Xdp) && matches!(decap, Decap::Tc) {
        bail!("--forward xdp runs in XDP on {dev}: it cannot go with --decap tc");
    }
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
        Decap::Auto if forward == Some(Forward::Xdp) => DecapChoice::Xdp,
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
        None if forward.is_none() => println!("already attached to {dev}"),
        None => {}
    }
    if let Some(forward) = forward {
        let on = forward == Forward::Xdp;
        let changed = dp
            .forward_lan(&link, on)
            .with_context(|| format!("switching the forwarding fast path on {dev}"))?;
        match (on, changed) {
            (true, true) => println!("forwarding fast path on for {dev} ({FORWARD_NOTE})"),
            (true, false) => println!("forwarding fast path already on for {dev}"),
            (false, true) => println!("forwarding fast path off for {dev}"),
            (false, false) => println!("forwarding fast path already off for {dev}"),
        }
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
    let ids = |dp: &Dataplane| {
        let (xdp, tc) = dp.program_ids();
        let mut ids: Vec<String> = xdp.map(|id| format!("xdp {id}")).into_iter().collect();
        ids.push(format!("tc {tc}"));
        ids.extend(
            dp.ipv6_program_ids()
                .iter()
                .map(|(hook, id)| format!("{hook} {id}")),
        );
        ids.join(", ")
    };
    let old = ids(&dp);
    let replaced = dp.upgrade(&mut nl).context("upgrading the data plane")?;
    println!(
        "upgraded {replaced} attachments: programs {old} -> {}",
        ids(&dp)
    );
    Ok(())
}
