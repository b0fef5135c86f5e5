//! The outbox's file with the `disk` store, `<store.path>/hooks-outbox.log`,
//! written by a thread of its own.
//!
//! Notifications are decided under a client's lock on an async worker
//! (`backend/local/hooked.rs`), so the file is never written there: [`Journal::send`]
//! hands the record to the writer thread through a channel and returns.
//! The thread writes whatever has come in as one `write` (a group), and
//! only then hands the group's new events to the outbox to be sent
//! ([`Journal::open`]'s `on_written`): an event is in the file before the
//! backend can see it, and the channel keeps each client's order. A slow
//! disk delays delivery and the answers that wait for it (below), never
//! another client's poll.
//!
//! Lines: `+<event json>` (queued), `-<id>` (delivered or refused for good:
//! no longer pending), `@<client>` (online, written by a rewrite). They
//! reach the page cache, not the platter: a power cut may lose the last
//! seconds. [`Journal::written`] waits until what was handed over is
//! written: the hub awaits it before it answers the poll or the ingest
//! request that caused notifications (outside any lock), so what a killed
//! process loses was never acknowledged (and never sent); only the
//! reaper's last decisions, which nobody is answered for, may be. At start
//! the file is read back: undelivered events are queued again (same ids,
//! same order), and clients whose last event was `online` get their
//! `offline`.
//! The thread rewrites the file holding only what is pending (and `@` for
//! each client online) once it holds [`COMPACT_SLACK`] lines more than
//! twice the pending ones, through a temporary file and a rename.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::Arc;
use std::sync::{mpsc, Mutex};
use std::thread::JoinHandle;

use super::events::{Event, EventType};
use crate::telemetry::Quiet;

/// The outbox file's name under `store.path`.
pub const FILE_NAME: &str = "hooks-outbox.log";

/// Lines tolerated beyond twice the pending ones before a rewrite.
const COMPACT_SLACK: usize = 10_000;

/// Why the outbox file cannot be used at start.
#[derive(Debug, thiserror::Error)]
#[error("hooks outbox {path}: {source}")]
pub struct OutboxError {
    path: String,
    source: std::io::Error,
}

/// What the outbox tells the file.
#[derive(Debug)]
pub enum Record {
    /// A new event, to be sent once written.
    Queued(Box<Event>),
    /// This event (id) is no longer pending: delivered, or refused for good.
    Settled(String),
}

/// The writer thread's end of the channel; dropping it lets the thread
/// write what is left and waits for it.
pub struct Journal {
    /// The channel, and how many records went into it: counted under the
    /// same lock, so that the first `n` counted are the first `n` sent.
    records: Mutex<Option<(mpsc::Sender<Record>, u64)>>,
    thread: Option<JoinHandle<()>>,
    /// How many records the thread has written (closed if it is gone).
    written: tokio::sync::watch::Receiver<u64>,
    /// Tests: every write waits for this lock (a slow disk).
    #[cfg(test)]
    gate: Gate,
}

#[cfg(test)]
type Gate = Arc<std::sync::Mutex<Option<Arc<std::sync::Mutex<()>>>>>;

impl Journal {
    /// Reads the file at `path` (`dir`/[`FILE_NAME`] for the hooks) back, rewrites it holding what is pending,
    /// and starts the writer thread, which calls `on_written` with each
    /// group's new events once they are in the file. Returns the journal
    /// and the events to queue again: the undelivered ones, then the
    /// `offline` (`offline(client)`) owed to each client the file shows
    /// online.
    pub fn open(
        path: &Path,
        offline: impl Fn(&str) -> Event,
        on_written: impl FnMut(Vec<Event>) + Send + 'static,
    ) -> Result<(Journal, Vec<Event>), OutboxError> {
        let path = path.to_path_buf();
        let named = path.display().to_string();
        let failed = |source| OutboxError {
            path: named.clone(),
            source,
        };
        let (mut recovered, online) = read_back(&path).map_err(failed)?;
        recovered.extend(online.iter().map(|c| offline(c)));
        let mut state = Pending {
            online: online.into_iter().collect(),
            ..Pending::default()
        };
        for event in &recovered {
            state.queued(event);
        }
        let file = rewrite(&path, &state).map_err(failed)?;
        let (count, written) = tokio::sync::watch::channel(0);
        let (records, inbox) = mpsc::channel();
        #[cfg(test)]
        let gate = Gate::default();
        let writer = Writer {
            path,
            file,
            lines: 0,
            state,
            on_written: Box::new(on_written),
            written: count,
            quiet: Quiet::default(),
            #[cfg(test)]
            gate: gate.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("hooks-outbox".into())
            .spawn(move || writer.run(inbox))
            .map_err(failed)?;
        let journal = Journal {
            records: Mutex::new(Some((records, 0))),
            thread: Some(thread),
            written,
            #[cfg(test)]
            gate,
        };
        Ok((journal, recovered))
    }

    /// Hands `record` to the writer thread; gives it back if the thread is
    /// gone (it panicked), for the caller to go on without the file.
    // The record comes back whole on purpose: it is the event to queue.
    #[allow(clippy::result_large_err)]
    pub fn send(&self, record: Record) -> Result<(), Record> {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let Some((channel, sent)) = records.as_mut() else {
            return Err(record);
        };
        channel
            .send(record)
            .map_err(|mpsc::SendError(record)| record)?;
        *sent += 1;
        Ok(())
    }

    /// How many records were handed over.
    fn sent(&self) -> u64 {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.as_ref().map_or(0, |(_, sent)| *sent)
    }

    /// Records handed over and not written yet.
    #[cfg(test)]
    pub fn unwritten(&self) -> u64 {
        self.sent().saturating_sub(*self.written.borrow())
    }

    /// Waits until every record handed over before the call is written
    /// (at once when they are).
    pub async fn written(&self) {
        let sent = self.sent();
        let mut written = self.written.clone();
        // (An error: the thread is gone, nothing more will be written:
        // waiting longer would only hang the caller.)
        let _ = written.wait_for(|n| *n >= sent).await;
    }

    /// Tests: makes every write wait for `gate` (a slow disk).
    #[cfg(test)]
    pub fn set_gate(&self, gate: Arc<std::sync::Mutex<()>>) {
        *self.gate.lock().unwrap() = Some(gate);
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        drop(
            self.records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the file must still hold: the pending events' lines in the order
/// they were queued, and the clients online.
#[derive(Default)]
struct Pending {
    /// Order of queueing -> the event's body.
    lines: BTreeMap<u64, Vec<u8>>,
    /// Event id -> its key in `lines`.
    ids: HashMap<String, u64>,
    next: u64,
    /// Clients whose last queued presence event is `online` (so that a
    /// crash still owes them their `offline`).
    online: HashSet<String>,
}

impl Pending {
    fn queued(&mut self, event: &Event) -> &[u8] {
        match event.kind {
            EventType::Online => {
                self.online.insert(event.client.clone());
            }
            EventType::Offline => {
                self.online.remove(&event.client);
            }
            _ => {}
        }
        let at = self.next;
        self.next += 1;
        self.ids.insert(event.id.clone(), at);
        self.lines.entry(at).or_insert(event.body())
    }

    fn settled(&mut self, id: &str) {
        if let Some(at) = self.ids.remove(id) {
            self.lines.remove(&at);
        }
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    file: File,
    /// Lines written since the last rewrite.
    lines: usize,
    state: Pending,
    on_written: Box<dyn FnMut(Vec<Event>) + Send>,
    /// How many records it has written ([`Journal::written`]).
    written: tokio::sync::watch::Sender<u64>,
    /// Keeps write errors to one log line a minute.
    quiet: Quiet,
    #[cfg(test)]
    gate: Gate,
}

impl Writer {
    /// Writes until every sender is gone, then returns (having written all).
    fn run(mut self, inbox: mpsc::Receiver<Record>) {
        while let Ok(first) = inbox.recv() {
            let group: Vec<Record> = std::iter::once(first).chain(inbox.try_iter()).collect();
            self.write(group);
        }
    }

    /// One group: one `write`, then its events go to the outbox.
    fn write(&mut self, group: Vec<Record>) {
        let mut out = Vec::with_capacity(256 * group.len());
        let mut queued = Vec::new();
        let count = group.len();
        for record in group {
            match record {
                Record::Queued(event) => {
                    out.push(b'+');
                    out.extend_from_slice(self.state.queued(&event));
                    queued.push(*event);
                }
                Record::Settled(id) => {
                    out.push(b'-');
                    out.extend_from_slice(id.as_bytes());
                    self.state.settled(&id);
                }
            }
            out.push(b'\n');
        }
        #[cfg(test)]
        let gate = self.gate.lock().unwrap().clone();
        #[cfg(test)]
        let _slow = gate.as_ref().map(|g| g.lock());
        // A failed write is logged and the events still sent: delivering
        // them now matters more than remembering them across a restart.
        if let Err(e) = self.file.write_all(&out) {
            self.failed("cannot write the hooks outbox", &e);
        }
        self.lines += count;
        if !queued.is_empty() {
            (self.on_written)(queued);
        }
        self.written.send_modify(|n| *n += count as u64);
        self.compact_if_due();
    }

    fn compact_if_due(&mut self) {
        if self.lines <= 2 * self.state.lines.len() + COMPACT_SLACK {
            return;
        }
        match rewrite(&self.path, &self.state) {
            Ok(file) => {
                self.file = file;
                self.lines = 0;
            }
            Err(e) => self.failed("cannot rewrite the hooks outbox", &e),
        }
    }

    fn failed(&self, what: &'static str, error: &std::io::Error) {
        if let Some(quiet) = self.quiet.may_say(what) {
            tracing::error!(error = %error, path = %self.path.display(), alike_since_last = quiet, "{what}");
        }
    }
}

/// Reads the file: the undelivered events in order, and the clients left
/// online (an `online` with no `offline` after it). A torn last line (a
/// write cut by a crash) is skipped with a warning.
pub fn read_back(path: &Path) -> std::io::Result<(Vec<Event>, Vec<String>)> {
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

/// Writes what `state` holds as a new file (through a temporary one, synced,
/// and a rename, so a crash leaves the old file or the new one) and opens
/// it for appending.
fn rewrite(path: &Path, state: &Pending) -> std::io::Result<File> {
    let tmp = path.with_extension("tmp");
    let mut out = Vec::new();
    for client in &state.online {
        out.push(b'@');
        out.extend_from_slice(client.as_bytes());
        out.push(b'\n');
    }
    for body in state.lines.values() {
        out.push(b'+');
        out.extend_from_slice(body);
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

    /// `written` waits for the disk, and only for what was handed over
    /// before it was called.
    #[tokio::test]
    // The disk is held "slow" across the awaits on purpose.
    #[allow(clippy::await_holding_lock)]
    async fn written_waits_for_the_write() {
        let dir = std::env::temp_dir().join(format!("cometbox-journal-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let offline = |c: &str| Event::new(EventType::Offline, c, None, "t");
        let (journal, _) = Journal::open(&dir.join(FILE_NAME), offline, |_| {}).unwrap();
        let quick = std::time::Duration::from_millis(100);
        assert!(
            tokio::time::timeout(quick, journal.written()).await.is_ok(),
            "nothing to wait for"
        );
        let gate = Arc::new(Mutex::new(()));
        journal.set_gate(gate.clone());
        let stalled = gate.lock().unwrap();
        journal
            .send(Record::Queued(Box::new(offline("a"))))
            .unwrap();
        assert!(tokio::time::timeout(quick, journal.written())
            .await
            .is_err());
        assert_eq!(journal.unwritten(), 1);
        drop(stalled);
        journal.written().await;
        assert_eq!(journal.unwritten(), 0);
        drop(journal);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Events reach the outbox in the order sent, once written; settled
    /// ones make the thread rewrite the file once enough lines piled up,
    /// and what the file holds then is what is pending.
    #[test]
    fn writes_in_order_and_rewrites_when_mostly_settled() {
        let dir = std::env::temp_dir().join(format!("cometbox-journal-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let into = got.clone();
        let offline = |c: &str| Event::new(EventType::Offline, c, None, "t");
        let (journal, recovered) = Journal::open(&dir.join(FILE_NAME), offline, move |events| {
            into.lock().unwrap().extend(events)
        })
        .unwrap();
        assert!(recovered.is_empty());
        let events: Vec<Event> = (0..COMPACT_SLACK)
            .map(|i| Event::new(EventType::Subscribed, "a", Some(&format!("c{i}")), "t"))
            .collect();
        for event in &events {
            journal
                .send(Record::Queued(Box::new(event.clone())))
                .unwrap();
        }
        for event in &events[1..] {
            journal.send(Record::Settled(event.id.clone())).unwrap();
        }
        drop(journal); // the thread writes what is left, then ends
        assert_eq!(*got.lock().unwrap(), events);
        let text = std::fs::read_to_string(dir.join(FILE_NAME)).unwrap();
        assert!(
            text.lines().count() < 100,
            "rewritten: {} lines",
            text.lines().count()
        );
        let (pending, online) = read_back(&dir.join(FILE_NAME)).unwrap();
        assert_eq!(pending, events[..1]);
        assert!(online.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
