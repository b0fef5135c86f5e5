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
//! node takes over within [`LEASE`] of its death): it takes events from the
//! head, sends them (in order per client, different clients in parallel,
//! each retried until the backend answers 2xx or refuses it for good, as
//! `Hooks::deliver` does: a refused event is dropped, holding up nobody),
//! and only then removes them. A node that dies mid-batch leaves them at
//! the head: they are sent again, with the same ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::poll::{PollError, PollRequest};
use super::Hub;
use crate::hooks::{Event, EventType, Hooks};
use crate::protocol::ChannelName;
use crate::store::redis::{Args, RedisStore, Step};

/// How long the delivering node's lease lasts unless renewed (it renews
/// every third of it while it works).
const LEASE: Duration = Duration::from_secs(10);

/// How often the lease holder looks at an empty queue (the latency of a
/// notification while the queue is idle).
const IDLE_LOOK: Duration = Duration::from_millis(100);

/// How often a node that does not hold the lease looks whether it is free.
const STANDBY_LOOK: Duration = Duration::from_secs(1);

/// Clients one presence sweep looks at, so Redis is never held long.
const SWEEP_BATCH: usize = 500;

impl Hub {
    /// With hooks on Redis: `connect` unless the client is online in the
    /// cluster, `subscribe` for each channel of the poll it does not hold.
    pub(super) async fn ask_remote(
        &self,
        hooks: &Hooks,
        redis: &RedisStore,
        request: &PollRequest,
    ) -> Result<(), PollError> {
        let id = request.client.as_str();
        let group = redis.groups().of(id);
        let look = redis.run(Step::HooksLook, group, vec![id.into()]).await?;
        if look.int(0) == 0 {
            hooks
                .ask_connect(id, request.connect_ext.as_deref())
                .await
                .map_err(PollError::Denied)?;
        }
        let held: Vec<String> = (1..look.len()).map(|i| look.text(i)).collect();
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

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
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
    let every = super::reaper::sweep_interval(hooks.offline_after());
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
        let args: Args = vec![SWEEP_BATCH.to_string().into()];
        match redis.run(Step::PresenceSweep, group, args).await {
            Ok(reply) => {
                if reply.int(0) > 0 {
                    tracing::debug!(offline = reply.int(0), group, "clients went offline");
                }
                if (reply.int(1) as usize) < SWEEP_BATCH {
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
    let batch = (hooks.concurrency() * 8).max(16);
    loop {
        let taken = redis
            .run(
                Step::HooksTake,
                group,
                vec![
                    me.as_str().into(),
                    millis(LEASE).into(),
                    batch.to_string().into(),
                ],
            )
            .await;
        let events: Vec<String> = match taken {
            Ok(reply) if reply.text(0) == "mine" => {
                (1..reply.len()).map(|i| reply.text(i)).collect()
            }
            // Another node delivers, or Redis is away.
            _ => {
                if pause(STANDBY_LOOK, &shutdown).await {
                    continue;
                }
                break;
            }
        };
        let Some(last) = events.last().cloned() else {
            if pause(IDLE_LOOK, &shutdown).await {
                continue;
            }
            break;
        };
        let delivered = tokio::select! {
            _ = deliver_batch(&hooks, &events) => true,
            _ = keep_lease(&redis, &me, group) => false,
            _ = shutdown.cancelled() => false,
        };
        if delivered {
            let args: Args = vec![
                me.as_str().into(),
                events.len().to_string().into(),
                last.into_bytes(),
                "0".into(),
            ];
            // A failure leaves them at the head: sent again, same ids.
            let _ = redis.run(Step::HooksDone, group, args).await;
        }
        if shutdown.is_cancelled() {
            break;
        }
    }
    let release: Args = vec![me.into(), "0".into(), Vec::new(), "1".into()];
    let _ = redis.run(Step::HooksDone, group, release).await;
}

/// Renews the lease every third of [`LEASE`]; returns when another node
/// holds it (ours lapsed: Redis was away that long).
async fn keep_lease(redis: &RedisStore, me: &str, group: usize) {
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let renew: Args = vec![me.into(), millis(LEASE).into(), "0".into()];
        if let Ok(reply) = redis.run(Step::HooksTake, group, renew).await {
            if reply.text(0) != "mine" {
                tracing::warn!(
                    "the hook delivery lease passed to another node; it sends these events again"
                );
                return;
            }
        }
    }
}

/// Sends `events` (JSON as queued), in order per client, `concurrency`
/// clients at a time, each until the backend takes it or refuses it for
/// good.
async fn deliver_batch(hooks: &Hooks, events: &[String]) {
    let mut per_client: Vec<Vec<Event>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for json in events {
        let event: Event = match serde_json::from_str(json) {
            Ok(event) => event,
            Err(e) => {
                tracing::error!(error = %e, event = %json, "an unreadable event in the hook queue is dropped");
                continue;
            }
        };
        let at = *index.entry(event.client.clone()).or_insert_with(|| {
            per_client.push(Vec::new());
            per_client.len() - 1
        });
        per_client[at].push(event);
    }
    futures_util::stream::iter(per_client)
        .for_each_concurrent(hooks.concurrency(), |events| async move {
            for event in events {
                hooks.deliver(&event).await;
            }
        })
        .await;
}
