//! The reference model of `model.rs`: what was posted and what came of
//! each request, who may be a member of which channel, when each client
//! polled, and every browser's line of cursors; `reference/checks.rs`
//! checks each poll reply against the rules below. Pure bookkeeping: no
//! I/O and no clock of its own (the runner passes the `Instant`s it
//! measured), so every rule reads as a few lines.
//!
//! A browser's *lineage* is the chain of its polls, each sent with the
//! cursor of the last reply (as `client-js` does); a *segment* is a
//! lineage between two `reset`s. The rules, for a segment:
//!
//! - ids keep one epoch and follow each other (`seq + 1`: a mailbox
//!   numbers its messages contiguously, so a gap is a message skipped),
//!   starting right after the cursor the segment continues from;
//! - no message twice; nothing that was not sent to this client (directly,
//!   or to a channel it was, or may have been, a member of), and nothing
//!   from a request found missing earlier (no resurrection);
//! - an empty reply without `reset` means the segment holds every message
//!   certainly addressed to the client, sent after the segment began, and
//!   acknowledged (or seen by another lineage of the client) before the
//!   poll was sent; and of every batch it holds a part of, all of it;
//! - a `reset` needs a reason: a restart of a store that forgets, an
//!   eviction the idle clock allowed, a `<disconnect>`, or a message that
//!   may have outlived `message_ttl` unseen, after the cursor was handed
//!   out; and after a restart that forgot, an old cursor must `reset`.
//!
//! Memberships are three-valued: a request whose fate is unknown (no `<ok>`
//! because of a fault) or an idle gap long enough for an eviction leaves
//! them "maybe", and a channel message is then only *possibly* for that
//! client: allowed, never required.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::id_parts;

mod checks;
pub use checks::Lineage;

pub fn client(i: usize) -> String {
    format!("m{i}")
}

pub fn channel(j: usize) -> String {
    format!("room:{j}")
}

/// An id as the server spells it: the epoch in base 36, the sequence
/// number in decimal (the inverse of `harness::id_parts`).
fn spell((epoch, seq): (u32, u64)) -> String {
    let mut digits = Vec::new();
    let mut e = epoch;
    loop {
        digits.push(std::char::from_digit(e % 36, 36).expect("a base-36 digit"));
        e /= 36;
        if e == 0 {
            break;
        }
    }
    let epoch: String = digits.iter().rev().collect();
    format!("{epoch}-{seq}")
}

/// What the model knows of a yes/no fact.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tri {
    Yes,
    No,
    Maybe,
}

impl Tri {
    /// After something that may or may not have changed it to `to`.
    fn blur(self, to: Tri) -> Tri {
        if self == to {
            self
        } else {
            Tri::Maybe
        }
    }
}

/// One command of an ingest request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmd {
    To(usize),
    Channel(usize),
    Subscribe(usize, usize),
    Unsubscribe(usize, usize),
    Disconnect(usize),
}

impl Cmd {
    pub fn is_message(self) -> bool {
        matches!(self, Cmd::To(_) | Cmd::Channel(_))
    }
}

/// What an ingest request's reply says was applied.
#[derive(Debug)]
pub enum Outcome {
    /// `<ok accepted="n"/>`: all of it.
    Ok,
    /// No reply, a refused connection or a `503`: all of it or none.
    Unknown,
    /// `503 partly-applied`: these commands (1-based) in full, the rest
    /// unknown.
    Partly(Vec<usize>),
}

/// The server's limits the model needs, and its tolerances for them.
#[derive(Clone, Copy)]
pub struct Limits {
    pub ttl: Duration,
    pub idle: Duration,
    /// A message may be gone this much before `ttl` after it was sent
    /// (clock granularity).
    pub ttl_slack: Duration,
    /// A client may be evicted this much before `idle` after its last poll
    /// (a disk store's idle clock resumes up to one reaper sweep old).
    pub idle_slack: Duration,
}

struct Msg {
    batch: usize,
    channel: Option<usize>,
    event: Option<String>,
    /// Clients it is for if its request was applied.
    certain: Vec<usize>,
    /// Clients it may be for (a membership the model does not know).
    maybe: Vec<usize>,
    sent: Instant,
    acked: Option<Instant>,
}

impl Msg {
    fn possibly_for(&self, c: usize) -> bool {
        self.certain.contains(&c) || self.maybe.contains(&c)
    }
}

/// A change a command makes to the model's view, applied once its
/// request's fate is known (blurred to `Maybe` when it is not).
#[derive(Clone, Copy, Debug)]
enum Effect {
    Member(usize, usize, Tri),
    Revoked(usize, usize, Tri),
    Exists(usize, Tri),
}

struct Batch {
    cmds: Vec<Cmd>,
    msgs: Vec<u64>,
    /// Per command, the changes it makes if applied.
    effects: Vec<Vec<Effect>>,
    sent: Instant,
    /// When its reply (or failure) came.
    done: Option<Instant>,
    acked: bool,
}

#[derive(Clone)]
struct ClientState {
    member: Vec<Tri>,
    /// A backend `<unsubscribe>` remembered against `channels=` (the test's
    /// tokens carry no `iat`, so only a `<subscribe>` lifts it).
    revoked: Vec<Tri>,
    exists: Tri,
}

struct ClientModel {
    state: ClientState,
    /// Successful polls: (sent, answered).
    polls: Vec<(Instant, Instant)>,
    /// Up to when possible evictions were applied to `state`.
    settled: Instant,
    /// `<disconnect>`s: the request's batch.
    disconnects: Vec<usize>,
    /// Cursors of earlier replies, with when that poll was sent and
    /// answered: a browser may come back with any of them.
    remembered: Vec<(String, Instant, Instant)>,
}

/// Counts of one run, printed at its end.
#[derive(Default, Debug, Clone)]
pub struct Tally {
    pub ops: usize,
    pub batches: usize,
    pub acked_batches: usize,
    pub unknown_batches: usize,
    pub in_flight_at_faults: usize,
    pub messages: usize,
    pub polls: usize,
    pub failed_polls: usize,
    pub delivered: usize,
    /// Resets, by the first reason that explains them: a restart that
    /// forgot, a disconnect, a possible eviction, a possible expiry.
    pub resets: [usize; 4],
    pub empty_checks: usize,
    pub required_checked: usize,
    pub unknown_seen: usize,
    pub unknown_absent: usize,
    pub faults: Vec<(String, usize)>,
}

pub struct Model {
    label: String,
    limits: Limits,
    /// The store forgets everything on a restart (memory).
    forgets: bool,
    msgs: Vec<Msg>,
    batches: Vec<Batch>,
    clients: Vec<ClientModel>,
    channels: usize,
    /// When each restart of a forgetting store began.
    restarts: Vec<Instant>,
    /// (message, client) first seen by any lineage, answered at.
    observed: HashMap<(u64, usize), Instant>,
    /// (batch, client): an unacknowledged batch found missing for good.
    absent: HashSet<(usize, usize)>,
    /// Message numbers possibly for each client, in sending order.
    by_client: Vec<Vec<u64>>,
    pub lineages: Vec<Lineage>,
    pub tally: Tally,
    history: VecDeque<String>,
    /// Where the whole history goes when a check fails.
    history_file: PathBuf,
    /// When the run began: history lines carry the time since.
    began: Instant,
}

impl Model {
    pub fn new(
        label: String,
        limits: Limits,
        forgets: bool,
        clients: usize,
        channels: usize,
        now: Instant,
        history_file: PathBuf,
    ) -> Self {
        let state = ClientState {
            member: vec![Tri::No; channels],
            revoked: vec![Tri::No; channels],
            exists: Tri::No,
        };
        Model {
            label,
            limits,
            forgets,
            msgs: Vec::new(),
            batches: Vec::new(),
            clients: (0..clients)
                .map(|_| ClientModel {
                    state: state.clone(),
                    polls: Vec::new(),
                    settled: now,
                    disconnects: Vec::new(),
                    remembered: Vec::new(),
                })
                .collect(),
            channels,
            restarts: Vec::new(),
            observed: HashMap::new(),
            absent: HashSet::new(),
            by_client: vec![Vec::new(); clients],
            lineages: Vec::new(),
            tally: Tally::default(),
            history: VecDeque::new(),
            history_file,
            began: now,
        }
    }

    /// The run's backend and seed, with how to replay it.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Notes an event for the failure report (the last 100,000 are kept).
    pub fn note(&mut self, event: String) {
        if self.history.len() == 100_000 {
            self.history.pop_front();
        }
        let at = self.began.elapsed().as_secs_f64();
        self.history.push_back(format!("{at:8.3} {event}"));
    }

    /// Fails the test with the run's label (backend, seed) and history.
    fn fail(&self, what: String) -> ! {
        let history: Vec<&str> = self.history.iter().map(String::as_str).collect();
        let _ = std::fs::write(&self.history_file, history.join("\n"));
        let last = &history[history.len().saturating_sub(60)..];
        panic!(
            "{}: INVARIANT BROKEN: {what}\nlast events (all in {}):\n  {}\n{}: {:?}",
            self.label,
            self.history_file.display(),
            last.join("\n  "),
            self.label,
            self.tally
        );
    }

    // ---- ingest -------------------------------------------------------

    /// Records a request about to be sent; returns its batch number and
    /// the message number of each command (`None` for others). `concurrent`
    /// requests (in flight together at a fault) may hold messages only.
    pub fn begin_batch(&mut self, cmds: &[Cmd], now: Instant) -> (usize, Vec<Option<u64>>) {
        for c in 0..self.clients.len() {
            self.settle(c, now);
        }
        let b = self.batches.len();
        let mut sim: Vec<ClientState> = self.clients.iter().map(|c| c.state.clone()).collect();
        let mut numbers = Vec::new();
        let mut effects = Vec::new();
        let mut msgs = Vec::new();
        for &cmd in cmds {
            let (number, changes) = self.simulate(cmd, b, &mut sim, now);
            if let Some(s) = number {
                msgs.push(s);
            }
            numbers.push(number);
            effects.push(changes);
        }
        self.batches.push(Batch {
            cmds: cmds.to_vec(),
            msgs,
            effects,
            sent: now,
            done: None,
            acked: false,
        });
        self.tally.batches += 1;
        self.note(format!("batch {b} sent: {cmds:?}"));
        (b, numbers)
    }

    /// One command on the simulated state `sim`: its message (numbered and
    /// recorded) and the changes it makes.
    fn simulate(
        &mut self,
        cmd: Cmd,
        batch: usize,
        sim: &mut [ClientState],
        now: Instant,
    ) -> (Option<u64>, Vec<Effect>) {
        let mut changes = Vec::new();
        let message = |model: &mut Self, ch: Option<usize>, certain, maybe| {
            let s = model.msgs.len() as u64;
            model.msgs.push(Msg {
                batch,
                channel: ch,
                event: s.is_multiple_of(2).then(|| format!("e{}", s % 3)),
                certain,
                maybe,
                sent: now,
                acked: None,
            });
            model.tally.messages += 1;
            Some(s)
        };
        let number = match cmd {
            Cmd::To(c) => {
                sim[c].exists = Tri::Yes;
                changes.push(Effect::Exists(c, Tri::Yes));
                message(self, None, vec![c], vec![])
            }
            Cmd::Channel(ch) => {
                let with = |t: Tri| -> Vec<usize> {
                    (0..sim.len()).filter(|&c| sim[c].member[ch] == t).collect()
                };
                let (certain, maybe) = (with(Tri::Yes), with(Tri::Maybe));
                message(self, Some(ch), certain, maybe)
            }
            Cmd::Subscribe(c, ch) => {
                sim[c].member[ch] = Tri::Yes;
                sim[c].revoked[ch] = Tri::No;
                sim[c].exists = Tri::Yes;
                changes.extend([
                    Effect::Member(c, ch, Tri::Yes),
                    Effect::Revoked(c, ch, Tri::No),
                    Effect::Exists(c, Tri::Yes),
                ]);
                None
            }
            Cmd::Unsubscribe(c, ch) => {
                // Remembered only by a client that exists.
                let revoked = sim[c].exists;
                sim[c].member[ch] = Tri::No;
                sim[c].revoked[ch] = revoked;
                changes.extend([
                    Effect::Member(c, ch, Tri::No),
                    Effect::Revoked(c, ch, revoked),
                ]);
                None
            }
            Cmd::Disconnect(c) => {
                for ch in 0..self.channels {
                    sim[c].member[ch] = Tri::No;
                    sim[c].revoked[ch] = Tri::No;
                    changes.push(Effect::Member(c, ch, Tri::No));
                    changes.push(Effect::Revoked(c, ch, Tri::No));
                }
                sim[c].exists = Tri::No;
                changes.push(Effect::Exists(c, Tri::No));
                self.clients[c].disconnects.push(batch);
                None
            }
        };
        if let Some(s) = number {
            let m = &self.msgs[s as usize];
            let mut for_whom: Vec<usize> = m.certain.iter().chain(&m.maybe).copied().collect();
            for_whom.sort_unstable();
            for c in for_whom {
                self.by_client[c].push(s);
            }
        }
        (number, changes)
    }

    /// The reply (or failure) of batch `b` came at `now`.
    pub fn batch_done(&mut self, b: usize, outcome: Outcome, now: Instant) {
        self.batches[b].done = Some(now);
        let n = self.batches[b].cmds.len();
        let applied: Vec<bool> = match &outcome {
            Outcome::Ok => vec![true; n],
            Outcome::Unknown => vec![false; n],
            Outcome::Partly(list) => (1..=n).map(|i| list.contains(&i)).collect(),
        };
        let all = applied.iter().all(|a| *a);
        self.batches[b].acked = all;
        if all {
            self.tally.acked_batches += 1;
        } else {
            self.tally.unknown_batches += 1;
        }
        self.note(format!("batch {b} done: {outcome:?}"));
        for (i, ok) in applied.into_iter().enumerate() {
            let effects = self.batches[b].effects[i].clone();
            for effect in effects {
                self.apply(effect, ok);
            }
        }
        let sent = self.batches[b].sent;
        for (k, s) in self.batches[b].msgs.clone().into_iter().enumerate() {
            let applied = match &outcome {
                Outcome::Ok => true,
                Outcome::Unknown => false,
                Outcome::Partly(list) => list.contains(&(self.command_of(b, k) + 1)),
            };
            if applied {
                self.msgs[s as usize].acked = Some(now);
            }
            self.demote_possibly_evicted(s, sent, now);
        }
        for c in 0..self.clients.len() {
            self.settle(c, now);
        }
    }

    /// The command index (0-based) of the `k`-th message of batch `b`.
    fn command_of(&self, b: usize, k: usize) -> usize {
        let batch = &self.batches[b];
        let (i, _) = batch
            .cmds
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_message())
            .nth(k)
            .expect("a message's command");
        i
    }

    fn apply(&mut self, effect: Effect, applied: bool) {
        let pick = |now: Tri, to: Tri| if applied { to } else { now.blur(to) };
        match effect {
            Effect::Member(c, ch, to) => {
                let s = &mut self.clients[c].state;
                s.member[ch] = pick(s.member[ch], to);
            }
            Effect::Revoked(c, ch, to) => {
                let s = &mut self.clients[c].state;
                s.revoked[ch] = pick(s.revoked[ch], to);
            }
            Effect::Exists(c, to) => {
                let s = &mut self.clients[c].state;
                s.exists = pick(s.exists, to);
            }
        }
    }

    /// A channel member whose eviction became possible between the send and
    /// the reply may have missed the message.
    fn demote_possibly_evicted(&mut self, s: u64, sent: Instant, done: Instant) {
        if self.msgs[s as usize].channel.is_none() {
            return;
        }
        let certain = self.msgs[s as usize].certain.clone();
        for c in certain {
            if self.possibly_evicted(c, sent, done) {
                let m = &mut self.msgs[s as usize];
                m.certain.retain(|x| *x != c);
                m.maybe.push(c);
            }
        }
    }

    /// The payload, channel and event of message `s`, for the XML.
    pub fn event_of(&self, s: u64) -> Option<&str> {
        self.msgs[s as usize].event.as_deref()
    }

    // ---- faults and time ---------------------------------------------

    /// A restart of the store began at `at`; with a store that forgets,
    /// everything is gone.
    pub fn restarted(&mut self, at: Instant) {
        self.note("restart".into());
        if !self.forgets {
            return;
        }
        self.restarts.push(at);
        for client in &mut self.clients {
            client.state.member.fill(Tri::No);
            client.state.revoked.fill(Tri::No);
            client.state.exists = Tri::No;
        }
    }

    pub fn count_fault(&mut self, kind: &str) {
        self.note(format!("fault: {kind}"));
        match self.tally.faults.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => self.tally.faults.push((kind.to_owned(), 1)),
        }
    }

    /// Whether client `c` may have been evicted at some moment in
    /// `[a, b]`: a gap between its successful polls (or before the first)
    /// long enough for the idle clock, overlapping that window.
    fn possibly_evicted(&self, c: usize, a: Instant, b: Instant) -> bool {
        let limit = self.limits.idle.saturating_sub(self.limits.idle_slack);
        let polls = &self.clients[c].polls;
        // Polls last 30 s at most (the harness's request timeout), so one
        // that started a minute before `a` no longer decides anything.
        let from = polls.partition_point(|(start, _)| *start + Duration::from_secs(60) < a);
        let mut active_until: Option<Instant> = None;
        for &(start, end) in &polls[from..] {
            if start > b {
                break;
            }
            let gap_evicts = match active_until {
                None => true,
                Some(u) => start > u && start - u >= limit && u + limit <= b,
            };
            if gap_evicts && start >= a {
                return true;
            }
            active_until = Some(active_until.map_or(end, |u| u.max(end)));
        }
        match active_until {
            None => true,
            Some(u) => u + limit <= b,
        }
    }

    /// Applies the evictions possible since the last settling.
    fn settle(&mut self, c: usize, now: Instant) {
        let since = self.clients[c].settled;
        if now > since && self.possibly_evicted(c, since, now) {
            let s = &mut self.clients[c].state;
            for t in s.member.iter_mut().chain(s.revoked.iter_mut()) {
                *t = t.blur(Tri::No);
            }
            s.exists = s.exists.blur(Tri::No);
        }
        self.clients[c].settled = self.clients[c].settled.max(now);
    }
}

#[test]
fn spell_is_the_inverse_of_id_parts() {
    for id in ["0-0", "1ntg46n-3", "zzzzzz-18446744073709551615"] {
        assert_eq!(spell(id_parts(id)), id);
    }
}
