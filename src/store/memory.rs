//! The in-memory store: a ring of shared message references per client.
//!
//! Sequence numbers in one log are contiguous, so a log stores only the
//! sequence number of its oldest entry and a `VecDeque` of pointers (8 bytes a
//! message per mailbox). Messages whose own `ttl` lapsed while newer ones are
//! still retained stay in place until they reach the front, and are skipped
//! when read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use super::journal::RecoveredClient;
use super::{MailboxLog, ReadOutcome, Retention, SharedMessage, Store};
use crate::protocol::reply::encoded_len;
use crate::protocol::{ClientId, Cursor};

/// Keeps every mailbox in process memory.
pub struct MemoryStore {
    retention: Retention,
    /// Messages its logs dropped before any read returned them, shared by
    /// every log it opened so the count survives the logs (evicted clients)
    /// and is read at scrape time without walking them. Bumped only when a
    /// message is dropped, next to the drop's own reference-count update.
    lost: Arc<AtomicU64>,
}

impl MemoryStore {
    /// A store whose logs keep at most `retention.max_messages` each.
    pub fn new(retention: Retention) -> Self {
        MemoryStore {
            retention,
            lost: Arc::default(),
        }
    }
}

impl Store for MemoryStore {
    fn open(&self, _client: &ClientId) -> Box<dyn MailboxLog> {
        Box::new(
            MemoryLog::new(rand::random(), self.retention.max_messages)
                .counting_lost(self.lost.clone()),
        )
    }

    fn restore(&self, client: &RecoveredClient) -> Box<dyn MailboxLog> {
        let mut log = MemoryLog::new(client.epoch, self.retention.max_messages)
            .counting_lost(self.lost.clone());
        log.set_parts(
            client.first_seq,
            client.lost_through,
            client.messages.iter().cloned(),
        );
        Box::new(log)
    }

    fn messages_lost(&self) -> u64 {
        self.lost.load(Relaxed)
    }
}

/// One client's retained messages, in memory.
pub struct MemoryLog {
    /// Random per log, so cursors of a forgotten mailbox never match a new one.
    epoch: u32,
    /// Sequence number of `entries[0]` (the next one to be assigned when empty).
    first_seq: u64,
    entries: VecDeque<SharedMessage>,
    /// The highest sequence number dropped before it was due: a cursor older
    /// than this missed something and must `reset`.
    lost_through: u64,
    max_messages: usize,
    /// The highest sequence number a read has returned: a message above it
    /// that is dropped undelivered counts in `lost`.
    delivered_through: u64,
    /// The store's count of messages dropped undelivered (`None`: not
    /// counted, as for the logs recovery builds before handing them over).
    lost: Option<Arc<AtomicU64>>,
}

impl MemoryLog {
    /// An empty log.
    pub fn new(epoch: u32, max_messages: usize) -> Self {
        MemoryLog {
            epoch,
            first_seq: 1,
            entries: VecDeque::new(),
            lost_through: 0,
            max_messages: max_messages.max(1),
            delivered_through: 0,
            lost: None,
        }
    }

    /// The same log, adding the messages it drops undelivered to `counter`.
    pub fn counting_lost(mut self, counter: Arc<AtomicU64>) -> Self {
        self.lost = Some(counter);
        self
    }

    /// A log as a snapshot or journal recorded it.
    pub fn from_parts(
        epoch: u32,
        first_seq: u64,
        lost_through: u64,
        entries: impl IntoIterator<Item = SharedMessage>,
        max_messages: usize,
    ) -> Self {
        let mut log = MemoryLog::new(epoch, max_messages);
        log.set_parts(first_seq, lost_through, entries);
        log
    }

    /// Replaces the contents by what a snapshot or journal recorded.
    fn set_parts(
        &mut self,
        first_seq: u64,
        lost_through: u64,
        entries: impl IntoIterator<Item = SharedMessage>,
    ) {
        self.first_seq = first_seq.max(1);
        self.lost_through = lost_through;
        self.entries = entries.into_iter().collect();
        // Retention may have been lowered since: keep the newest.
        while self.entries.len() > self.max_messages {
            self.drop_front(true);
        }
    }

    /// Replays a recorded append of `message` as number `seq`: nothing if
    /// the log already has it (a snapshot did), and when numbers are
    /// missing before it (records lost to damage), they count as dropped.
    pub fn append_at(&mut self, seq: u64, message: SharedMessage, now: Instant) {
        let next = self.last_seq() + 1;
        if seq < next {
            return;
        }
        if seq > next {
            self.entries.clear();
            self.first_seq = seq;
            self.lost_through = seq - 1;
        }
        self.append(message, now);
    }

    /// The log's parts, for a snapshot: epoch, first sequence number,
    /// `lost_through`, and the retained messages.
    pub fn parts(&self) -> (u32, u64, u64, impl Iterator<Item = &SharedMessage>) {
        (
            self.epoch,
            self.first_seq,
            self.lost_through,
            self.entries.iter(),
        )
    }

    fn last_seq(&self) -> u64 {
        self.first_seq + self.entries.len() as u64 - 1
    }

    fn drop_front(&mut self, lost: bool) {
        self.entries.pop_front();
        if lost {
            self.lost_through = self.first_seq;
            if self.first_seq > self.delivered_through {
                if let Some(counter) = &self.lost {
                    counter.fetch_add(1, Relaxed);
                }
            }
        }
        self.first_seq += 1;
    }

    /// Where a read after `since` starts, and whether it is a reset.
    fn start_after(&self, since: Option<Cursor>) -> (u64, bool) {
        match since {
            None => (self.first_seq, false),
            // Messages between the cursor and `first_seq` lapsed by their own
            // ttl (anything else would have raised `lost_through`).
            Some(c)
                if c.epoch == self.epoch
                    && c.seq >= self.lost_through
                    && c.seq <= self.last_seq() =>
            {
                ((c.seq + 1).max(self.first_seq), false)
            }
            Some(_) => (self.first_seq, true),
        }
    }
}

impl MailboxLog for MemoryLog {
    fn append(&mut self, message: SharedMessage, now: Instant) -> u64 {
        self.purge_expired(now);
        if self.entries.len() >= self.max_messages {
            self.drop_front(true);
        }
        self.entries.push_back(message);
        self.last_seq()
    }

    fn read_after(&mut self, since: Option<Cursor>, now: Instant, max_bytes: usize) -> ReadOutcome {
        self.purge_expired(now);
        let (start, reset) = self.start_after(since);
        let skip = (start - self.first_seq) as usize;
        let mut messages = Vec::new();
        let mut bytes = 0;
        let mut cursor = self.head();
        for (seq, message) in (skip..self.entries.len())
            .map(|i| (self.first_seq + i as u64, &self.entries[i]))
            .filter(|(_, m)| m.expires_at > now)
        {
            bytes += encoded_len(&message.json_tail);
            if bytes > max_bytes && !messages.is_empty() {
                // The rest waits for the next poll, which resumes here.
                cursor.seq = messages.last().map_or(cursor.seq, |(s, _)| *s);
                break;
            }
            messages.push((seq, message.clone()));
        }
        if let Some((last, _)) = messages.last() {
            self.delivered_through = self.delivered_through.max(*last);
        }
        ReadOutcome {
            messages,
            cursor,
            reset,
        }
    }

    fn head(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: self.last_seq(),
        }
    }

    fn unread_from(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            seq: self.delivered_through,
        }
    }

    fn has_after(&self, since: Option<Cursor>, now: Instant) -> bool {
        let (start, reset) = self.start_after(since);
        // `range` starts at the index directly (a skipping iterator would walk
        // every retained message on each poll).
        let skip = (start - self.first_seq) as usize;
        // A message past `message_ttl` (not its own ttl) that the cursor
        // has not seen, in the expired run at the front that the read
        // purges, is a loss to report: the read answers `reset`, even when
        // nothing is left to carry.
        let lost_unseen = || {
            self.entries
                .iter()
                .enumerate()
                .take_while(|(_, m)| m.expires_at <= now)
                .any(|(i, m)| i >= skip && !m.own_ttl)
        };
        reset || self.entries.range(skip..).any(|m| m.expires_at > now) || lost_unseen()
    }

    fn purge_expired(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            if front.expires_at > now {
                break;
            }
            let lost = !front.own_ttl;
            self.drop_front(lost);
        }
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn image(&self) -> (u32, u64, u64, Vec<SharedMessage>) {
        let (epoch, first_seq, lost_through, messages) = self.parts();
        (epoch, first_seq, lost_through, messages.cloned().collect())
    }
}
