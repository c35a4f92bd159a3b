//! `xtun apply -f FILE [--dry-run]` and `xtun export`: converge the network
//! namespace to a declarative file, and write the current state as one.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use anyhow::{anyhow, Context as _, Result};
use tunnel_common::maps::*;
use tunnel_userspace::{
    config::{Prefix, TunnelSpec},
    config6::Tunnel6Spec,
    dataplane::{Dataplane, FILTER_UNDERLAY},
    desired::{self, Address, DecapPref, Desired, Tunnel6Entry, TunnelEntry},
    netlink::{Link, Netlink},
};

use super::{attach, neigh, tunnel, tunnel6};

/// One step of a plan, in the order it runs.
enum Step {
    Attach(String, DecapPref),
    /// The XDP forwarding fast path on (true) or off for an attached LAN.
    Forward(String, bool),
    Delete(String),
    Add(TunnelSpec),
    Change(TunnelSpec),
    /// Mode or `dev` removed: `ip tunnel change` cannot do it.
    Replace(TunnelSpec),
    Add6(Tunnel6Spec),
    Change6(Tunnel6Spec),
    /// Driver (ip6gre, ip6tnl) or `dev` removed.
    Replace6(Tunnel6Spec),
    Up(String),
    Address(String, Address),
    NeighAdd(String, Prefix, Ipv4Addr),
    NeighDel(String, Prefix),
    Prl(String, &'static str, Ipv4Addr),
    Detach(String),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Attach(dev, decap) => write!(f, "attach {dev} --decap {}", decap.name()),
            Step::Forward(dev, on) => {
                write!(
                    f,
                    "attach {dev} --forward {}",
                    if *on { "xdp" } else { "off" }
                )
            }
            Step::Delete(name) => write!(f, "tunnel del {name}"),
            Step::Add(spec) => write!(f, "tunnel add {}", spec.to_words().join(" ")),
            Step::Change(spec) => write!(f, "tunnel change {}", spec.to_words().join(" ")),
            Step::Replace(spec) => write!(
                f,
                "tunnel del {0}; tunnel add {1}",
                spec.name,
                spec.to_words().join(" ")
            ),
            Step::Add6(spec) => write!(f, "-6 tunnel add {}", spec.to_words().join(" ")),
            Step::Change6(spec) => write!(f, "-6 tunnel change {}", spec.to_words().join(" ")),
            Step::Replace6(spec) => write!(
                f,
                "-6 tunnel del {0}; -6 tunnel add {1}",
                spec.name,
                spec.to_words().join(" ")
            ),
            Step::Up(name) => write!(f, "link set {name} up"),
            Step::Address(name, a) => write!(f, "addr add {a} dev {name}"),
            Step::NeighAdd(name, p, r) => write!(f, "neigh add {p} lladdr {r} dev {name}"),
            Step::NeighDel(name, p) => write!(f, "neigh del {p} dev {name}"),
            Step::Prl(name, verb, r) => write!(f, "tunnel prl {verb} {r} dev {name}"),
            Step::Detach(dev) => write!(f, "detach {dev}"),
        }
    }
}

/// What the namespace holds now, in the file's terms.
pub fn current(nl: &mut Netlink) -> Result<Desired> {
    let Some(dp) = Dataplane::find(nl)? else {
        return Ok(Desired::default());
    };
    let links = nl.links()?;
    let name_of = |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
    let mut state = Desired::default();
    for link in &links {
        let explicit = dp
            .underlay_filter(nl, link)?
            .is_some_and(|f| f.name.as_deref() == Some(FILTER_UNDERLAY));
        if explicit {
            let decap = if link.xdp_prog_id.is_some() {
                DecapPref::Xdp
            } else {
                DecapPref::Tc
            };
            state.attach.insert(link.name.clone(), decap);
            if dp.forwards(link.index) {
                state.forward.insert(link.name.clone());
            }
        }
    }
    let mut neighbours: BTreeMap<u32, BTreeMap<Prefix, Ipv4Addr>> = BTreeMap::new();
    for n in dp.neighbours()? {
        neighbours
            .entry(n.ifindex)
            .or_default()
            .insert(n.prefix, n.remote);
    }
    let mut routers: BTreeMap<u32, BTreeMap<Ipv4Addr, bool>> = BTreeMap::new();
    for (ifindex, router, default) in dp.routers() {
        routers.entry(ifindex).or_default().insert(router, default);
    }
    // gretap links are `ip link` state, not `ip tunnel`'s: neither
    // exported nor removed by an apply. Tunnels over IPv6 follow.
    for (ifindex, cfg) in dp
        .tunnels()
        .into_iter()
        .filter(|(_, c)| c.mode != MODE_GRETAP && !is_ipv6_underlay(c.mode))
    {
        let (Some(link), dev) = (
            links.iter().find(|l| l.index == ifindex),
            (cfg.flags & TUNNEL_F_BOUND_DEV != 0)
                .then(|| name_of(cfg.underlay_ifindex))
                .flatten(),
        ) else {
            continue;
        };
        let Some(spec) = TunnelSpec::from_config(&link.name, &cfg, dev) else {
            continue;
        };
        state.tunnels.push(TunnelEntry {
            spec,
            up: is_up(link),
            addresses: addresses(nl, ifindex)?,
            neighbours: neighbours.remove(&ifindex).unwrap_or_default(),
            routers: routers.remove(&ifindex).unwrap_or_default(),
        });
    }
    state.tunnels.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    for (ifindex, cfg6) in dp.tunnels6() {
        let (Some(link), Some(cfg)) = (
            links.iter().find(|l| l.index == ifindex),
            dp.tunnel(ifindex),
        ) else {
            continue;
        };
        // ip6gretap links are `ip link` state, as gretap's.
        if cfg.mode == MODE_IP6GRETAP {
            continue;
        }
        let dev = tunnel::bound_dev(&links, &cfg).map(str::to_string);
        let Some(spec) = Tunnel6Spec::from_config(&link.name, &cfg, &cfg6, dev) else {
            continue;
        };
        state.tunnels6.push(Tunnel6Entry {
            spec,
            up: is_up(link),
            addresses: addresses(nl, ifindex)?,
        });
    }
    state.tunnels6.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
    Ok(state)
}

fn is_up(link: &Link) -> bool {
    link.flags & libc::IFF_UP as u32 != 0
}

/// The addresses on interface `ifindex`, in the file's terms.
fn addresses(nl: &mut Netlink, ifindex: u32) -> Result<BTreeSet<Address>> {
    Ok(nl
        .addresses(ifindex)?
        .into_iter()
        .map(|(local, len, address)| Address {
            local,
            len,
            peer: (address != local).then_some(address),
        })
        .collect())
}

/// The steps from `now` to `want`.
fn plan(now: &Desired, want: &Desired) -> Vec<Step> {
    let mut steps = Vec::new();
    for (dev, decap) in &want.attach {
        let needed = match now.attach.get(dev) {
            None => true,
            Some(have) => *decap != DecapPref::Auto && have != decap,
        };
        if needed {
            steps.push(Step::Attach(dev.clone(), *decap));
        }
    }
    for dev in want.attach.keys() {
        let on = want.forward.contains(dev);
        if on != now.forward.contains(dev) {
            steps.push(Step::Forward(dev.clone(), on));
        }
    }
    let have: BTreeMap<&str, &TunnelEntry> = now
        .tunnels
        .iter()
        .map(|t| (t.spec.name.as_str(), t))
        .collect();
    let wanted: BTreeSet<&str> = want.tunnels.iter().map(|t| t.spec.name.as_str()).collect();
    let wanted6: BTreeSet<&str> = want.tunnels6.iter().map(|t| t.spec.name.as_str()).collect();
    // A name that moves between the families is deleted and added again.
    for name in now.tunnels.iter().map(|t| t.spec.name.as_str()) {
        if !wanted.contains(name) {
            steps.push(Step::Delete(name.to_string()));
        }
    }
    for name in now.tunnels6.iter().map(|t| t.spec.name.as_str()) {
        if !wanted6.contains(name) {
            steps.push(Step::Delete(name.to_string()));
        }
    }
    let none = (
        false,
        BTreeSet::new(),
        BTreeMap::new(),
        BTreeMap::<Ipv4Addr, bool>::new(),
    );
    for t in &want.tunnels {
        let name = t.spec.name.clone();
        // What the interface has now: nothing when it is (re)created.
        let before = match have.get(name.as_str()) {
            None => {
                steps.push(Step::Add(t.spec.clone()));
                None
            }
            Some(old) if old.spec == t.spec => Some(*old),
            Some(old)
                if old.spec.mode != t.spec.mode
                    || (old.spec.dev.is_some() && t.spec.dev.is_none()) =>
            {
                steps.push(Step::Replace(t.spec.clone()));
                None
            }
            Some(old) => {
                steps.push(Step::Change(t.spec.clone()));
                Some(*old)
            }
        };
        let (up, addresses, neighbours, routers) = before
            .map_or((none.0, &none.1, &none.2, &none.3), |b| {
                (b.up, &b.addresses, &b.neighbours, &b.routers)
            });
        interface_steps(&mut steps, &name, (t.up, &t.addresses), (up, addresses));
        for prefix in neighbours.keys() {
            if !t.neighbours.contains_key(prefix) {
                steps.push(Step::NeighDel(name.clone(), *prefix));
            }
        }
        for (prefix, remote) in &t.neighbours {
            if neighbours.get(prefix) != Some(remote) {
                steps.push(Step::NeighAdd(name.clone(), *prefix, *remote));
            }
        }
        for router in routers.keys() {
            if !t.routers.contains_key(router) {
                steps.push(Step::Prl(name.clone(), "prl-delete", *router));
            }
        }
        for (router, default) in &t.routers {
            if routers.get(router) != Some(default) {
                let verb = if *default {
                    "prl-default"
                } else {
                    "prl-nodefault"
                };
                steps.push(Step::Prl(name.clone(), verb, *router));
            }
        }
    }
    let have6: BTreeMap<&str, &Tunnel6Entry> = now
        .tunnels6
        .iter()
        .map(|t| (t.spec.name.as_str(), t))
        .collect();
    for t in &want.tunnels6 {
        let name = t.spec.name.clone();
        let before = match have6.get(name.as_str()) {
            None => {
                steps.push(Step::Add6(t.spec.clone()));
                None
            }
            Some(old) if old.spec == t.spec => Some(*old),
            Some(old)
                if old.spec.mode.driver() != t.spec.mode.driver()
                    || (old.spec.dev.is_some() && t.spec.dev.is_none()) =>
            {
                steps.push(Step::Replace6(t.spec.clone()));
                None
            }
            Some(old) => {
                steps.push(Step::Change6(t.spec.clone()));
                Some(*old)
            }
        };
        let (up, addresses) = before.map_or((false, &none.1), |b| (b.up, &b.addresses));
        interface_steps(&mut steps, &name, (t.up, &t.addresses), (up, addresses));
    }
    for dev in now.attach.keys() {
        if !want.attach.contains_key(dev) {
            steps.push(Step::Detach(dev.clone()));
        }
    }
    steps
}

/// Up and addresses of interface `name`: (wanted, had).
fn interface_steps(
    steps: &mut Vec<Step>,
    name: &str,
    (up, addresses): (bool, &BTreeSet<Address>),
    (was_up, had): (bool, &BTreeSet<Address>),
) {
    if up && !was_up {
        steps.push(Step::Up(name.to_string()));
    }
    for a in addresses.difference(had) {
        steps.push(Step::Address(name.to_string(), *a));
    }
}

fn run_step(nl: &mut Netlink, step: &Step) -> Result<()> {
    let index = |nl: &mut Netlink, name: &str| -> Result<u32> {
        nl.link_by_name(name)?
            .map(|l| l.index)
            .ok_or_else(|| anyhow!("Cannot find device \"{name}\""))
    };
    match step {
        Step::Attach(dev, decap) => attach::attach(
            dev,
            match decap {
                DecapPref::Auto => attach::Decap::Auto,
                DecapPref::Xdp => attach::Decap::Xdp,
                DecapPref::Tc => attach::Decap::Tc,
            },
            None,
        ),
        Step::Forward(dev, on) => {
            let forward = if *on {
                attach::Forward::Xdp
            } else {
                attach::Forward::Off
            };
            attach::attach(dev, attach::Decap::Auto, Some(forward))
        }
        Step::Delete(name) => tunnel::del(name),
        Step::Add(spec) => tunnel::add(&spec.to_words()),
        Step::Change(spec) => tunnel::change(&spec.to_words()),
        Step::Replace(spec) => {
            tunnel::del(&spec.name)?;
            tunnel::add(&spec.to_words())
        }
        Step::Add6(spec) => tunnel6::add(&spec.to_words()),
        Step::Change6(spec) => tunnel6::change(&spec.to_words()),
        Step::Replace6(spec) => {
            tunnel::del(&spec.name)?;
            tunnel6::add(&spec.to_words())
        }
        Step::Up(name) => {
            let i = index(nl, name)?;
            Ok(nl.set_up(i)?)
        }
        Step::Address(name, a) => {
            let i = index(nl, name)?;
            nl.add_address(i, a.local, a.len, a.peer)?;
            Ok(())
        }
        Step::NeighAdd(name, prefix, remote) => neigh::run_words(
            "add",
            &[
                &prefix.to_string(),
                "lladdr",
                &remote.to_string(),
                "dev",
                name,
            ],
        ),
        Step::NeighDel(name, prefix) => {
            neigh::run_words("del", &[&prefix.to_string(), "dev", name])
        }
        Step::Prl(name, verb, router) => tunnel::prl(&[
            verb.to_string(),
            router.to_string(),
            "dev".into(),
            name.clone(),
        ]),
        Step::Detach(dev) => {
            // Only once no tunnel leaves by it.
            let link: Link = attach::lookup(nl, dev)?;
            if let Some(dp) = Dataplane::find(nl)? {
                if !dp.tunnels_on_underlay(link.index).is_empty() {
                    println!("kept {dev} attached: tunnels leave by it");
                    return Ok(());
                }
            }
            attach::detach(dev)
        }
    }
}

pub fn apply(file: &str, dry_run: bool) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let want = desired::parse(file, &text)?;
    let mut nl = Netlink::new()?;
    // Every interface the file names must exist before anything changes.
    for dev in want
        .attach
        .keys()
        .chain(want.tunnels.iter().filter_map(|t| t.spec.dev.as_ref()))
        .chain(want.tunnels6.iter().filter_map(|t| t.spec.dev.as_ref()))
    {
        if nl.link_by_name(dev)?.is_none() {
            anyhow::bail!("{file}: Cannot find device \"{dev}\"");
        }
    }
    let now = current(&mut nl)?;
    let steps = plan(&now, &want);
    if steps.is_empty() {
        println!("no changes: the namespace already matches {file}");
        return Ok(());
    }
    for step in &steps {
        if dry_run {
            println!("would: {step}");
            continue;
        }
        run_step(&mut nl, step).with_context(|| format!("{step}"))?;
        println!("done: {step}");
    }
    if !dry_run {
        println!("applied {} changes from {file}", steps.len());
    }
    Ok(())
}

pub fn export() -> Result<()> {
    let mut nl = Netlink::new()?;
    print!("{}", desired::render(&current(&mut nl)?));
    Ok(())
}
