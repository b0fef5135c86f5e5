//! Counters for `GET /stats` and presence for `GET /clients/<id>`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use serde::Serialize;

use super::Hub;
use crate::protocol::ClientId;
use crate::store::journal::StoreError;

/// The `/stats` body.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Clients with a mailbox.
    pub clients: usize,
    /// Polls waiting or being answered right now.
    pub open_polls: u64,
    /// Messages retained over all mailboxes (a channel message counts once
    /// per member).
    pub queued_messages: u64,
    /// Messages accepted by ingest (a channel message counts once).
    pub messages_in: u64,
    /// Messages sent in poll replies (redeliveries count again).
    pub messages_out: u64,
    /// Messages dropped (to retention or `message_ttl`) before any poll
    /// reply carried them; not those lapsing by their own `ttl`.
    pub messages_lost: u64,
    /// Polls served since start.
    pub polls_total: u64,
    /// Clients forgotten for being idle.
    pub clients_evicted: u64,
    /// Channels with at least one member.
    pub channels: usize,
    /// Channel memberships.
    pub subscriptions: usize,
    /// Seconds since the hub started.
    pub uptime_s: u64,
    /// With the `redis` store: which figures are the cluster's and which
    /// this node's (absent for local stores, where all are this server's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<StatsScope>,
    /// Backend hooks' counters, when `[hooks]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::hooks::HookStats>,
}

/// Which `/stats` figures are whose, with a shared store.
#[derive(Debug, Serialize)]
pub struct StatsScope {
    /// `"redis"`.
    pub store: &'static str,
    /// Nodes that swept for idle clients lately (alive).
    pub nodes: u64,
    /// This node's id (random per process).
    pub node: String,
    /// Figures counted over every node.
    pub cluster: [&'static str; 6],
    /// Figures of this node only.
    pub node_figures: [&'static str; 5],
}

impl StatsScope {
    /// The split the `redis` store reports.
    pub fn redis(nodes: u64, node: &str) -> Self {
        StatsScope {
            store: "redis",
            nodes,
            node: node.to_owned(),
            cluster: [
                "clients",
                "queued_messages",
                "messages_lost",
                "clients_evicted",
                "channels",
                "subscriptions",
            ],
            node_figures: [
                "open_polls",
                "messages_in",
                "messages_out",
                "polls_total",
                "uptime_s",
            ],
        }
    }
}

/// The `/clients/<id>` body.
#[derive(Debug, Serialize)]
pub struct Presence {
    /// The id asked for.
    pub client: String,
    /// Whether at least one poll is open.
    pub online: bool,
    /// Polls open right now (tabs).
    pub open_polls: u32,
    /// Messages retained for it.
    pub pending_messages: usize,
    /// Its channels, sorted.
    pub channels: Vec<String>,
    /// Milliseconds since its last poll started or ended.
    pub idle_ms: u64,
}

impl Hub {
    /// Walks every client (one short lock each, under shard read locks):
    /// `/stats` is rare, and this keeps shared counters off the per-message
    /// path. Blocking for a large hub (about 0.1 s a million clients): the
    /// ingest face calls it off the async workers.
    pub fn stats(&self) -> Stats {
        let now = Instant::now();
        let (mut open_polls, mut queued) = (0u64, 0u64);
        for entry in self.0.clients.iter() {
            let mut state = entry.value().lock();
            state.log.purge_expired(now);
            open_polls += u64::from(state.open_polls);
            queued += state.log.len() as u64;
        }
        let (channels, subscriptions) = self.0.channels.counts();
        Stats {
            clients: self.0.clients.len(),
            open_polls,
            queued_messages: queued,
            messages_in: self.0.messages_in.load(Relaxed),
            messages_out: self.0.messages_out.load(Relaxed),
            messages_lost: self.0.store.messages_lost(),
            polls_total: self.0.polls_total.load(Relaxed),
            clients_evicted: self.0.clients_evicted.load(Relaxed),
            channels,
            subscriptions,
            uptime_s: self.0.started.elapsed().as_secs(),
            scope: None,
            hooks: self.0.hooks.as_ref().map(|h| h.stats()),
        }
    }

    /// `/stats` for any store: the walk ([`Hub::stats`]) off the async
    /// workers, or the cluster's figures from Redis.
    pub async fn current_stats(&self) -> Result<Stats, StoreError> {
        if let Some(redis) = &self.0.redis {
            return self.stats_remote(redis).await;
        }
        let hub = self.clone();
        Ok(tokio::task::spawn_blocking(move || hub.stats())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())))
    }

    /// `/clients/<id>` for any store (cluster-wide with Redis).
    pub async fn current_presence(&self, id: &ClientId) -> Result<Option<Presence>, StoreError> {
        match &self.0.redis {
            Some(redis) => self.presence_remote(redis, id).await,
            None => Ok(self.presence(id)),
        }
    }

    /// One client's presence, or `None` if it has no mailbox.
    pub fn presence(&self, id: &ClientId) -> Option<Presence> {
        let client = self.0.clients.get(id).map(|c| c.clone())?;
        let now = Instant::now();
        let mut state = client.lock();
        state.log.purge_expired(now);
        Some(Presence {
            client: id.to_string(),
            online: state.open_polls > 0,
            open_polls: state.open_polls,
            pending_messages: state.log.len(),
            channels: state.channels.iter().map(ToString::to_string).collect(),
            idle_ms: now.duration_since(state.last_active).as_millis() as u64,
        })
    }
}
