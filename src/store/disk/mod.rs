//! The `disk` store: mailboxes in memory, every change journaled to disk
//! before it is acknowledged, the state recovered at start-up.
//!
//! Why a write-ahead log of our own rather than an embedded database
//! (redb, fjall): the hub already keeps every mailbox in memory, in the
//! shape polls read, so the disk only has to make changes durable and give
//! them back at start-up. An append-only journal does exactly that with one
//! sequential write per group of batches (group commit: however many
//! ingest requests are waiting share one write and one `fsync`), and a
//! channel message is written once with its list of recipients. A B-tree
//! or LSM engine would write each mailbox entry as its own key (a
//! 10,000-member channel message becoming 10,000 inserts), keep a second
//! copy of the state, and compact behind our back. Disk use is bounded by
//! snapshots: when the journal since the last snapshot outgrows the state,
//! the whole state is written to a snapshot file and the segments before it
//! are deleted, so restart time follows what is retained, not history.
//!
//! - `codec.rs`: record framing and encoding (pure);
//! - `files.rs`: the directory, its lock, its files;
//! - `recovery.rs`: rebuilding the state at start-up;
//! - `writer.rs`: the writer (group commit, fsync policy, rotation,
//!   failures);
//! - `snapshot.rs`: snapshots, and retiring what they replace;
//! - this file: opening the store, and the journal the hub calls.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::journal::{
    AfterCommit, Change, Commit, Journal, RecoveredClient, StateImages, StoreError,
};
use super::{Retention, StoreConfig};

mod codec;
mod files;
mod recovery;
mod snapshot;
#[cfg(test)]
mod tests;
mod writer;

pub use files::LockError;
pub use recovery::Report;
pub use writer::FsyncPolicy;

use files::StoreFiles;
use writer::{Active, Inner, Unit};

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The directory is locked or unusable.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Reading or preparing its files failed.
    #[error("cannot recover the store at {}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// The `redis` store's settings cannot work.
    #[error(transparent)]
    Redis(#[from] crate::store::redis::RedisConfigError),
}

/// A segment grows to about this size before the next one starts.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The disk store's journal.
pub struct DiskJournal {
    inner: Arc<Inner>,
    /// To the writer thread; `None` once dropping.
    units: Option<mpsc::Sender<Unit>>,
    /// The writer, then the thread that runs written units' after-commit
    /// steps (so the next write and `fsync` overlap them).
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for DiskJournal {
    /// Lets the writer finish what it has (and sync it), so that when the
    /// store is dropped its files are complete and its lock is released.
    fn drop(&mut self) {
        self.units.take();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl DiskJournal {
    /// Locks the directory, recovers its state, and starts the writer.
    pub fn open(
        config: &StoreConfig,
        retention: Retention,
        max_revoked: usize,
    ) -> Result<(Self, Vec<RecoveredClient>, Report), OpenError> {
        let (files, lock) = StoreFiles::lock(&config.path)?;
        let io = |e| OpenError::Io(config.path.clone(), e);
        let relaxed = config.fsync != FsyncPolicy::Always;
        let lost_writes = files.writes_maybe_lost();
        let (clients, report) =
            recovery::recover(&files, retention.max_messages, max_revoked, lost_writes)
                .map_err(io)?;
        let active = Active::after_recovery(&files, &report).map_err(io)?;
        let inner = Arc::new(Inner {
            files,
            _lock: lock,
            writable: AtomicBool::new(true),
            written_groups: Default::default(),
            flushed_groups: Default::default(),
            failed_writes: Default::default(),
            active: Mutex::new(active),
            policy: config.fsync,
            fsync_interval: config.fsync_interval,
            segment_bytes: config.segment_bytes.max(4096),
            retention,
            max_revoked,
        });
        let journal = DiskJournal::start(inner).map_err(io)?;
        journal
            .settle_renewed_epochs(&report, &clients)
            .map_err(|e| io(std::io::Error::other(e)))?;
        journal.inner.files.record_boot(relaxed).map_err(io)?;
        Ok((journal, clients, report))
    }

    /// Starts the writer thread and the after-commit thread on `inner`.
    fn start(inner: Arc<Inner>) -> std::io::Result<Self> {
        let (units, rx) = mpsc::channel();
        let (written, written_rx) = mpsc::channel();
        let writing = inner.clone();
        let writer = std::thread::Builder::new()
            .name("cometbox-journal".into())
            .spawn(move || writing.run(rx, written))?;
        let flushing = inner.clone();
        let flusher = std::thread::Builder::new()
            .name("cometbox-commit".into())
            .spawn(move || flushing.run_after_commits(written_rx))?;
        Ok(DiskJournal {
            inner,
            units: Some(units),
            threads: vec![writer, flusher],
        })
    }
}

impl DiskJournal {
    /// New epochs given at recovery exist only in memory: written nowhere,
    /// the next start would rebuild the old ones, and every record made
    /// under the new ones would be dropped as belonging to no mailbox. So
    /// the recovered state becomes a snapshot at once, which also retires
    /// the damaged segments.
    fn settle_renewed_epochs(
        &self,
        report: &Report,
        clients: &[RecoveredClient],
    ) -> Result<(), StoreError> {
        if !report.epochs_renewed {
            return Ok(());
        }
        let clients = clients.to_vec();
        self.write_snapshot(&mut || Box::new(clients.clone().into_iter()))
            .inspect(|()| {
                tracing::info!(
                    "the renewed epochs are written in a snapshot; the damaged journal is retired"
                )
            })
    }
}

impl Journal for DiskJournal {
    fn submit(
        &self,
        changes: Vec<Change>,
        after_commit: Option<AfterCommit>,
    ) -> Result<Commit, StoreError> {
        if !self.writable() {
            return Err(StoreError::Unavailable(
                "an earlier write failed; the store is recovering".into(),
            ));
        }
        let (done, commit) = oneshot::channel();
        let units = self.units.as_ref().expect("set until dropped");
        units
            .send(Unit {
                changes,
                after_commit,
                done,
            })
            .map_err(|_| StoreError::Unavailable("the journal writer stopped".into()))?;
        Ok(Commit(commit))
    }

    fn writable(&self) -> bool {
        self.inner.writable.load(Ordering::SeqCst)
    }

    fn reopen(&self) -> Result<Vec<RecoveredClient>, StoreError> {
        let inner = &self.inner;
        let unavailable = |e: std::io::Error| StoreError::Unavailable(e.to_string());
        inner.probe().map_err(unavailable)?;
        let (clients, report) = recovery::recover(
            &inner.files,
            inner.retention.max_messages,
            inner.max_revoked,
            false,
        )
        .map_err(unavailable)?;
        log_report(
            &inner.files.dir().display().to_string(),
            &report,
            clients.len(),
        );
        Ok(clients)
    }

    fn resume(&self) {
        self.inner.writable.store(true, Ordering::SeqCst);
    }

    fn snapshot_due(&self) -> bool {
        self.writable() && self.inner.snapshot_due()
    }

    fn write_snapshot(&self, state: &mut dyn FnMut() -> StateImages) -> Result<(), StoreError> {
        self.inner.write_snapshot(state)
    }
}

/// Says what recovery found: the start-up log's account of the store.
pub fn log_report(path: &str, report: &Report, clients: usize) {
    if let Some((file, offset, dropped)) = &report.torn {
        tracing::warn!(file = %file.display(), offset, dropped, "torn journal tail truncated: the last write was cut short by a crash (it was never acknowledged)");
    }
    for (file, offset, skipped) in &report.damaged {
        tracing::error!(file = %file.display(), offset, skipped, "damaged journal data skipped: what it held is lost");
    }
    if report.epochs_renewed {
        tracing::warn!("every mailbox got a new epoch: cursors handed out before this start will answer reset (data may have been lost), never skip silently");
    }
    tracing::info!(
        path,
        snapshot = report.snapshot.as_ref().map(|p| p.display().to_string()),
        segments = report.segments,
        records = report.records,
        bytes = report.bytes,
        clients,
        "store recovered"
    );
}
