//! Backend hooks on the `redis` store: presence, and the notifications,
//! cluster-wide. (`hooked.rs` is the same for one node's memory or disk
//! hub.)
//!
//! **Asking.** Before a poll opens, one script says whether the client is
//! online anywhere and which channels it holds: `connect` is asked when it
//! is not online, `subscribe` for each `channels=` channel it does not
//! hold. Nothing is applied unless all are allowed.
//!
//! **Presence.** A client is online from the first poll opened on any node
//! until no node has had a poll open for it for `offline_after`, or its
//! mailbox is gone (`<disconnect>`, eviction). The truth is in Redis
//! (`go_online` in `prelude.lua`, run by the poll-start script, and
//! `presence_sweep.lua`), per slot group: the presence set, whose `online`
//! events are queued in the same atomic step that puts the client in it
//! (the poll's start), and whose `offline` events are queued by the
//! sweep (any node's; each run atomic) in the step that takes it out, or by
//! the next poll's step when it finds the mailbox recreated. Open
//! polls are leases in Redis, so a client whose polls move between nodes
//! never looks away, and one whose node was killed is away once the lease
//! of its poll there lapsed. So every `online` gets exactly one `offline`,
//! whichever nodes saw the client.
//!
//! **Membership.** `subscribed` and `unsubscribed` are queued by the
//! store's own scripts, in the step that changes the membership (a
//! backend's `<subscribe>`, a poll's `channels=`, a leave, a disconnect or
//! an eviction: `prelude.lua`), whichever node ran it.
//!
//! **Delivery.** Notifications wait in a queue in Redis (`hooks`), one per
//! slot group (one with one Redis server; a client's events are all in its
//! group's, in order), so they survive any node's restart (and Redis's,
//! with its persistence). One node at a time delivers a queue, the holder
//! of its lease in Redis (`hooks:lock`, renewed while it works; another
//! node takes over within [`LEASE`] of its death): it holds a window of
//! the queue's first events and sends them through an outbox of their own
//! with `Hooks::work`, as one node sends its own (in order per client,
//! different clients in parallel, a refused event dropped, a client whose
//! event failed for now waiting out its pause without holding up the
//! others); each event leaves the queue once the backend answered it. A
//! node that dies holding the window leaves its events in the queue: they
//! are sent again, with the same ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::RedisBackend;
use crate::backend::outcomes::{PollError, PollRequest};
use crate::hooks::outbox::Outbox;
use crate::hooks::{Event, EventType, Hooks};
use crate::protocol::ChannelName;
use crate::store::journal::StoreError;
use crate::store::redis::RedisStore;

/// How long the delivering node's lease lasts unless renewed (it renews it
/// at every look at the queue, at least every [`IDLE_LOOK`]).
const LEASE: Duration = Duration::from_secs(10);

/// Events of a group's queue the delivering node holds at most (taken, not
/// yet removed). A client whose events fail for now holds up the others of
/// its group only once this many of its events wait at the head.
const WINDOW: usize = 1024;

/// How often the lease holder looks at an empty queue (the latency of a
/// notification while the queue is idle).
const IDLE_LOOK: Duration = Duration::from_millis(100);

/// How often a node that does not hold the lease looks whether it is free.
const STANDBY_LOOK: Duration = Duration::from_secs(1);

/// Clients one presence sweep looks at, so Redis is never held long.
const SWEEP_BATCH: usize = 500;

impl RedisBackend {
    /// With hooks on Redis: `connect` unless the client is online in the
    /// cluster, `subscribe` for each channel of the poll it does not hold.
    pub(super) async fn ask_hooks(
        &self,
        hooks: &Hooks,
        request: &PollRequest,
    ) -> Result<(), PollError> {
        let id = request.client.as_str();
        let (online, held) = self.store.hooks_look(&request.client).await?;
        if !online {
            hooks
                .ask_connect(id, request.connect_ext.as_deref())
                .await
                .map_err(PollError::Denied)?;
        }
        let mut new: Vec<&ChannelName> = request
            .subscribe
            .iter()
            .filter(|c| !held.iter().any(|h| h == c.as_str()))
            .collect();
        new.sort_unstable();
        new.dedup();
        let asks = new
            .iter()
            .map(|c| hooks.ask(EventType::Subscribe, id, Some(c.as_str())));
        for answer in futures_util::future::join_all(asks).await {
            answer.map_err(PollError::Denied)?;
        }
        Ok(())
    }
}

/// Starts this node's presence sweep and its share of delivering the
/// groups' queues, until `shutdown`.
pub(super) fn spawn_presence(
    redis: Arc<RedisStore>,
    hooks: Arc<Hooks>,
    shutdown: CancellationToken,
) {
    tokio::spawn(sweep_forever(
        redis.clone(),
        hooks.clone(),
        shutdown.clone(),
    ));
    for group in 0..redis.groups().len() {
        tokio::spawn(deliver_forever(
            redis.clone(),
            hooks.clone(),
            group,
            shutdown.clone(),
        ));
    }
}

/// Sleeps `pause`; false if `shutdown` came first.
async fn pause(pause: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(pause) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Every sweep interval (a quarter of `offline_after`, 50 ms to 5 s, as
/// on one node): the sweep, group by group.
async fn sweep_forever(redis: Arc<RedisStore>, hooks: Arc<Hooks>, shutdown: CancellationToken) {
    let every = crate::backend::common::sweep_interval(hooks.offline_after());
    while pause(every, &shutdown).await {
        for group in 0..redis.groups().len() {
            sweep_group(&redis, group).await;
        }
    }
}

/// One group's sweep, in batches of [`SWEEP_BATCH`] until it looked at
/// every client due.
async fn sweep_group(redis: &RedisStore, group: usize) {
    loop {
        match redis.presence_sweep(group, SWEEP_BATCH).await {
            Ok((offline, looked)) => {
                if offline > 0 {
                    tracing::debug!(offline, group, "clients went offline");
                }
                if looked < SWEEP_BATCH {
                    return;
                }
            }
            Err(_) => return, // logged by the store; the next tick retries
        }
    }
}

/// Takes the delivery lease of `group`'s queue when it is free and
/// delivers the queue while holding it; gives it up at shutdown.
async fn deliver_forever(
    redis: Arc<RedisStore>,
    hooks: Arc<Hooks>,
    group: usize,
    shutdown: CancellationToken,
) {
    let me = redis.node().to_owned();
    while !shutdown.is_cancelled() {
        match take(&redis, group, &me, 0, 0).await {
            Ok(Some(_)) => {
                tokio::select! {
                    _ = hold(&redis, &hooks, group, &me) => {}
                    _ = shutdown.cancelled() => {}
                }
            }
            // Another node delivers, or Redis is away.
            _ => {
                pause(STANDBY_LOOK, &shutdown).await;
            }
        }
    }
    let _ = redis.hooks_done(group, &me, true, &[]).await;
}

/// Takes (or renews) the lease of `group`'s queue and its events from
/// index `from`, at most `n`: `None` when another node holds the lease.
async fn take(
    redis: &RedisStore,
    group: usize,
    me: &str,
    from: usize,
    n: usize,
) -> Result<Option<Vec<String>>, StoreError> {
    redis.hooks_take(group, me, LEASE, n, from).await
}

/// Delivers `group`'s queue while this node holds its lease; returns when
/// it lost it (Redis was away longer than [`LEASE`], or the queue changed
/// under it), to be taken afresh.
///
/// The events taken and not yet removed are the queue's first ones (the
/// window, at most [`WINDOW`]); they go through an [`Outbox`] of their
/// own, whose workers send each client's in order and let a client whose
/// event failed for now wait out its pause without holding up the others.
/// An event done with (delivered or refused) leaves the queue by itself;
/// the window then takes the next ones.
async fn hold(redis: &RedisStore, hooks: &Hooks, group: usize, me: &str) {
    // No bound of its own: the window bounds it.
    let window = Outbox::in_memory(usize::MAX / 2);
    // Per event id, its JSON as queued (what removes it), and the JSON of
    // the events done with, to remove.
    let queued: Mutex<HashMap<String, String>> = Mutex::default();
    let settled: Mutex<Vec<String>> = Mutex::default();
    let done_with = |event: &Event| {
        if let Some(json) = lock(&queued).remove(&event.id) {
            lock(&settled).push(json);
        }
    };
    let workers = (0..hooks.concurrency()).map(|_| hooks.work(&window, done_with));
    let feed = async {
        let batch = (hooks.concurrency() * 8).max(16);
        let mut held = 0;
        loop {
            let done = std::mem::take(&mut *lock(&settled));
            let mut removed = 0;
            if !done.is_empty() {
                match redis.hooks_done(group, me, false, &done).await {
                    Ok(n) if n == done.len() => removed = done.len(),
                    // Not ours any more, or another node removed some.
                    Ok(_) => return lost_lease(group),
                    // Redis is away: removed with the next ones.
                    Err(_) => lock(&settled).extend(done),
                }
            }
            held -= removed;
            let room = WINDOW.saturating_sub(held).min(batch);
            let taken = match take(redis, group, me, held, room).await {
                Ok(Some(taken)) => taken,
                Ok(None) => return lost_lease(group),
                Err(_) => Vec::new(),
            };
            held += taken.len();
            // Nothing moved (or Redis is away): look again a little later.
            let idle = taken.is_empty() && removed == 0;
            for json in taken {
                match serde_json::from_str::<Event>(&json) {
                    Ok(event) => {
                        lock(&queued).insert(event.id.clone(), json);
                        window.push(event);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, event = %json, "an unreadable event in the hook queue is dropped");
                        lock(&settled).push(json);
                    }
                }
            }
            if idle {
                tokio::time::sleep(IDLE_LOOK).await;
            }
        }
    };
    tokio::select! {
        _ = futures_util::future::join_all(workers) => {}
        _ = feed => {}
    }
}

/// Says that another node took over `group`'s queue (this one's lease
/// lapsed: Redis was away that long).
fn lost_lease(group: usize) {
    tracing::warn!(
        group,
        "the hook delivery lease passed to another node; it sends the events held here again"
    );
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
