//! Pending notifications (`online`, `offline`, `subscribed`,
//! `unsubscribed`): a bounded queue per client, delivered in order per
//! client by a few workers, so that a slow backend never holds up a poll
//! (polls only enqueue).
//!
//! **Retries.** A worker makes one attempt and lets go: a client whose
//! event failed for now waits out its pause ([`Outbox::retry_later`]) in
//! `Inner::waiting`, holding no worker, while its later events wait behind
//! it (order per client). So however many clients' events fail, the
//! others' go out (see `retry.rs` for which failures are retried).
//!
//! **Bounds.** Opening events (`online`, `subscribed`) are queued while
//! fewer than `hooks.max_pending` wait; past that they are dropped, and the
//! caller remembers it so that the matching *closing* event (`offline`,
//! `unsubscribed`) is not sent either: the backend never sees half a pair.
//! Closing events of announced pairs have the room above: they are queued
//! while fewer than twice `max_pending` wait, a hard bound (the shutdown's
//! `offline` for every online client, a million of them, stops there).
//! Only a closing event that finds even that full is dropped on its own,
//! leaving its pair half-announced. Every drop is counted (`dropped` in
//! `/stats`, `cometbox_hook_notifications_dropped_total` in `/metrics`)
//! and logged once a minute ([`crate::telemetry::Quiet`]).
//!
//! **Durability** (the `disk` store): a `Journal` keeps the queue in a
//! file, written by a thread of its own (`journal.rs`). [`Outbox::push`]
//! only counts the event and hands it over; the thread queues it here once
//! it is written. So no file is written under the outbox's lock or a
//! client's, nor on an async worker; [`Outbox::written`] lets the caller
//! wait for the file outside them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::events::{Event, EventType};
use super::journal::{Journal, Record};
pub use super::journal::{OutboxError, FILE_NAME};
use super::retry::Backoff;
use crate::telemetry::Quiet;

/// The queue, its counters and (with a durable store) its file.
pub struct Outbox {
    queue: Arc<Queue>,
    /// With a durable store: the file, through its writer thread.
    journal: Option<Journal>,
    max_pending: usize,
    /// Notifications dropped on overflow (the other counters are the
    /// workers', in `mod.rs`).
    pub dropped: AtomicU64,
    /// Keeps its warnings (overflow, a writer gone) to once a minute each.
    quiet: Quiet,
}

/// What the workers take from, shared with the journal's writer thread
/// (which queues events once written).
#[derive(Default)]
struct Queue {
    inner: Mutex<Inner>,
    /// Wakes an idle worker when a client becomes ready.
    ready: Notify,
}

/// One client's events in order, and the pauses of its front one's retries.
#[derive(Default)]
struct ClientQueue {
    events: VecDeque<Event>,
    backoff: Backoff,
}

#[derive(Default)]
struct Inner {
    /// Per client, its events in order; the front one is in flight (or
    /// waiting to be retried) while the client is in `busy`.
    queues: HashMap<String, ClientQueue>,
    /// Clients with events, none in flight, in the order they became ready.
    ready: VecDeque<String>,
    busy: HashSet<String>,
    /// Busy clients whose front event failed, by when it is tried again
    /// (soonest first).
    waiting: BinaryHeap<Reverse<(Instant, String)>>,
    /// Events counted in: queued, in flight, or still with the writer.
    pending: usize,
}

impl Outbox {
    /// An in-memory outbox (memory store: a restart loses what is pending).
    pub fn in_memory(max_pending: usize) -> Self {
        Outbox {
            queue: Arc::default(),
            journal: None,
            max_pending,
            dropped: AtomicU64::new(0),
            quiet: Quiet::default(),
        }
    }

    /// An outbox kept in the file at `path` (the hooks' is `dir`/[`FILE_NAME`]), with what the file held queued
    /// again; `offline(client)` builds the `offline` owed to each client the
    /// file shows online.
    pub fn open(
        path: &Path,
        max_pending: usize,
        offline: impl Fn(&str) -> Event,
    ) -> Result<Self, OutboxError> {
        let mut outbox = Outbox::in_memory(max_pending);
        let queue = outbox.queue.clone();
        let (journal, recovered) = Journal::open(path, offline, move |events| queue.add(events))?;
        outbox.journal = Some(journal);
        if !recovered.is_empty() {
            tracing::info!(pending = recovered.len(), path = %path.display(), "hook notifications recovered; delivering them");
            outbox.queue.lock().pending += recovered.len();
            outbox.queue.add(recovered);
        }
        Ok(outbox)
    }

    /// Queues `event` (with a file: hands it to the writer, which queues
    /// it once written); false when it was dropped for want of room (see
    /// Bounds above: `max_pending` for an opening event, twice that for a
    /// closing one). Never waits for the disk.
    pub fn push(&self, event: Event) -> bool {
        let opening = matches!(event.kind, EventType::Online | EventType::Subscribed);
        let room = match opening {
            true => self.max_pending,
            false => self.max_pending.saturating_mul(2),
        };
        {
            let mut inner = self.queue.lock();
            if inner.pending >= room {
                drop(inner);
                self.dropped.fetch_add(1, Relaxed);
                if let Some(quiet) = self
                    .quiet
                    .may_say(if opening { "opening" } else { "closing" })
                {
                    tracing::warn!(client = %event.client, kind = ?event.kind, pending = room, alike_since_last = quiet, "hook notification dropped: the queue is full (hooks.max_pending; such drops are logged once a minute)");
                }
                return false;
            }
            inner.pending += 1;
        }
        // Out of the lock: the caller holds the client's lock, which keeps
        // this client's events in order on their way through the writer.
        let record = match &self.journal {
            Some(journal) => match journal.send(Record::Queued(Box::new(event))) {
                Ok(()) => return true,
                Err(record) => {
                    if let Some(quiet) = self.quiet.may_say("no writer") {
                        tracing::error!(
                            alike_since_last = quiet,
                            "the hooks outbox writer is gone: queueing without the file"
                        );
                    }
                    record
                }
            },
            None => Record::Queued(Box::new(event)),
        };
        // (Always an event: `send` gives back what it was given.)
        if let Record::Queued(event) = record {
            self.queue.add(vec![*event]);
        }
        true
    }

    /// Waits for a client with events, none in flight and no pause to wait
    /// out; returns its front event, which stays queued (and the client
    /// busy) until [`Outbox::settle`] or [`Outbox::retry_later`].
    pub async fn next(&self) -> Event {
        loop {
            let notified = self.queue.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let retry_at = {
                let mut inner = self.queue.lock();
                inner.end_pauses(Instant::now());
                if let Some(front) = inner.take_ready() {
                    return front;
                }
                inner.waiting.peek().map(|Reverse((at, _))| *at)
            };
            match retry_at {
                Some(at) => {
                    let at = tokio::time::Instant::from_std(at);
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// `event` (from [`Outbox::next`]) is done with (delivered, or refused
    /// for good): forgets it and makes its client's next event ready.
    pub fn settle(&self, event: &Event) {
        let mut inner = self.queue.lock();
        inner.busy.remove(&event.client);
        let more = match inner.queues.get_mut(&event.client) {
            Some(queue) => {
                queue.events.pop_front();
                queue.backoff = Backoff::default();
                !queue.events.is_empty()
            }
            None => false,
        };
        inner.pending -= 1;
        if more {
            inner.ready.push_back(event.client.clone());
        } else {
            inner.queues.remove(&event.client);
        }
        drop(inner);
        if more {
            self.queue.ready.notify_one();
        }
        if let Some(journal) = &self.journal {
            // (A writer gone was logged when it went.)
            let _ = journal.send(Record::Settled(event.id.clone()));
        }
    }

    /// `event` (from [`Outbox::next`]) failed for now: its client waits out
    /// its next pause (doubling up to `max`) without holding a worker, its
    /// later events behind it. Returns the pause.
    pub fn retry_later(&self, event: &Event, max: Duration) -> Duration {
        let mut inner = self.queue.lock();
        let pause = match inner.queues.get_mut(&event.client) {
            Some(queue) => queue.backoff.pause(max),
            None => return Duration::ZERO,
        };
        inner
            .waiting
            .push(Reverse((Instant::now() + pause, event.client.clone())));
        pause
    }

    /// Notifications waiting (in flight, and with the writer, included).
    pub fn pending(&self) -> usize {
        self.queue.lock().pending
    }

    /// Waits until every event pushed (and settled) before the call is in
    /// the file (at once without one).
    pub async fn written(&self) {
        if let Some(journal) = &self.journal {
            journal.written().await;
        }
    }

    /// Tests: makes every file write wait for `gate` (a slow disk).
    #[cfg(test)]
    fn set_write_gate(&self, gate: Arc<Mutex<()>>) {
        self.journal.as_ref().expect("a file").set_gate(gate);
    }
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `events` (already counted in `pending`), waking a worker for
    /// each client that became ready.
    fn add(&self, events: Vec<Event>) {
        let mut inner = self.lock();
        let mut ready = 0;
        for event in events {
            ready += usize::from(inner.append(event));
        }
        drop(inner);
        for _ in 0..ready {
            self.ready.notify_one();
        }
    }
}

impl Inner {
    /// Appends to the client's queue; true when the client became ready.
    fn append(&mut self, event: Event) -> bool {
        let client = event.client.clone();
        let queue = &mut self.queues.entry(client.clone()).or_default().events;
        queue.push_back(event);
        let became_ready = queue.len() == 1 && !self.busy.contains(&client);
        if became_ready {
            self.ready.push_back(client);
        }
        became_ready
    }

    /// The next ready client's front event; the client is then busy.
    fn take_ready(&mut self) -> Option<Event> {
        while let Some(client) = self.ready.pop_front() {
            let Some(front) = self
                .queues
                .get(&client)
                .and_then(|q| q.events.front())
                .cloned()
            else {
                continue;
            };
            self.busy.insert(client);
            return Some(front);
        }
        None
    }

    /// Clients whose pause ended by `now` are ready again (still busy
    /// until taken: no new event of theirs made them ready meanwhile).
    fn end_pauses(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.waiting.peek() {
            if *at > now {
                return;
            }
            let Some(Reverse((_, client))) = self.waiting.pop() else {
                return;
            };
            self.busy.remove(&client);
            self.ready.push_back(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::journal::read_back;
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn event(kind: EventType, client: &str) -> Event {
        Event::new(kind, client, None, "test")
    }

    #[tokio::test]
    async fn in_order_per_client_and_clients_interleave() {
        let outbox = Outbox::in_memory(100);
        let a1 = event(EventType::Online, "a");
        let a2 = event(EventType::Offline, "a");
        let b1 = event(EventType::Online, "b");
        for e in [&a1, &a2, &b1] {
            assert!(outbox.push(e.clone()));
        }
        // a's first is in flight: a's second waits, b goes meanwhile.
        assert_eq!(outbox.next().await, a1);
        assert_eq!(outbox.next().await, b1);
        let blocked = tokio::time::timeout(std::time::Duration::from_millis(50), outbox.next());
        assert!(blocked.await.is_err(), "a2 must wait for a1");
        outbox.settle(&a1);
        assert_eq!(outbox.next().await, a2);
        outbox.settle(&a2);
        outbox.settle(&b1);
        assert_eq!(outbox.pending(), 0);
    }

    /// A client whose event failed waits out its pause holding no worker:
    /// the next client's event goes first, its own later events wait.
    #[tokio::test]
    async fn a_failed_event_waits_its_pause_without_holding_up_others() {
        let outbox = Outbox::in_memory(100);
        let (a1, a2, b1) = (
            event(EventType::Online, "a"),
            event(EventType::Offline, "a"),
            event(EventType::Online, "b"),
        );
        assert!(outbox.push(a1.clone()) && outbox.push(a2.clone()));
        assert_eq!(outbox.next().await, a1);
        let max = std::time::Duration::from_millis(300);
        assert_eq!(outbox.retry_later(&a1, max).as_millis(), 100);
        assert!(outbox.push(b1.clone()));
        // b1 first, while a's pause has not ended.
        let started = Instant::now();
        assert_eq!(outbox.next().await, b1);
        outbox.settle(&b1);
        // Then a1 again (after its pause), before a2; the pause doubles.
        assert_eq!(outbox.next().await, a1);
        assert!(started.elapsed() >= std::time::Duration::from_millis(90));
        assert_eq!(outbox.retry_later(&a1, max).as_millis(), 200);
        assert_eq!(outbox.next().await, a1);
        outbox.settle(&a1);
        assert_eq!(outbox.next().await, a2);
        // A settled event resets the pauses.
        assert_eq!(outbox.retry_later(&a2, max).as_millis(), 100);
        assert_eq!(outbox.next().await, a2);
        outbox.settle(&a2);
        assert_eq!(outbox.pending(), 0);
    }

    #[test]
    fn overflow_drops_opening_events_at_the_cap_closing_ones_at_twice_it() {
        let outbox = Outbox::in_memory(1);
        assert!(outbox.push(event(EventType::Online, "a")));
        assert!(!outbox.push(event(EventType::Online, "b")));
        assert!(!outbox.push(event(EventType::Subscribed, "b")));
        assert!(outbox.push(event(EventType::Offline, "a")));
        // Twice max_pending wait: even a closing event is dropped now.
        assert!(!outbox.push(event(EventType::Unsubscribed, "c")));
        assert!(!outbox.push(event(EventType::Offline, "c")));
        assert_eq!((outbox.pending(), outbox.dropped.load(Relaxed)), (2, 4));
    }

    /// A slow disk holds up neither `push` (called under a client's lock on
    /// an async worker) nor the caller: the writer thread waits for it. The
    /// event is queued only once written, as the file promises.
    #[tokio::test]
    // The disk is held "slow" across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    async fn push_does_not_wait_for_a_slow_disk() {
        let dir = std::env::temp_dir().join(format!("cometbox-outbox-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let outbox = std::sync::Arc::new(
            Outbox::open(&dir.join(FILE_NAME), 100, |c| event(EventType::Offline, c)).unwrap(),
        );
        let gate = std::sync::Arc::new(Mutex::new(()));
        outbox.set_write_gate(gate.clone());
        let stalled = gate.lock().unwrap();
        let (pushed, returned) = std::sync::mpsc::channel();
        let pusher = outbox.clone();
        let online = event(EventType::Online, "a");
        let first = online.clone();
        std::thread::spawn(move || {
            pusher.push(first);
            pusher.push(event(EventType::Offline, "a"));
            let _ = pushed.send(());
        });
        let waited = returned.recv_timeout(std::time::Duration::from_secs(2));
        assert!(waited.is_ok(), "push waited for the disk");
        let early = tokio::time::timeout(std::time::Duration::from_millis(100), outbox.next());
        assert!(early.await.is_err(), "queued before it was written");
        drop(stalled);
        assert_eq!(outbox.next().await, online);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("cometbox-outbox-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let offline = |c: &str| event(EventType::Offline, c);
        let (a1, b1, b2) = (
            event(EventType::Online, "a"),
            event(EventType::Online, "b"),
            event(EventType::Offline, "b"),
        );
        {
            let outbox = Outbox::open(&dir.join(FILE_NAME), 100, offline).unwrap();
            for e in [&a1, &b1, &b2] {
                outbox.push(e.clone());
            }
            let first = outbox.next().await;
            assert_eq!(first, a1);
            outbox.settle(&first);
        }
        // A torn tail, as a crash mid-write leaves it.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        file.write_all(b"+{\"id\":\"evt-torn").unwrap();
        drop(file);
        let outbox = Outbox::open(&dir.join(FILE_NAME), 100, offline).unwrap();
        // b's events again with their ids, then a's owed offline.
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = outbox.next().await;
            outbox.settle(&e);
            got.push(e);
        }
        // In order per client (clients interleave freely).
        let of = |client: &str| -> Vec<Event> {
            got.iter().filter(|e| e.client == client).cloned().collect()
        };
        assert_eq!(of("b"), vec![b1, b2]);
        let a = of("a");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kind, EventType::Offline);
        assert_eq!(outbox.pending(), 0);
        drop(outbox);
        let (pending, online) = read_back(&dir.join(FILE_NAME)).unwrap();
        assert!(pending.is_empty() && online.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
