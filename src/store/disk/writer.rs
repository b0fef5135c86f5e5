//! The journal's writer: the segment being appended to, group commit (the
//! units waiting are written together, one write and one `fsync`), the
//! fsync policy, rotation to the next segment, and what a failed write
//! does (the store refuses writes until `reopen` proves the disk takes them
//! again). Written units' after-commit steps run on a second thread, so
//! the next write and `fsync` overlap them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::oneshot;

use super::codec::{self, Clock, Kind};
use super::files::StoreFiles;
use super::recovery::Report;
use crate::store::journal::{AfterCommit, Change, StoreError};
use crate::store::Retention;

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

/// Units written in one group at most (bounds one write's memory).
const MAX_GROUP: usize = 4096;

/// One submitted unit on its way to the writer.
pub(super) struct Unit {
    pub(super) changes: Vec<Change>,
    pub(super) after_commit: Option<AfterCommit>,
    pub(super) done: oneshot::Sender<Result<(), StoreError>>,
}

/// The segment being appended to.
pub(super) struct Active {
    pub(super) file: File,
    pub(super) number: u64,
    /// Bytes known to be written whole.
    pub(super) len: u64,
    /// Journal bytes written since the last snapshot began.
    pub(super) since_snapshot: u64,
    /// Size of the last snapshot (what the state takes).
    pub(super) snapshot_bytes: u64,
    /// Written but not yet `fsync`ed (periodic policy).
    unsynced: bool,
    last_sync: Instant,
}

/// The journal's state, shared by the writer thread, the after-commit
/// thread, snapshots and `reopen`.
pub(super) struct Inner {
    pub(super) files: StoreFiles,
    /// Held for the life of the store: the directory's lock.
    pub(super) _lock: File,
    /// False from a failed write until the hub reloaded (see `reopen`).
    pub(super) writable: AtomicBool,
    /// The writer thread, snapshots and `reopen` take turns on the segment.
    pub(super) active: Mutex<Active>,
    /// Groups written, and groups whose after-commit steps ran: a snapshot
    /// waits for the second to catch up with the first, so that nothing
    /// written before it is missing from the state it copies.
    pub(super) written_groups: std::sync::atomic::AtomicU64,
    pub(super) flushed_groups: std::sync::atomic::AtomicU64,
    /// Failed writes so far: a snapshot taken while one failed may hold
    /// changes that were refused, and is discarded.
    pub(super) failed_writes: std::sync::atomic::AtomicU64,
    pub(super) policy: FsyncPolicy,
    pub(super) fsync_interval: Duration,
    pub(super) segment_bytes: u64,
    pub(super) retention: Retention,
    pub(super) max_revoked: usize,
}

impl Active {
    /// The newest segment, appended to after recovery read it; what the
    /// journal holds since the newest snapshot counts towards the next.
    pub(super) fn after_recovery(files: &StoreFiles, report: &Report) -> std::io::Result<Self> {
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

impl Active {
    /// `fsync`s the segment, whose first `len` bytes are then on stable
    /// storage (test builds record that for [`power::cut`]).
    fn sync(&self, files: &StoreFiles, len: u64) -> std::io::Result<()> {
        self.file.sync_data()?;
        #[cfg(test)]
        power::synced(&files.segment_path(self.number), len);
        #[cfg(not(test))]
        let _ = (files, len);
        Ok(())
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
    pub(super) fn active(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: groups whatever units are waiting into one write,
    /// and hands each written group on to [`Inner::run_after_commits`].
    pub(super) fn run(&self, rx: mpsc::Receiver<Unit>, written: mpsc::Sender<Vec<Unit>>) {
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
                    let len = active.len;
                    let _ = active.sync(&self.files, len);
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
    pub(super) fn run_after_commits(&self, written: mpsc::Receiver<Vec<Unit>>) {
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
    pub(super) fn wait_for_after_commits(&self, written: u64) -> bool {
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
            active.sync(&self.files, active.len + bytes.len() as u64)?;
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
            let len = active.len;
            if let Err(e) = active.sync(&self.files, len) {
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
    pub(super) fn rotate(&self, active: &mut Active) -> std::io::Result<()> {
        if self.policy != FsyncPolicy::Never {
            let len = active.len;
            active.sync(&self.files, len)?;
        }
        let next = active.number + 1;
        active.file = open_segment(&self.files, next)?;
        active.number = next;
        active.len = 0;
        active.unsynced = false;
        Ok(())
    }

    /// After a failed write: whatever it left past the last whole record
    /// goes, and a probe record proves the disk takes writes (and syncs)
    /// again.
    pub(super) fn probe(&self) -> std::io::Result<()> {
        let mut active = self.active();
        let path = self.files.segment_path(active.number);
        let file = OpenOptions::new().append(true).open(&path)?;
        file.set_len(active.len)?;
        active.file = file;
        let mut probe = Vec::new();
        codec::frame(&mut probe, Kind::Probe, |_| {});
        self.append(&mut active, &probe, true)
    }
}

fn fail(group: Vec<Unit>, why: &str) {
    for unit in group {
        let _ = unit.done.send(Err(StoreError::Unavailable(why.to_owned())));
    }
}

/// Test builds: what a power cut keeps of each journal segment, its length
/// at its last `fsync` (SIGKILL keeps the page cache, so only this tells
/// a store that syncs from one that does not; `tests.rs` cuts with it).
#[cfg(test)]
pub(super) mod power {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static SYNCED: Mutex<BTreeMap<PathBuf, u64>> = Mutex::new(BTreeMap::new());

    /// `path` is on stable storage up to `len` bytes.
    pub fn synced(path: &Path, len: u64) {
        SYNCED.lock().unwrap().insert(path.to_owned(), len);
    }

    /// The power goes out: every journal segment in `dir` is cut back to
    /// what was synced of it (nothing, if it never was), as the page cache
    /// is lost. Call it at the moment of the cut, before the store is
    /// dropped (dropping it may sync).
    pub fn cut(dir: &Path) -> Vec<(PathBuf, u64)> {
        let synced = SYNCED.lock().unwrap();
        let mut kept = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("journal-") {
                kept.push((path.clone(), synced.get(&path).copied().unwrap_or(0)));
            }
        }
        kept
    }
}
