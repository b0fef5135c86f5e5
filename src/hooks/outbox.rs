//! Pending notifications (`online`, `offline`, `subscribed`,
//! `unsubscribed`): a bounded queue per client, delivered in order per
//! client by a few workers, so that a slow backend never holds up a poll
//! (polls only enqueue).
//!
//! **Retries.** A worker makes one attempt and lets go: a client whose
//! event failed for now waits out its pause ([`Outbox::retry_later`]) in
//! [`Inner::waiting`], holding no worker, while its later events wait behind
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
//! and logged once a minute (`retry.rs`'s [`Quiet`]).
//!
//! **Durability** (the `disk` store): every notification is appended to
//! `<store.path>/hooks-outbox.log` before it is queued (`+<event json>`),
//! and its delivery is appended once the backend answered 2xx (`-<id>`).
//! Lines reach the page cache, not the platter: a killed process loses
//! nothing, a power cut may lose the last second. At start the file is
//! read back: undelivered events are queued again (same ids, same order),
//! and clients whose last event was `online` (the server died before their
//! `offline`) get their `offline`. The file is rewritten holding only what
//! is pending (and `@<client>` for each client online) once the file holds
//! [`COMPACT_SLACK`] lines more than twice the pending ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::events::{Event, EventType};
use super::retry::{Backoff, Quiet};

/// The outbox file's name under `store.path`.
pub const FILE_NAME: &str = "hooks-outbox.log";

/// Lines tolerated beyond twice the pending ones before a rewrite.
const COMPACT_SLACK: usize = 10_000;

/// The queue, its counters and (with a durable store) its file.
pub struct Outbox {
    inner: Mutex<Inner>,
    /// Wakes an idle worker when a client becomes ready.
    ready: Notify,
    max_pending: usize,
    /// Notifications dropped on overflow (the other counters are the
    /// workers', in `mod.rs`).
    pub dropped: AtomicU64,
    /// Keeps the overflow warning to once a minute.
    quiet: Quiet,
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
    pending: usize,
    file: Option<Journal>,
    /// With a file: clients whose last queued presence event is `online`,
    /// kept across rewrites (`@<client>` lines) so that a crash still owes
    /// them their `offline`. Not kept in memory-only outboxes.
    online: HashSet<String>,
    /// Whether this outbox has a file (set before recovered events are
    /// queued, so that they are tracked too).
    durable: bool,
}

/// The outbox file and what a rewrite needs.
struct Journal {
    path: PathBuf,
    file: File,
    /// Lines written since the last rewrite.
    lines: usize,
}

/// Why the outbox file cannot be used at start.
#[derive(Debug, thiserror::Error)]
#[error("hooks outbox {path}: {source}")]
pub struct OutboxError {
    path: String,
    source: std::io::Error,
}

impl Outbox {
    /// An in-memory outbox (memory store: a restart loses what is pending).
    pub fn in_memory(max_pending: usize) -> Self {
        Outbox {
            inner: Mutex::new(Inner::default()),
            ready: Notify::new(),
            max_pending,
            dropped: AtomicU64::new(0),
            quiet: Quiet::default(),
        }
    }

    /// An outbox kept in `dir`/[`FILE_NAME`], with what the file held queued
    /// again; `offline(client)` builds the `offline` owed to each client the
    /// file shows online.
    pub fn open(
        dir: &Path,
        max_pending: usize,
        offline: impl Fn(&str) -> Event,
    ) -> Result<Self, OutboxError> {
        let path = dir.join(FILE_NAME);
        let failed = |source| OutboxError {
            path: path.display().to_string(),
            source,
        };
        let (mut pending, online) = read_back(&path).map_err(failed)?;
        pending.extend(online.iter().map(|c| offline(c)));
        let outbox = Outbox::in_memory(max_pending);
        {
            let mut inner = outbox.lock();
            inner.durable = true;
            for event in pending {
                inner.push(event);
            }
            let events = inner.events();
            inner.file = Some(Journal {
                file: rewrite(&path, &inner.online, &events).map_err(failed)?,
                path: path.clone(),
                lines: 0,
            });
        }
        if outbox.pending() > 0 {
            tracing::info!(pending = outbox.pending(), path = %path.display(), "hook notifications recovered; delivering them");
        }
        Ok(outbox)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `event`; false when it was dropped for want of room (see
    /// Bounds above: `max_pending` for an opening event, twice that for a
    /// closing one).
    pub fn push(&self, event: Event) -> bool {
        let opening = matches!(event.kind, EventType::Online | EventType::Subscribed);
        let room = match opening {
            true => self.max_pending,
            false => self.max_pending.saturating_mul(2),
        };
        let mut inner = self.lock();
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
        inner.write(|out| {
            out.push(b'+');
            out.extend_from_slice(&event.body());
        });
        if inner.push(event) {
            drop(inner);
            self.ready.notify_one();
        }
        true
    }

    /// Waits for a client with events, none in flight and no pause to wait
    /// out; returns its front event, which stays queued (and the client
    /// busy) until [`Outbox::settle`] or [`Outbox::retry_later`].
    pub async fn next(&self) -> Event {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let retry_at = {
                let mut inner = self.lock();
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
        let mut inner = self.lock();
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
        inner.write(|out| {
            out.push(b'-');
            out.extend_from_slice(event.id.as_bytes());
        });
        inner.compact_if_due();
        drop(inner);
        if more {
            self.ready.notify_one();
        }
    }

    /// `event` (from [`Outbox::next`]) failed for now: its client waits out
    /// its next pause (doubling up to `max`) without holding a worker, its
    /// later events behind it. Returns the pause.
    pub fn retry_later(&self, event: &Event, max: Duration) -> Duration {
        let mut inner = self.lock();
        let pause = match inner.queues.get_mut(&event.client) {
            Some(queue) => queue.backoff.pause(max),
            None => return Duration::ZERO,
        };
        inner
            .waiting
            .push(Reverse((Instant::now() + pause, event.client.clone())));
        pause
    }

    /// Notifications waiting (in flight included).
    pub fn pending(&self) -> usize {
        self.lock().pending
    }
}

impl Inner {
    /// Appends to the client's queue; true when the client became ready.
    fn push(&mut self, event: Event) -> bool {
        self.pending += 1;
        match event.kind {
            _ if !self.durable => {}
            EventType::Online => {
                self.online.insert(event.client.clone());
            }
            EventType::Offline => {
                self.online.remove(&event.client);
            }
            _ => {}
        }
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

    /// Every queued event (for a rewrite of the file).
    fn events(&self) -> Vec<Event> {
        self.queues
            .values()
            .flat_map(|q| q.events.iter().cloned())
            .collect()
    }

    /// Appends one line to the file, if there is one. A failed write is
    /// logged and the event still queued: delivering it now matters more
    /// than remembering it across a restart.
    fn write(&mut self, line: impl FnOnce(&mut Vec<u8>)) {
        let Some(journal) = &mut self.file else {
            return;
        };
        let mut out = Vec::with_capacity(256);
        line(&mut out);
        out.push(b'\n');
        if let Err(e) = journal.file.write_all(&out) {
            tracing::error!(error = %e, path = %journal.path.display(), "cannot write the hooks outbox");
        }
        journal.lines += 1;
    }

    fn compact_if_due(&mut self) {
        let due = self
            .file
            .as_ref()
            .is_some_and(|j| j.lines > 2 * self.pending + COMPACT_SLACK);
        if !due {
            return;
        }
        let events = self.events();
        let Some(journal) = &mut self.file else {
            return;
        };
        match rewrite(&journal.path, &self.online, &events) {
            Ok(file) => {
                journal.file = file;
                journal.lines = 0;
            }
            Err(e) => {
                tracing::error!(error = %e, path = %journal.path.display(), "cannot rewrite the hooks outbox")
            }
        }
    }
}

/// Reads the file: the undelivered events in order, and the clients left
/// online (an `online` with no `offline` after it). A torn last line (a
/// write cut by a crash) is skipped with a warning.
fn read_back(path: &Path) -> std::io::Result<(Vec<Event>, Vec<String>)> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(e),
    };
    let mut events: Vec<Event> = Vec::new();
    let mut delivered = HashSet::new();
    let mut online: Vec<String> = Vec::new();
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let line = line?;
        let parsed = match line.split_first() {
            Some((b'+', json)) => serde_json::from_slice::<Event>(json).ok().map(|event| {
                match event.kind {
                    EventType::Online if !online.contains(&event.client) => {
                        online.push(event.client.clone())
                    }
                    EventType::Offline => online.retain(|c| c != &event.client),
                    _ => {}
                }
                events.push(event);
            }),
            Some((b'@', client)) => std::str::from_utf8(client).ok().map(|client| {
                if !online.iter().any(|c| c == client) {
                    online.push(client.to_owned());
                }
            }),
            Some((b'-', id)) => std::str::from_utf8(id).ok().map(|id| {
                delivered.insert(id.to_owned());
            }),
            _ => None,
        };
        if parsed.is_none() {
            tracing::warn!(path = %path.display(), line = n + 1, "hooks outbox: skipping a line that cannot be read (a write cut short?)");
        }
    }
    events.retain(|e| !delivered.contains(&e.id));
    Ok((events, online))
}

/// Writes `events` as a new file (through a temporary one and a rename, so
/// a crash leaves the old file or the new one) and opens it for appending.
fn rewrite(path: &Path, online: &HashSet<String>, events: &[Event]) -> std::io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut out = Vec::new();
    for client in online {
        out.push(b'@');
        out.extend_from_slice(client.as_bytes());
        out.push(b'\n');
    }
    for event in events {
        out.push(b'+');
        out.extend_from_slice(&event.body());
        out.push(b'\n');
    }
    {
        let mut file = File::create(&tmp)?;
        file.write_all(&out)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    OpenOptions::new().append(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // b1 at once, though a's pause has not ended.
        let started = Instant::now();
        assert_eq!(outbox.next().await, b1);
        assert!(started.elapsed() < std::time::Duration::from_millis(90));
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
            let outbox = Outbox::open(&dir, 100, offline).unwrap();
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
        let outbox = Outbox::open(&dir, 100, offline).unwrap();
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
