//! `xtun log`: stream the data plane's aya-log records until Ctrl-C. The
//! level is switched in the running programs' settings map, so nothing is
//! reloaded and no packet is lost, and it is put back on exit. The level
//! is held by a lease this process renews every second: killed by any
//! signal, it leaves the data plane to put the level back by itself.

use std::io::Write as _;

use anyhow::{bail, Context as _, Result};
use aya_log::EbpfLogger;
use clap::ValueEnum;
use tokio::{
    io::{unix::AsyncFd, Interest},
    signal::unix::{signal, SignalKind},
};
use tunnel_common::maps::{
    LEASE_REFRESH_NS, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_OFF, LOG_TRACE, LOG_WARN,
};
use tunnel_userspace::{dataplane::Dataplane, lock::NamespaceLock, netlink::Netlink};

use super::{status::level_name, RELEASE_WAIT};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Level {
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    fn value(self) -> u32 {
        match self {
            Self::Off => LOG_OFF,
            Self::Error => LOG_ERROR,
            Self::Warn => LOG_WARN,
            Self::Info => LOG_INFO,
            Self::Debug => LOG_DEBUG,
            Self::Trace => LOG_TRACE,
        }
    }
}

/// Prints each record as one line: level, then the message.
struct StdoutLog;

impl log::Log for StdoutLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{:<5} {}", record.level(), record.args());
        let _ = out.flush();
    }

    fn flush(&self) {}
}

pub fn run(level: Level) -> Result<()> {
    let mut nl = Netlink::new()?;
    let Some(mut dp) = Dataplane::find(&mut nl)? else {
        bail!("xtun is not attached in this network namespace");
    };
    let previous = dp.effective_log_level()?;
    let (_, tc_id) = dp.program_ids();
    let mut logger = EbpfLogger::init_from_id_with_logger(tc_id, StdoutLog)
        .context("opening the data plane's log buffer")?;
    // Drop what accumulated before we started listening.
    logger.flush();
    // Leased: should this process die without putting the level back
    // (SIGKILL, a lost session), the data plane does so within seconds.
    // The settings word is shared with monitors: changed under the lock.
    NamespaceLock::acquire()
        .context("locking the namespace's data plane")
        .and_then(|_lock| Ok(dp.set_log_level_leased(level.value(), previous)?))?;
    eprintln!(
        "xtun: streaming data-plane logs at level {} (was {}); Ctrl-C to stop",
        level_name(level.value()),
        level_name(previous)
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(stream(logger, &mut dp));
    // Not stuck behind a long `-batch` or `apply`: the lease lapses instead,
    // and the data plane puts the level back itself.
    match NamespaceLock::acquire_within(RELEASE_WAIT)
        .context("locking the namespace's data plane")?
    {
        Some(_lock) => dp.end_log_lease(previous),
        None => dp.lapse_log_lease(),
    }
    .context("restoring the log level")?;
    result
}

async fn stream(logger: EbpfLogger<StdoutLog>, dp: &mut Dataplane) -> Result<()> {
    // SAFETY: the logger owns its ring-buffer fd, which stays open and
    // unchanged for as long as the AsyncFd owns the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut renew = tokio::time::interval(std::time::Duration::from_nanos(LEASE_REFRESH_NS));
    loop {
        tokio::select! {
            _ = renew.tick() => dp.renew_log_lease().context("renewing the log level's lease")?,
            ready = fd.readable_mut() => {
                let mut guard = ready?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    fd.get_mut().flush();
    Ok(())
}
