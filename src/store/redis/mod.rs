//! The `redis` store: every mailbox, membership and poll lease lives in
//! Redis, so every node configured with the same Redis acts as one server.
//!
//! This module owns the settings, the Lua scripts (one atomic step each, in
//! one slot group: an ingest batch's share, a poll's start, a look after a
//! wake-up, a poll's end, an eviction sweep, `/stats`, presence; with
//! hooks, presence and the hook queue of the group: `hooks_*.lua`,
//! `presence_sweep.lua`, and the notifications every script may queue,
//! `notify` in `prelude.lua`); `calls.rs` gives each script a typed call
//! (its arguments in order, its reply decoded: `replies.rs` is the only
//! reader of positions). `conn.rs` owns the
//! connection (one server or a Redis Cluster, rebuilt when a cluster's
//! stays broken), `batch.rs` the batching of the per-poll scripts,
//! `groups.rs` how keys are grouped into slots, `wake.rs` the pub/sub
//! wake-up hints and this node's waiting polls. The Redis backend
//! (`src/backend/redis/`) decides when to call what.
//! The design, key layout and guarantees are in `docs/storage.md`.
//!
//! Nothing here blocks a worker: every call is async, bounded by
//! `store.timeout`, and a failure is a [`StoreError::Unavailable`] (`503
//! storage-unavailable`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{Script, Value};
use tokio_util::sync::CancellationToken;

use super::journal::StoreError;

mod batch;
mod calls;
mod conn;
mod fsync;
mod groups;
mod hook_queue;
mod lookups;
mod profiles;
mod replies;
mod settings;
mod wake;

pub use calls::{
    ApplyMode, EncodedCommand, GroupStats, MailboxRead, PollOpen, PresenceReply, Share,
    ShareLimits, Verdict,
};
use conn::Connection;
pub use groups::{Groups, CLUSTER_GROUPS};
use replies::{Args, Reply};
pub use settings::{RedisConfigError, RedisSettings};
pub use wake::{LocalClient, Waiters};

/// The scripts, each the shared prelude plus its own body.
struct Scripts {
    apply: Script,
    poll_open: Script,
    poll_read: Script,
    poll_close: Script,
    reap: Script,
    stats: Script,
    presence: Script,
    channels: Script,
    channel: Script,
    unread_from: Script,
    hooks: HookScripts,
}

/// The scripts of cluster-wide hook notifications (`src/backend/redis/presence.rs`).
struct HookScripts {
    look: Script,
    sweep: Script,
    take: Script,
    done: Script,
}

impl Scripts {
    fn new() -> Self {
        const PRELUDE: &str = include_str!("prelude.lua");
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            apply: with_prelude(include_str!("apply.lua")),
            poll_open: with_prelude(include_str!("poll_open.lua")),
            poll_read: with_prelude(include_str!("poll_read.lua")),
            poll_close: with_prelude(include_str!("poll_close.lua")),
            reap: with_prelude(include_str!("reap.lua")),
            stats: with_prelude(include_str!("stats.lua")),
            channels: with_prelude(include_str!("channels.lua")),
            channel: with_prelude(include_str!("channel.lua")),
            presence: with_prelude(include_str!("presence.lua")),
            unread_from: with_prelude(include_str!("unread_from.lua")),
            hooks: HookScripts {
                look: with_prelude(include_str!("hooks_look.lua")),
                sweep: with_prelude(include_str!("presence_sweep.lua")),
                take: with_prelude(include_str!("hooks_take.lua")),
                done: with_prelude(include_str!("hooks_done.lua")),
            },
        }
    }
}

/// The connection to Redis and this node's waiting polls.
pub struct RedisStore {
    /// Itself, for the batch drain tasks it spawns.
    me: Weak<RedisStore>,
    conn: Connection,
    /// The queues of the batched per-poll scripts (`batch.rs`).
    batches: batch::Batches,
    prefix: String,
    groups: Groups,
    /// Clients per group as last counted (a cluster's `max_clients`).
    counted: Mutex<Option<(Instant, Vec<u64>)>>,
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
    /// With hooks: what the scripts need to keep presence and queue
    /// notifications (`set_hooks`): ARGV[4] but for its random digits.
    hooks: std::sync::OnceLock<HooksArg>,
    /// Whether every master runs `appendfsync always` (`fsync.rs`).
    fsync: fsync::FsyncPolicy,
}

/// Which notifications `hooks.events` wants the scripts to queue.
#[allow(missing_docs)] // (one field per notification type)
pub struct HookEvents {
    pub online: bool,
    pub offline: bool,
    pub subscribed: bool,
    pub unsubscribed: bool,
}

/// [`RedisStore::set_hooks`]'s settings, as the scripts read them.
struct HooksArg {
    flags: String,
    offline_after_ms: u64,
    max_pending: usize,
    node: String,
}

/// Which script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
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
    /// `GET /channels`, one group's share.
    Channels,
    /// `GET /channels/<name>`, one group's share.
    Channel,
    /// Where a new reader of a mailbox starts (a Bayeux session).
    UnreadFrom,
    /// With hooks: whether a client is online cluster-wide, its channels.
    HooksLook,
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
        let store = Arc::new_cyclic(|me| RedisStore {
            me: me.clone(),
            conn: Connection::start(&settings.target, settings.timeout),
            batches: batch::Batches::new(settings.groups.len()),
            prefix: settings.prefix.clone(),
            groups: settings.groups.clone(),
            counted: Mutex::new(None),
            node: format!("{:016x}", rand::random::<u64>()),
            scripts: Scripts::new(),
            healthy: AtomicBool::new(true),
            max_messages: settings.max_messages,
            waiters: Waiters::default(),
            stopped: CancellationToken::new(),
            hooks: std::sync::OnceLock::new(),
            fsync: fsync::FsyncPolicy::default(),
        });
        wake::spawn_listener(store.clone(), settings.subscribe_to, store.stopped.clone());
        fsync::spawn_watch(Arc::downgrade(&store), store.stopped.clone());
        store
    }

    /// Stops listening for hints (shutdown; open polls are woken apart).
    pub fn stop(&self) {
        self.stopped.cancel();
    }

    /// With hooks: the scripts keep presence (`offline_after`) and queue
    /// the notifications of the types `wanted` (`online`, `offline`,
    /// `subscribed`, `unsubscribed`; stamped `node`) in the same step as
    /// what they announce, each group's queue bounded by `max_pending` as
    /// on one node (docs/hooks.md, Bounds). Set once, before anything is
    /// served.
    pub fn set_hooks(
        &self,
        wanted: HookEvents,
        offline_after: Duration,
        max_pending: usize,
        node: &str,
    ) {
        let flag = |on: bool| if on { '1' } else { '0' };
        let _ = self.hooks.set(HooksArg {
            flags: [
                wanted.subscribed,
                wanted.unsubscribed,
                wanted.online,
                wanted.offline,
            ]
            .map(flag)
            .iter()
            .collect(),
            offline_after_ms: offline_after.as_millis() as u64,
            max_pending,
            node: node.to_owned(),
        });
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

    /// The slot groups.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    /// Runs one script in slot group `group` with the shared arguments
    /// (prefix, now, a random seed for new epochs) followed by `args`; the
    /// per-poll steps ride in a batch with others (`batch.rs`).
    async fn run(&self, step: Step, group: usize, args: Args) -> Result<Reply, StoreError> {
        if batch::Batches::takes(step) {
            return self.run_batched(step, group, args).await;
        }
        self.run_unbatched(step, group, args).await
    }

    /// One script run, retried once on a broken connection.
    async fn run_unbatched(
        &self,
        step: Step,
        group: usize,
        args: Args,
    ) -> Result<Reply, StoreError> {
        match self.run_once(step, group, &args).await {
            // The connection broke (Redis restarted, a failover): the
            // manager reconnects, and every step but a batch can safely be
            // sent again (a batch might have been applied; the backend gets
            // its 503 and decides).
            Err(e) if e.is_connection_dropped() || e.is_io_error() => {
                if matches!(step, Step::Apply) {
                    return Err(self.failed(step, e));
                }
                self.run_once(step, group, &args)
                    .await
                    .map_err(|e| self.failed(step, e))
            }
            result => result.map_err(|e| self.failed(step, e)),
        }
    }

    async fn run_once(
        &self,
        step: Step,
        group: usize,
        args: &Args,
    ) -> Result<Reply, redis::RedisError> {
        let s = &self.scripts;
        let script = match step {
            Step::Apply => &s.apply,
            Step::PollOpen => &s.poll_open,
            Step::PollRead => &s.poll_read,
            Step::PollClose => &s.poll_close,
            Step::Reap => &s.reap,
            Step::Stats => &s.stats,
            Step::Presence => &s.presence,
            Step::Channels => &s.channels,
            Step::Channel => &s.channel,
            Step::UnreadFrom => &s.unread_from,
            Step::HooksLook => &s.hooks.look,
            Step::PresenceSweep => &s.hooks.sweep,
            Step::HooksTake => &s.hooks.take,
            Step::HooksDone => &s.hooks.done,
        };
        let mut call = script.prepare_invoke();
        // The fsync flag first, then the hooks' settings (`prelude.lua`).
        let always = if self.fsync.always() { '1' } else { '0' };
        let hooks = match self.hooks.get() {
            // 24 random hex digits: with the script's counter, event ids.
            Some(h) => format!(
                "{always}{}\t{}\t{}\t{:024x}\t{}",
                h.flags,
                h.offline_after_ms,
                h.max_pending,
                rand::random::<u128>() >> 32,
                h.node
            ),
            None => always.to_string(),
        };
        call.key(self.groups.base(group))
            .arg(&self.prefix)
            .arg(unix_ms())
            .arg(rand::random::<u32>())
            .arg(hooks);
        for arg in args {
            call.arg(&arg[..]);
        }
        let value = self.conn.invoke(&call).await?;
        self.set_healthy(true);
        Ok(Reply::from(value))
    }

    /// A plain command's failure (not a script's [`Step`]).
    fn failed_call(&self, what: &str, e: redis::RedisError) -> StoreError {
        if is_unavailable(&e) {
            self.set_healthy(false);
        }
        tracing::debug!(call = what, error = %e, "redis call failed");
        StoreError::Unavailable(format!("redis: {e}"))
    }

    fn failed(&self, step: Step, e: redis::RedisError) -> StoreError {
        if is_unavailable(&e) {
            self.set_healthy(false);
        }
        tracing::debug!(?step, error = %e, "redis call failed");
        StoreError::Unavailable(format!("redis: {e}"))
    }

    /// How many clients each slot group holds, for `max_clients` (nothing
    /// with one server, whose single group counts exactly inside its
    /// scripts). In a cluster the groups are counted at most every
    /// [`COUNT_EVERY`], or at every call once the total is within
    /// [`COUNT_MARGIN`] of `max_clients`: concurrent creations in several
    /// groups may then overshoot it by the creations in flight.
    pub async fn client_counts(&self, max_clients: usize) -> Result<ClientCounts, StoreError> {
        if self.groups.len() == 1 {
            return Ok(ClientCounts(Vec::new()));
        }
        let cached = self
            .counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match cached {
            Some((at, counts))
                if at.elapsed() < COUNT_EVERY
                    && counts.iter().sum::<u64>() + COUNT_MARGIN < max_clients as u64 =>
            {
                Ok(ClientCounts(counts))
            }
            _ => Ok(ClientCounts(self.count_clients().await?)),
        }
    }

    /// Counts each group's clients (one `ZCARD` per group, concurrently).
    async fn count_clients(&self) -> Result<Vec<u64>, StoreError> {
        let counts = (0..self.groups.len()).map(|g| {
            let mut cmd = redis::cmd("ZCARD");
            cmd.arg(format!("{}active", self.groups.base(g)));
            async move { self.conn.query(&cmd).await }
        });
        let mut out = Vec::with_capacity(self.groups.len());
        for count in futures_util::future::join_all(counts).await {
            match count {
                Ok(Value::Int(n)) => out.push(n.max(0) as u64),
                Ok(other) => {
                    return Err(StoreError::Unavailable(format!("ZCARD answered {other:?}")))
                }
                Err(e) => return Err(self.failed(Step::Stats, e)),
            }
        }
        *self.counted.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), out.clone()));
        Ok(out)
    }

    /// The pub/sub channel carrying wake-up hints.
    fn wake_channel(&self) -> String {
        format!("{}wake", self.prefix)
    }
}

/// Clients per slot group, as [`RedisStore::client_counts`] last saw them.
pub struct ClientCounts(Vec<u64>);

impl ClientCounts {
    /// Clients in every group.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Clients in the groups other than `group`, as a script argument.
    pub fn others(&self, group: usize) -> Vec<u8> {
        let all: u64 = self.0.iter().sum();
        (all - self.0.get(group).copied().unwrap_or(0))
            .to_string()
            .into_bytes()
    }
}

/// How long a cluster's client count is trusted (see [`RedisStore::others`]).
const COUNT_EVERY: Duration = Duration::from_millis(500);

/// How close to `max_clients` the count is read at every call.
const COUNT_MARGIN: u64 = 64;

/// A script answered what its caller cannot read: a bug, logged loudly.
pub fn unexpected_reply(what: impl std::fmt::Display) -> StoreError {
    tracing::error!(reply = %what, "unexpected reply from a redis script");
    StoreError::Unavailable(format!("unexpected reply from redis: {what}"))
}

/// Whether an error means Redis cannot be reached (rather than a script
/// bug, which is logged loudly).
fn is_unavailable(e: &redis::RedisError) -> bool {
    // (A cluster error, `MOVED`, `TRYAGAIN`, `CLUSTERDOWN`, that outlasted
    // the cluster client's own retries: the cluster is reshaping.)
    let unavailable = e.is_io_error()
        || e.is_cluster_error()
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
