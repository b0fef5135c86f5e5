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
//! - this file: the writer (group commit, fsync policy, rotation,
//!   snapshots, failures).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::oneshot;

use super::journal::{
    AfterCommit, Change, Commit, Journal, RecoveredClient, StateImages, StoreError,
};
use super::{Retention, StoreConfig};

mod codec;
mod files;
mod recovery;
#[cfg(test)]
mod tests;

pub use files::LockError;
pub use recovery::Report;

use codec::{Clock, Kind};
use files::StoreFiles;

/// When written changes are forced to stable storage.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// `fsync` every group commit before its `<ok>`s: nothing acknowledged
    /// is lost even to a power cut. The default.
    #[default]
    Always,
    /// `fsync` every `fsync_interval`; `<ok>` once written to the OS: a
    /// process crash loses nothing, a power cut may lose the last interval.
    Periodic,
    /// Never `fsync` (the OS writes back when it likes): a process crash
    /// loses nothing, a power cut may lose what the OS had not written.
    Never,
}

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

/// Units written in one group at most (bounds one write's memory).
const MAX_GROUP: usize = 4096;

/// One submitted unit on its way to the writer.
struct Unit {
    changes: Vec<Change>,
    after_commit: Option<AfterCommit>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

/// The segment being appended to.
struct Active {
    file: File,
    number: u64,
    /// Bytes known to be written whole.
    len: u64,
    /// Journal bytes written since the last snapshot began.
    since_snapshot: u64,
    /// Size of the last snapshot (what the state takes).
    snapshot_bytes: u64,
    /// Written but not yet `fsync`ed (periodic policy).
    unsynced: bool,
    last_sync: Instant,
}

struct Inner {
    files: StoreFiles,
    /// Held for the life of the store: the directory's lock.
    _lock: File,
    /// False from a failed write until the hub reloaded (see `reopen`).
    writable: AtomicBool,
    /// The writer thread, snapshots and `reopen` take turns on the segment.
    active: Mutex<Active>,
    /// Groups written, and groups whose after-commit steps ran: a snapshot
    /// waits for the second to catch up with the first, so that nothing
    /// written before it is missing from the state it copies.
    written_groups: std::sync::atomic::AtomicU64,
    flushed_groups: std::sync::atomic::AtomicU64,
    /// Failed writes so far: a snapshot taken while one failed may hold
    /// changes that were refused, and is discarded.
    failed_writes: std::sync::atomic::AtomicU64,
    policy: FsyncPolicy,
    fsync_interval: Duration,
    segment_bytes: u64,
    retention: Retention,
    max_revoked: usize,
}

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

impl Active {
    /// The newest segment, appended to after recovery read it; what the
    /// journal holds since the newest snapshot counts towards the next.
    fn after_recovery(files: &StoreFiles, report: &Report) -> std::io::Result<Self> {
        let number = files.segments()?.last().map_or(1, |s| s.number);
        let file = open_segment(files, number)?;
        let len = file.metadata()?.len();
        let snapshot_bytes = files
            .snapshots()?
            .last()
            .and_then(|(_, p)| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len());
        Ok(Active {
            file,
            number,
            len,
            since_snapshot: report.bytes.saturating_sub(snapshot_bytes),
            snapshot_bytes,
            unsynced: false,
            last_sync: Instant::now(),
        })
    }
}

fn open_segment(files: &StoreFiles, number: u64) -> std::io::Result<File> {
    let path = files.segment_path(number);
    let created = !path.exists();
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    if created {
        files.sync_dir()?;
    }
    Ok(file)
}

impl Inner {
    fn active(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: groups whatever units are waiting into one write,
    /// and hands each written group on to [`Inner::run_after_commits`].
    fn run(&self, rx: mpsc::Receiver<Unit>, written: mpsc::Sender<Vec<Unit>>) {
        let mut buf = Vec::new();
        loop {
            let first = match rx.recv_timeout(self.fsync_interval) {
                Ok(unit) => unit,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.sync_if_due();
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let mut active = self.active();
                    let _ = active.file.sync_data();
                    active.unsynced = false;
                    return;
                }
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(unit) => group.push(unit),
                    Err(_) => break,
                }
            }
            if let Some(group) = self.write_group(group, &mut buf) {
                if written.send(group).is_err() {
                    return;
                }
            }
        }
    }

    /// Runs written units' after-commit steps (the hub's appends) and
    /// acknowledges them, group after group, in the order written.
    fn run_after_commits(&self, written: mpsc::Receiver<Vec<Unit>>) {
        for group in written {
            for unit in group {
                if let Some(after) = unit.after_commit {
                    after();
                }
                let _ = unit.done.send(Ok(()));
            }
            self.flushed_groups.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Writes a group; returns it once written (`None`: it failed, and its
    /// units were told so).
    fn write_group(&self, group: Vec<Unit>, buf: &mut Vec<u8>) -> Option<Vec<Unit>> {
        let mut active = self.active();
        if !self.writable.load(Ordering::SeqCst) {
            fail(group, "an earlier write failed; the store is recovering");
            return None;
        }
        buf.clear();
        let clock = Clock::now();
        for unit in &group {
            codec::frame(buf, Kind::Unit, |out| {
                codec::put_changes(out, &unit.changes, clock)
            });
        }
        if let Err(e) = self.append(&mut active, buf, self.policy == FsyncPolicy::Always) {
            self.writable.store(false, Ordering::SeqCst);
            self.failed_writes.fetch_add(1, Ordering::SeqCst);
            // Cut what may have been half written, so the next good record
            // follows a whole one (reopen tries again if this fails too).
            let _ = active.file.set_len(active.len);
            tracing::error!(file = %self.files.segment_path(active.number).display(), error = %e, "journal write failed: refusing writes until the disk takes them again");
            fail(group, &format!("the journal write failed: {e}"));
            return None;
        }
        // Counted while the segment is still held, so a snapshot rotating
        // after this write waits for this group's appends.
        self.written_groups.fetch_add(1, Ordering::SeqCst);
        if active.len >= self.segment_bytes {
            if let Err(e) = self.rotate(&mut active) {
                tracing::warn!(error = %e, "could not start a new journal segment; appending to the current one");
            }
        }
        Some(group)
    }

    /// Waits until every group written so far has been appended to the
    /// mailboxes (bounded: a snapshot gives up rather than wait forever).
    fn wait_for_after_commits(&self, written: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.flushed_groups.load(Ordering::SeqCst) < written {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Appends whole records, syncing when asked (or when the periodic
    /// policy is due).
    fn append(&self, active: &mut Active, bytes: &[u8], sync: bool) -> std::io::Result<()> {
        active.file.write_all(bytes)?;
        active.unsynced = true;
        if sync
            || (self.policy == FsyncPolicy::Periodic
                && active.last_sync.elapsed() >= self.fsync_interval)
        {
            active.file.sync_data()?;
            active.unsynced = false;
            active.last_sync = Instant::now();
        }
        active.len += bytes.len() as u64;
        active.since_snapshot += bytes.len() as u64;
        Ok(())
    }

    fn sync_if_due(&self) {
        if self.policy != FsyncPolicy::Periodic {
            return;
        }
        let mut active = self.active();
        if active.unsynced && self.writable.load(Ordering::SeqCst) {
            if let Err(e) = active.file.sync_data() {
                tracing::error!(error = %e, "journal fsync failed");
                self.writable.store(false, Ordering::SeqCst);
                self.failed_writes.fetch_add(1, Ordering::SeqCst);
            } else {
                active.unsynced = false;
                active.last_sync = Instant::now();
            }
        }
    }

    /// Starts the next segment; the current one is synced first.
    fn rotate(&self, active: &mut Active) -> std::io::Result<()> {
        if self.policy != FsyncPolicy::Never {
            active.file.sync_data()?;
        }
        let next = active.number + 1;
        active.file = open_segment(&self.files, next)?;
        active.number = next;
        active.len = 0;
        active.unsynced = false;
        Ok(())
    }
}

fn fail(group: Vec<Unit>, why: &str) {
    for unit in group {
        let _ = unit.done.send(Err(StoreError::Unavailable(why.to_owned())));
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
        let mut active = inner.active();
        // Whatever a failed write left past the last whole record goes, and
        // a probe record proves the disk takes writes (and syncs) again.
        let path = inner.files.segment_path(active.number);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(unavailable)?;
        file.set_len(active.len).map_err(unavailable)?;
        active.file = file;
        let mut probe = Vec::new();
        codec::frame(&mut probe, Kind::Probe, |_| {});
        inner
            .append(&mut active, &probe, true)
            .map_err(unavailable)?;
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
        let active = self.inner.active();
        self.writable()
            && active.since_snapshot > self.inner.segment_bytes.max(2 * active.snapshot_bytes)
    }

    fn write_snapshot(&self, state: &mut dyn FnMut() -> StateImages) -> Result<(), StoreError> {
        let inner = &self.inner;
        let unavailable = |e: std::io::Error| StoreError::Unavailable(e.to_string());
        let mark = inner.begin_snapshot().map_err(unavailable)?;
        // What the older segments hold must be in the mailboxes before the
        // state is copied: those segments are deleted afterwards.
        if !inner.wait_for_after_commits(mark.written) {
            return Err(StoreError::Unavailable(
                "the journal's appends did not catch up; snapshot postponed".into(),
            ));
        }
        let started = Instant::now();
        let path = inner.files.snapshot_path(mark.number);
        // Only now, with the new segment started and everything before it
        // appended: a client created before the rotation is in the
        // state copied, one created after it is in a kept segment.
        let bytes = inner.write_snapshot_at(&path, &mark, &mut state())?;
        inner.active().snapshot_bytes = bytes;
        let freed = inner.retire_before(mark.number).map_err(unavailable)?;
        tracing::info!(
            snapshot = %path.display(),
            bytes,
            freed,
            took_ms = started.elapsed().as_millis() as u64,
            "journal compacted: the state is in a snapshot, older segments deleted"
        );
        Ok(())
    }
}

/// Where a snapshot begins: the segment it starts (every older one is in
/// the state it copies), and the writer's counters at that moment.
struct SnapshotMark {
    /// The segment started for it; the snapshot takes its number.
    number: u64,
    /// Groups written before it.
    written: u64,
    /// Failed writes before it.
    failures: u64,
}

impl Inner {
    /// Starts a new segment for a snapshot to begin at.
    fn begin_snapshot(&self) -> std::io::Result<SnapshotMark> {
        let mut active = self.active();
        self.rotate(&mut active)?;
        active.since_snapshot = 0;
        Ok(SnapshotMark {
            number: active.number,
            written: self.written_groups.load(Ordering::SeqCst),
            failures: self.failed_writes.load(Ordering::SeqCst),
        })
    }

    /// Writes `state` to `path` (through a temporary file, renamed once
    /// whole and synced); returns its size. Discarded if a journal write
    /// failed meanwhile: it may hold changes that were refused.
    fn write_snapshot_at(
        &self,
        path: &std::path::Path,
        mark: &SnapshotMark,
        state: &mut dyn Iterator<Item = RecoveredClient>,
    ) -> Result<u64, StoreError> {
        let unavailable = |e: std::io::Error| StoreError::Unavailable(e.to_string());
        let tmp = path.with_extension("tmp");
        let written = write_snapshot_file(&tmp, state).map_err(unavailable);
        let bytes = match written {
            Ok(bytes) if self.failed_writes.load(Ordering::SeqCst) == mark.failures => bytes,
            other => {
                // Keep the segments.
                let _ = std::fs::remove_file(&tmp);
                other?;
                return Err(StoreError::Unavailable(
                    "a journal write failed while the snapshot was taken".into(),
                ));
            }
        };
        std::fs::rename(&tmp, path).map_err(unavailable)?;
        self.files.sync_dir().map_err(unavailable)?;
        Ok(bytes)
    }

    /// Deletes the segments and snapshots older than segment `number`, now
    /// in a snapshot; returns the segment bytes freed.
    fn retire_before(&self, number: u64) -> std::io::Result<u64> {
        let mut freed = 0;
        for segment in self.files.segments()? {
            if segment.number < number {
                freed += std::fs::metadata(&segment.path).map_or(0, |m| m.len());
                std::fs::remove_file(&segment.path)?;
            }
        }
        for (n, old) in self.files.snapshots()? {
            if n < number {
                std::fs::remove_file(&old)?;
            }
        }
        Ok(freed)
    }
}

/// Writes the state, each shared message once; returns the file's size.
fn write_snapshot_file(
    path: &std::path::Path,
    clients: &mut dyn Iterator<Item = RecoveredClient>,
) -> std::io::Result<u64> {
    let file = File::create(path)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let clock = Clock::now();
    let mut indexes: HashMap<*const super::StoredMessage, u64> = HashMap::new();
    let mut buf = Vec::new();
    let mut size = 0u64;
    for client in clients {
        buf.clear();
        let mut refs = Vec::with_capacity(client.messages.len());
        for message in &client.messages {
            let next = indexes.len() as u64;
            let index = *indexes.entry(Arc::as_ptr(message)).or_insert_with(|| {
                codec::frame(&mut buf, Kind::SnapshotMessage, |out| {
                    codec::put_snapshot_message(out, next, message, clock)
                });
                next
            });
            refs.push(index);
        }
        let entry = codec::SnapshotClient {
            id: client.id,
            epoch: client.epoch,
            first_seq: client.first_seq,
            lost_through: client.lost_through,
            last_active_ms: codec::unix_ms(client.last_active),
            channels: client.channels,
            revoked: client.revoked,
            messages: refs,
        };
        codec::frame(&mut buf, Kind::SnapshotClient, |out| {
            codec::put_snapshot_client(out, &entry)
        });
        out.write_all(&buf)?;
        size += buf.len() as u64;
    }
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(size)
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
