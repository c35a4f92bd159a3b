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

Multipoint (NBMA) GRE, one interface to many sites:
  xtun tunnel add mgre0 mode gre remote any local 192.0.2.1 key 7 dev eth0
  xtun neigh add 10.20.0.0/16 lladdr 192.0.2.20 dev mgre0";

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
    /// Run the commands in FILE ("-" for standard input), one per line, in
    /// this one process (as `ip -batch`); `#` starts a comment.
    #[arg(short = 'b', long = "batch", value_name = "FILE")]
    batch: Option<String>,
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
    /// Attach the data plane (decapsulation and delivery) to an underlay NIC.
    #[command(
        after_help = "Example:\n  xtun attach eth0\n\nThe attachment outlives xtun and stays until `xtun detach`."
    )]
    Attach {
        /// The underlay interface.
        dev: String,
        /// Where to decapsulate.
        #[arg(long, value_enum, default_value = "auto")]
        decap: cli::attach::Decap,
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
            Command::Neigh { action } => action.changes_state(),
            Command::Attach { .. } | Command::Detach { .. } | Command::Upgrade => true,
            Command::Apply { dry_run, .. } => !dry_run,
            Command::Export | Command::Completion { .. } | Command::Manpages { .. } => false,
            // `log` streams for as long as it runs; its level switch is a
            // single map update and needs no lock.
            Command::Log { .. }
            | Command::Monitor(_)
            | Command::Stats { .. }
            | Command::Metrics { .. }
            | Command::Map { .. }
            | Command::Status => false,
        }
    }
}

fn main() {
    // iproute2 spells it `-batch`.
    let args = std::env::args().map(|a| {
        if a == "-batch" {
            "--batch".to_string()
        } else {
            a
        }
    });
    let cli = Cli::parse_from(args);
    let result = match (&cli.batch, cli.command) {
        (Some(file), None) => run_batch(file),
        (None, Some(command)) => run(command, cli.stats, cli.json, cli.pretty),
        (Some(_), Some(_)) => Err(anyhow::anyhow!(
            "give either --batch FILE or a command, not both"
        )),
        (None, None) => Err(anyhow::anyhow!("no command given; see `xtun --help`")),
    };
    if let Err(err) = result {
        fail(&err);
    }
}

fn fail(err: &anyhow::Error) -> ! {
    // One line: the outermost context, then its causes.
    let mut line = String::from("xtun: ");
    line.push_str(&err.to_string());
    for cause in err.chain().skip(1) {
        line.push_str(": ");
        line.push_str(&cause.to_string());
    }
    eprintln!("{line}");
    std::process::exit(1);
}

/// Runs each line of `file` as an xtun command; stops at the first error,
/// naming its line. The namespace lock is taken once for the whole file,
/// and `neigh add|del` lines skip the general parser: a million neighbours
/// load in one process at map-update speed.
fn run_batch(file: &str) -> anyhow::Result<()> {
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
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let is_add = matches!(
            words.as_slice(),
            ["neigh" | "neighbour" | "neighbor" | "n", "add", ..]
        );
        if !is_add {
            // Queued neighbour adds go in before anything that may depend on them.
            flush_neighbours(file)?;
        }
        let result = match words.as_slice() {
            ["neigh" | "neighbour" | "neighbor" | "n", "add", rest @ ..] => {
                cli::neigh::queue_add(rest, n + 1)
            }
            ["neigh" | "neighbour" | "neighbor" | "n", verb @ "del", rest @ ..] => {
                cli::neigh::run_words(verb, rest)
            }
            _ => Cli::try_parse_from(std::iter::once("xtun").chain(words.iter().copied()))
                .map_err(|e| {
                    // clap's first line, without its "error: " prefix.
                    let rendered = e.render().to_string();
                    let first = rendered.lines().next().unwrap_or("");
                    anyhow::anyhow!("{}", first.trim_start_matches("error: "))
                })
                .and_then(|cli| match cli.command {
                    Some(command) if cli.batch.is_none() => {
                        dispatch(command, cli.stats, cli.json, cli.pretty)
                    }
                    _ => Err(anyhow::anyhow!("each line must be one command")),
                }),
        };
        if let Err(err) = result {
            // The lines before this one take effect, as with `ip -batch`.
            flush_neighbours(file)?;
            let column = error_column(raw, &err);
            return Err(err.context(format!("{file}:{}:{column}", n + 1)));
        }
    }
    flush_neighbours(file)
}

/// Writes the neighbour adds a batch has queued; an error names the line.
fn flush_neighbours(file: &str) -> anyhow::Result<()> {
    cli::neigh::flush().map_err(|(line, err)| err.context(format!("{file}:{line}:1")))
}

fn run(command: Command, stats: bool, json: bool, pretty: bool) -> anyhow::Result<()> {
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
    dispatch(command, stats, json, pretty)
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
fn dispatch(command: Command, stats: bool, json: bool, pretty: bool) -> anyhow::Result<()> {
    let format = cli::output::Format { json, pretty };
    match command {
        Command::Tunnel { action } => {
            // Neighbour commands later in a batch must see this change.
            cli::neigh::invalidate();
            cli::tunnel::run(action, stats, format)
        }
        Command::Neigh { action } => cli::neigh::run(action, format),
        Command::Apply { file, dry_run } => cli::apply::apply(&file, dry_run),
        Command::Completion { .. } | Command::Manpages { .. } => unreachable!("handled in run"),
        Command::Export => cli::apply::export(),
        Command::Attach { dev, decap } => cli::attach::attach(&dev, decap),
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
