//! Start-up: rebuilding the state from the newest snapshot and the journal
//! segments after it.
//!
//! Records are replayed in order; each names the mailbox incarnation
//! (client and epoch) it touches, so a record that a snapshot already
//! reflects changes nothing. A torn record at the end of the newest
//! segment (a write cut short by a crash) is cut off with a warning; it was
//! never acknowledged. Damage anywhere else never passes silently: the
//! unreadable bytes are skipped and reported, and since what they held is
//! unknown, every recovered mailbox gets a new epoch, so every cursor
//! handed out before answers `reset` instead of silently skipping what was
//! lost.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::codec::{self, Clock, Framed, Kind, Reader};
use super::files::{Segment, StoreFiles};
use crate::protocol::{ChannelName, ClientId};
use crate::store::journal::{Change, RecoveredClient};
use crate::store::memory::MemoryLog;

/// What recovery found and did, for the start-up log.
#[derive(Debug, Default)]
pub struct Report {
    /// The snapshot it started from, if any.
    pub snapshot: Option<PathBuf>,
    /// Segments replayed.
    pub segments: usize,
    /// Records read (snapshot entries included).
    pub records: u64,
    /// Bytes read.
    pub bytes: u64,
    /// A torn tail cut off: the file, the offset it was cut at, and the
    /// bytes dropped.
    pub torn: Option<(PathBuf, u64, u64)>,
    /// Damaged spans skipped: the file, the offset, and the bytes skipped.
    pub damaged: Vec<(PathBuf, u64, u64)>,
    /// Whether every mailbox got a new epoch (damage, or a crash of the
    /// machine under a relaxed fsync policy).
    pub epochs_renewed: bool,
}

struct ReplayClient {
    log: MemoryLog,
    channels: BTreeSet<ChannelName>,
    revoked: Vec<(ChannelName, u64)>,
    last_active_ms: u64,
}

impl ReplayClient {
    /// Joined `channel`: no longer a revoked one.
    fn subscribed(&mut self, channel: ChannelName) {
        self.revoked.retain(|(r, _)| r != &channel);
        self.channels.insert(channel);
    }

    /// Left `channel`; a backend's unsubscribe (`at` its time) is
    /// remembered as revoked, the oldest forgotten past `max_revoked`.
    fn unsubscribed(&mut self, channel: ChannelName, at: u64, max_revoked: usize) {
        self.channels.remove(&channel);
        // `at = 0`: a browser's own leave, no kick to remember.
        if at != 0 {
            self.revoked.retain(|(r, _)| r != &channel);
            if self.revoked.len() >= max_revoked {
                self.revoked.remove(0);
            }
            self.revoked.push((channel, at));
        }
    }
}

/// The state being rebuilt.
pub(super) struct Replay {
    clients: HashMap<ClientId, ReplayClient>,
    max_messages: usize,
    max_revoked: usize,
    clock: Clock,
    now: Instant,
    /// Snapshot messages by index, while a snapshot is read.
    snapshot_messages: HashMap<u64, crate::store::SharedMessage>,
}

impl Replay {
    pub fn new(max_messages: usize, max_revoked: usize) -> Self {
        let clock = Clock::now();
        Replay {
            clients: HashMap::new(),
            max_messages,
            max_revoked,
            clock,
            now: Instant::now(),
            snapshot_messages: HashMap::new(),
        }
    }

    fn current(&mut self, id: &ClientId, epoch: u32) -> Option<&mut ReplayClient> {
        self.clients
            .get_mut(id)
            .filter(|c| c.log.parts().0 == epoch)
    }

    /// Applies one change to the mailbox incarnation it names, if that is
    /// the current one.
    fn change(&mut self, change: Change, written_ms: u64) {
        match change {
            Change::Created { client, epoch } => self.created(client, epoch, written_ms),
            Change::Message {
                message,
                recipients,
            } => {
                let now = self.now;
                for (id, epoch, seq) in recipients {
                    if let Some(c) = self.current(&id, epoch) {
                        c.log.append_at(seq, message.clone(), now);
                    }
                }
            }
            Change::Subscribed {
                client,
                epoch,
                channel,
            } => {
                if let Some(c) = self.current(&client, epoch) {
                    c.subscribed(channel);
                }
            }
            Change::Unsubscribed {
                client,
                epoch,
                channel,
                at,
            } => {
                let max = self.max_revoked;
                if let Some(c) = self.current(&client, epoch) {
                    c.unsubscribed(channel, at, max);
                }
            }
            Change::Gone { client, epoch } => {
                if self.current(&client, epoch).is_some() {
                    self.clients.remove(&client);
                }
            }
            Change::Active { clients } => {
                for (id, epoch, at) in clients {
                    if let Some(c) = self.current(&id, epoch) {
                        c.last_active_ms = codec::unix_ms(at);
                    }
                }
            }
        }
    }

    /// A mailbox made: an empty one, unless this incarnation exists already
    /// (the snapshot reflects it).
    fn created(&mut self, client: ClientId, epoch: u32, written_ms: u64) {
        if self.current(&client, epoch).is_none() {
            self.clients.insert(
                client,
                ReplayClient {
                    log: MemoryLog::new(epoch, self.max_messages),
                    channels: BTreeSet::new(),
                    revoked: Vec::new(),
                    last_active_ms: written_ms,
                },
            );
        }
    }

    /// Applies one record's payload (kind byte first).
    fn record(&mut self, payload: &[u8]) -> Result<(), codec::Undecodable> {
        let mut r = Reader::new(payload);
        match r.byte()? {
            k if k == Kind::Unit as u8 => {
                let (written_ms, changes) = codec::read_changes(&mut r, self.clock)?;
                for change in changes {
                    self.change(change, written_ms);
                }
            }
            k if k == Kind::SnapshotMessage as u8 => {
                let (index, message) = codec::read_snapshot_message(&mut r, self.clock)?;
                self.snapshot_messages.insert(index, message);
            }
            k if k == Kind::SnapshotClient as u8 => {
                let c = codec::read_snapshot_client(&mut r)?;
                let messages = c
                    .messages
                    .iter()
                    .map(|i| self.snapshot_messages.get(i).cloned())
                    .collect::<Option<Vec<_>>>()
                    .ok_or(codec::Undecodable("unknown snapshot message"))?;
                let log = MemoryLog::from_parts(
                    c.epoch,
                    c.first_seq,
                    c.lost_through,
                    messages,
                    self.max_messages,
                );
                self.clients.insert(
                    c.id,
                    ReplayClient {
                        log,
                        channels: c.channels.into_iter().collect(),
                        revoked: c.revoked,
                        last_active_ms: c.last_active_ms,
                    },
                );
            }
            k if k == Kind::Probe as u8 => {}
            _ => return Err(codec::Undecodable("unknown record kind")),
        }
        Ok(())
    }

    /// Replays every whole record of `bytes`; returns where the valid data
    /// ends (to cut a torn tail) and notes damage in `report`.
    fn file(&mut self, path: &Path, bytes: &[u8], is_last: bool, report: &mut Report) -> usize {
        let mut at = 0;
        while at < bytes.len() {
            match codec::read_frame(&bytes[at..]) {
                Framed::Record(payload, len) => {
                    if let Err(e) = self.record(payload) {
                        // The checksum matched but the content is not ours
                        // to read: skip it, loudly.
                        report.damaged.push((path.into(), at as u64, len as u64));
                        tracing::error!(file = %path.display(), offset = at, error = %e, "skipping an undecodable journal record");
                    }
                    report.records += 1;
                    at += len;
                }
                // A length running past the end is a torn tail only if no
                // whole record follows: otherwise it is damage.
                Framed::Short | Framed::Damaged => match codec::find_magic(bytes, at + 1) {
                    Some(next) if self.valid_from(bytes, next) => {
                        report
                            .damaged
                            .push((path.into(), at as u64, (next - at) as u64));
                        at = next;
                    }
                    _ if is_last => return at,
                    _ => {
                        report
                            .damaged
                            .push((path.into(), at as u64, (bytes.len() - at) as u64));
                        return bytes.len();
                    }
                },
            }
        }
        at
    }

    /// Whether a whole record starts at `at` (so the damage before it is in
    /// the middle, not a torn tail).
    fn valid_from(&self, bytes: &[u8], mut at: usize) -> bool {
        loop {
            match codec::read_frame(&bytes[at..]) {
                Framed::Record(..) => return true,
                _ => match codec::find_magic(bytes, at + 1) {
                    Some(next) => at = next,
                    None => return false,
                },
            }
        }
    }

    /// The rebuilt clients; every one gets a new epoch if `renew`.
    fn finish(self, renew: bool) -> Vec<RecoveredClient> {
        self.clients
            .into_iter()
            .map(|(id, c)| {
                let (epoch, first_seq, lost_through, messages) = c.log.parts();
                let epoch = if renew { renewed(epoch) } else { epoch };
                RecoveredClient {
                    id,
                    epoch,
                    first_seq,
                    lost_through,
                    messages: messages.cloned().collect(),
                    channels: c.channels.into_iter().collect(),
                    revoked: c.revoked,
                    last_active: codec::system_time(c.last_active_ms),
                }
            })
            .collect()
    }
}

/// A new epoch, never the old one.
fn renewed(old: u32) -> u32 {
    loop {
        let new = rand::random();
        if new != old {
            return new;
        }
    }
}

/// Rebuilds the state from `files`; cuts a torn tail off the newest
/// segment (the only change it makes to the files).
pub fn recover(
    files: &StoreFiles,
    max_messages: usize,
    max_revoked: usize,
    renew_epochs: bool,
) -> std::io::Result<(Vec<RecoveredClient>, Report)> {
    let mut report = Report::default();
    let mut replay = Replay::new(max_messages, max_revoked);
    let (snapshot, segments) = files.to_recover()?;
    if let Some(path) = snapshot {
        let bytes = std::fs::read(&path)?;
        report.bytes += bytes.len() as u64;
        let end = replay.file(&path, &bytes, false, &mut report);
        debug_assert_eq!(end, bytes.len());
        replay.snapshot_messages.clear();
        report.snapshot = Some(path);
    }
    let count = segments.len();
    for (i, Segment { path, .. }) in segments.into_iter().enumerate() {
        let bytes = std::fs::read(&path)?;
        report.bytes += bytes.len() as u64;
        report.segments += 1;
        let is_last = i + 1 == count;
        let end = replay.file(&path, &bytes, is_last, &mut report);
        if is_last && end < bytes.len() {
            let dropped = (bytes.len() - end) as u64;
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)?
                .set_len(end as u64)?;
            report.torn = Some((path, end as u64, dropped));
        }
    }
    report.epochs_renewed = renew_epochs || !report.damaged.is_empty();
    Ok((replay.finish(report.epochs_renewed), report))
}
