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
  xtun stats                # data-plane counters by reason";

#[derive(Parser)]
#[command(name = "xtun", version, about = "IP tunnels (GRE, IPIP, SIT) with an eBPF data path", after_help = EXAMPLES)]
struct Cli {
    /// Show statistics (as `ip -s`).
    #[arg(short = 's', long = "stats", global = true)]
    stats: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add, delete and show tunnels, as `ip tunnel` does.
    #[command(visible_aliases = ["tun", "tunl", "t"])]
    Tunnel {
        #[command(subcommand)]
        action: cli::tunnel::TunnelCommand,
    },
    /// Attach the data plane (XDP decapsulation, tc delivery) to an underlay NIC.
    #[command(
        after_help = "Example:\n  xtun attach eth0\n\nThe attachment outlives xtun and stays until `xtun detach`."
    )]
    Attach {
        /// The underlay interface.
        dev: String,
    },
    /// Detach the data plane from an underlay NIC.
    #[command(
        after_help = "Example:\n  xtun detach eth0\n\nRefused while tunnels use the interface."
    )]
    Detach {
        /// The underlay interface.
        dev: String,
    },
    /// Show the data plane's counters, by reason.
    #[command(after_help = "Example:\n  xtun stats")]
    Stats,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tunnel { action } => cli::tunnel::run(action, cli.stats),
        Command::Attach { dev } => cli::attach::attach(&dev),
        Command::Detach { dev } => cli::attach::detach(&dev),
        Command::Stats => cli::stats::show(),
    };
    if let Err(err) = result {
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
}
