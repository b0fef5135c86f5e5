//! The hub: every client's mailbox, channel memberships, and waiting polls.
//!
//! It knows nothing of HTTP. Ingest hands it validated [`Command`]s
//! ([`Hub::apply`], in `apply.rs`); the public face asks it to [`Hub::poll`]
//! (`poll.rs`). Clients live in a sharded map with one lock per client
//! inside, so no lock is global: a message to one client touches one shard
//! briefly and that client's own lock, and wakes only that client's polls.
//!
//! - `client.rs`: one client's state and its lock;
//! - `channels.rs`: channel name -> members;
//! - `membership.rs`: subscribing and unsubscribing, by backends and by
//!   browsers' grants, and what each may undo of the other;
//! - `reaper.rs`: idle eviction off the async workers; `stats.rs`: `/stats`
//!   and presence;
//! - `hooked.rs`: backend hooks on one node; `presence.rs`: on Redis,
//!   presence and hook notifications cluster-wide;
//! - `durable.rs`: with a durable store, the order in which changes reach
//!   its journal, recovery at start-up, and reloading after a failed write.
//!
//! [`Command`]: crate::protocol::Command

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use prometheus_client::metrics::histogram::Histogram;

use crate::protocol::ClientId;
use crate::store::journal::Journal;
use crate::store::{Opened, Store};

mod apply;
mod channels;
mod client;
mod durable;
mod hooked;
mod membership;
mod poll;
mod presence;
mod reaper;
mod remote;
mod stats;

pub use apply::ApplyError;
pub use durable::spawn_reloader;
pub use poll::{OpenPoll, PollError, PollReply, PollRequest, Waited};
pub use reaper::spawn_reaper;
pub use stats::{Presence, Stats, StatsScope};

use crate::store::journal::Change;
use channels::Channels;
use client::Client;
use durable::Recorder;

/// The hub's share of the `[limits]` section.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// How long a poll with no `timeout` waits.
    pub poll_timeout: Duration,
    /// Cap on a poll's `timeout`.
    pub max_poll_timeout: Duration,
    /// A client with no open poll this long is forgotten.
    pub client_idle_timeout: Duration,
    /// Longest a message is retained; caps a message's own `ttl`.
    pub message_ttl: Duration,
    /// Open polls one client may hold (tabs).
    pub max_polls_per_client: u32,
    /// Clients (mailboxes) the hub holds at most.
    pub max_clients: usize,
    /// Channels one client may be subscribed to: a browser whose token
    /// grants a prefix could otherwise subscribe to names without end.
    pub max_channels_per_client: usize,
    /// Most message bytes in one poll reply (at least one message).
    pub max_reply_bytes: usize,
}

/// Bucket bounds of [`Hub::commit_seconds`]: 100 µs (a page-cache write)
/// to about 3 s (an fsync on a struggling disk), doubling.
const COMMIT_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// Cheap-clone handle to the hub.
#[derive(Clone)]
pub struct Hub(Arc<Shared>);

struct Shared {
    /// Every client with a mailbox. Sharded (DashMap) so that lookups from
    /// many cores rarely contend; values are `Arc` so a poll can hold its
    /// client without holding a shard lock.
    clients: DashMap<ClientId, Arc<Client>>,
    channels: Channels,
    store: Arc<dyn Store>,
    /// Where changes are written before they are acknowledged (durable
    /// stores); `None` for the memory store, whose paths skip all of this.
    journal: Option<Arc<dyn Journal>>,
    /// With the `redis` store, where the state lives instead; `clients`,
    /// `channels`, `store` and `journal` then stay unused.
    redis: Option<Arc<crate::store::redis::RedisStore>>,
    /// Held while a change is made and submitted to the journal, so that
    /// the journal's order is the order in which changes were made (and
    /// replaying it rebuilds the same ids). Taken only with a journal, and
    /// always before any other lock of the hub.
    journal_order: std::sync::Mutex<()>,
    /// Backend hooks, when `[hooks]` names a URL (see `hooked.rs`).
    hooks: Option<Arc<crate::hooks::Hooks>>,
    /// With hooks: clients whose `connect` is being asked, so that tabs
    /// opening together ask it once (`hooked.rs`).
    connecting: DashMap<ClientId, Arc<tokio::sync::Mutex<()>>>,
    /// Wakes the task that reloads the state from the journal after a
    /// failed write.
    reload: tokio::sync::Notify,
    limits: HubLimits,
    /// Monotonic counters for `/stats`; relaxed, each bumped once per request.
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    polls_total: AtomicU64,
    clients_evicted: AtomicU64,
    /// Seconds from a journal unit's submission to its commit (durable
    /// stores; no observations with the memory store). Observed by the
    /// journal writer once per unit, which is already one write per unit;
    /// read by `GET /metrics`.
    commit_seconds: Histogram,
    started: Instant,
    /// Set once shutdown begins. Open polls learn of it through their own
    /// client's notifier, so no poll registers with a signal shared by all
    /// (a shared one would be a lock taken by every poll).
    shutting_down: AtomicBool,
}

impl Hub {
    /// An empty hub keeping mailboxes in memory only.
    pub fn new(store: Arc<dyn Store>, limits: HubLimits) -> Self {
        Self::open(
            Opened {
                logs: store,
                journal: None,
                recovered: Vec::new(),
                redis: None,
            },
            limits,
        )
    }

    /// A hub on an opened store, holding what the store recovered. With
    /// Redis, starts its connection on the current runtime.
    pub fn open(opened: Opened, limits: HubLimits) -> Self {
        Self::open_with_hooks(opened, limits, None)
    }

    /// [`Hub::open`], telling `hooks` what clients do and asking it first.
    pub fn open_with_hooks(
        opened: Opened,
        limits: HubLimits,
        hooks: Option<Arc<crate::hooks::Hooks>>,
    ) -> Self {
        let redis = opened.redis.map(crate::store::redis::RedisStore::start);
        if let (Some(redis), Some(hooks)) = (&redis, &hooks) {
            use crate::hooks::EventType::{Offline, Online, Subscribed, Unsubscribed};
            let wanted = crate::store::redis::HookEvents {
                online: hooks.wants(Online),
                offline: hooks.wants(Offline),
                subscribed: hooks.wants(Subscribed),
                unsubscribed: hooks.wants(Unsubscribed),
            };
            redis.set_hooks(
                wanted,
                hooks.offline_after(),
                hooks.max_pending(),
                hooks.node(),
            );
        }
        let hub = Hub(Arc::new(Shared {
            hooks,
            connecting: DashMap::new(),
            clients: DashMap::new(),
            channels: Channels::default(),
            store: opened.logs,
            journal: opened.journal,
            redis,
            journal_order: std::sync::Mutex::new(()),
            reload: tokio::sync::Notify::new(),
            limits,
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            polls_total: AtomicU64::new(0),
            clients_evicted: AtomicU64::new(0),
            commit_seconds: Histogram::new(COMMIT_BUCKETS),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        }));
        hub.restore(opened.recovered);
        hub
    }

    /// Starts shutting down: every open poll answers at once (empty, unless
    /// it has messages) and [`Hub::is_shutting_down`] turns true for the HTTP
    /// faces to refuse new work.
    pub fn begin_shutdown(&self) {
        // The flag is stored before the wake-ups, and a poll enables its
        // notifier before it reads the flag: either it sees the flag or it
        // is woken.
        self.0.shutting_down.store(true, Ordering::SeqCst);
        self.all_offline();
        for client in self.0.clients.iter() {
            client.wake.notify_waiters();
        }
        if let Some(redis) = &self.0.redis {
            redis.waiters.wake_all();
            redis.stop();
        }
    }

    /// Whether [`Hub::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }

    /// The limits in force.
    pub fn limits(&self) -> &HubLimits {
        &self.0.limits
    }

    /// The client's entry, created if missing (no `max_clients` check: the
    /// caller made it); a creation is recorded.
    fn client_or_create(&self, id: &ClientId, now: Instant, record: &mut Recorder) -> Arc<Client> {
        if let Some(client) = self.0.clients.get(id) {
            return client.clone();
        }
        let mut created = false;
        let client = self
            .0
            .clients
            .entry(id.clone())
            .or_insert_with(|| {
                created = true;
                Client::new(id.clone(), self.0.store.open(id), now)
            })
            .clone();
        if created {
            record.change(|| Change::Created {
                client: id.clone(),
                epoch: client.epoch,
            });
        }
        client
    }
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
