//! One `xtun` at a time changes a network namespace's data plane.
//!
//! Two concurrent first `tunnel add`s would otherwise each load a data plane
//! of their own. The lock is an flock (std's `File::lock`) on a file named
//! after the namespace's inode, under /run/xtun (shared by every namespace,
//! readable only by root); the kernel releases it when the process exits,
//! even on SIGKILL.

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::PathBuf,
    time::{Duration, Instant},
};

pub struct NamespaceLock {
    _file: File,
}

fn lock_dir() -> PathBuf {
    let run = PathBuf::from("/run");
    if run.is_dir() {
        run.join("xtun")
    } else {
        std::env::temp_dir().join("xtun")
    }
}

impl NamespaceLock {
    /// The lock file of this process's network namespace, opened.
    fn open() -> io::Result<File> {
        let netns = fs::metadata("/proc/self/ns/net")?;
        let dir = lock_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let path = dir.join(format!("netns-{}-{}.lock", netns.dev(), netns.ino()));
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
    }

    /// Blocks until this process holds the lock of its network namespace.
    pub fn acquire() -> io::Result<Self> {
        let file = Self::open()?;
        // Held until the file is closed: when this value is dropped, or the
        // process exits.
        loop {
            match file.lock() {
                Ok(()) => return Ok(Self { _file: file }),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The lock if it can be had within `limit` (None if another process
    /// holds it all that time): for a streaming command that must not
    /// hang behind a long `-batch` or `apply`.
    pub fn acquire_within(limit: Duration) -> io::Result<Option<Self>> {
        let file = Self::open()?;
        let deadline = Instant::now() + limit;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Self { _file: file })),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}
