//! The behaviour every [`Store`] must show; run against each engine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{memory::MemoryStore, Retention, SharedMessage, Store, StoredMessage};
use crate::protocol::{ClientId, Cursor};

fn message(text: &str, expires_at: Instant, own_ttl: bool) -> SharedMessage {
    Arc::new(StoredMessage {
        json_tail: text.into(),
        expires_at,
        own_ttl,
    })
}

fn seqs(outcome: &super::ReadOutcome) -> Vec<u64> {
    outcome.messages.iter().map(|(s, _)| *s).collect()
}

fn run_suite(store: &dyn Store) {
    ids_strictly_increase_and_reads_resume(store);
    overflow_drops_the_oldest_and_resets_old_cursors(store);
    retention_expiry_resets_but_own_ttl_does_not(store);
    foreign_cursors_reset(store);
}

fn client(name: &str) -> ClientId {
    ClientId::parse(name).unwrap()
}

fn ids_strictly_increase_and_reads_resume(store: &dyn Store) {
    let now = Instant::now();
    let later = now + Duration::from_secs(60);
    let mut log = store.open(&client("a"));
    assert!(!log.has_after(None, now));
    let empty = log.read_after(None, now);
    assert!(empty.messages.is_empty() && !empty.reset);
    let s1 = log.append(message("1", later, false), now);
    let s2 = log.append(message("2", later, false), now);
    assert!(s2 > s1);
    let all = log.read_after(None, now);
    assert_eq!(seqs(&all), vec![s1, s2]);
    assert_eq!(
        all.cursor,
        Cursor {
            seq: s2,
            ..all.cursor
        }
    );
    let after_first = log.read_after(
        Some(Cursor {
            seq: s1,
            ..all.cursor
        }),
        now,
    );
    assert_eq!(seqs(&after_first), vec![s2]);
    assert!(!after_first.reset);
    // At least once: an older cursor gets the message again.
    assert_eq!(seqs(&log.read_after(Some(empty.cursor), now)), vec![s1, s2]);
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
    let read = log.read_after(Some(start), now);
    assert!(read.reset, "the first two were dropped after this cursor");
    assert_eq!(read.messages.len(), 3);
    let resumed = log.read_after(Some(read.cursor), now);
    assert!(resumed.messages.is_empty() && !resumed.reset);
}

fn retention_expiry_resets_but_own_ttl_does_not(store: &dyn Store) {
    let now = Instant::now();
    let soon = now + Duration::from_secs(1);
    let later = now + Duration::from_secs(60);
    let mut log = store.open(&client("c"));
    let start = log.head();
    log.append(message("short own ttl", soon, true), now);
    log.append(message("kept", later, false), now);
    let after = now + Duration::from_secs(2);
    let read = log.read_after(Some(start), after);
    assert!(
        !read.reset,
        "a message that lapsed by its own ttl is not a loss"
    );
    assert_eq!(read.messages.len(), 1);

    let mut log = store.open(&client("d"));
    let start = log.head();
    log.append(message("retention", soon, false), now);
    log.append(message("kept", later, false), now);
    let read = log.read_after(Some(start), after);
    assert!(
        read.reset,
        "a message dropped by message_ttl before delivery is"
    );
    assert_eq!(read.messages.len(), 1);
}

fn foreign_cursors_reset(store: &dyn Store) {
    let now = Instant::now();
    let mut a = store.open(&client("e"));
    let mut b = store.open(&client("f"));
    a.append(message("x", now + Duration::from_secs(60), false), now);
    let foreign = b.read_after(Some(a.head()), now);
    assert!(foreign.reset || a.head().epoch == b.head().epoch);
    let future = a.read_after(
        Some(Cursor {
            seq: a.head().seq + 5,
            ..a.head()
        }),
        now,
    );
    assert!(future.reset);
}

#[test]
fn memory_store_conforms() {
    run_suite(&MemoryStore::new(Retention { max_messages: 3 }));
}
