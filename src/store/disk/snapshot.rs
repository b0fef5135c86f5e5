//! Snapshots: when the journal since the last one outgrows the state, the
//! whole state is written to a snapshot file (each shared message once)
//! and the segments before it are deleted, so restart time follows what is
//! retained, not history.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::codec::{self, Clock, Kind};
use super::writer::Inner;
use crate::store::journal::{RecoveredClient, StateImages, StoreError};
use crate::store::StoredMessage;

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
    /// Whether the journal since the last snapshot has outgrown the state
    /// (and a segment).
    pub(super) fn snapshot_due(&self) -> bool {
        let active = self.active();
        active.since_snapshot > self.segment_bytes.max(2 * active.snapshot_bytes)
    }

    /// Writes the state `state` gives as a snapshot, and deletes the
    /// segments and snapshots it replaces.
    pub(super) fn write_snapshot(
        &self,
        state: &mut dyn FnMut() -> StateImages,
    ) -> Result<(), StoreError> {
        let unavailable = |e: std::io::Error| StoreError::Unavailable(e.to_string());
        let mark = self.begin_snapshot().map_err(unavailable)?;
        // What the older segments hold must be in the mailboxes before the
        // state is copied: those segments are deleted afterwards.
        if !self.wait_for_after_commits(mark.written) {
            return Err(StoreError::Unavailable(
                "the journal's appends did not catch up; snapshot postponed".into(),
            ));
        }
        let started = Instant::now();
        let path = self.files.snapshot_path(mark.number);
        // Only now, with the new segment started and everything before it
        // appended: a client created before the rotation is in the
        // state copied, one created after it is in a kept segment.
        let bytes = self.write_snapshot_at(&path, &mark, &mut state())?;
        self.active().snapshot_bytes = bytes;
        let freed = self.retire_before(mark.number).map_err(unavailable)?;
        tracing::info!(
            snapshot = %path.display(),
            bytes,
            freed,
            took_ms = started.elapsed().as_millis() as u64,
            "journal compacted: the state is in a snapshot, older segments deleted"
        );
        Ok(())
    }

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
    let mut indexes: HashMap<*const StoredMessage, u64> = HashMap::new();
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
