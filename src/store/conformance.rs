//! The behaviour every [`Store`] must show; run against each engine.
//!
//! Every log used here holds messages before it is read with a cursor, so a
//! store that ignored epochs or sequence numbers would answer differently
//! from one that honours them: an empty log would `reset` any cursor
//! whatever its epoch, and prove nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    memory::MemoryStore, MailboxLog, ReadOutcome, Retention, SharedMessage, Store, StoredMessage,
};
use crate::protocol::reply::encoded_len;
use crate::protocol::{ClientId, Cursor};

/// What a store keeps of a client's log when it is opened again.
enum Reopen {
    /// A new, empty log: older cursors `reset` (the memory store, whose
    /// reopened log is a forgotten client's new mailbox).
    Fresh,
}

fn message(text: &str, expires_at: Instant, own_ttl: bool) -> SharedMessage {
    Arc::new(StoredMessage::new(text.into(), expires_at, own_ttl))
}

fn seqs(outcome: &ReadOutcome) -> Vec<u64> {
    outcome.messages.iter().map(|(s, _)| *s).collect()
}

fn read(log: &mut dyn MailboxLog, since: Option<Cursor>, now: Instant) -> ReadOutcome {
    log.read_after(since, now, usize::MAX)
}

fn run_suite(store: &dyn Store, reopen: Reopen) {
    ids_strictly_increase_and_reads_resume(store);
    overflow_drops_the_oldest_and_resets_old_cursors(store);
    retention_expiry_resets_but_own_ttl_does_not(store);
    cursors_of_another_log_reset(store);
    reads_stop_at_the_byte_budget(store);
    match reopen {
        Reopen::Fresh => a_reopened_log_resets_old_cursors(store),
    }
}

fn client(name: &str) -> ClientId {
    ClientId::parse(name).unwrap()
}

fn filled(store: &dyn Store, name: &str, n: usize, now: Instant) -> Box<dyn MailboxLog> {
    let mut log = store.open(&client(name));
    for i in 0..n {
        log.append(
            message(&format!("{name}{i}"), now + Duration::from_secs(60), false),
            now,
        );
    }
    log
}

fn ids_strictly_increase_and_reads_resume(store: &dyn Store) {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut log = store.open(&client("a"));
    assert!(!log.has_after(None, now));
    let empty = read(&mut *log, None, now);
    assert!(empty.messages.is_empty() && !empty.reset);
    let s1 = log.append(message("1", later, false), now);
    let s2 = log.append(message("2", later, false), now);
    assert!(s2 > s1);
    let all = read(&mut *log, None, now);
    assert_eq!(seqs(&all), vec![s1, s2]);
    assert_eq!(
        all.cursor,
        Cursor {
            seq: s2,
            ..all.cursor
        }
    );
    let after_first = read(
        &mut *log,
        Some(Cursor {
            seq: s1,
            ..all.cursor
        }),
        now,
    );
    assert_eq!(seqs(&after_first), vec![s2]);
    assert!(!after_first.reset);
    // At least once: an older cursor gets the message again.
    let again = read(&mut *log, Some(empty.cursor), now);
    assert_eq!(seqs(&again), vec![s1, s2]);
    assert!(!again.reset, "the empty log's cursor is a valid position");
    assert!(!log.has_after(Some(all.cursor), now));
    assert!(log.has_after(Some(empty.cursor), now));
}

fn overflow_drops_the_oldest_and_resets_old_cursors(store: &dyn Store) {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut log = store.open(&client("b"));
    let start = log.head();
    for i in 0..5 {
        log.append(message(&i.to_string(), later, false), now);
    }
    assert_eq!(log.len(), 3, "retention is 3 messages");
    let read_all = read(&mut *log, Some(start), now);
    assert!(
        read_all.reset,
        "the first two were dropped after this cursor"
    );
    assert_eq!(read_all.messages.len(), 3);
    let resumed = read(&mut *log, Some(read_all.cursor), now);
    assert!(resumed.messages.is_empty() && !resumed.reset);
    let oldest_kept = read_all.messages[0].0;
    let just_before = read(
        &mut *log,
        Some(Cursor {
            seq: oldest_kept - 1,
            ..start
        }),
        now,
    );
    assert!(!just_before.reset, "nothing after this cursor was dropped");
    assert_eq!(just_before.messages.len(), 3);
}

fn retention_expiry_resets_but_own_ttl_does_not(store: &dyn Store) {
    let now = Instant::now();
    let soon = now + Duration::from_secs(1);
    let later = now + Duration::from_secs(60);
    let after = now + Duration::from_secs(2);
    let mut log = store.open(&client("c"));
    let start = log.head();
    log.append(message("short own ttl", soon, true), now);
    log.append(message("kept", later, false), now);
    let lapsed = read(&mut *log, Some(start), after);
    assert!(
        !lapsed.reset,
        "a message that lapsed by its own ttl is not a loss"
    );
    assert_eq!(lapsed.messages.len(), 1);

    let mut log = store.open(&client("d"));
    let start = log.head();
    log.append(message("retention", soon, false), now);
    log.append(message("kept", later, false), now);
    let dropped = read(&mut *log, Some(start), after);
    assert!(
        dropped.reset,
        "a message dropped by message_ttl before delivery is"
    );
    assert_eq!(dropped.messages.len(), 1);

    // The same when it was the mailbox's only message: a poll must look
    // (nothing is left to carry, but the cursor missed one) and `reset`.
    let mut log = store.open(&client("e"));
    let start = log.head();
    log.append(message("alone", soon, false), now);
    assert!(log.has_after(Some(start), after), "a loss to report");
    let alone = read(&mut *log, Some(start), after);
    assert!(alone.reset && alone.messages.is_empty());
    assert!(!log.has_after(Some(alone.cursor), after));

    // One that lapsed by its own ttl alone is nothing to wake a poll for.
    let mut log = store.open(&client("f"));
    let start = log.head();
    log.append(message("own, alone", soon, true), now);
    assert!(!log.has_after(Some(start), after));
}

/// Two filled logs, each read with the other's cursors: never honoured,
/// whatever the sequence numbers.
fn cursors_of_another_log_reset(store: &dyn Store) {
    let now = Instant::now();
    let mut a = filled(store, "e", 3, now);
    let mut b = filled(store, "f", 3, now);
    assert_ne!(a.head().epoch, b.head().epoch, "each log has its own epoch");
    for cursor_seq in 0..=3 {
        let from_a = Cursor {
            seq: cursor_seq,
            ..a.head()
        };
        let read_b = read(&mut *b, Some(from_a), now);
        assert!(read_b.reset, "b read with a's cursor at {cursor_seq}");
        assert_eq!(read_b.messages.len(), 3, "everything retained");
        let from_b = Cursor {
            seq: cursor_seq,
            ..b.head()
        };
        assert!(read(&mut *a, Some(from_b), now).reset);
        assert!(
            b.has_after(Some(from_a), now),
            "a reset is something to say"
        );
    }
    let head = a.head();
    let future = read(
        &mut *a,
        Some(Cursor {
            seq: head.seq + 5,
            ..head
        }),
        now,
    );
    assert!(future.reset, "a cursor past the head was never handed out");
}

fn reads_stop_at_the_byte_budget(store: &dyn Store) {
    let now = Instant::now();
    let mut log = filled(store, "g", 3, now);
    let one = encoded_len("g0");
    let page = log.read_after(None, now, 2 * one);
    assert_eq!(page.messages.len(), 2);
    assert_eq!(
        page.cursor.seq, page.messages[1].0,
        "resumes after the last carried"
    );
    let rest = log.read_after(Some(page.cursor), now, 2 * one);
    assert_eq!(rest.messages.len(), 1);
    assert_eq!(rest.cursor, log.head());
    let tiny = log.read_after(None, now, 1);
    assert_eq!(tiny.messages.len(), 1, "always at least one");
}

fn a_reopened_log_resets_old_cursors(store: &dyn Store) {
    let now = Instant::now();
    let first = filled(store, "h", 2, now);
    let old_cursor = first.head();
    drop(first);
    let mut reopened = filled(store, "h", 2, now);
    let outcome = read(&mut *reopened, Some(old_cursor), now);
    assert!(
        outcome.reset,
        "a cursor of the forgotten log is not honoured"
    );
    assert_eq!(outcome.messages.len(), 2);
}

#[test]
fn memory_store_conforms() {
    run_suite(
        &MemoryStore::new(Retention { max_messages: 3 }),
        Reopen::Fresh,
    );
}
