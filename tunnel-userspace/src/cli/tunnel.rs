//! `xtun tunnel add|del|show`, with `ip tunnel`'s grammar and wording.

use std::net::Ipv4Addr;

use anyhow::{anyhow, bail, Context as _, Result};
use clap::Subcommand;
use serde_json::{json, Value};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::{self, addr_from_wire, any_or_addr, decap_key, Mode, ShowLine, TunnelSpec},
    dataplane::{
        Dataplane, DataplaneError, DecapChoice, PrlEdit, Repaired, TunnelDevice,
        FILTER_UNDERLAY_AUTO,
    },
    device, grammar,
    netlink::{Link, Netlink},
};

use super::{
    attach::lookup,
    output::{Format, Ordered},
    words::Words,
};

const ADD_HELP: &str = "\
Arguments, in any order, as for `ip tunnel add`:
  NAME                   the tunnel interface to create (or `name NAME`)
  mode { gre | ipip | sit | isatap }
  remote { ADDR | any }  outer destination; any: per inner prefix (`xtun neigh`)
  local { ADDR | any }   outer source (default any: the route's source)
  key KEY | ikey KEY okey KEY
                         GRE keys; KEY is a number or a dotted quad
  ttl { 1..255 | inherit }   outer TTL (default inherit)
  tos { 00..ff | inherit | inherit/T }   outer TOS; ECN is always propagated
  [no]pmtudisc           set DF on the outer header (default pmtudisc)
  csum | icsum | ocsum   GRE checksums (verify on receive, add on send)
  seq | iseq | oseq      GRE sequence numbers (drop out-of-order input, number output)
  [no]rpfilter           accept only inner IPv4 sources the tunnel's routes lead back to
  dev PHYS               underlay NIC (default: where the route to remote leaves)

Examples:
  xtun tunnel add tun1 mode gre remote 10.10.20.2 local 10.10.10.2
  xtun tunnel add tun1 mode ipip remote 10.10.20.2 local 10.10.10.2 ttl 64
  xtun tunnel add gre5 mode gre remote 192.0.2.2 local 192.0.2.1 key 5 dev eth0

Over an IPv6 underlay, `xtun -6 tunnel add` (as `ip -6 tunnel add`):
  NAME | name NAME
  mode { ip6gre | ip6ip6 | ipip6 | any }   (default ip6ip6)
  remote { ADDR | any }  local { ADDR | any }   IPv6 addresses
  dev PHYS               underlay NIC (default: the one with `local`, else
                         where the route to remote leaves)
  encaplimit { none | 0..255 }   RFC 2473 encapsulation limit (default 4)
  hoplimit 0..255        also ttl, hlim (default 64; 0: the inner packet's)
  tclass { 0x0..0xff | inherit }   also tc, tos, dsfield (default 0)
  flowlabel { 0x0..0xfffff | inherit }   also fl (default 0)
  [no]allow-localremote
  [i|o]key KEY  [i|o]csum  [i|o]seq   ip6gre only (the others ignore them,
                         as the kernel's ip6tnl does)
  xtun -6 tunnel add t6 mode ip6gre remote fd00:20::2 local fd00:10::2 key 5

The interface is created down and NOARP (one end of a veth pair; its port
xtpN is where the data plane runs), with the underlay MTU minus the
encapsulation overhead and no automatic IPv6 link-local address. Bring it up
and address it with ip:
  ip link set tun1 up
  ip addr add 10.10.100.10 peer 10.10.200.10 dev tun1";

#[derive(Subcommand)]
pub enum TunnelCommand {
    /// Create a tunnel interface.
    #[command(after_help = ADD_HELP)]
    Add {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS",
            value_parser = Words(grammar::TUNNEL_WORDS),
            hide_possible_values = true
        )]
        args: Vec<String>,
    },
    /// Change a live tunnel, as `ip tunnel change` does: what is not named stays.
    #[command(
        after_help = "Examples:\n  xtun tunnel change tun1 ttl 64\n  xtun tunnel change tun1 key 7\n  xtun tunnel change tun1 remote 10.10.30.2 nokey\n\nThe mode cannot change. Other tunnels' packets are untouched."
    )]
    Change {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS",
            value_parser = Words(grammar::TUNNEL_WORDS),
            hide_possible_values = true
        )]
        args: Vec<String>,
    },
    /// ISATAP potential-router list, as `ip tunnel prl`.
    #[command(
        after_help = "Arguments: { prl-default ADDR | prl-nodefault ADDR | prl-delete ADDR }... dev NAME\n\nExamples:\n  xtun tunnel prl prl-default 10.0.0.1 dev isatap0\n  xtun tunnel prl prl-delete 10.0.0.1 dev isatap0\n  xtun map dump XTUN_PRL\n\nPackets from a listed router are accepted whatever their inner source; inner\ndestinations that are not ISATAP addresses go to a prl-default router."
    )]
    Prl {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
    /// Delete a tunnel interface and its data-plane state.
    #[command(after_help = "Example:\n  xtun tunnel del tun1")]
    Del {
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "NAME"
        )]
        args: Vec<String>,
    },
    /// List tunnels, as `ip tunnel show` does (`xtun -s tunnel show` adds counters).
    #[command(
        visible_alias = "list",
        visible_alias = "ls",
        after_help = "Arguments, as for `ip tunnel show`: [ NAME ] [ mode MODE ] [ remote ADDR ] [ local ADDR ] [ key KEY ] [ dev PHYS ]\n\nExamples:\n  xtun tunnel show\n  xtun tunnel show tun1\n  xtun tunnel show remote 10.10.20.2\n  xtun -s tunnel show\n  xtun -j -p tunnel show"
    )]
    Show {
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS",
            value_parser = Words(grammar::TUNNEL_WORDS),
            hide_possible_values = true
        )]
        args: Vec<String>,
    },
}

impl TunnelCommand {
    pub fn changes_state(&self) -> bool {
        !matches!(self, Self::Show { .. })
    }
}

/// `ipv6`: `xtun -6 tunnel ...`, tunnels over an IPv6 underlay.
pub fn run(cmd: TunnelCommand, stats: bool, format: Format, ipv6: bool) -> Result<()> {
    if ipv6 {
        return super::tunnel6::run(cmd, stats, format);
    }
    match cmd {
        TunnelCommand::Add { args } => add(&args),
        TunnelCommand::Change { args } => change(&args),
        TunnelCommand::Del { args } => {
            let name = config::TunnelSelector::parse(&args)?
                .name
                .ok_or(config::ConfigError::MissingName)?;
            del(&name)
        }
        TunnelCommand::Prl { args } => prl(&args),
        TunnelCommand::Show { args } => show(&args, stats, format),
    }
}

/// The underlay a tunnel receives on and normally leaves by: `dev`, or
/// where the route to `remote` leaves. Its outer source is `local`, or
/// 0.0.0.0 for `local any` (the route's source, per packet).
fn resolve_underlay(nl: &mut Netlink, spec: &TunnelSpec) -> Result<(Link, Ipv4Addr)> {
    let underlay = match (&spec.dev, spec.remote) {
        (Some(dev), _) => lookup(nl, dev)?,
        (None, Some(remote)) => {
            let route = nl
                .route_get(remote)
                .map_err(|e| anyhow!("no route to remote {remote}: {e}"))?;
            nl.link_by_index(route.oif)?
                .ok_or_else(|| anyhow!("no route to remote {remote}"))?
        }
        // Multipoint: it receives where its local address is, as the
        // kernel's tunnel receives whatever arrives for that address.
        (None, None) => match spec.local {
            Some(local) => link_with_address(nl, local)?.ok_or_else(|| {
                anyhow!("local {local} is not an address of this host: a tunnel with remote any receives on the interface that has it")
            })?,
            None => bail!(
                "a tunnel with remote any and local any ({}) needs `dev PHYS`: the underlay to receive on",
                spec.mode.name()
            ),
        },
    };
    // An L3 device (a TUN device, ARPHRD_NONE) has no link-layer header
    // for the data plane to receive behind or the neighbour code to fill.
    if underlay.link_type != ARPHRD_ETHER {
        bail!(
            "the tunnel would leave by {}, a {} device without Ethernet header (link type {}); xtun needs an Ethernet underlay",
            underlay.name,
            underlay.kind.as_deref().unwrap_or("layer-3"),
            underlay.link_type
        );
    }
    Ok((underlay, spec.local.unwrap_or(Ipv4Addr::UNSPECIFIED)))
}

/// The interface that has `addr`, if any.
fn link_with_address(nl: &mut Netlink, addr: Ipv4Addr) -> Result<Option<Link>> {
    for link in nl.links()? {
        let has = nl
            .addresses(link.index)?
            .iter()
            .any(|(local, _, _)| *local == std::net::IpAddr::V4(addr));
        if has {
            return Ok(Some(link));
        }
    }
    Ok(None)
}

/// `ARPHRD_ETHER`: Ethernet-like devices (veth, tap, bridge, macvlan,
/// vxlan, NICs).
pub(crate) const ARPHRD_ETHER: u16 = 1;

/// Refuses an underlay that is one of our own tunnel interfaces or ports.
pub(crate) fn check_not_ours(dp: &Dataplane, underlay: &Link) -> Result<()> {
    if dp.is_tunnel_or_port(underlay.index) {
        bail!(
            "the tunnel would leave by {}, an xtun tunnel; xtun does not nest tunnels",
            underlay.name
        );
    }
    Ok(())
}

/// For `local any`: the source of the route to the remote now, used where
/// the data plane cannot look the route up per packet.
fn default_source(nl: &mut Netlink, spec: &TunnelSpec) -> u32 {
    match (spec.local, spec.remote) {
        (None, Some(remote)) => nl
            .route_get(remote)
            .ok()
            .and_then(|r| r.prefsrc)
            .map_or(0, config::wire_addr),
        _ => 0,
    }
}

/// `rpfilter`: strict reverse-path filtering of inner sources on the tunnel
/// interface. IPv4: the kernel's rp_filter, which sees decapsulated packets
/// arrive there (it uses the higher of this and `all.rp_filter`). IPv6 has
/// no rp_filter: the data plane checks the route back itself with
/// bpf_fib_lookup, which only runs on an interface with IPv6 `forwarding`
/// set; that setting alone makes the host forward nothing (that takes
/// `all.forwarding`). Without `rpfilter` the interface's IPv6 forwarding
/// is the namespace default's, as for any new interface: a router's
/// tunnels keep it on, and the XDP fast path can look routes up there.
fn set_rpfilter(name: &str, spec: &TunnelSpec) -> Result<()> {
    let on = if spec.rpfilter { "1" } else { "0" };
    let v6_default = std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/forwarding");
    let v6 = match v6_default {
        Ok(default) if !spec.rpfilter => default.trim().to_string(),
        _ => on.to_string(),
    };
    for (path, value) in [
        (format!("/proc/sys/net/ipv4/conf/{name}/rp_filter"), on),
        (format!("/proc/sys/net/ipv6/conf/{name}/forwarding"), &v6),
    ] {
        std::fs::write(&path, value).with_context(|| format!("writing {path}"))?;
    }
    Ok(())
}

/// One packet per GRE header, sent in the order numbered (`device::set_transmit`).
fn set_transmit(nl: &mut Netlink, ifindex: u32, spec: &TunnelSpec) -> Result<()> {
    device::set_transmit(nl, ifindex, spec.needs_per_packet_header(), spec.oseq)
        .or_else(warn_unordered)
        .context("setting up transmission")
}

/// Without a /sys of its own namespace xtun cannot steer a numbered
/// tunnel's transmission to one CPU: the tunnel works, but a peer with
/// `iseq` may drop the packets that CPUs send out of their order.
pub(crate) fn warn_unordered(err: device::DeviceError) -> Result<(), device::DeviceError> {
    match err {
        device::DeviceError::NotInSysfs(_) => {
            eprintln!("xtun: warning: {err}; packets sent by several CPUs at once may leave out of sequence");
            Ok(())
        }
        other => Err(other),
    }
}

/// Fails if another tunnel already receives what `cfg` would.
fn check_decap_free(
    nl: &mut Netlink,
    dp: &mut Dataplane,
    verb: &str,
    name: &str,
    cfg: &TunnelConfig,
) -> Result<()> {
    if let Some(holder) = dp.decap_holder(cfg) {
        let Some(other) = nl.link_by_index(holder)?.map(|l| l.name) else {
            // Left by an xtun killed halfway: its interface is gone.
            dp.forget_tunnel(holder);
            return Ok(());
        };
        if other != name {
            let same_key = if decap_key(cfg).has_key != 0 {
                " and the same key"
            } else {
                ""
            };
            bail!(
                "{verb} tunnel \"{name}\" failed: tunnel {other} already has remote {} local {}{same_key}",
                any_or_addr(cfg.remote),
                any_or_addr(cfg.local),
            );
        }
    }
    Ok(())
}

/// `mode vti` rides on the kernel's IPsec; say what this kernel lacks.
fn vti_error() -> anyhow::Error {
    if kernel_has_esp() {
        anyhow!("mode vti is not implemented by xtun yet (use `ip tunnel add ... mode vti` with the kernel's IPsec)")
    } else {
        anyhow!("mode vti needs kernel IPsec with ESP (CONFIG_INET_ESP), which this kernel does not have")
    }
}

/// Is ESP built into the running kernel (or a module of it)?
fn kernel_has_esp() -> bool {
    use std::io::Read as _;
    let Ok(file) = std::fs::File::open("/proc/config.gz") else {
        return std::path::Path::new("/sys/module/esp4").exists();
    };
    let mut config = String::new();
    if flate2::read::GzDecoder::new(file)
        .read_to_string(&mut config)
        .is_err()
    {
        return false;
    }
    config
        .lines()
        .any(|l| l == "CONFIG_INET_ESP=y" || l == "CONFIG_INET_ESP=m")
}

pub(crate) fn add(args: &[String]) -> Result<()> {
    let spec = TunnelSpec::parse(args).map_err(|e| match e {
        config::ConfigError::Vti => vti_error(),
        other => other.into(),
    })?;
    create(&spec)
}

/// Creates the tunnel `spec` describes (`tunnel add`, `link add`).
pub(crate) fn create(spec: &TunnelSpec) -> Result<()> {
    let spec = spec.clone();
    let ethernet = spec.mode == Mode::Gretap;
    let mut nl = Netlink::new()?;
    if nl.link_by_name(&spec.name)?.is_some() {
        bail!("add tunnel \"{}\" failed: File exists", spec.name);
    }
    let (underlay, local) = resolve_underlay(&mut nl, &spec)?;

    let mut dp = Dataplane::find_or_load(&mut nl).context("loading the data plane")?;
    repair(&mut nl, &mut dp)?;
    check_not_ours(&dp, &underlay)?;
    let mtu = spec.mtu(underlay.mtu);
    let mut cfg = spec.to_config(local, underlay.index, mtu);
    cfg.default_src = default_source(&mut nl, &spec);
    check_decap_free(&mut nl, &mut dp, "add", &spec.name, &cfg)?;

    // The pair carries a provisional name until everything is in place: if
    // this process dies halfway, no interface has the tunnel's name, and
    // the next change removes what is left (`repair`).
    let failed = |err: anyhow::Error| err.context(format!("add tunnel \"{}\" failed", spec.name));
    let new = device::create(&mut nl, mtu, ethernet).map_err(|e| failed(e.into()))?;
    let link = new.link.clone();
    let result = (|| -> Result<()> {
        if ethernet {
            // Frames that are not IP are encapsulated in front of the whole
            // frame and pass the port once more: it takes them whole.
            nl.set_mtu(new.port.index, underlay.mtu.max(mtu))?;
        }
        set_transmit(&mut nl, link.index, &spec)?;
        set_rpfilter(&link.name, &spec)?;
        dp.add_tunnel(
            link.index,
            TunnelDevice::Veth {
                port: new.port.index,
            },
            cfg,
        )?;
        dp.attach_tunnel(&mut nl, link.index, new.port.index)
            .context("attaching encapsulation")?;
        dp.attach_underlay(&mut nl, &underlay, false, DecapChoice::Auto)
            .with_context(|| format!("attaching to {}", underlay.name))?;
        Ok(new.finish(&mut nl, &spec.name)?)
    })();
    if let Err(err) = result {
        // Leave nothing half-created.
        let _ = nl.del_link(link.index);
        dp.forget_tunnel(link.index);
        return Err(failed(err));
    }
    Ok(())
}

/// Repairs what an `xtun` killed halfway left in the maps: the entries of
/// interfaces that no longer exist (a killed `del`), and decapsulation
/// entries that no tunnel's configuration accounts for (a killed `change`).
/// Says what it repaired. Runs under the namespace lock, so no live `xtun`
/// is halfway through anything.
pub(crate) fn repair(nl: &mut Netlink, dp: &mut Dataplane) -> Result<()> {
    // Pairs an `add` killed halfway left under their provisional name.
    for link in nl.links()? {
        if device::is_unfinished(&link.name) && link.kind.as_deref() == Some("veth") {
            let _ = nl.del_link(link.index);
            eprintln!(
                "xtun: repaired: removed {}, left by an add that did not finish",
                link.name
            );
        }
    }
    let live: std::collections::HashSet<u32> = nl.links()?.iter().map(|l| l.index).collect();
    for repaired in dp.repair(&live)? {
        match repaired {
            Repaired::Interface(ifindex) => eprintln!(
                "xtun: repaired: removed the map entries of deleted interface {ifindex}"
            ),
            Repaired::Decap(key, ifindex) => eprintln!(
                "xtun: repaired: removed a stale decapsulation entry (remote {} local {}) of interface {ifindex}",
                any_or_addr(key.remote),
                any_or_addr(key.local)
            ),
        }
    }
    Ok(())
}

/// The tunnel called `name` in this namespace, with the data plane.
fn find_tunnel(
    nl: &mut Netlink,
    name: &str,
    verb: &str,
) -> Result<(Dataplane, Link, TunnelConfig)> {
    let (dp, link, cfg) = find_any(nl, name, verb)?;
    // As `ip tunnel` knows only ipip, gre and sit devices.
    if cfg.mode == MODE_GRETAP || cfg.mode == MODE_IP6GRETAP {
        bail!(
            "{verb} tunnel \"{name}\" failed: {} link (see `xtun link`)",
            if cfg.mode == MODE_GRETAP {
                "a gretap"
            } else {
                "an ip6gretap"
            }
        );
    }
    Ok((dp, link, cfg))
}

/// The tunnel or gretap link called `name`, with the data plane.
pub(crate) fn find_any(
    nl: &mut Netlink,
    name: &str,
    verb: &str,
) -> Result<(Dataplane, Link, TunnelConfig)> {
    config::validate_ifname(name)?;
    let link = nl
        .link_by_name(name)?
        .ok_or_else(|| anyhow!("{verb} tunnel \"{name}\" failed: No such device"))?;
    let dp = Dataplane::find(nl)?
        .ok_or_else(|| anyhow!("{verb} tunnel \"{name}\" failed: not an xtun tunnel"))?;
    let cfg = dp
        .tunnel(link.index)
        .ok_or_else(|| anyhow!("{verb} tunnel \"{name}\" failed: not an xtun tunnel"))?;
    Ok((dp, link, cfg))
}

pub(crate) fn change(args: &[String]) -> Result<()> {
    let name = match args {
        [first, second, ..] if first == "name" => second.as_str(),
        [first, ..] => first.as_str(),
        [] => bail!("missing tunnel name"),
    };
    let mut nl = Netlink::new()?;
    let (mut dp, link, old) = find_tunnel(&mut nl, name, "change")?;
    if is_ipv6_underlay(old.mode) {
        bail!("change tunnel \"{name}\" failed: a tunnel over IPv6 (use `xtun -6 tunnel change`; its underlay family cannot change)");
    }
    repair(&mut nl, &mut dp)?;
    let dev = if old.flags & TUNNEL_F_BOUND_DEV != 0 {
        nl.link_by_index(old.underlay_ifindex)?.map(|l| l.name)
    } else {
        None
    };
    let base = TunnelSpec::from_config(name, &old, dev).ok_or_else(|| {
        anyhow!("change tunnel \"{name}\" failed: unknown mode in the data plane")
    })?;
    let spec = TunnelSpec::parse_change(&base, args).map_err(|e| match e {
        config::ConfigError::Vti => config::ConfigError::ModeChange.into(),
        other => anyhow::Error::from(other),
    })?;
    let (underlay, local) = resolve_underlay(&mut nl, &spec)?;
    let mtu = spec.mtu(underlay.mtu);
    check_not_ours(&dp, &underlay)?;
    let mut cfg = spec.to_config(local, underlay.index, mtu);
    cfg.default_src = default_source(&mut nl, &spec);
    check_decap_free(&mut nl, &mut dp, "change", name, &cfg)?;
    if (spec.needs_per_packet_header(), spec.oseq) != (base.needs_per_packet_header(), base.oseq) {
        set_transmit(&mut nl, link.index, &spec)?;
    }
    if spec.rpfilter != base.rpfilter {
        set_rpfilter(name, &spec)?;
    }
    if underlay.index != old.underlay_ifindex {
        dp.attach_underlay(&mut nl, &underlay, false, DecapChoice::Auto)
            .with_context(|| format!("attaching to {}", underlay.name))?;
    }

    let cfg = dp.change_tunnel(link.index, cfg)?;
    if link.mtu != mtu {
        device::set_mtu(&mut nl, link.index, cfg.port_ifindex, mtu).context("setting the MTU")?;
    }
    if underlay.index != old.underlay_ifindex {
        release_underlay(&mut nl, &mut dp, old.underlay_ifindex)?;
    }
    Ok(())
}

/// Detaches an underlay that `tunnel add` attached implicitly, once no
/// tunnel uses it any more.
pub(crate) fn release_underlay(nl: &mut Netlink, dp: &mut Dataplane, ifindex: u32) -> Result<()> {
    if !dp.tunnels_on_underlay(ifindex).is_empty() {
        return Ok(());
    }
    if let Some(underlay) = nl.link_by_index(ifindex)? {
        let filter = dp.underlay_filter(nl, &underlay)?;
        if filter.and_then(|f| f.name).as_deref() == Some(FILTER_UNDERLAY_AUTO) {
            dp.detach_underlay(nl, &underlay)
                .with_context(|| format!("detaching from {}", underlay.name))?;
        }
    }
    Ok(())
}

/// `ip tunnel prl`: edits the potential-router list of an ISATAP tunnel.
pub(crate) fn prl(args: &[String]) -> Result<()> {
    let mut edits: Vec<PrlEdit> = Vec::new();
    let mut dev = None;
    let mut it = args.iter();
    while let Some(word) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow!("\"{word}\" needs an argument"))?;
        match word.as_str() {
            "prl-default" | "prl-nodefault" | "prl-delete" => {
                let addr: Ipv4Addr = value
                    .parse()
                    .map_err(|_| anyhow!("invalid address \"{value}\""))?;
                if addr.is_unspecified() {
                    bail!("invalid router address {addr}");
                }
                edits.push(match word.as_str() {
                    "prl-default" => PrlEdit::Default(addr),
                    "prl-nodefault" => PrlEdit::NoDefault(addr),
                    _ => PrlEdit::Delete(addr),
                });
            }
            "dev" => dev = Some(value.as_str()),
            other => bail!("unknown argument \"{other}\""),
        }
    }
    let dev = dev.ok_or_else(|| anyhow!("missing `dev NAME` (the isatap tunnel)"))?;
    if edits.is_empty() {
        bail!("nothing to do: give prl-default, prl-nodefault or prl-delete ADDR");
    }
    let mut nl = Netlink::new()?;
    let (mut dp, link, cfg) = find_tunnel(&mut nl, dev, "prl")?;
    if cfg.mode != MODE_ISATAP {
        bail!("{dev} is not an isatap tunnel");
    }
    dp.edit_prl(link.index, &edits).map_err(|e| match e {
        DataplaneError::NotInPrl(addr) => anyhow!(
            "{} is not in {dev}'s potential-router list",
            addr_from_wire(addr)
        ),
        other => other.into(),
    })
}

pub(crate) fn del(name: &str) -> Result<()> {
    let mut nl = Netlink::new()?;
    let (dp, link, cfg) = find_tunnel(&mut nl, name, "delete")?;
    remove(nl, dp, &link, &cfg)
}

/// Deletes the tunnel (or gretap link) `link` and its data-plane state.
pub(crate) fn remove(
    mut nl: Netlink,
    mut dp: Dataplane,
    link: &Link,
    cfg: &TunnelConfig,
) -> Result<()> {
    let name = &link.name;
    repair(&mut nl, &mut dp)?;
    // The interface first: that stops the tunnel at once, with its filter.
    // Map entries left by a kill after this point are repaired later.
    nl.del_link(link.index)
        .with_context(|| format!("delete tunnel \"{name}\" failed"))?;
    dp.forget_tunnel(link.index);

    // An underlay that `tunnel add` attached implicitly goes with its last tunnel.
    release_underlay(&mut nl, &mut dp, cfg.underlay_ifindex)
}

/// `ip tunnel show`: with a name whose mode is known (given, or implied as
/// in `gre1`), that tunnel or an error; otherwise every tunnel the words
/// select (a name, remote, local, key, dev, mode), silently none.
fn show(args: &[String], stats: bool, format: Format) -> Result<()> {
    let sel = config::TunnelSelector::parse(args)?;
    let mut nl = Netlink::new()?;
    if let Some(dev) = &sel.dev {
        lookup(&mut nl, dev)?;
    }
    let (dp, mut tunnels) = match (&sel.name, sel.mode) {
        (Some(name), Some(_)) => {
            let (dp, link, cfg) = find_tunnel(&mut nl, name, "get")?;
            if is_ipv6_underlay(cfg.mode) {
                bail!(
                    "get tunnel \"{name}\" failed: a tunnel over IPv6 (see `xtun -6 tunnel show`)"
                );
            }
            (Some(dp), vec![(link, cfg)])
        }
        _ => match Dataplane::find(&mut nl)? {
            None => (None, vec![]),
            Some(dp) => {
                let links = nl.links()?;
                let tunnels = dp
                    .tunnels()
                    .into_iter()
                    // `ip tunnel show` lists only ipip, gre and sit
                    // devices, not gretap's Ethernet ones.
                    .filter(|(_, cfg)| cfg.mode != MODE_GRETAP)
                    // Nor tunnels over IPv6: `ip -6 tunnel show` lists those.
                    .filter(|(_, cfg)| !is_ipv6_underlay(cfg.mode))
                    .filter_map(|(ifindex, cfg)| {
                        let link = links.iter().find(|l| l.index == ifindex)?;
                        let dev = bound_dev(&links, &cfg);
                        sel.selects(&link.name, &cfg, dev)
                            .then(|| (link.clone(), cfg))
                    })
                    .collect();
                (Some(dp), tunnels)
            }
        },
    };
    // In the kernel's link order, as `ip tunnel show` lists them.
    tunnels.sort_by_key(|(link, _)| link.index);
    let links = nl.links()?;
    let mut docs = Vec::new();
    for (link, cfg) in &tunnels {
        let underlay = underlay_in_use(&mut nl, &links, cfg);
        let dev = bound_dev(&links, cfg);
        let path_mtus = dp
            .as_ref()
            .map(|dp| dp.path_mtus(link.index))
            .unwrap_or_default();
        let counters = stats
            .then(|| {
                dp.as_ref()
                    .map(|dp| dp.tunnel_totals(link.index).unwrap_or_default())
            })
            .flatten();
        if format.json {
            docs.push(tunnel_json(
                link,
                cfg,
                dev,
                underlay,
                &path_mtus,
                counters.as_ref(),
            ));
            continue;
        }
        let mut record = ShowLine {
            name: &link.name,
            cfg,
            dev,
        }
        .to_string();
        if let Some(s) = &counters {
            record.push_str(&stats_text(s));
        }
        // `-d`: where the packets leave now; `-d` or `-s`: what the path
        // allows, as learnt from ICMP.
        if format.details {
            if let Some(underlay) = underlay {
                record.push_str(&format!("\n    underlay {}", underlay.name));
            }
        }
        if format.details || counters.is_some() {
            for (remote, mtu, left) in &path_mtus {
                record.push_str(&format!(
                    "\n    path mtu {mtu} to {} expires {left}s",
                    addr_from_wire(*remote)
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
/// route to its remote leads (the data plane routes each packet).
fn underlay_in_use<'a>(
    nl: &mut Netlink,
    links: &'a [Link],
    cfg: &TunnelConfig,
) -> Option<&'a Link> {
    let index = if cfg.flags & TUNNEL_F_BOUND_DEV == 0 && cfg.remote != 0 {
        nl.route_get(addr_from_wire(cfg.remote))
            .map_or(cfg.underlay_ifindex, |r| r.oif)
    } else {
        cfg.underlay_ifindex
    };
    links.iter().find(|l| l.index == index)
}

/// The `dev` a tunnel was bound to, by name (none when it follows the route).
pub(crate) fn bound_dev<'a>(links: &'a [Link], cfg: &TunnelConfig) -> Option<&'a str> {
    if cfg.flags & TUNNEL_F_BOUND_DEV == 0 {
        return None;
    }
    links
        .iter()
        .find(|l| l.index == cfg.underlay_ifindex)
        .map(|l| l.name.as_str())
}

/// One tunnel as JSON: first every field `ip -j tunnel show` prints, with
/// its names, types and order; then xtun's own (ifindex, underlay, mtu,
/// rpfilter, prl_default, and with -s the counters).
fn tunnel_json(
    link: &Link,
    cfg: &TunnelConfig,
    dev: Option<&str>,
    underlay: Option<&Link>,
    path_mtus: &[(u32, u32, u64)],
    stats: Option<&TunnelStats>,
) -> Ordered {
    let mode = Mode::from_map(cfg.mode);
    let mut doc = Ordered::default();
    doc.push("ifname", link.name.clone());
    doc.push(
        "mode",
        mode.map_or("unknown/ip".to_string(), |m| {
            format!("{}/ip", m.show_name())
        }),
    );
    doc.push("remote", addr_from_wire(cfg.remote).to_string());
    doc.push("local", addr_from_wire(cfg.local).to_string());
    if let Some(dev) = dev {
        doc.push("dev", dev.to_string());
    }
    if cfg.ttl != 0 {
        doc.push("ttl", cfg.ttl);
    }
    // `ip` prints the kernel's TOS byte, where an odd value means inherit;
    // plain inherit (1) only in text.
    let tos = cfg.tos | u8::from(cfg.flags & TUNNEL_F_TOS_INHERIT != 0);
    if tos > 1 {
        doc.push("tos", grammar::dsfield_name(tos));
    }
    if cfg.flags & TUNNEL_F_PMTUDISC == 0 {
        doc.push("nopmtudisc", Value::Null);
    }
    let ikey = (cfg.flags & TUNNEL_F_IKEY != 0).then(|| u32::from_be(cfg.ikey));
    let okey = (cfg.flags & TUNNEL_F_OKEY != 0).then(|| u32::from_be(cfg.okey));
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
    if mode == Some(Mode::Gre) {
        let flags: Vec<&str> = [
            (TUNNEL_F_ISEQ, "rx_drop_ooseq"),
            (TUNNEL_F_ICSUM, "rx_csum"),
            (TUNNEL_F_OSEQ, "tx_seq"),
            (TUNNEL_F_OCSUM, "tx_csum"),
        ]
        .into_iter()
        .filter(|(flag, _)| cfg.flags & flag != 0)
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
            json!({ "remote": addr_from_wire(*remote).to_string(), "mtu": mtu, "expires_in": left })
        })
        .collect();
    doc.push("path_mtu", json!(path_mtus));
    doc.push("rpfilter", cfg.flags & TUNNEL_F_RPFILTER != 0);
    if mode == Some(Mode::Isatap) {
        doc.push(
            "prl_default",
            (cfg.prl_default != 0).then(|| addr_from_wire(cfg.prl_default).to_string()),
        );
    }
    if let Some(s) = stats {
        doc.push("stats", stats_json(s));
    }
    doc
}

/// `-s`: a tunnel's counters as `ip -s tunnel show` prints them.
pub(crate) fn stats_text(s: &TunnelStats) -> String {
    format!(
        "\nRX: Packets    Bytes        Errors CsumErrs OutOfSeq Mcasts\n    {:<10} {:<12} {:<6} {:<8} {:<8} {:<8}\nTX: Packets    Bytes        Errors DeadLoop NoRoute  NoBufs\n    {:<10} {:<12} {:<6} {:<8} {:<8} {:<6}",
        s.rx_packets, s.rx_bytes, s.rx_errors, s.rx_csum_errors, s.rx_out_of_seq, s.rx_mcasts,
        s.tx_packets, s.tx_bytes, s.tx_errors, s.tx_dead_loop, s.tx_no_route, s.tx_no_bufs
    )
}

/// `-s -j`: the same counters, as `stats`.
pub(crate) fn stats_json(s: &TunnelStats) -> Value {
    json!({
        "rx": {
            "packets": s.rx_packets, "bytes": s.rx_bytes, "errors": s.rx_errors,
            "csum_errors": s.rx_csum_errors, "out_of_sequence": s.rx_out_of_seq,
            "multicast": s.rx_mcasts,
        },
        "tx": {
            "packets": s.tx_packets, "bytes": s.tx_bytes, "errors": s.tx_errors,
            "dead_loop": s.tx_dead_loop, "no_route": s.tx_no_route, "no_buffers": s.tx_no_bufs,
        },
    })
}
