//! What the hub and its backend share: the limits in force, the hooks, the
//! node's counters and the shutdown flag. One [`Common`] per server, held by
//! the hub and by whichever backend it runs on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

use crate::hooks::Hooks;

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

impl HubLimits {
    /// A poll's wait: its own `timeout` under the cap, or the default.
    pub fn poll_wait(&self, requested: Option<Duration>) -> Duration {
        requested.map_or(self.poll_timeout, |t| t.min(self.max_poll_timeout))
    }
}

/// Bucket bounds of [`Common::commit_seconds`]: 100 µs (a page-cache write)
/// to about 3 s (an fsync on a struggling disk), doubling.
const COMMIT_BUCKETS: [f64; 16] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192, 1.6384, 3.2768,
];

/// This node's monotonic counters for `/stats`; relaxed, each bumped once
/// per request.
#[derive(Default)]
pub struct Counters {
    /// Messages accepted by ingest (a channel message counts once).
    pub messages_in: AtomicU64,
    /// Messages carried by replies.
    pub messages_out: AtomicU64,
    /// Polls (and streams) opened.
    pub polls_total: AtomicU64,
    /// Clients forgotten for being idle (local backends; Redis counts its
    /// own, cluster-wide).
    pub clients_evicted: AtomicU64,
}

impl Counters {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads `counter`.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Shared by the hub and its backend.
pub struct Common {
    /// The limits in force.
    pub limits: HubLimits,
    /// Backend hooks, when `[hooks]` names a URL.
    pub hooks: Option<Arc<Hooks>>,
    /// This node's counters.
    pub counters: Counters,
    /// Seconds from a journal unit's submission to its commit (the `disk`
    /// store; no observations otherwise). Observed once per unit, read by
    /// `GET /metrics`.
    pub commit_seconds: Histogram,
    /// When the hub started (`uptime_s`).
    pub started: Instant,
    /// Set once shutdown begins. Open polls learn of it through their own
    /// mailbox's waker, so no poll registers with a signal shared by all
    /// (a shared one would be a lock taken by every poll).
    shutting_down: AtomicBool,
}

impl Common {
    /// Fresh counters, not shutting down.
    pub fn new(limits: HubLimits, hooks: Option<Arc<Hooks>>) -> Arc<Self> {
        Arc::new(Common {
            limits,
            hooks,
            counters: Counters::default(),
            commit_seconds: Histogram::new(COMMIT_BUCKETS),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Raises the shutdown flag. Stored before the backend wakes its polls,
    /// and a poll enables its waker before it reads the flag: either it
    /// sees the flag or it is woken.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Whether shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }
}

/// How often a sweep (idle eviction, presence) runs for a limit of
/// `idle_limit`: often enough that it acts at most a quarter late, never
/// more than every 5 seconds.
pub fn sweep_interval(idle_limit: Duration) -> Duration {
    (idle_limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}
