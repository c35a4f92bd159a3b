//! `xtun monitor`: one line per packet the data plane drops, or passes as
//! not ours although it is a tunnel protocol (with `--all`, also each one
//! it decapsulates or encapsulates), with its headers decoded and, for a
//! packet no tunnel matched, the lookup made and the nearest tunnel.
//!
//! The data plane writes events only while a monitor holds a lease on one
//! of its ring buffers (`Dataplane::monitor_claim`), renewed every second:
//! a monitor killed by any signal stops costing anything once the lease
//! expires. `-w FILE` writes the packets' first bytes as pcap.

use std::{
    collections::BTreeSet,
    fs::File,
    io::{self, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde_json::{json, Value};
use tunnel_common::{
    maps::{
        DecapKey, DecapTarget, MonitorEvent, LEASE_REFRESH_NS, MONITOR_SNAP, MON_HOOK_ENCAP,
        MON_HOOK_TC, MON_HOOK_XDP,
    },
    stats::{COUNTER_NAMES, RX_DECAP, RX_PASS_NO_TUNNEL, TX_ENCAP},
    wire,
};
use tunnel_userspace::{
    config::addr_from_wire,
    dataplane::{monotonic_ns, Dataplane, MonitorClaim},
    lock::NamespaceLock,
    netlink::Netlink,
};

use super::{output::Format, RELEASE_WAIT};

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// `dev DEV`: only events on this interface (an underlay, or a tunnel
    /// for what it sends); `tunnel NAME`: only events of this tunnel.
    #[arg(value_name = "dev DEV | tunnel NAME")]
    pub filter: Vec<String>,
    /// Only these reasons (names as `xtun stats` prints them, with or
    /// without the rx_/tx_ prefix), comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "R,...")]
    pub reason: Vec<String>,
    /// Also show decapsulated and encapsulated packets.
    #[arg(long)]
    pub all: bool,
    /// Write the packets (their first 128 bytes) to FILE in pcap format,
    /// `-` for standard output (`xtun monitor -w - | wireshark -k -i -`).
    #[arg(short = 'w', long = "pcap", value_name = "FILE")]
    pub pcap: Option<String>,
    /// Stop after N events.
    #[arg(short = 'c', long = "count", value_name = "N")]
    pub count: Option<u64>,
    /// Events per second per CPU the data plane may write (token bucket);
    /// the rest are counted as lost.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// SIGINT, SIGTERM, SIGHUP and SIGPIPE end the loop, so the slot is
/// given back at once; any other end leaves it to the lease.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: installs a handler that only stores to an atomic; no
        // SA_RESTART, so poll returns EINTR.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// What the events are filtered on, resolved to ifindexes and counter slots.
struct Filter {
    dev: Option<u32>,
    tunnel: Option<u32>,
    reasons: BTreeSet<u32>,
}

impl Filter {
    fn wants(&self, ev: &MonitorEvent) -> bool {
        self.dev.is_none_or(|d| d == ev.ifindex)
            && self.tunnel.is_none_or(|t| t == ev.tunnel)
            && (self.reasons.is_empty() || self.reasons.contains(&ev.reason))
    }
}

fn reason_slot(name: &str) -> Result<u32> {
    let found = COUNTER_NAMES.iter().position(|n| {
        *n == name || n.strip_prefix("rx_") == Some(name) || n.strip_prefix("tx_") == Some(name)
    });
    match found {
        Some(i) => Ok(i as u32),
        None => bail!(
            "unknown reason \"{name}\"; reasons are: {}",
            COUNTER_NAMES.join(", ")
        ),
    }
}

/// Names of interfaces, by ifindex, refreshed when an unknown one shows up.
struct Names {
    links: Vec<(u32, String)>,
}

impl Names {
    fn load(nl: &mut Netlink) -> Result<Self> {
        Ok(Self {
            links: nl.links()?.into_iter().map(|l| (l.index, l.name)).collect(),
        })
    }

    fn get(&self, ifindex: u32) -> Option<&str> {
        self.links
            .iter()
            .find(|(i, _)| *i == ifindex)
            .map(|(_, n)| n.as_str())
    }

    fn index(&self, name: &str) -> Option<u32> {
        self.links.iter().find(|(_, n)| n == name).map(|(i, _)| *i)
    }

    fn show(&self, ifindex: u32) -> String {
        self.get(ifindex)
            .map_or_else(|| format!("if{ifindex}"), str::to_owned)
    }
}

pub fn run(args: MonitorArgs, format: Format) -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(mut dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let names = Names::load(&mut nl)?;
    let filter = resolve_filter(&args, &names)?;
    let mut pcap = match args.pcap.as_deref() {
        None => None,
        Some("-") => Some(Pcap::new(Box::new(io::stdout()))?),
        Some(path) => Some(Pcap::new(Box::new(
            File::create(path).with_context(|| format!("creating {path}"))?,
        ))?),
    };
    install_signal_handlers();
    let claim = {
        let _lock = NamespaceLock::acquire().context("locking the namespace's data plane")?;
        dp.monitor_claim(args.all, args.rate, args.rate.max(16))
            .context("claiming a monitor slot")?
    };
    let what = if args.all {
        "every outcome"
    } else {
        "drops and tunnel packets passed as not ours"
    };
    eprintln!(
        "xtun: monitoring {what} (slot {}, at most {} events/s per CPU); Ctrl-C to stop",
        claim.slot, args.rate
    );
    let result = stream(
        &mut dp,
        claim,
        &args,
        &filter,
        &names,
        format,
        pcap.as_mut(),
    );
    if let Some(p) = pcap.as_mut() {
        let _ = p.out.flush();
    }
    result
}

fn resolve_filter(args: &MonitorArgs, names: &Names) -> Result<Filter> {
    let mut dev = None;
    let mut tunnel = None;
    let mut words = args.filter.iter();
    while let Some(word) = words.next() {
        let Some(name) = words.next() else {
            bail!("\"{word}\" needs an interface name");
        };
        let index = names
            .index(name)
            .with_context(|| format!("no interface named \"{name}\""))?;
        match word.as_str() {
            "dev" => dev = Some(index),
            "tunnel" => tunnel = Some(index),
            other => bail!("unknown filter \"{other}\": use dev DEV or tunnel NAME"),
        }
    }
    let reasons = args
        .reason
        .iter()
        .map(|r| reason_slot(r.trim()))
        .collect::<Result<_>>()?;
    Ok(Filter {
        dev,
        tunnel,
        reasons,
    })
}

fn stream(
    dp: &mut Dataplane,
    mut claim: MonitorClaim,
    args: &MonitorArgs,
    filter: &Filter,
    names: &Names,
    format: Format,
    mut pcap: Option<&mut Pcap>,
) -> Result<()> {
    let clock = Clock::now();
    let mut shown = 0u64;
    let mut reported_lost = 0u64;
    let mut last_renew = Instant::now();
    let renew_every = Duration::from_nanos(LEASE_REFRESH_NS);
    let mut index = dp.decap_index();
    let mut out = io::stdout().lock();
    let result = (|| -> Result<()> {
        while !STOP.load(Ordering::Relaxed) {
            let mut pfd = libc::pollfd {
                fd: claim.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd on our stack.
            unsafe { libc::poll(&mut pfd, 1, 200) };
            let mut events = Vec::new();
            while let Some(item) = claim.ring.next() {
                if item.len() >= std::mem::size_of::<MonitorEvent>() {
                    // SAFETY: the data plane writes whole MonitorEvents;
                    // read unaligned from the ring's memory.
                    events.push(unsafe { (item.as_ptr() as *const MonitorEvent).read_unaligned() });
                }
            }
            if events.iter().any(|e| e.reason == RX_PASS_NO_TUNNEL) {
                index = dp.decap_index();
            }
            for ev in events.iter().filter(|e| filter.wants(e)) {
                let decoded = Decoded::parse(ev);
                if let Some(p) = pcap.as_deref_mut() {
                    p.write(ev, &clock)?;
                } else if format.json {
                    writeln!(out, "{}", event_json(ev, &decoded, names, &index, &clock))?;
                } else {
                    writeln!(out, "{}", event_text(ev, &decoded, names, &index, &clock))?;
                }
                shown += 1;
                if args.count.is_some_and(|n| shown >= n) {
                    STOP.store(true, Ordering::Relaxed);
                    break;
                }
            }
            out.flush()?;
            if last_renew.elapsed() >= renew_every {
                dp.monitor_renew(&claim)
                    .context("renewing the monitor's lease")?;
                // Taken back when the lock is free; else at the next round.
                if dp.monitor_bits_lapsed(&claim)? {
                    if let Some(_lock) = NamespaceLock::acquire_within(Duration::ZERO)
                        .context("locking the namespace's data plane")?
                    {
                        dp.monitor_set_bits(&claim)
                            .context("renewing the monitor's lease")?;
                    }
                }
                last_renew = Instant::now();
                if let Some(s) = dp.monitor_slots()?.get(claim.slot as usize) {
                    let lost = s.lost_rate_limit + s.lost_ring_full;
                    if lost > reported_lost {
                        report_lost(
                            &mut out,
                            format,
                            pcap.is_some(),
                            s.lost_rate_limit,
                            s.lost_ring_full,
                        )?;
                        reported_lost = lost;
                    }
                }
            }
        }
        Ok(())
    })();
    // Before giving the slot back, say what was lost.
    if let Some(s) = dp.monitor_slots()?.get(claim.slot as usize) {
        if s.lost_rate_limit + s.lost_ring_full > reported_lost {
            let _ = report_lost(
                &mut out,
                format,
                pcap.is_some(),
                s.lost_rate_limit,
                s.lost_ring_full,
            );
        }
    }
    // Other monitors exiting at the same moment change the same word: under
    // the lock, unless a long `-batch` or `apply` holds it, when the data
    // plane clears the bits once the lease has ended.
    match NamespaceLock::acquire_within(RELEASE_WAIT)
        .context("locking the namespace's data plane")?
    {
        Some(_lock) => dp.monitor_release(&claim),
        None => dp.monitor_end_lease(&claim),
    }
    .context("releasing the monitor slot")?;
    match result {
        // A reader that went away (`| head`, wireshark closed) ends the monitor.
        Err(e)
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn report_lost(
    out: &mut impl Write,
    format: Format,
    pcap: bool,
    rate_limit: u64,
    ring_full: u64,
) -> io::Result<()> {
    if format.json && !pcap {
        writeln!(
            out,
            "{}",
            json!({ "lost": { "rate_limit": rate_limit, "ring_full": ring_full } })
        )
    } else {
        eprintln!(
            "xtun: {} events lost so far ({rate_limit} over the rate limit, {ring_full} with the ring buffer full)",
            rate_limit + ring_full
        );
        Ok(())
    }
}

/// Turns the data plane's CLOCK_MONOTONIC timestamps into wall-clock time.
struct Clock {
    wall_minus_mono_ns: i128,
}

impl Clock {
    fn now() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            wall_minus_mono_ns: wall - monotonic_ns() as i128,
        }
    }

    /// Seconds and microseconds since the epoch.
    fn wall(&self, ktime_ns: u64) -> (u64, u32) {
        let ns = (ktime_ns as i128 + self.wall_minus_mono_ns).max(0) as u64;
        (ns / 1_000_000_000, (ns % 1_000_000_000 / 1000) as u32)
    }

    fn text(&self, ktime_ns: u64) -> String {
        let (secs, micros) = self.wall(ktime_ns);
        let day = secs % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{micros:06}",
            day / 3600,
            day / 60 % 60,
            day % 60
        )
    }

    fn rfc3339(&self, ktime_ns: u64) -> String {
        let (secs, micros) = self.wall(ktime_ns);
        let days = (secs / 86_400) as i64;
        let (y, m, d) = civil_from_days(days);
        let day = secs % 86_400;
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            day / 3600,
            day / 60 % 60,
            day % 60
        )
    }
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Headers decoded from an event's bytes.
#[derive(Default)]
struct Decoded {
    outer: Option<Ip>,
    gre: Option<Gre>,
    inner: Option<Ip>,
    /// The frame ended before the headers did.
    truncated: bool,
}

struct Ip {
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 protocol or IPv6 next header.
    proto: u8,
    /// Where the payload starts.
    payload: usize,
}

struct Gre {
    flags: u16,
    protocol: u16,
    /// As the maps store it (wire bytes in a u32), for the lookup.
    key_wire: Option<u32>,
    seq: Option<u32>,
    len: usize,
}

impl Gre {
    fn key(&self) -> Option<u32> {
        self.key_wire.map(u32::from_be)
    }

    fn flag_names(&self) -> Vec<&'static str> {
        [
            (wire::GRE_CSUM, "csum"),
            (wire::GRE_ROUTING, "routing"),
            (wire::GRE_KEY, "key"),
            (wire::GRE_SEQ, "seq"),
            (wire::GRE_STRICT, "strict"),
        ]
        .into_iter()
        .filter(|(bit, _)| self.flags & bit != 0)
        .map(|(_, n)| n)
        .collect()
    }

    fn version(&self) -> u16 {
        self.flags & wire::GRE_VERSION
    }
}

fn parse_ipv4(b: &[u8], off: usize) -> Option<Ip> {
    let h = b.get(off..off + 20)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(h[0] & 0xf) * 4;
    Some(Ip {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        proto: h[9],
        payload: off + ihl.max(20),
    })
}

fn parse_ipv6(b: &[u8], off: usize) -> Option<Ip> {
    let h = b.get(off..off + 40)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    let addr = |at: usize| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&h[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    };
    Some(Ip {
        src: addr(8),
        dst: addr(24),
        proto: h[6],
        payload: off + 40,
    })
}

fn parse_by_ethertype(b: &[u8], ether_type: u16, off: usize) -> Option<Ip> {
    match ether_type {
        wire::ETH_P_IP => parse_ipv4(b, off),
        wire::ETH_P_IPV6 => parse_ipv6(b, off),
        _ => None,
    }
}

fn parse_gre(b: &[u8], off: usize) -> Option<Gre> {
    let h = b.get(off..off + 4)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    let protocol = u16::from_be_bytes([h[2], h[3]]);
    let word = |at: usize| -> Option<[u8; 4]> { b.get(off + at..off + at + 4)?.try_into().ok() };
    let mut len = wire::GRE_BASE_LEN;
    if flags & (wire::GRE_CSUM | wire::GRE_ROUTING) != 0 {
        len += 4;
    }
    let key_wire = if flags & wire::GRE_KEY != 0 {
        let k = word(len).map(u32::from_ne_bytes);
        len += 4;
        k
    } else {
        None
    };
    let seq = if flags & wire::GRE_SEQ != 0 {
        let s = word(len).map(u32::from_be_bytes);
        len += 4;
        s
    } else {
        None
    };
    Some(Gre {
        flags,
        protocol,
        key_wire,
        seq,
        len,
    })
}

impl Decoded {
    fn parse(ev: &MonitorEvent) -> Self {
        let b = &ev.data[..(ev.cap_len as usize).min(MONITOR_SNAP)];
        let mut d = Decoded::default();
        let Some(et) = b.get(12..14) else {
            d.truncated = true;
            return d;
        };
        let ether_type = u16::from_be_bytes([et[0], et[1]]);
        let Some(first) = parse_by_ethertype(b, ether_type, wire::ETH_HDR_LEN) else {
            d.truncated = ether_type == wire::ETH_P_IP || ether_type == wire::ETH_P_IPV6;
            return d;
        };
        // What was decapsulated, or is still to be encapsulated, is the
        // inner packet alone.
        let inner_only = ev.reason == RX_DECAP
            || (ev.hook == MON_HOOK_ENCAP
                && ev.reason != TX_ENCAP
                && !matches!(
                    first.proto,
                    wire::IPPROTO_GRE | wire::IPPROTO_IPIP | wire::IPPROTO_IPV6
                ));
        if inner_only || !first.src.is_ipv4() {
            d.inner = Some(first);
            return d;
        }
        let at = first.payload;
        d.inner = match first.proto {
            wire::IPPROTO_GRE => match parse_gre(b, at) {
                Some(g) => {
                    let inner = parse_by_ethertype(b, g.protocol, at + g.len);
                    d.gre = Some(g);
                    inner
                }
                None => None,
            },
            wire::IPPROTO_IPIP => parse_ipv4(b, at),
            wire::IPPROTO_IPV6 => parse_ipv6(b, at),
            _ => None,
        };
        d.truncated = d.inner.is_none() && b.len() < ev.pkt_len as usize;
        d.outer = Some(first);
        d
    }

    /// The (local, remote, protocol, key) the data plane looked up for a
    /// received tunnel packet.
    fn lookup(&self) -> Option<DecapKey> {
        let outer = self.outer.as_ref()?;
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (outer.src, outer.dst) else {
            return None;
        };
        let key = self.gre.as_ref().and_then(|g| g.key_wire);
        Some(DecapKey {
            local: u32::from_ne_bytes(dst.octets()),
            remote: u32::from_ne_bytes(src.octets()),
            key: key.unwrap_or(0),
            proto: outer.proto,
            has_key: key.is_some() as u8,
            _pad: [0; 2],
        })
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        4 => "ipip".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        41 => "ipv6".into(),
        47 => "gre".into(),
        58 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn key_text(k: &DecapKey) -> String {
    if k.has_key != 0 {
        format!("key {}", u32::from_be(k.key))
    } else {
        "no key".into()
    }
}

/// The configured tunnel closest to a lookup that found none, and what
/// differs. Ranked as an operator would look: the same addresses with
/// another key first, then the same remote from another local address, the
/// same local address from another remote, then the same addresses in
/// another mode.
fn nearest(
    lookup: &DecapKey,
    index: &[(DecapKey, DecapTarget)],
) -> Option<(DecapKey, DecapTarget, &'static str)> {
    let wild = |a: u32, b: u32| a == b || a == 0;
    let mut best: Option<(u8, DecapKey, DecapTarget, &'static str)> = None;
    for (k, t) in index {
        let same_local = wild(k.local, lookup.local);
        let same_remote = wild(k.remote, lookup.remote);
        let same_proto = k.proto == lookup.proto;
        let same_key = k.has_key == lookup.has_key && k.key == lookup.key;
        let rank = match (same_local, same_remote, same_proto, same_key) {
            (true, true, true, false) => Some((0, "key")),
            (false, true, true, true) => Some((1, "local")),
            (true, false, true, true) => Some((2, "remote")),
            (false, true, true, false) => Some((3, "local,key")),
            (true, false, true, false) => Some((4, "remote,key")),
            (true, true, false, _) => Some((5, "mode")),
            _ => None,
        };
        if let Some((r, why)) = rank {
            if best.as_ref().is_none_or(|b| r < b.0) {
                best = Some((r, *k, *t, why));
            }
        }
    }
    best.map(|(_, k, t, why)| (k, t, why))
}

fn direction(ev: &MonitorEvent) -> &'static str {
    if ev.hook == MON_HOOK_ENCAP {
        "tx"
    } else {
        "rx"
    }
}

fn hook_name(hook: u32) -> &'static str {
    match hook {
        MON_HOOK_XDP => "xdp",
        MON_HOOK_TC => "tc",
        MON_HOOK_ENCAP => "tc-encap",
        _ => "?",
    }
}

fn reason_name(reason: u32) -> &'static str {
    COUNTER_NAMES
        .get(reason as usize)
        .copied()
        .unwrap_or("unknown")
}

fn event_text(
    ev: &MonitorEvent,
    d: &Decoded,
    names: &Names,
    index: &[(DecapKey, DecapTarget)],
    clock: &Clock,
) -> String {
    let mut line = format!(
        "{} {} {} {}",
        clock.text(ev.ktime_ns),
        names.show(ev.ifindex),
        direction(ev),
        reason_name(ev.reason)
    );
    if ev.tunnel != 0 && ev.tunnel != ev.ifindex {
        line.push_str(&format!(" tunnel {}", names.show(ev.tunnel)));
    }
    if let Some(o) = &d.outer {
        line.push_str(&format!(" {} > {} {}", o.src, o.dst, proto_name(o.proto)));
    }
    if let Some(g) = &d.gre {
        let flags = g.flag_names();
        line.push_str(&format!(
            " flags {:#06x}{}{}",
            g.flags,
            if flags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", flags.join(","))
            },
            if g.version() != 0 {
                format!(" version {}", g.version())
            } else {
                String::new()
            }
        ));
        if let Some(k) = g.key() {
            line.push_str(&format!(" key {k}"));
        }
        if let Some(s) = g.seq {
            line.push_str(&format!(" seq {s}"));
        }
        line.push_str(&format!(" proto {:#06x}", g.protocol));
    }
    if let Some(i) = &d.inner {
        let sep = if d.outer.is_some() { ": inner " } else { " " };
        line.push_str(&format!(
            "{sep}{} > {} {}",
            i.src,
            i.dst,
            proto_name(i.proto)
        ));
    }
    if d.truncated {
        line.push_str(" [truncated]");
    }
    line.push_str(&format!(" len {}", ev.pkt_len));
    if ev.reason == RX_PASS_NO_TUNNEL {
        if let Some(k) = d.lookup() {
            line.push_str(&format!(
                "; looked up local {} remote {} {} {}",
                addr_from_wire(k.local),
                addr_from_wire(k.remote),
                proto_name(k.proto),
                key_text(&k)
            ));
            match nearest(&k, index) {
                Some((nk, nt, why)) => line.push_str(&format!(
                    "; nearest {} (local {} remote {} {} {}): {}",
                    names.show(nt.ifindex),
                    addr_or_any(nk.local),
                    addr_or_any(nk.remote),
                    proto_name(nk.proto),
                    key_text(&nk),
                    differs_text(why)
                )),
                None => line.push_str("; no tunnel is near"),
            }
        }
    }
    line
}

/// What `nearest` found different, in words.
fn differs_text(why: &str) -> &'static str {
    match why {
        "key" => "key differs",
        "local" => "local address differs",
        "remote" => "remote address differs",
        "local,key" => "local address and key differ",
        "remote,key" => "remote address and key differ",
        _ => "mode differs",
    }
}

fn addr_or_any(a: u32) -> String {
    if a == 0 {
        "any".into()
    } else {
        addr_from_wire(a).to_string()
    }
}

fn ip_json(ip: &Ip) -> Value {
    json!({ "src": ip.src.to_string(), "dst": ip.dst.to_string(), "proto": proto_name(ip.proto) })
}

fn key_json(k: &DecapKey) -> Value {
    json!({
        "local": addr_or_any(k.local), "remote": addr_or_any(k.remote), "proto": proto_name(k.proto),
        "key": (k.has_key != 0).then(|| u32::from_be(k.key)),
    })
}

fn event_json(
    ev: &MonitorEvent,
    d: &Decoded,
    names: &Names,
    index: &[(DecapKey, DecapTarget)],
    clock: &Clock,
) -> Value {
    let mut doc = json!({
        "time": clock.rfc3339(ev.ktime_ns),
        "ifname": names.get(ev.ifindex),
        "ifindex": ev.ifindex,
        "direction": direction(ev),
        "hook": hook_name(ev.hook),
        "reason": reason_name(ev.reason),
        "tunnel": (ev.tunnel != 0).then(|| names.show(ev.tunnel)),
        "len": ev.pkt_len,
        "outer": d.outer.as_ref().map(ip_json),
        "gre": d.gre.as_ref().map(|g| json!({
            "flags": format!("{:#06x}", g.flags), "flag_names": g.flag_names(), "version": g.version(),
            "key": g.key(), "seq": g.seq, "protocol": format!("{:#06x}", g.protocol),
        })),
        "inner": d.inner.as_ref().map(ip_json),
        "truncated": d.truncated,
    });
    if ev.reason == RX_PASS_NO_TUNNEL {
        if let Some(k) = d.lookup() {
            doc["lookup"] = key_json(&k);
            doc["nearest"] = match nearest(&k, index) {
                Some((nk, nt, why)) => {
                    let mut n = key_json(&nk);
                    n["tunnel"] = json!(names.show(nt.ifindex));
                    n["differs"] = json!(why);
                    n
                }
                None => Value::Null,
            };
        }
    }
    doc
}

/// A pcap stream: the classic format, Ethernet link type, microseconds.
struct Pcap {
    out: Box<dyn Write>,
}

impl Pcap {
    const MAGIC: u32 = 0xa1b2_c3d4;
    const LINKTYPE_ETHERNET: u32 = 1;

    fn new(mut out: Box<dyn Write>) -> Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&Self::MAGIC.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&(MONITOR_SNAP as u32).to_le_bytes());
        header.extend_from_slice(&Self::LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header).context("writing the pcap header")?;
        out.flush()?;
        Ok(Self { out })
    }

    fn write(&mut self, ev: &MonitorEvent, clock: &Clock) -> Result<()> {
        let (secs, micros) = clock.wall(ev.ktime_ns);
        let cap = (ev.cap_len as usize).min(MONITOR_SNAP);
        let mut record = Vec::with_capacity(16 + cap);
        record.extend_from_slice(&(secs as u32).to_le_bytes());
        record.extend_from_slice(&micros.to_le_bytes());
        record.extend_from_slice(&(cap as u32).to_le_bytes());
        record.extend_from_slice(&ev.pkt_len.max(cap as u32).to_le_bytes());
        record.extend_from_slice(&ev.data[..cap]);
        self.out.write_all(&record)?;
        self.out.flush()?;
        Ok(())
    }
}
