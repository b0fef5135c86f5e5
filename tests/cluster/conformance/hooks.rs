//! The hook notification queue is bounded by `hooks.max_pending` on every
//! store (docs/hooks.md, "Bounds"): with the backend down, opening events
//! past the bound are dropped and counted, and their closing events are
//! never sent, so the backend gets whole `online`/`offline` pairs or
//! nothing. (On a Redis Cluster the bound is per slot group: the clients
//! here share one group, so the bound is the same figure everywhere.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::harness::{token, wait_until};
use crate::hooks::Backend;
use crate::nodes::{poll_ok, stats};

use super::fixture::Fixture;
use super::looks::together;

/// `max_pending` 2, four clients come online while the backend fails:
/// two `online`s dropped (`/stats` `hooks.dropped`); after they are
/// disconnected and the backend is back, two clients got exactly
/// `online`, `offline` and the other two nothing.
pub async fn the_hook_queue_is_bounded_and_drops_whole_pairs(fx: Fixture) {
    let backend = Backend::start().await;
    backend.failing.store(true, Ordering::Relaxed);
    let n = fx
        .node(&[
            ("COMETBOX_HOOKS__URL", backend.url.as_str()),
            ("COMETBOX_HOOKS__SECRET", "hook-secret"),
            ("COMETBOX_HOOKS__ON_ERROR", "allow"),
            ("COMETBOX_HOOKS__OFFLINE_AFTER", "1s"),
            ("COMETBOX_HOOKS__RETRY_MAX", "200ms"),
            ("COMETBOX_HOOKS__MAX_PENDING", "2"),
            ("COMETBOX_HOOKS__EVENTS", "online,offline"),
        ])
        .await;
    let clients = together("cap", 4);
    for client in &clients {
        poll_ok(&n, &token(client, &[]), "timeout=0").await;
    }
    let dropped = || async { stats(&n).await["hooks"]["dropped"].as_u64() };
    assert_eq!(dropped().await, Some(2), "{}", stats(&n).await);
    for client in &clients {
        n.post_ok(&format!(r#"<disconnect client="{client}"/>"#), 1)
            .await;
    }
    backend.failing.store(false, Ordering::Relaxed);
    let types = |client: &String| -> Vec<String> {
        backend
            .notified_about(client)
            .into_iter()
            .map(|(kind, _, _)| kind)
            .collect()
    };
    wait_until("two whole pairs", Duration::from_secs(30), || async {
        clients
            .iter()
            .filter(|c| types(c) == ["online", "offline"])
            .count()
            == 2
    })
    .await;
    // Long enough for a stray event to come: retries are at most 200 ms
    // apart and `offline_after` is 1 s.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let silent = clients.iter().filter(|c| types(c).is_empty()).count();
    assert_eq!(silent, 2, "the other two: nothing, not half a pair");
    assert_eq!(dropped().await, Some(2));
}
