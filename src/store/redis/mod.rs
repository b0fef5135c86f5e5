//! The `redis` store: every mailbox, membership and poll lease lives in
//! Redis, so every node configured with the same Redis acts as one server.
//!
//! This module owns the connection (a [`ConnectionManager`] that reconnects
//! by itself), the Lua scripts (one atomic step each: an ingest batch, a
//! poll's start, a look after a wake-up, a poll's end, an eviction sweep,
//! `/stats`, presence; with hooks, cluster-wide presence and the shared
//! hook queue: `hooks_*.lua`, `presence_*.lua`) and decoding their replies. `wake.rs` owns the
//! pub/sub wake-up hints and this node's waiting polls. The hub's side
//! (`src/hub/remote.rs`) decides when to call what. The design, key layout
//! and guarantees are in `docs/storage.md`.
//!
//! Nothing here blocks a worker: every call is async, bounded by
//! `store.timeout`, and a failure is a [`StoreError::Unavailable`] (`503
//! storage-unavailable`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Script, Value};
use tokio_util::sync::CancellationToken;

use super::journal::StoreError;

mod wake;

pub use wake::{LocalClient, Waiters};

/// What `[store]` says about Redis, checked at start-up (before anything
/// listens).
#[derive(Clone)]
pub struct RedisSettings {
    client: redis::Client,
    prefix: String,
    timeout: Duration,
    max_messages: usize,
}

/// A `[store]` Redis setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// `url` missing or unparsable.
    #[error("store.url: {0}")]
    Url(String),
    /// `cluster` is part of the contract but not implemented by this build.
    #[error("store.cluster: Redis Cluster is not supported yet; use store.url (one server, or a primary with replicas behind one address)")]
    ClusterUnsupported,
}

impl RedisSettings {
    /// Checks `url` (`redis://[:password@]host:port/db`; `redis+unix://`).
    pub fn new(
        url: &str,
        cluster: &[String],
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, RedisConfigError> {
        if !cluster.is_empty() {
            return Err(RedisConfigError::ClusterUnsupported);
        }
        if url.is_empty() {
            return Err(RedisConfigError::Url(
                "kind = \"redis\" needs url = \"redis://host:port/db\"".into(),
            ));
        }
        let client = redis::Client::open(url).map_err(|e| RedisConfigError::Url(e.to_string()))?;
        Ok(RedisSettings {
            client,
            prefix: prefix.to_owned(),
            timeout,
            max_messages: 1,
        })
    }

    /// The same, with `[limits]`'s `mailbox_max_messages`.
    pub fn with_retention(mut self, retention: super::Retention) -> Self {
        self.max_messages = retention.max_messages.max(1);
        self
    }
}

/// The scripts, each the shared prelude plus its own body.
struct Scripts {
    apply: Script,
    poll_open: Script,
    poll_read: Script,
    poll_close: Script,
    reap: Script,
    stats: Script,
    presence: Script,
    hooks: HookScripts,
}

/// The scripts of cluster-wide hook notifications (`src/hub/presence.rs`).
struct HookScripts {
    look: Script,
    online: Script,
    sweep: Script,
    take: Script,
    done: Script,
}

impl Scripts {
    fn new() -> Self {
        const PRELUDE: &str = include_str!("prelude.lua");
        const HOOKS_PRELUDE: &str = include_str!("hooks_prelude.lua");
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        let with_hooks = |body: &str| Script::new(&format!("{PRELUDE}\n{HOOKS_PRELUDE}\n{body}"));
        Scripts {
            apply: with_prelude(include_str!("apply.lua")),
            poll_open: with_prelude(include_str!("poll_open.lua")),
            poll_read: with_prelude(include_str!("poll_read.lua")),
            poll_close: with_prelude(include_str!("poll_close.lua")),
            reap: with_prelude(include_str!("reap.lua")),
            stats: with_prelude(include_str!("stats.lua")),
            presence: with_prelude(include_str!("presence.lua")),
            hooks: HookScripts {
                look: with_hooks(include_str!("hooks_look.lua")),
                online: with_hooks(include_str!("presence_online.lua")),
                sweep: with_hooks(include_str!("presence_sweep.lua")),
                take: with_hooks(include_str!("hooks_take.lua")),
                done: with_hooks(include_str!("hooks_done.lua")),
            },
        }
    }
}

/// The connection to Redis and this node's waiting polls.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    /// Random per process: names this node's poll leases and heartbeat.
    node: String,
    scripts: Scripts,
    /// False from a failed call (or a lost pub/sub connection) until the
    /// next success: what `/health` reports.
    healthy: AtomicBool,
    /// This node's clients with a poll waiting, woken by pub/sub hints.
    pub waiters: Waiters,
    max_messages: usize,
    /// Ends the pub/sub listener (shutdown).
    stopped: CancellationToken,
}

/// Arguments of one script call, after the shared ones.
pub type Args = Vec<Vec<u8>>;

/// One script reply, decoded loosely: Lua gives integers and strings.
pub struct Reply(Vec<Value>);

impl Reply {
    /// Item `i` as an integer (0 if absent or not a number).
    pub fn int(&self, i: usize) -> i64 {
        match self.0.get(i) {
            Some(Value::Int(n)) => *n,
            Some(Value::BulkString(b)) => std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            _ => 0,
        }
    }

    /// Item `i` as text (empty if absent).
    pub fn text(&self, i: usize) -> String {
        match self.0.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            Some(Value::Int(n)) => n.to_string(),
            _ => String::new(),
        }
    }

    /// How many items.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Which script.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// An ingest batch.
    Apply,
    /// A poll's start (and first look).
    PollOpen,
    /// A held poll's look after a wake-up.
    PollRead,
    /// A poll's end.
    PollClose,
    /// An idle-eviction sweep and this node's heartbeat.
    Reap,
    /// Cluster-wide `/stats` figures.
    Stats,
    /// `/clients/<id>`.
    Presence,
    /// With hooks: whether a client is online cluster-wide, its channels.
    HooksLook,
    /// With hooks: a poll opened; the client goes online if it was not.
    PresenceOnline,
    /// With hooks: the sweep deciding `offline` cluster-wide.
    PresenceSweep,
    /// With hooks: take (or renew) the delivery lease and the queue's head.
    HooksTake,
    /// With hooks: the queue's head was delivered.
    HooksDone,
}

impl RedisStore {
    /// Starts the (lazy, self-reconnecting) connection and the pub/sub
    /// listener on the current runtime. Never fails: while Redis is
    /// unreachable, calls answer [`StoreError::Unavailable`].
    pub fn start(settings: RedisSettings) -> Arc<Self> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(settings.timeout))
            .set_connection_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(settings.client.clone(), config)
            .expect("a lazy connection manager (a tokio runtime is running)");
        let store = Arc::new(RedisStore {
            conn,
            prefix: settings.prefix.clone(),
            node: format!("{:016x}", rand::random::<u64>()),
            scripts: Scripts::new(),
            healthy: AtomicBool::new(true),
            max_messages: settings.max_messages,
            waiters: Waiters::default(),
            stopped: CancellationToken::new(),
        });
        wake::spawn_listener(store.clone(), settings.client, store.stopped.clone());
        store
    }

    /// Stops listening for hints (shutdown; open polls are woken apart).
    pub fn stop(&self) {
        self.stopped.cancel();
    }

    /// `mailbox_max_messages`.
    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    /// This node's id (random per process).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the last call (and the pub/sub connection) worked.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!("redis is reachable again");
            } else {
                tracing::warn!("redis is unreachable: ingest and polls answer 503 storage-unavailable until it is back");
            }
        }
    }

    /// Runs one script with the shared arguments (prefix, now, a random
    /// seed for new epochs) followed by `args`.
    pub async fn run(&self, step: Step, args: Args) -> Result<Reply, StoreError> {
        match self.run_once(step, &args).await {
            // The connection broke (Redis restarted, a failover): the
            // manager reconnects, and every step but a batch can safely be
            // sent again (a batch might have been applied; the backend gets
            // its 503 and decides).
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                if matches!(step, Step::Apply) {
                    return Err(self.failed(step, e));
                }
                self.run_once(step, &args)
                    .await
                    .map_err(|e| self.failed(step, e))
            }
            result => result.map_err(|e| self.failed(step, e)),
        }
    }

    async fn run_once(&self, step: Step, args: &Args) -> Result<Reply, redis::RedisError> {
        let s = &self.scripts;
        let script = match step {
            Step::Apply => &s.apply,
            Step::PollOpen => &s.poll_open,
            Step::PollRead => &s.poll_read,
            Step::PollClose => &s.poll_close,
            Step::Reap => &s.reap,
            Step::Stats => &s.stats,
            Step::Presence => &s.presence,
            Step::HooksLook => &s.hooks.look,
            Step::PresenceOnline => &s.hooks.online,
            Step::PresenceSweep => &s.hooks.sweep,
            Step::HooksTake => &s.hooks.take,
            Step::HooksDone => &s.hooks.done,
        };
        let mut call = script.prepare_invoke();
        call.arg(&self.prefix)
            .arg(unix_ms())
            .arg(rand::random::<u32>());
        for arg in args {
            call.arg(&arg[..]);
        }
        let mut conn = self.conn.clone();
        let value = call.invoke_async::<Value>(&mut conn).await?;
        self.set_healthy(true);
        Ok(Reply(match value {
            Value::Array(items) => items,
            other => vec![other],
        }))
    }

    fn failed(&self, step: Step, e: redis::RedisError) -> StoreError {
        if is_unavailable(&e) {
            self.set_healthy(false);
        }
        tracing::debug!(?step, error = %e, "redis call failed");
        StoreError::Unavailable(format!("redis: {e}"))
    }

    /// The pub/sub channel carrying wake-up hints.
    fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }
}

/// Whether an error means Redis cannot be reached (rather than a script
/// bug, which is logged loudly).
fn is_unavailable(e: &redis::RedisError) -> bool {
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error();
    if !unavailable {
        tracing::error!(error = %e, "a redis script failed");
    }
    unavailable
}

/// Wall-clock milliseconds: message expiry and idle clocks are shared by
/// nodes, so they are wall-clock times (nodes' clocks should agree to well
/// under a second; NTP does).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
