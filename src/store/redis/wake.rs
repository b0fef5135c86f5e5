//! Wake-up hints: the pub/sub side of the `redis` store, and this node's
//! waiting polls.
//!
//! A script that changes mailboxes publishes, once per batch, the ids it
//! changed on `<prefix>wake`. Every node subscribes and wakes the polls it
//! holds for those ids; a poll then reads Redis again. The hint is only a
//! hint: the stored log is the truth, so a lost hint (a dropped pub/sub
//! connection) costs a poll its latency, never a message. Whenever the
//! subscription is (re)established, every waiting poll is woken to look
//! again, since hints may have been missed meanwhile.
//!
//! In a Redis Cluster, `PUBLISH` (from any master's script) is broadcast to
//! every node of the cluster, so one subscription to any one node hears
//! every hint: the listener subscribes to the first seed node that answers
//! and moves on to the next seed when it loses it. (Sharded pub/sub,
//! `SPUBLISH`, would spare the cluster bus the broadcast but needs a
//! subscription per shard that follows resharding; a hint carries a few
//! ids, so the broadcast is the simpler trade.)

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::RedisStore;
use crate::protocol::ClientId;

/// One client with at least one poll waiting on this node.
#[derive(Default)]
pub struct LocalClient {
    /// Woken by a hint for this client, a lost connection, or shutdown.
    pub wake: Notify,
    /// Counts those wake-ups: a poll that looked before it could wait
    /// (its start script) compares it to know whether it missed one.
    pub woken: AtomicU64,
    /// Polls joined here (for wake-ups), started or not: the entry lives
    /// while any is.
    polls: AtomicU32,
    /// Of those, the polls whose start script ran: subscribed, and so
    /// counted as open.
    open: AtomicU32,
}

impl LocalClient {
    /// The poll's start script ran: it counts as open from now.
    pub fn count_open(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A counted poll ended.
    pub fn uncount_open(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    fn notify(&self) {
        self.woken.fetch_add(1, Ordering::SeqCst);
        self.wake.notify_waiters();
    }
}

/// This node's waiting polls, by client: the only per-client state a node
/// keeps with the `redis` store.
#[derive(Default)]
pub struct Waiters(DashMap<ClientId, Arc<LocalClient>>);

impl Waiters {
    /// Registers one more poll of `id`; [`Waiters::leave`] undoes it.
    pub fn join(&self, id: &ClientId) -> Arc<LocalClient> {
        let entry = self.0.entry(id.clone()).or_default();
        entry.polls.fetch_add(1, Ordering::Relaxed);
        entry.clone()
    }

    /// One poll of `id` ended; the entry goes with its last poll.
    pub fn leave(&self, id: &ClientId) {
        // Counted under the shard lock, so a concurrent join either finds
        // the entry before its removal or creates a new one.
        self.0
            .remove_if(id, |_, c| c.polls.fetch_sub(1, Ordering::Relaxed) == 1);
    }

    /// Wakes the polls of `id`, if this node holds any.
    pub fn wake(&self, id: &str) {
        if let Some(client) = self.0.get(id) {
            client.notify();
        }
    }

    /// Wakes every waiting poll (shutdown, a lost or regained connection).
    pub fn wake_all(&self) {
        for client in self.0.iter() {
            client.notify();
        }
    }

    /// Polls open on this node: started (subscribed in Redis) and not yet
    /// answered. A poll still waiting for its start script is not counted,
    /// so a caller who sees N open polls may publish to all N.
    pub fn open_polls(&self) -> u64 {
        self.0
            .iter()
            .map(|c| u64::from(c.open.load(Ordering::Relaxed)))
            .sum()
    }
}

/// Keeps a pub/sub subscription to the wake channel until `shutdown`,
/// reconnecting after any loss.
pub(super) fn spawn_listener(
    store: Arc<RedisStore>,
    nodes: Vec<redis::Client>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let channel = store.wake_channel();
        for client in nodes.iter().cycle() {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let attempt = tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(2), subscribed) => r,
                _ = shutdown.cancelled() => return,
            };
            match attempt {
                Ok(Ok(pubsub)) => {
                    tracing::debug!(channel, "subscribed to wake-up hints");
                    store.waiters.wake_all(); // hints may have been missed
                    let mut messages = pubsub.into_on_message();
                    loop {
                        let message = tokio::select! {
                            m = messages.next() => m,
                            _ = shutdown.cancelled() => return,
                        };
                        let Some(message) = message else { break };
                        let payload: &[u8] = message.get_payload_bytes();
                        for id in payload.split(|b| *b == b'\n') {
                            if let Ok(id) = std::str::from_utf8(id) {
                                store.waiters.wake(id);
                            }
                        }
                    }
                    tracing::warn!("lost the redis pub/sub connection; reconnecting");
                    store.set_healthy(false);
                    store.waiters.wake_all();
                }
                Ok(Err(e)) => {
                    store.set_healthy(false);
                    tracing::debug!(error = %e, "cannot subscribe to wake-up hints yet");
                }
                Err(_) => store.set_healthy(false),
            }
            // Waiting polls look again: with Redis down they end (503);
            // in a cluster whose other nodes still answer, they go on
            // waiting once this listener is on another node.
            store.waiters.wake_all();
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => return,
            }
        }
    });
}
