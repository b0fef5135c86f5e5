//! The browsers' half of the reference model: each browser's line of
//! cursors, and the rules every poll reply is checked against (stated in
//! `reference.rs`'s doc): ids, duplicates, recipients, completeness at an
//! empty reply, whole batches, and a reason for every `reset`.

use std::collections::HashSet;
use std::time::Instant;

use serde_json::Value;

use super::{channel, client, spell, Model, Msg, Tri};
use crate::harness::id_parts;

/// A browser's chain of polls.
pub struct Lineage {
    pub client: usize,
    /// The `since` of its next poll.
    pub cursor: Option<String>,
    /// Messages sent after this belong to the current segment.
    threshold: Instant,
    /// A drop after this may explain a `reset`: when the poll that handed
    /// out the cursor was sent.
    hazard_from: Instant,
    seen: HashSet<u64>,
    /// The id the segment continues from.
    last: Option<(u32, u64)>,
    /// A poll of it is under way.
    pub busy: bool,
    /// Still polling (not abandoned).
    pub active: bool,
}

impl Model {
    /// A new browser of client `c` with no cursor.
    pub fn fresh_lineage(&mut self, c: usize, now: Instant) -> usize {
        self.lineages.push(Lineage {
            client: c,
            cursor: None,
            threshold: now,
            hazard_from: now,
            seen: HashSet::new(),
            last: None,
            busy: false,
            active: true,
        });
        self.lineages.len() - 1
    }

    /// A browser of client `c` coming back with a cursor remembered from
    /// an earlier reply (`pick` chooses which); `None` if there is none.
    pub fn stale_lineage(&mut self, c: usize, pick: u64) -> Option<usize> {
        let remembered = &self.clients[c].remembered;
        if remembered.is_empty() {
            return None;
        }
        let (cursor, sent, answered) = remembered[pick as usize % remembered.len()].clone();
        self.lineages.push(Lineage {
            client: c,
            last: Some(id_parts(&cursor)),
            cursor: Some(cursor),
            threshold: answered,
            hazard_from: sent,
            seen: HashSet::new(),
            busy: false,
            active: true,
        });
        Some(self.lineages.len() - 1)
    }

    /// A poll of lineage `l` is sent at `now`, joining channel `join`.
    pub fn poll_sent(&mut self, l: usize, join: Option<usize>, now: Instant) {
        let c = self.lineages[l].client;
        self.lineages[l].busy = true;
        self.settle(c, now);
        if let Some(ch) = join {
            let s = &mut self.clients[c].state;
            if s.revoked[ch] != Tri::Yes {
                s.member[ch] = s.member[ch].blur(Tri::Yes);
            }
        }
    }

    /// A poll of lineage `l` failed (no 200): it may still have joined.
    pub fn poll_failed(&mut self, l: usize) {
        self.lineages[l].busy = false;
        self.tally.failed_polls += 1;
    }

    /// A 200 reply to the poll of lineage `l` sent at `sent` (with `join`),
    /// answered at `answered`: checked against every rule.
    pub fn poll_answered(
        &mut self,
        l: usize,
        join: Option<usize>,
        sent: Instant,
        answered: Instant,
        body: &Value,
    ) {
        self.lineages[l].busy = false;
        self.tally.polls += 1;
        let c = self.lineages[l].client;
        let who = format!("{} (browser {l})", client(c));
        let since = self.lineages[l].cursor.clone();
        let reset = body["reset"] == true;
        let messages = body["messages"]
            .as_array()
            .unwrap_or_else(|| self.fail(format!("{who}: no messages array: {body}")));
        let cursor = body["cursor"]
            .as_str()
            .unwrap_or_else(|| self.fail(format!("{who}: no cursor: {body}")))
            .to_owned();
        self.note(format!(
            "{who} poll since={since:?} → reset={reset} {} messages, cursor {cursor}",
            messages.len()
        ));
        if since.is_some() && !reset && self.forgot_between(self.lineages[l].hazard_from, sent) {
            self.fail(format!(
                "{who}: cursor {since:?} handed out before a restart of a store that forgets was honoured without reset: {body}"
            ));
        }
        if reset {
            self.check_reset(l, since.as_deref(), sent, answered, body);
        }
        if since.is_none() || reset {
            let lineage = &mut self.lineages[l];
            lineage.threshold = sent;
            lineage.hazard_from = sent;
            lineage.seen.clear();
            lineage.last = None;
        }
        for m in messages {
            self.delivered(l, m, answered, &who);
        }
        self.check_cursor(l, &cursor, messages.is_empty(), &who, body);
        let s = &mut self.clients[c];
        // Kept in order of sending (held polls end out of order).
        let at = s.polls.partition_point(|(start, _)| *start <= sent);
        s.polls.insert(at, (sent, answered));
        s.state.exists = Tri::Yes;
        if let Some(ch) = join {
            if s.state.revoked[ch] == Tri::No {
                s.state.member[ch] = Tri::Yes;
            }
        }
        s.remembered.push((cursor.clone(), sent, answered));
        if s.remembered.len() > 40 {
            s.remembered.remove(0);
        }
        self.lineages[l].cursor = Some(cursor);
        self.lineages[l].hazard_from = sent;
        let disconnected = body["disconnected"] == true;
        if messages.is_empty() && !reset && !disconnected {
            self.check_complete(l, sent, &who);
        }
    }

    /// Whether a forgetting restart began in `(from, to]`.
    fn forgot_between(&self, from: Instant, to: Instant) -> bool {
        self.restarts.iter().any(|&r| r > from && r <= to)
    }

    /// A reset needs a reason after the segment's first cursor was handed
    /// out (see the module doc).
    fn check_reset(
        &mut self,
        l: usize,
        since: Option<&str>,
        sent: Instant,
        answered: Instant,
        body: &Value,
    ) {
        let lineage = &self.lineages[l];
        let (c, from) = (lineage.client, lineage.hazard_from);
        let who = client(c);
        if since.is_none() {
            self.fail(format!("{who}: reset on a poll without since: {body}"));
        }
        // Possibly applied after the cursor: its request ended after it.
        let after_cursor = |m: &Msg| self.batches[m.batch].done.is_none_or(|d| d > from);
        let forgot = self.forgot_between(from, sent);
        // Applied between its sending and its reply (or failure).
        let disconnected = self.clients[c].disconnects.iter().any(|&b| {
            let batch = &self.batches[b];
            batch.sent < answered && batch.done.is_none_or(|d| d > from)
        });
        let evicted = self.possibly_evicted(c, from, answered);
        let expired = self.by_client[c].iter().any(|&s| {
            let m = &self.msgs[s as usize];
            after_cursor(m) && m.sent + self.limits.ttl < answered + self.limits.ttl_slack
        });
        match [forgot, disconnected, evicted, expired].iter().position(|r| *r) {
            Some(reason) => self.tally.resets[reason] += 1,
            None => self.fail(format!(
                "{who} (browser {l}): reset from cursor {since:?} with no reason (no restart that forgets, no disconnect, no possible eviction or expiry since the cursor was handed out): {body}"
            )),
        }
    }

    /// One delivered message of a reply to lineage `l`.
    fn delivered(&mut self, l: usize, m: &Value, answered: Instant, who: &str) {
        self.tally.delivered += 1;
        let c = self.lineages[l].client;
        let id = m["id"]
            .as_str()
            .unwrap_or_else(|| self.fail(format!("{who}: a message without id: {m}")));
        let (epoch, seq) = id_parts(id);
        if let Some((e, q)) = self.lineages[l].last {
            if epoch != e || seq != q + 1 {
                self.fail(format!(
                    "{who}: id {id} after {} with no reset (ids of a mailbox follow each other: a gap skips a message, a step back repeats one)",
                    spell((e, q))
                ));
            }
        }
        self.lineages[l].last = Some((epoch, seq));
        let Some(s) = m["data"]["s"]
            .as_u64()
            .filter(|s| (*s as usize) < self.msgs.len())
        else {
            self.fail(format!("{who}: a message nobody sent: {m}"));
        };
        let msg = &self.msgs[s as usize];
        if !msg.possibly_for(c) {
            self.fail(format!(
                "{who}: message {s} was not sent to it (channel {:?}, for {:?}, maybe {:?}): {m}",
                msg.channel, msg.certain, msg.maybe
            ));
        }
        let want_channel = msg.channel.map(channel);
        if m["channel"].as_str() != want_channel.as_deref()
            || m["event"].as_str() != msg.event.as_deref()
        {
            self.fail(format!(
                "{who}: message {s} should have channel {want_channel:?} and event {:?}: {m}",
                msg.event
            ));
        }
        if self.absent.contains(&(msg.batch, c)) {
            self.fail(format!(
                "{who}: message {s} of unacknowledged batch {} appeared after the batch was found missing: {m}",
                msg.batch
            ));
        }
        if !self.lineages[l].seen.insert(s) {
            self.fail(format!(
                "{who}: message {s} delivered twice from one cursor: {m}"
            ));
        }
        if msg.acked.is_none() && !self.observed.contains_key(&(s, c)) {
            self.tally.unknown_seen += 1;
        }
        self.observed.entry((s, c)).or_insert(answered);
    }

    /// The reply's cursor is the last id it carried, or (empty) the one
    /// the segment continues from.
    fn check_cursor(&mut self, l: usize, cursor: &str, empty: bool, who: &str, body: &Value) {
        let parsed = id_parts(cursor);
        match self.lineages[l].last {
            Some(last) if last != parsed => self.fail(format!(
                "{who}: reply cursor {cursor} is not where its messages end ({}) (empty: {empty}): {body}",
                spell(last)
            )),
            _ => self.lineages[l].last = Some(parsed),
        }
    }

    /// An empty reply without reset, to a poll sent at `sent`: the segment
    /// holds everything it must (see the module doc), and unacknowledged
    /// batches it misses are missing for good.
    fn check_complete(&mut self, l: usize, sent: Instant, who: &str) {
        self.tally.empty_checks += 1;
        let c = self.lineages[l].client;
        let threshold = self.lineages[l].threshold;
        let mut batches_seen = HashSet::new();
        let mut batches_missed = HashSet::new();
        for &s in self.by_client[c].iter().rev() {
            let m = &self.msgs[s as usize];
            if m.sent <= threshold {
                break;
            }
            if !m.certain.contains(&c) {
                continue;
            }
            let seen = self.lineages[l].seen.contains(&s);
            let known = m.acked.is_some_and(|a| a < sent)
                || self.observed.get(&(s, c)).is_some_and(|&o| o < sent);
            if known {
                self.tally.required_checked += 1;
                if !seen {
                    self.fail(format!(
                        "{who}: message {s} (batch {}, acknowledged or seen by another browser before this poll) skipped without reset",
                        m.batch
                    ));
                }
            }
            if seen {
                batches_seen.insert(m.batch);
            } else {
                batches_missed.insert(m.batch);
            }
        }
        if let Some(b) = batches_seen.intersection(&batches_missed).next() {
            self.fail(format!(
                "{who}: batch {b} ({:?}) seen in part",
                self.batches[*b].cmds
            ));
        }
        for b in batches_missed {
            let batch = &self.batches[b];
            if !batch.acked && batch.done.is_some_and(|d| d < sent) && self.absent.insert((b, c)) {
                self.tally.unknown_absent += 1;
            }
        }
    }

    /// Lineages that poll on, idle (no poll under way).
    pub fn idle_lineages(&self) -> Vec<usize> {
        (0..self.lineages.len())
            .filter(|&l| self.lineages[l].active && !self.lineages[l].busy)
            .collect()
    }

    pub fn active_lineages(&self) -> usize {
        self.lineages.iter().filter(|l| l.active).count()
    }
}
