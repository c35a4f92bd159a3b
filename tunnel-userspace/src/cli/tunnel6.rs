//! `xtun -6 tunnel add|change|del|show`: tunnels over an IPv6 underlay,
//! with `ip -6 tunnel`'s grammar and wording (iproute2's ip/ip6tunnel.c).

use std::net::{IpAddr, Ipv6Addr};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::validate_ifname,
    config6::{self, Config6Error, Mode6, Show6Line, Tunnel6Selector, Tunnel6Spec},
    dataplane::{Dataplane, DecapChoice, TunnelDevice},
    device,
    netlink::{Link, Netlink},
};

use super::{
    attach::lookup,
    output::{Format, Ordered},
    tunnel::{
        bound_dev, check_not_ours, release_underlay, repair, warn_unordered, TunnelCommand,
        ARPHRD_ETHER,
    },
};

pub fn run(cmd: TunnelCommand, stats: bool, format: Format) -> Result<()> {
    match cmd {
        TunnelCommand::Add { args } => add(&args),
        TunnelCommand::Change { args } => change(&args),
        TunnelCommand::Del { args } => {
            let name = Tunnel6Selector::parse(&args)
                .map_err(parse_error)?
                .name
                .ok_or(Config6Error::MissingName)?;
            // By name, whatever its underlay, as `ip -6 tunnel del` does.
            super::tunnel::del(&name)
        }
        TunnelCommand::Prl { .. } => bail!("prl is for isatap tunnels, not -6 tunnel"),
        TunnelCommand::Show { args } => show(&args, stats, format),
    }
}

/// `mode vti6` rides on the kernel's IPsec, which xtun does not drive.
fn parse_error(err: Config6Error) -> anyhow::Error {
    match err {
        Config6Error::Vti6 => anyhow!(
            "mode vti6 is not implemented by xtun (use `ip -6 tunnel add ... mode vti6` with the kernel's IPsec)"
        ),
        other => other.into(),
    }
}

/// The underlay a tunnel over IPv6 receives on and normally leaves by:
/// `dev`; else the interface that has its `local` address; else where the
/// route to `remote` leaves. With `local any`, the route's source too.
fn resolve_underlay(nl: &mut Netlink, spec: &Tunnel6Spec) -> Result<(Link, Option<Ipv6Addr>)> {
    let route = spec.remote.map(|remote| {
        nl.route_get6(remote)
            .map_err(|e| anyhow!("no route to remote {remote}: {e}"))
    });
    let underlay = match (&spec.dev, spec.local) {
        (Some(dev), _) => lookup(nl, dev)?,
        (None, local) => {
            let holder = match local {
                Some(local) => link_with_address(nl, local)?,
                None => None,
            };
            match (holder, &route) {
                (Some(link), _) => link,
                (None, Some(route)) => {
                    let oif = route.as_ref().map_err(|e| anyhow!("{e}"))?.oif;
                    nl.link_by_index(oif)?.ok_or_else(|| {
                        anyhow!("no route to remote {}", spec.remote.unwrap_or(Ipv6Addr::UNSPECIFIED))
                    })?
                }
                (None, None) => bail!(
                    "a tunnel with remote any ({}) needs `dev PHYS` or a local address of this host: the underlay to receive on",
                    spec.mode.name()
                ),
            }
        }
    };
    if underlay.link_type != ARPHRD_ETHER {
        bail!(
            "the tunnel would leave by {}, a {} device without Ethernet header (link type {}); xtun needs an Ethernet underlay",
            underlay.name,
            underlay.kind.as_deref().unwrap_or("layer-3"),
            underlay.link_type
        );
    }
    let default_src = match (spec.local, route) {
        (None, Some(Ok(route))) => route.prefsrc,
        _ => None,
    };
    Ok((underlay, default_src))
}

/// The interface that has `addr`, if any.
fn link_with_address(nl: &mut Netlink, addr: Ipv6Addr) -> Result<Option<Link>> {
    for link in nl.links()? {
        let has = nl
            .addresses(link.index)?
            .iter()
            .any(|(local, _, _)| *local == IpAddr::V6(addr));
        if has {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

/// Fails if another tunnel already receives what `cfg` + `cfg6` would.
fn check_decap_free(
    nl: &mut Netlink,
    dp: &mut Dataplane,
    verb: &str,
    name: &str,
    cfg: &TunnelConfig,
    cfg6: &Tunnel6Config,
) -> Result<()> {
    let Some(holder) = dp.decap6_holder(cfg, cfg6) else {
        return Ok(());
    };
    let Some(other) = nl.link_by_index(holder)?.map(|l| l.name) else {
        // Left by an xtun killed halfway: its interface is gone.
        dp.forget_tunnel(holder);
        return Ok(());
    };
    if other != name {
        let same_key = if cfg.mode == MODE_IP6GRE && cfg.flags & TUNNEL_F_IKEY != 0 {
            " and the same key"
        } else {
            ""
        };
        bail!(
            "{verb} tunnel \"{name}\" failed: tunnel {other} already has remote {} local {}{same_key}",
            Ipv6Addr::from(cfg6.remote),
            Ipv6Addr::from(cfg6.local),
        );
    }
    Ok(())
}

/// One packet per GRE header, sent in the order numbered (`device::set_transmit`).
fn set_transmit(nl: &mut Netlink, ifindex: u32, spec: &Tunnel6Spec) -> Result<()> {
    // The grammar keeps `oseq` for ip6gre and ip6gretap only.
    device::set_transmit(nl, ifindex, needs_per_packet_header(spec), spec.oseq)
        .or_else(warn_unordered)
        .context("setting up transmission")
}

fn needs_per_packet_header(spec: &Tunnel6Spec) -> bool {
    spec.mode.is_gre() && (spec.ocsum || spec.oseq)
}

pub(crate) fn add(args: &[String]) -> Result<()> {
    let spec = Tunnel6Spec::parse(args).map_err(parse_error)?;
    create(&spec)
}

/// Creates the tunnel over IPv6 that `spec` describes, as `create` in
/// tunnel.rs does an IPv4 one: nothing is left if any step fails.
pub(crate) fn create(spec: &Tunnel6Spec) -> Result<()> {
    let mut nl = Netlink::new()?;
    if nl.link_by_name(&spec.name)?.is_some() {
        bail!("add tunnel \"{}\" failed: File exists", spec.name);
    }
    let (underlay, default_src) = resolve_underlay(&mut nl, spec)?;

    let mut dp = Dataplane::find_or_load(&mut nl).context("loading the data plane")?;
    repair(&mut nl, &mut dp)?;
    check_not_ours(&dp, &underlay)?;
    let mtu = spec.mtu(underlay.mtu);
    let (cfg, cfg6) = spec.to_config(underlay.index, mtu, default_src);
    check_decap_free(&mut nl, &mut dp, "add", &spec.name, &cfg, &cfg6)?;

    let failed = |err: anyhow::Error| err.context(format!("add tunnel \"{}\" failed", spec.name));
    // ip6gretap: an Ethernet interface (ARP, a random MAC, a bridge port).
    let ethernet = spec.mode.is_tap();
    let new = device::create(&mut nl, mtu, ethernet).map_err(|e| failed(e.into()))?;
    let link = new.link.clone();
    let result = (|| -> Result<()> {
        if ethernet {
            // Frames that are not IP are encapsulated in front of the whole
            // frame and pass the port once more: it takes them whole.
            nl.set_mtu(new.port.index, underlay.mtu.max(mtu))?;
        }
        set_transmit(&mut nl, link.index, spec)?;
        let port = new.port.index;
        dp.add_tunnel6(link.index, TunnelDevice::Veth { port }, cfg, cfg6)?;
        dp.attach_tunnel6(&mut nl, link.index, port)
            .context("attaching encapsulation")?;
        dp.attach_underlay(&mut nl, &underlay, false, DecapChoice::Auto)
            .with_context(|| format!("attaching to {}", underlay.name))?;
        dp.attach_underlay6(&mut nl, &underlay)
            .with_context(|| format!("attaching IPv6 decapsulation to {}", underlay.name))?;
        Ok(new.finish(&mut nl, &spec.name)?)
    })();
    if let Err(err) = result {
        let _ = nl.del_link(link.index);
        dp.forget_tunnel(link.index);
        return Err(failed(err));
    }
    Ok(())
}

/// The tunnel over IPv6 called `name`: the data plane, its interface and
/// both halves of its configuration.
fn find_tunnel6(
    nl: &mut Netlink,
    name: &str,
    verb: &str,
) -> Result<(Dataplane, Link, TunnelConfig, Tunnel6Config)> {
    let (dp, link, cfg) = super::tunnel::find_any(nl, name, verb)?;
    if !is_ipv6_underlay(cfg.mode) {
        bail!("{verb} tunnel \"{name}\" failed: a tunnel over IPv4 (see `xtun tunnel`; its underlay family cannot change)");
    }
    // As `ip -6 tunnel` knows only ip6tnl and ip6gre devices.
    if cfg.mode == MODE_IP6GRETAP {
        bail!("{verb} tunnel \"{name}\" failed: an ip6gretap link (see `xtun link`)");
    }
    let cfg6 = dp.tunnel6(link.index).ok_or_else(|| {
        anyhow!("{verb} tunnel \"{name}\" failed: its IPv6 part is missing from the data plane")
    })?;
    Ok((dp, link, cfg, cfg6))
}

pub(crate) fn change(args: &[String]) -> Result<()> {
    let name = match args {
        [first, second, ..] if first == "name" => second.as_str(),
        [first, ..] => first.as_str(),
        [] => return Err(Config6Error::MissingName.into()),
    };
    validate_ifname(name)?;
    let mut nl = Netlink::new()?;
    let (mut dp, link, old, old6) = find_tunnel6(&mut nl, name, "change")?;
    repair(&mut nl, &mut dp)?;
    let links = nl.links()?;
    let dev = bound_dev(&links, &old).map(str::to_string);
    let base = Tunnel6Spec::from_config(name, &old, &old6, dev).ok_or_else(|| {
        anyhow!("change tunnel \"{name}\" failed: unknown mode in the data plane")
    })?;
    let spec = Tunnel6Spec::parse_change(&base, args).map_err(parse_error)?;
    let (underlay, default_src) = resolve_underlay(&mut nl, &spec)?;
    check_not_ours(&dp, &underlay)?;
    let mtu = spec.mtu(underlay.mtu);
    let (cfg, cfg6) = spec.to_config(underlay.index, mtu, default_src);
    check_decap_free(&mut nl, &mut dp, "change", name, &cfg, &cfg6)?;
    if (needs_per_packet_header(&spec), spec.oseq) != (needs_per_packet_header(&base), base.oseq) {
        set_transmit(&mut nl, link.index, &spec)?;
    }
    if underlay.index != old.underlay_ifindex {
        dp.attach_underlay(&mut nl, &underlay, false, DecapChoice::Auto)
            .with_context(|| format!("attaching to {}", underlay.name))?;
        dp.attach_underlay6(&mut nl, &underlay)
            .with_context(|| format!("attaching IPv6 decapsulation to {}", underlay.name))?;
    }
    let cfg = dp.change_tunnel6(link.index, cfg, cfg6)?;
    if link.mtu != mtu {
        device::set_mtu(&mut nl, link.index, cfg.port_ifindex, mtu).context("setting the MTU")?;
    }
    if underlay.index != old.underlay_ifindex {
        release_underlay(&mut nl, &mut dp, old.underlay_ifindex)?;
    }
    Ok(())
}

/// `ip -6 tunnel show`: with a name, that tunnel or an error; otherwise
/// every tunnel over IPv6 the words select, silently none.
fn show(args: &[String], stats: bool, format: Format) -> Result<()> {
    let sel = Tunnel6Selector::parse(args).map_err(parse_error)?;
    let mut nl = Netlink::new()?;
    if let Some(dev) = &sel.dev {
        lookup(&mut nl, dev)?;
    }
    let links = nl.links()?;
    let (dp, mut tunnels) = match &sel.name {
        Some(name) if !stats => {
            if nl.link_by_name(name)?.is_none() {
                bail!("get tunnel \"{name}\" failed: No such device");
            }
            let (dp, link, cfg, cfg6) = find_tunnel6(&mut nl, name, "get")?;
            (Some(dp), vec![(link, cfg, cfg6)])
        }
        _ => match Dataplane::find(&mut nl)? {
            None => (None, vec![]),
            Some(dp) => {
                let tunnels = dp
                    .tunnels6()
                    .into_iter()
                    .filter_map(|(ifindex, cfg6)| {
                        let cfg = dp.tunnel(ifindex)?;
                        // `ip -6 tunnel show` lists no ip6gretap links.
                        if cfg.mode == MODE_IP6GRETAP {
                            return None;
                        }
                        let link = links.iter().find(|l| l.index == ifindex)?;
                        let dev = bound_dev(&links, &cfg);
                        sel.selects(&link.name, &cfg, &cfg6, dev)
                            .then(|| (link.clone(), cfg, cfg6))
                    })
                    .collect();
                (Some(dp), tunnels)
            }
        },
    };
    // In the kernel's link order, as `ip -6 tunnel show` lists them.
    tunnels.sort_by_key(|(link, _, _)| link.index);
    let mut docs = Vec::new();
    for (link, cfg, cfg6) in &tunnels {
        let dev = bound_dev(&links, cfg);
        let counters = stats
            .then(|| {
                dp.as_ref()
                    .map(|dp| dp.tunnel_totals(link.index).unwrap_or_default())
            })
            .flatten();
        let underlay = underlay_in_use(&mut nl, &links, cfg, cfg6);
        // Learnt from ICMPv6 Packet Too Big: (remote, MTU, seconds left).
        let path_mtus = dp
            .as_ref()
            .map(|dp| dp.path_mtus6(link.index))
            .unwrap_or_default();
        if format.json {
            docs.push(tunnel_json(
                link,
                cfg,
                cfg6,
                dev,
                underlay,
                &path_mtus,
                counters.as_ref(),
            ));
            continue;
        }
        let mut record = Show6Line {
            name: &link.name,
            cfg,
            cfg6,
            dev,
        }
        .to_string();
        if let Some(s) = &counters {
            record.push_str(&super::tunnel::stats_text(s));
        }
        if format.details {
            if let Some(underlay) = underlay {
                record.push_str(&format!("\n    underlay {}", underlay.name));
            }
        }
        // `-d` or `-s`: what the path allows, as `tunnel show` says it.
        if format.details || counters.is_some() {
            for (remote, mtu, left) in &path_mtus {
                record.push_str(&format!(
                    "\n    path mtu {mtu} to {} expires {left}s",
                    Ipv6Addr::from(*remote)
                ));
            }
        }
        format.print_record(&record);
    }
    if format.json {
        format.print_json(&docs);
    }
    Ok(())
}

/// The interface a tunnel's packets leave by now: its `dev`, or where the
/// route to its remote leads.
fn underlay_in_use<'a>(
    nl: &mut Netlink,
    links: &'a [Link],
    cfg: &TunnelConfig,
    cfg6: &Tunnel6Config,
) -> Option<&'a Link> {
    let remote = Ipv6Addr::from(cfg6.remote);
    let index = if cfg.flags & TUNNEL_F_BOUND_DEV == 0 && !remote.is_unspecified() {
        nl.route_get6(remote)
            .map_or(cfg.underlay_ifindex, |r| r.oif)
    } else {
        cfg.underlay_ifindex
    };
    links.iter().find(|l| l.index == index)
}

/// One tunnel as JSON: every field `ip -j -6 tunnel show` prints, with its
/// names, types and order; then xtun's own (ifindex, underlay, mtu, and
/// with -s the counters).
fn tunnel_json(
    link: &Link,
    cfg: &TunnelConfig,
    cfg6: &Tunnel6Config,
    dev: Option<&str>,
    underlay: Option<&Link>,
    path_mtus: &[([u8; 16], u32, u64)],
    stats: Option<&TunnelStats>,
) -> Ordered {
    let flag = |f: u32| cfg.flags & f != 0;
    let mode = Mode6::from_map(cfg.mode);
    let mut doc = Ordered::default();
    doc.push("ifname", link.name.clone());
    doc.push(
        "mode",
        format!("{}/ipv6", mode.map_or("unknown", Mode6::show_name)),
    );
    doc.push("remote", Ipv6Addr::from(cfg6.remote).to_string());
    doc.push("local", Ipv6Addr::from(cfg6.local).to_string());
    if let Some(dev) = dev {
        doc.push("link", dev.to_string());
    }
    if flag(TUNNEL_F_IGN_ENCAP_LIMIT) {
        doc.push("ip6_tnl_f_ign_encap_limit", Value::Null);
    } else {
        doc.push("encap_limit", cfg6.encap_limit);
    }
    // `hoplimit inherit` is printed in text only.
    if cfg.ttl != 0 {
        doc.push("hoplimit", cfg.ttl);
    }
    if flag(TUNNEL_F_TOS_INHERIT) {
        doc.push("ip6_tnl_f_use_orig_tclass", Value::Null);
    } else {
        doc.push("tclass", format!("0x{:02x}", cfg.tos));
    }
    if flag(TUNNEL_F_FLOWLABEL_INHERIT) {
        doc.push("ip6_tnl_f_use_orig_flowlabel", Value::Null);
    } else {
        doc.push(
            "flowlabel",
            format!("0x{:05x}", cfg6.flowlabel & config6::FLOWLABEL_MAX),
        );
    }
    doc.push(
        "flowinfo",
        format!("0x{:08x}", config6::flowinfo(cfg, cfg6)),
    );
    if flag(TUNNEL_F_ALLOW_LOCALREMOTE) {
        doc.push("ip6_tnl_f_allow_local_remote", Value::Null);
    }
    let ikey = flag(TUNNEL_F_IKEY).then(|| u32::from_be(cfg.ikey));
    let okey = flag(TUNNEL_F_OKEY).then(|| u32::from_be(cfg.okey));
    match (ikey, okey) {
        (Some(i), Some(o)) if i == o => doc.push("key", i),
        _ => {
            if let Some(i) = ikey {
                doc.push("ikey", i);
            }
            if let Some(o) = okey {
                doc.push("okey", o);
            }
        }
    }
    if mode == Some(Mode6::Ip6Gre) {
        let flags: Vec<&str> = config6::GRE_FLAG_JSON
            .into_iter()
            .filter(|(f, _)| flag(*f))
            .map(|(_, name)| name)
            .collect();
        doc.push("flags", json!(flags));
    }
    // xtun's own, after everything `ip` prints.
    doc.push("ifindex", link.index);
    doc.push("underlay", underlay.map(|l| l.name.clone()));
    doc.push("mtu", cfg.mtu);
    let path_mtus: Vec<Value> = path_mtus
        .iter()
        .map(|(remote, mtu, left)| {
            json!({ "remote": Ipv6Addr::from(*remote).to_string(), "mtu": mtu, "expires_in": left })
        })
        .collect();
    doc.push("path_mtu", json!(path_mtus));
    if let Some(s) = stats {
        doc.push("stats", super::tunnel::stats_json(s));
    }
    doc
}
