//! The data directory: who may use it, and which files it holds.
//!
//! ```text
//! <path>/LOCK                   held (flock) while a server uses the directory
//! <path>/BOOT                   the boot id and fsync policy of the last start
//! <path>/journal-00000007.log   segments, written in order; the newest is
//!                               the one being appended to
//! <path>/snapshot-00000007.snap the whole state as of the start of segment 7
//!                               (a fuzzy snapshot: replaying segment 7 on
//!                               top of it is idempotent)
//! ```

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// One journal segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Its number: segments are replayed in this order.
    pub number: u64,
    /// The file.
    pub path: PathBuf,
}

/// The data directory of a disk store.
#[derive(Debug)]
pub struct StoreFiles {
    dir: PathBuf,
}

/// Why the directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error("{} is in use by another cometbox (it holds {}); two servers cannot share one store.path", .0.display(), .0.join("LOCK").display())]
    InUse(PathBuf),
    /// The directory or lock file cannot be created or opened.
    #[error("cannot use store.path {}: {}", .0.display(), .1)]
    Io(PathBuf, io::Error),
}

impl StoreFiles {
    /// Creates the directory if missing and takes its lock, which is held
    /// for as long as the returned `File` lives.
    pub fn lock(dir: &Path) -> Result<(StoreFiles, File), LockError> {
        let io = |e| LockError::Io(dir.to_owned(), e);
        std::fs::create_dir_all(dir).map_err(io)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(io)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LockError::InUse(dir.to_owned())),
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok((
            StoreFiles {
                dir: dir.to_owned(),
            },
            lock,
        ))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("journal-{number:08}.log"))
    }

    pub fn snapshot_path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("snapshot-{number:08}.snap"))
    }

    fn numbered(&self, prefix: &str, suffix: &str) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let number = name
                .strip_prefix(prefix)
                .and_then(|n| n.strip_suffix(suffix))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(number) = number {
                found.push((number, entry.path()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Every segment, oldest first.
    pub fn segments(&self) -> io::Result<Vec<Segment>> {
        Ok(self
            .numbered("journal-", ".log")?
            .into_iter()
            .map(|(number, path)| Segment { number, path })
            .collect())
    }

    /// Every complete snapshot, oldest first.
    pub fn snapshots(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        self.numbered("snapshot-", ".snap")
    }

    /// The newest snapshot and the segments to replay after it (all of
    /// them when there is no snapshot).
    pub fn to_recover(&self) -> io::Result<(Option<PathBuf>, Vec<Segment>)> {
        let snapshot = self.snapshots()?.pop();
        let from = snapshot.as_ref().map_or(0, |(n, _)| *n);
        let segments = self
            .segments()?
            .into_iter()
            .filter(|s| s.number >= from)
            .collect();
        Ok((snapshot.map(|(_, p)| p), segments))
    }

    /// Makes renames and new files in the directory durable.
    pub fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    /// Whether the machine may have lost writes since the last start: it
    /// rebooted, and the last start did not fsync every write. Reads only:
    /// the answer must stay the same until what it implies (every mailbox
    /// renewed) is durable, see [`StoreFiles::record_boot`].
    pub fn writes_maybe_lost(&self) -> bool {
        let before = std::fs::read_to_string(self.dir.join("BOOT")).unwrap_or_default();
        match before.split_once(' ') {
            Some((boot, "relaxed")) => boot != boot_id(),
            _ => false,
        }
    }

    /// Records this start's boot id and fsync policy for the next start.
    /// Called once the recovered state is settled (renewed epochs written):
    /// a crash before that finds the old record and renews them again.
    pub fn record_boot(&self, relaxed_fsync: bool) -> io::Result<()> {
        let policy = if relaxed_fsync { "relaxed" } else { "always" };
        let tmp = self.dir.join("BOOT.tmp");
        std::fs::write(&tmp, format!("{} {policy}", boot_id()))?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, self.dir.join("BOOT"))?;
        self.sync_dir()
    }
}

/// This boot's id (Linux), or a constant where there is none.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
