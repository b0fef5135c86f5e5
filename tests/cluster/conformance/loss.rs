//! `reset` on every kind of loss a store can see, and never otherwise:
//! retention (`mailbox_max_messages`), `message_ttl` lapsing, a new epoch
//! (a mailbox disconnected and recreated; a cursor of another mailbox),
//! idle eviction; a message's own shorter `ttl` lapsing is no loss.
//!
//! Losses only some stores can have are checked where they live: a Redis
//! payload evicted under its queue entry, and a Redis that went back in
//! time (stale snapshot, promoted replica), in `tests/cluster/marker.rs`;
//! Redis restarted with and without persistence (`appendfsync`) in
//! `scenarios::redis_restart_with_and_without_persistence`; a damaged or
//! torn disk journal in `tests/durability/damage.rs`.

use std::time::Duration;

use crate::harness::{token, wait_until};
use crate::nodes::{ids, numbers, poll_ok, stats};

use super::fixture::Fixture;
use super::looks::{cursor, post, presence, read_since};

/// Beyond `mailbox_max_messages` (5) the oldest go; a cursor before what
/// was dropped gets `reset` and what is retained; the cursor of the last
/// dropped message lost nothing, so it does not.
pub async fn overflow_drops_the_oldest_and_resets_older_cursors(fx: Fixture) {
    let n = fx
        .node(&[("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", "5")])
        .await;
    let t = token("bea", &[]);
    post(&n, "bea", 0..3).await;
    let first = ids(&poll_ok(&n, &t, "timeout=0").await);
    let n = fx.checkpoint(n).await;
    post(&n, "bea", 3..8).await; // 0, 1, 2 dropped
    let body = read_since(&n, &t, &first[0]).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [3, 4, 5, 6, 7], "{body}");
    let body = read_since(&n, &t, &first[2]).await;
    assert_ne!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [3, 4, 5, 6, 7], "{body}");
}

/// A cursor of one mailbox read in another: `reset` (epochs differ), even
/// where the other mailbox holds that id.
pub async fn a_cursor_of_another_mailbox_resets(fx: Fixture) {
    let n = fx.node(&[]).await;
    post(&n, "cy", 0..3).await;
    post(&n, "di", 0..3).await;
    let cy = ids(&poll_ok(&n, &token("cy", &[]), "timeout=0").await);
    let n = fx.checkpoint(n).await;
    let body = read_since(&n, &token("di", &[]), &cy[0]).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [0, 1, 2], "{body}");
}

/// `<disconnect>` forgets the mailbox; a message after it opens a new one
/// (a new epoch): a cursor of the old one gets `reset` and only what came
/// after, and the new mailbox's own cursors hold.
pub async fn a_disconnected_mailbox_comes_back_in_a_new_epoch(fx: Fixture) {
    let n = fx.node(&[]).await;
    let t = token("gil", &[]);
    post(&n, "gil", 0..3).await;
    let old = cursor(&poll_ok(&n, &t, "timeout=0").await);
    n.post_ok(r#"<disconnect client="gil"/>"#, 1).await;
    assert_eq!(presence(&n, "gil").await, None, "forgotten");
    post(&n, "gil", 3..5).await;
    let n = fx.checkpoint(n).await;
    let body = read_since(&n, &t, &old).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [3, 4], "{body}");
    let new = ids(&body);
    let body = read_since(&n, &t, &new[0]).await;
    assert_ne!(body["reset"], true, "a cursor of the new epoch: {body}");
    assert_eq!(numbers(&body), [4], "{body}");
}

/// A message past `message_ttl` (3 s) was dropped before its reader came:
/// `reset`. One past its own shorter `ttl` was the backend's choice: no
/// `reset`, with a later message retained or with nothing left to carry
/// (as in `src/store/conformance.rs`).
pub async fn message_ttl_resets_but_an_own_ttl_does_not(fx: Fixture) {
    let n = fx.node(&[("COMETBOX_LIMITS__MESSAGE_TTL", "3s")]).await;
    let (own, dropped, alone) = (token("hal", &[]), token("ida", &[]), token("jon", &[]));
    let own_cursor = cursor(&poll_ok(&n, &own, "timeout=0").await);
    let dropped_cursor = cursor(&poll_ok(&n, &dropped, "timeout=0").await);
    let alone_cursor = cursor(&poll_ok(&n, &alone, "timeout=0").await);
    let first = tokio::time::Instant::now();
    post(&n, "jon", 0..1).await;
    n.post_ok(r#"<message to="hal" ttl="1">{"i":0}</message>"#, 1)
        .await;
    post(&n, "ida", 0..1).await;
    // The checkpoint comes before the second messages, and the waits are
    // deadlines from the first: however long a restart takes on a loaded
    // machine, the reads come after the first messages' 3 s and before
    // the second ones' (CI once read after both had lapsed).
    let n = fx.checkpoint(n).await;
    tokio::time::sleep_until(first + Duration::from_millis(1500)).await;
    let second = tokio::time::Instant::now();
    post(&n, "hal", 1..2).await;
    post(&n, "ida", 1..2).await;
    tokio::time::sleep_until(first + Duration::from_millis(3300)).await;
    assert!(
        second.elapsed() < Duration::from_millis(2700),
        "the reads come too late to tell the two ttls apart"
    );
    let body = read_since(&n, &own, &own_cursor).await;
    assert_ne!(body["reset"], true, "own ttl: {body}");
    assert_eq!(numbers(&body), [1], "{body}");
    let body = read_since(&n, &dropped, &dropped_cursor).await;
    assert_eq!(body["reset"], true, "message_ttl: {body}");
    assert_eq!(numbers(&body), [1], "{body}");
    // The mailbox's only message lapsed: nothing to carry, still a loss.
    let body = read_since(&n, &alone, &alone_cursor).await;
    assert_eq!(body["reset"], true, "message_ttl, nothing left: {body}");
    assert_eq!(numbers(&body), Vec::<i64>::new(), "{body}");
}

/// A client with no poll for `client_idle_timeout` is forgotten (presence
/// 404, counted in `clients_evicted`); a message to it then opens a new
/// mailbox, whose reader with a cursor from before gets `reset` and only
/// the new message.
pub async fn an_evicted_client_comes_back_in_a_new_mailbox(fx: Fixture) {
    let n = fx
        .node(&[("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "1s")])
        .await;
    let t = token("kit", &[]);
    post(&n, "kit", 0..2).await;
    let before = cursor(&poll_ok(&n, &t, "timeout=0").await);
    let n = fx.checkpoint(n).await;
    wait_until("kit is evicted", Duration::from_secs(20), || async {
        presence(&n, "kit").await.is_none()
    })
    .await;
    assert!(
        stats(&n).await["clients_evicted"].as_u64().unwrap() >= 1,
        "{}",
        stats(&n).await
    );
    post(&n, "kit", 2..3).await;
    let body = read_since(&n, &t, &before).await;
    assert_eq!(body["reset"], true, "{body}");
    assert_eq!(numbers(&body), [2], "{body}");
}
