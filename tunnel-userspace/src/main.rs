//! `xtun`: IP tunnels (GRE, IPIP, SIT) whose data path runs in eBPF, driven
//! with the grammar of `ip tunnel`.

mod cli;

use clap::{Parser, Subcommand};

const EXAMPLES: &str = "\
Examples (the seed walkthrough, over xtun):
  xtun tunnel add tun1 mode gre remote 10.10.20.2 local 10.10.10.2
  ip link set tun1 up
  ip addr add 10.10.100.10 peer 10.10.200.10 dev tun1
  xtun tunnel show
  xtun tunnel del tun1

  xtun attach eth0          # attach the data plane to an underlay NIC
  xtun -s tunnel show       # with per-tunnel counters
  xtun stats                # data-plane counters by reason
  xtun map dump XTUN_TUNNELS
  xtun status
  xtun -j -p tunnel show    # JSON, pretty-printed
  xtun -batch tunnels.txt   # many commands in one process

Over an IPv6 underlay (as `ip -6 tunnel`):
  xtun -6 tunnel add t6 mode ip6gre remote fd00:20::2 local fd00:10::2
  xtun -6 tunnel show

Multipoint (NBMA) GRE, one interface to many sites:
  xtun tunnel add mgre0 mode gre remote any local 192.0.2.1 key 7 dev eth0
  xtun neigh add 10.20.0.0/16 lladdr 192.0.2.20 dev mgre0";

/// The options are read as `ip` reads its own: before the command, any
/// unambiguous prefix (`-j`, `-json`, `--json`), `-s -s` counting twice.
#[derive(Parser)]
#[command(name = "xtun", version, about = "IP tunnels (GRE, IPIP, SIT, ISATAP) with an eBPF data path", after_help = EXAMPLES)]
struct Cli {
    /// Show statistics (as `ip -s`).
    #[arg(short = 's', long = "stats", global = true)]
    stats: bool,
    /// Print JSON (as `ip -j`).
    #[arg(short = 'j', long = "json", global = true)]
    json: bool,
    /// Pretty-print JSON (as `ip -p`); implies nothing without -j.
    #[arg(short = 'p', long = "pretty", global = true)]
    pretty: bool,
    /// More detail (as `ip -d`; `tunnel show` prints the same either way).
    #[arg(short = 'd', long = "details", global = true)]
    details: bool,
    /// Print each record on one line (as `ip -o`).
    #[arg(short = 'o', long = "oneline", global = true)]
    oneline: bool,
    /// Tunnels over an IPv6 underlay (as `ip -6 tunnel`; also `-family inet6`).
    #[arg(short = '6', global = true)]
    ipv6: bool,
    /// Run in the network namespace NAME (/var/run/netns/NAME), as `ip -n`.
    #[arg(short = 'n', long = "netns", value_name = "NAME")]
    netns: Option<String>,
    /// Run the commands in FILE ("-" for standard input), one per line, in
    /// this one process (as `ip -batch`); `#` starts a comment.
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    batch: Option<String>,
    /// With -batch: go on after a failed line, as `ip -force -batch`.
    #[arg(short = 'f', long = "force")]
    force: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Add, delete and show tunnels, as `ip tunnel` does.
    #[command(
        visible_aliases = ["tun", "tunl", "t"],
        after_help = "Examples:\n  xtun tunnel add tun1 mode gre remote 10.10.20.2 local 10.10.10.2\n  xtun tunnel show\n  xtun tunnel del tun1"
    )]
    Tunnel {
        #[command(subcommand)]
        action: cli::tunnel::TunnelCommand,
    },
    /// Ethernet over GRE interfaces, as `ip link ... type gretap|ip6gretap`.
    #[command(
        visible_aliases = ["l"],
        after_help = "Examples:\n  xtun link add gtap type gretap remote 10.10.20.2 local 10.10.10.2 key 9\n  xtun link add g6tap type ip6gretap remote fd00:20::2 local fd00:10::2\n  xtun link show\n  xtun link del gtap"
    )]
    Link {
        #[command(subcommand)]
        action: cli::link::LinkCommand,
    },
    /// Neighbours of multipoint (`remote any`) tunnels: inner prefix -> remote.
    #[command(
        visible_aliases = ["neighbour", "neighbor", "n"],
        after_help = "Examples:\n  xtun neigh add 10.20.0.0/16 lladdr 192.0.2.20 dev mgre0\n  xtun neigh show dev mgre0"
    )]
    Neigh {
        #[command(subcommand)]
        action: cli::neigh::NeighCommand,
    },
    /// Converge this namespace to a TOML file: tunnels, neighbours, routers,
    /// attachments; only what differs is touched.
    #[command(
        after_help = "Examples:\n  xtun apply -f /etc/xtun/xtun.toml\n  xtun apply -f site.toml --dry-run\n\nThe file format is in the README and dist/xtun.toml. A file with any error\nchanges nothing; applying the same file twice changes nothing."
    )]
    Apply {
        /// The configuration file.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: String,
        /// Print the plan (attach, tunnel add/change/del, neigh, ...) and stop.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write this namespace's tunnels and attachments as an `apply` file.
    #[command(
        after_help = "Example:\n  xtun export > /etc/xtun/xtun.toml\n\n`xtun export` then `xtun apply -f` of its output changes nothing."
    )]
    Export,
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  xtun completion bash > /etc/bash_completion.d/xtun\n  xtun completion zsh > ~/.zfunc/_xtun\n  xtun completion fish > ~/.config/fish/completions/xtun.fish"
    )]
    Completion { shell: clap_complete::Shell },
    /// Write the man pages (xtun.1 and one per command) into DIR.
    #[command(hide = true)]
    Manpages { dir: std::path::PathBuf },
    /// Attach the data plane (decapsulation and delivery) to an underlay NIC,
    /// or to a LAN whose forwarded traffic takes the XDP fast path.
    #[command(
        after_help = "Examples:\n  xtun attach eth0\n  xtun attach lan0 --forward xdp\n  xtun attach lan0 --forward off\n\nThe attachment outlives xtun and stays until `xtun detach`.\n\n`--forward xdp` forwards in XDP what arrives on DEV for a route into a tunnel, and what\ntunnels decapsulate in XDP for a route out of DEV. It bypasses netfilter's FORWARD chain\nand the tunnel interface's own counters (xtun's counters count it); packets that need\nthe kernel (TTL expiring, too big, options, fragments, no route or neighbour) take the\nkernel's path as before."
    )]
    Attach {
        /// The underlay (or LAN) interface.
        dev: String,
        /// Where to decapsulate.
        #[arg(long, value_enum, default_value = "auto")]
        decap: cli::attach::Decap,
        /// The XDP forwarding fast path for DEV as a LAN: on (`xdp`, which
        /// attaches XDP to DEV) or `off`.
        #[arg(long, value_enum)]
        forward: Option<cli::attach::Forward>,
    },
    /// Detach the data plane from an underlay NIC.
    #[command(
        after_help = "Example:\n  xtun detach eth0\n\nRefused while tunnels use the interface."
    )]
    Detach {
        /// The underlay interface.
        dev: String,
    },
    /// Show the data plane's counters by reason, per interface.
    #[command(
        after_help = "Examples:\n  xtun stats\n  xtun -j -p stats\n  xtun stats --prometheus > /var/lib/node_exporter/textfile/xtun.prom"
    )]
    Stats {
        /// Print the Prometheus text format (as `xtun metrics` serves it).
        #[arg(long)]
        prometheus: bool,
    },
    /// Serve Prometheus metrics over HTTP: per-tunnel counters and drop
    /// reasons per interface, labelled by tunnel, mode and interface.
    #[command(
        after_help = "Example:\n  xtun metrics --listen 127.0.0.1:9477\n  curl http://127.0.0.1:9477/metrics"
    )]
    Metrics {
        /// Address and port to listen on.
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9477")]
        listen: String,
    },
    /// List and dump the data plane's BPF maps, decoded.
    #[command(after_help = "Examples:\n  xtun map list\n  xtun map dump XTUN_TUNNELS")]
    Map {
        #[command(subcommand)]
        action: cli::map::MapCommand,
    },
    /// Stream the data plane's log records until Ctrl-C.
    #[command(
        after_help = "Examples:\n  xtun log                 # debug level while streaming\n  xtun log --level trace   # one line per packet\n\nThe level is switched in the running programs (no reload) and restored on exit."
    )]
    Log {
        #[arg(long, value_enum, default_value = "debug")]
        level: cli::log::Level,
    },
    /// Stream what the data plane drops (and passes as not ours), and why.
    #[command(
        after_help = "Examples:\n  xtun monitor\n  xtun monitor dev eth0 --reason no_tunnel,bad_gre_version\n  xtun -j monitor tunnel tun1 --all\n  xtun monitor -w - | wireshark -k -i -\n\nEvents are produced only while a monitor listens; one killed by any signal\nstops costing anything within 3 seconds (its lease expires)."
    )]
    Monitor(cli::monitor::MonitorArgs),
    /// Replace the running programs with this binary's, keeping every tunnel,
    /// map and counter; atomic per attachment, no packet lost.
    #[command(
        after_help = "Example:\n  xtun upgrade\n\n`xtun status` warns when the running programs are from another build."
    )]
    Upgrade,
    /// Where the data plane is attached, its programs, maps and build.
    #[command(after_help = "Examples:\n  xtun status\n  xtun -j -p status")]
    Status,
}

impl Command {
    fn changes_state(&self) -> bool {
        match self {
            Command::Tunnel { action } => action.changes_state(),
            Command::Link { action } => action.changes_state(),
            Command::Neigh { action } => action.changes_state(),
            Command::Attach { .. } | Command::Detach { .. } | Command::Upgrade => true,
            Command::Apply { dry_run, .. } => !dry_run,
            Command::Export | Command::Completion { .. } | Command::Manpages { .. } => false,
            // `log` and `monitor` stream for as long as they run, taking
            // the lock only for their brief changes to the settings word.
            Command::Log { .. }
            | Command::Monitor(_)
            | Command::Stats { .. }
            | Command::Metrics { .. }
            | Command::Map { .. }
            | Command::Status => false,
        }
    }
}

/// What the options before the command asked for.
#[derive(Clone, Debug, Default)]
struct Globals {
    /// `-s` given this many times.
    stats: u8,
    json: bool,
    pretty: bool,
    details: bool,
    oneline: bool,
    force: bool,
    batch: Option<String>,
    netns: Option<String>,
    /// `-6` or `-family inet6`: `tunnel` means tunnels over an IPv6 underlay.
    ipv6: bool,
}

impl Globals {
    fn format(&self) -> cli::output::Format {
        cli::output::Format {
            json: self.json,
            pretty: self.pretty,
            oneline: self.oneline,
            details: self.details,
        }
    }
}

/// Where the words go once the options are read.
enum Front {
    /// Run these words (the object and command spelled out in full).
    Run(Globals, Vec<String>),
    /// Help or version: clap prints them, from these arguments.
    Clap(Vec<String>),
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (globals, words) = match front(&args[1..]) {
        Ok(Front::Run(globals, words)) => (globals, words),
        Ok(Front::Clap(words)) => {
            let err = match Cli::try_parse_from(std::iter::once("xtun".to_string()).chain(words)) {
                Err(err) => err,
                Ok(_) => unreachable!("front only hands clap help and version"),
            };
            err.exit()
        }
        Err(err) => fail(&err.into()),
    };
    // As `ip -n`: everything after this happens in that namespace.
    if let Some(name) = &globals.netns {
        if let Err(err) = tunnel_userspace::netns::enter(name) {
            fail(&err.into());
        }
    }
    let result = match (&globals.batch, words.is_empty()) {
        (Some(file), true) => run_batch(file, &globals),
        (None, false) => {
            parse_command(&words).and_then(|(command, extra)| run(command, &globals.merged(&extra)))
        }
        (Some(_), false) => Err(anyhow::anyhow!(
            "give either -batch FILE or a command, not both"
        )),
        (None, true) => {
            Err(grammar::IpError::usage("xtun: no command given; see `xtun --help`").into())
        }
    };
    if let Err(err) = result {
        fail(&err);
    }
}

use tunnel_userspace::grammar::{self, first_match, matches, IpError};

/// Reads the options before the object as `ip` does (each option is any
/// prefix of its name, tried in `ip`'s order: `-b` is `-batch`, `-n`
/// `-netns`), then spells the object and its command out in full.
fn front(args: &[String]) -> Result<Front, IpError> {
    let mut g = Globals::default();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if arg == "--" {
            i += 1;
            break;
        }
        if !arg.starts_with('-') {
            break;
        }
        if matches!(arg.as_str(), "-h" | "--help" | "--version") {
            return Ok(Front::Clap(args.to_vec()));
        }
        // `--json` is `-json`.
        let opt = match arg.strip_prefix('-') {
            Some(rest) if rest.starts_with('-') => rest,
            _ => arg.as_str(),
        };
        let is = |name: &str| matches(opt, name);
        let mut value = || {
            i += 1;
            args.get(i)
                .cloned()
                .ok_or_else(|| IpError::usage("Command line is not complete. Try option \"help\""))
        };
        if is("-loops") {
            value()?;
        } else if is("-family") {
            match value()?.as_str() {
                "inet" => g.ipv6 = false,
                "help" => return Ok(Front::Clap(vec!["--help".into()])),
                "inet6" => g.ipv6 = true,
                other => return Err(IpError::invalid("invalid protocol family", other)),
            }
        } else if opt == "-4" {
            g.ipv6 = false;
        } else if opt == "-6" {
            g.ipv6 = true;
        } else if let Some(family) = [("-0", 17), ("-M", 28), ("-B", 7)]
            .iter()
            .find_map(|(o, f)| (opt == *o).then_some(*f))
        {
            return Err(IpError::usage(format!(
                "Unsupported protocol family: {family}"
            )));
        } else if is("-human") || is("-human-readable") || is("-iec") || is("-resolve") {
        } else if is("-stats") || is("-statistics") {
            g.stats = g.stats.saturating_add(1);
        } else if is("-details") {
            g.details = true;
        } else if is("-oneline") {
            g.oneline = true;
        } else if is("-timestamp") || is("-tshort") {
        } else if is("-Version") {
            return Ok(Front::Clap(vec!["--version".into()]));
        } else if is("-force") {
            g.force = true;
        } else if is("-batch") {
            g.batch = Some(value()?);
        } else if is("-brief") {
        } else if is("-json") {
            g.json = true;
        } else if is("-pretty") {
            g.pretty = true;
        } else if is("-rcvbuf") {
            let size = value()?;
            if grammar::parse_u32(&size).is_none() {
                return Err(IpError::usage(format!("Invalid rcvbuf size '{size}'")));
            }
        } else if is_color(opt) {
        } else if is("-help") {
            return Ok(Front::Clap(vec!["--help".into()]));
        } else if is("-netns") {
            g.netns = Some(value()?);
        } else if is("-Numeric") || is("-all") || opt == "-echo" {
        } else {
            return Err(IpError::usage(format!(
                "Option \"{opt}\" is unknown, try \"xtun --help\"."
            )));
        }
        i += 1;
    }
    let words = &args[i..];
    if words.is_empty() {
        return Ok(Front::Run(g, vec![]));
    }
    match canonical(words)? {
        // Only tunnels have an IPv6 flavour (`ip -6 tunnel`).
        Some(words) if g.ipv6 && words[0] != "tunnel" => Err(no_ipv6(&words[0])),
        Some(words) if g.ipv6 && words.get(1).is_some_and(|v| v == "prl") => Err(IpError::failed(
            "xtun: prl is for isatap tunnels, not -6 tunnel",
        )),
        Some(words) => Ok(Front::Run(g, words)),
        None => Ok(Front::Clap(help_for(words))),
    }
}

/// `-c`, `-color`, `-color=always|auto|never`, as `ip` accepts them.
fn is_color(opt: &str) -> bool {
    let name = opt.split_once('=').map_or(opt, |(n, _)| n);
    matches(name, "-color")
}

fn no_ipv6(object: &str) -> IpError {
    IpError::failed(format!(
        "xtun: -6 selects tunnels over an IPv6 underlay (`xtun -6 tunnel`); `{object}` has no IPv6 variant"
    ))
}

/// Where `help` and `--help` lead: the object's help from clap.
fn help_for(words: &[String]) -> Vec<String> {
    let mut out: Vec<String> = words
        .iter()
        .take_while(|w| !matches(w, "help") && !w.starts_with('-'))
        .cloned()
        .collect();
    out.push("--help".into());
    out
}

/// The object and its command spelled out in full, as clap knows them:
/// `tun a` is `tunnel add`, `n sh` is `neigh show`, a bare `tunnel` is
/// `tunnel show`; other objects (xtun's own) pass as given. None: help.
fn canonical(words: &[String]) -> Result<Option<Vec<String>>, IpError> {
    let object = words[0].as_str();
    let rest = &words[1..];
    if rest.first().is_some_and(|w| w == "--help" || w == "-h") {
        return Ok(None);
    }
    // `ip`'s object table, in its order, for the objects xtun has.
    let (object, verbs): (&str, &[(&str, &str)]) =
        if matches(object, "neighbor") || matches(object, "neighbour") {
            (
                "neigh",
                &[
                    ("add", "add"),
                    ("delete", "del"),
                    ("show", "show"),
                    ("list", "show"),
                    ("lst", "show"),
                ],
            )
        } else if matches(object, "tunnel") || matches(object, "tunl") {
            (
                "tunnel",
                &[
                    ("add", "add"),
                    ("change", "change"),
                    ("delete", "del"),
                    ("show", "show"),
                    ("lst", "show"),
                    ("list", "show"),
                    ("prl", "prl"),
                ],
            )
        } else if matches(object, "help") {
            return Ok(None);
        } else {
            return Ok(Some(words.to_vec()));
        };
    let Some(verb) = rest.first() else {
        // `ip tunnel` alone lists, as `ip tunnel show`.
        return Ok(Some(vec![object.into(), "show".into()]));
    };
    let keywords: Vec<&str> = verbs.iter().map(|(k, _)| *k).collect();
    let full = match first_match(verb, &keywords) {
        Some(k) => verbs
            .iter()
            .find(|(v, _)| *v == k)
            .map(|(_, c)| *c)
            .unwrap_or(k),
        None if matches(verb, "help") => return Ok(None),
        None if object == "tunnel" && matches(verb, "6rd") => {
            return Err(IpError::failed("xtun: 6rd is not supported"))
        }
        None => {
            return Err(IpError::usage(format!(
                "Command \"{verb}\" is unknown, try \"xtun {object} help\"."
            )))
        }
    };
    let mut out = vec![object.to_string(), full.to_string()];
    out.extend(rest[1..].iter().cloned());
    Ok(Some(out))
}

/// Clap's parse of spelled-out words; its errors as one line.
fn parse_command(words: &[String]) -> anyhow::Result<(Command, Cli)> {
    let mut cli =
        Cli::try_parse_from(std::iter::once("xtun").chain(words.iter().map(String::as_str)))
            .map_err(|e| {
                use clap::error::ErrorKind::*;
                if matches!(
                    e.kind(),
                    DisplayHelp | DisplayVersion | DisplayHelpOnMissingArgumentOrSubcommand
                ) {
                    e.exit();
                }
                // clap's message up to its usage, on one line, without "error: ".
                let rendered = e.render().to_string();
                let message: Vec<&str> = rendered
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                anyhow::Error::from(IpError::usage(format!(
                    "xtun: {}",
                    message.join(" ").trim_start_matches("error: ")
                )))
            })?;
    let command = cli
        .command
        .take()
        .ok_or_else(|| anyhow::anyhow!("each line must be one command"))?;
    Ok((command, cli))
}

impl Globals {
    /// These options with any clap read after the command (`tunnel show -j`).
    fn merged(&self, cli: &Cli) -> Globals {
        let mut g = self.clone();
        g.stats = g.stats.max(cli.stats as u8);
        g.json |= cli.json;
        g.pretty |= cli.pretty;
        g.details |= cli.details;
        g.oneline |= cli.oneline;
        g.ipv6 |= cli.ipv6;
        g
    }
}

/// Prints an error on one line and exits with `ip`'s status for it. Errors
/// `ip` has words for are printed in its words alone; xtun's own start
/// with "xtun: ", then the outermost context and its causes.
fn fail(err: &anyhow::Error) -> ! {
    let (line, status) = error_line(err);
    eprintln!("{line}");
    std::process::exit(status);
}

fn error_line(err: &anyhow::Error) -> (String, i32) {
    if err.chain().count() == 1 {
        if let Some(e) = err.downcast_ref::<IpError>() {
            return (e.message.clone(), e.status);
        }
        if let Some(e) = err
            .downcast_ref::<tunnel_userspace::config::ConfigError>()
            .and_then(|e| e.as_iproute2())
        {
            return (e.message, e.status);
        }
        if let Some(e) = err
            .downcast_ref::<tunnel_userspace::config6::Config6Error>()
            .and_then(|e| e.as_iproute2())
        {
            return (e.message, e.status);
        }
        let message = err.to_string();
        if is_iproute2_wording(&message) {
            return (message, 1);
        }
    }
    let mut line = String::from("xtun: ");
    line.push_str(&err.to_string());
    for cause in err.chain().skip(1) {
        line.push_str(": ");
        line.push_str(&cause.to_string());
    }
    (line, 1)
}

/// The messages xtun shares with `ip tunnel` word for word: a device that
/// is not there, and the kernel's refusals as `ip` reports them.
fn is_iproute2_wording(message: &str) -> bool {
    let quoted_tail = |m: &str, head: &str| -> Option<String> {
        let rest = m.strip_prefix(head)?;
        let close = rest.find('"')?;
        Some(rest[close + 1..].to_string())
    };
    if quoted_tail(message, "Cannot find device \"").is_some_and(|t| t.is_empty()) {
        return true;
    }
    ["add", "change", "delete", "get"].iter().any(|verb| {
        quoted_tail(message, &format!("{verb} tunnel \""))
            .is_some_and(|t| t == " failed: No such device" || t == " failed: File exists")
    })
}

/// Runs each line of `file` as an xtun command (`ip -batch`): stops at
/// the first error, naming its line, or with `-force` goes on and fails
/// at the end. The namespace lock is taken once for the whole file, and
/// `neigh add|del` lines skip the general parser: a million neighbours
/// load in one process at map-update speed.
fn run_batch(file: &str, globals: &Globals) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading standard input")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let missing = tunnel_userspace::caps::missing(true);
    if !missing.is_empty() {
        anyhow::bail!(
            "permission denied: -batch needs {} (run xtun as root)",
            missing.join(" and ")
        );
    }
    let _lock = tunnel_userspace::lock::NamespaceLock::acquire()
        .context("locking the namespace's data plane")?;
    let mut failed = false;
    // Kept across consecutive `neigh` lines only: other commands may
    // change the tunnels it has looked up.
    let mut neighbours: Option<cli::neigh::Session> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let given: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        // A line is read as a command line is, options first (not -batch or -n).
        let parsed = match front(&given) {
            Ok(Front::Run(g, words)) if g.batch.is_none() && g.netns.is_none() => Ok((g, words)),
            Ok(_) => Err(anyhow::anyhow!("each line must be one command")),
            Err(e) => Err(e.into()),
        };
        let verb = match &parsed {
            Ok((_, w)) if w.len() > 1 && w[0] == "neigh" => Some(w[1].as_str()),
            _ => None,
        };
        if verb != Some("add") {
            // Queued neighbour adds go in before anything that may depend on them.
            flush_neighbours(file, &mut neighbours)?;
        }
        if !matches!(verb, Some("add" | "del")) {
            neighbours = None;
        }
        let result = parsed.and_then(|(line_globals, words)| {
            let mut g = globals.clone();
            g.stats = g.stats.max(line_globals.stats);
            g.json |= line_globals.json;
            g.pretty |= line_globals.pretty;
            g.oneline |= line_globals.oneline;
            g.ipv6 |= line_globals.ipv6;
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match words.as_slice() {
                [] => Err(anyhow::anyhow!("each line must be one command")),
                // They run until stopped, and take the lock the batch holds.
                [verb @ ("monitor" | "log"), ..] => Err(anyhow::anyhow!(
                    "{verb} streams until stopped: run it on its own, not in a batch"
                )),
                ["neigh", "add", rest @ ..] => {
                    neighbour_session(&mut neighbours).and_then(|s| s.queue_add(rest, n + 1))
                }
                ["neigh", "del", rest @ ..] => {
                    let args = rest.iter().map(|w| w.to_string()).collect();
                    neighbour_session(&mut neighbours).and_then(|s| {
                        s.run(cli::neigh::NeighCommand::Del { args }, Default::default())
                    })
                }
                _ => {
                    let owned: Vec<String> = words.iter().map(|w| w.to_string()).collect();
                    parse_command(&owned)
                        .and_then(|(command, extra)| dispatch(command, &g.merged(&extra)))
                }
            }
        });
        if let Err(err) = result {
            // The lines before this one take effect, as with `ip -batch`.
            flush_neighbours(file, &mut neighbours)?;
            let column = error_column(raw, &err);
            let err = err.context(format!("{file}:{}:{column}", n + 1));
            if !globals.force {
                return Err(err);
            }
            // `-force`: say so and go on, failing at the end.
            eprintln!("{}", error_line(&err).0);
            failed = true;
        }
    }
    flush_neighbours(file, &mut neighbours)?;
    if failed {
        std::process::exit(1);
    }
    Ok(())
}

/// The batch's neighbour session, opened at its first `neigh` line.
fn neighbour_session(
    session: &mut Option<cli::neigh::Session>,
) -> anyhow::Result<&mut cli::neigh::Session> {
    if session.is_none() {
        *session = Some(cli::neigh::Session::open()?);
    }
    Ok(session.as_mut().expect("just opened"))
}

/// Writes the neighbour adds a batch has queued; an error names the line.
fn flush_neighbours(file: &str, session: &mut Option<cli::neigh::Session>) -> anyhow::Result<()> {
    match session {
        Some(s) => s
            .flush()
            .map_err(|(line, err)| err.context(format!("{file}:{line}:1"))),
        None => Ok(()),
    }
}

fn run(command: Command, globals: &Globals) -> anyhow::Result<()> {
    // Documentation needs no privileges.
    match command {
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "xtun", &mut std::io::stdout());
            return Ok(());
        }
        Command::Manpages { dir } => return write_manpages(&dir),
        _ => {}
    }
    let missing = tunnel_userspace::caps::missing(command.changes_state());
    if !missing.is_empty() {
        anyhow::bail!(
            "permission denied: this needs {} (run xtun as root)",
            missing.join(" and ")
        );
    }
    // Commands that change the data plane take the namespace's lock.
    let _lock = if command.changes_state() {
        use anyhow::Context as _;
        Some(
            tunnel_userspace::lock::NamespaceLock::acquire()
                .context("locking the namespace's data plane")?,
        )
    } else {
        None
    };
    dispatch(command, globals)
}

/// Where on `line` the error is: the first word the message quotes that
/// the line holds, else the command's first word (1-based, in characters).
fn error_column(line: &str, err: &anyhow::Error) -> usize {
    let message = format!("{err:#}");
    let quoted = message
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|w| !w.is_empty())
        .find_map(|w| line.find(w));
    let at = quoted.unwrap_or_else(|| line.len() - line.trim_start().len());
    line[..at].chars().count() + 1
}

/// xtun.1, then xtun-COMMAND.1 for each command and subcommand.
fn write_manpages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    fn walk(cmd: &clap::Command, prefix: &str, dir: &std::path::Path) -> anyhow::Result<()> {
        let name = if prefix.is_empty() {
            cmd.get_name().to_string()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        let page = cmd.clone().name(name.clone());
        let mut out = Vec::new();
        clap_mangen::Man::new(page).render(&mut out)?;
        std::fs::write(dir.join(format!("{name}.1")), out)
            .with_context(|| format!("writing {name}.1"))?;
        for sub in cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        {
            walk(sub, &name, dir)?;
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = <Cli as clap::CommandFactory>::command();
    cmd.build();
    walk(&cmd, "", dir)
}

/// Runs one command; the caller has checked privileges and holds the lock.
fn dispatch(command: Command, globals: &Globals) -> anyhow::Result<()> {
    let format = globals.format();
    let stats = globals.stats > 0;
    match command {
        Command::Tunnel { action } => cli::tunnel::run(action, stats, format, globals.ipv6),
        Command::Link { action } => cli::link::run(action, stats, format),
        Command::Neigh { action } => cli::neigh::run(action, format),
        Command::Apply { file, dry_run } => cli::apply::apply(&file, dry_run),
        Command::Completion { .. } | Command::Manpages { .. } => unreachable!("handled in run"),
        Command::Export => cli::apply::export(),
        Command::Attach {
            dev,
            decap,
            forward,
        } => cli::attach::attach(&dev, decap, forward),
        Command::Detach { dev } => cli::attach::detach(&dev),
        Command::Stats { prometheus: true } => cli::metrics::print(),
        Command::Stats { prometheus: false } => cli::stats::show(format),
        Command::Metrics { listen } => cli::metrics::serve(&listen),
        Command::Map { action } => cli::map::run(action, format),
        Command::Log { level } => cli::log::run(level),
        Command::Monitor(args) => cli::monitor::run(args, format),
        Command::Status => cli::status::show(format),
        Command::Upgrade => cli::attach::upgrade(),
    }
}
