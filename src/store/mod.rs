//! Mailbox storage: where retained messages live between ingest and poll.
//!
//! The seam is a [`Store`] that opens one [`MailboxLog`] per client. The hub
//! keeps each log inside that client's own lock, so a store never needs a lock
//! of its own on the hot path. `conformance.rs` is the suite every store must
//! pass.
//!
//! Stores:
//! - [`memory`]: the logs, in process memory; lost on restart.
//! - [`disk`]: the same in-memory logs, plus a [`journal::Journal`] on disk
//!   that every change is written to before it is acknowledged, and from
//!   which the state is recovered at start-up.
//! - [`redis`]: the state lives in Redis and is shared by every node using
//!   it: the connection, the Lua scripts and their typed calls; the rules
//!   that drive them are the Redis backend's (`src/backend/redis/`), which
//!   does not use [`MailboxLog`].

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use serde::Deserialize;

use crate::protocol::{ClientId, Cursor};

pub mod disk;
pub mod journal;
pub mod memory;
pub mod redis;

#[cfg(test)]
mod conformance;

/// A message as retained: what every mailbox that got it shares.
#[derive(Debug)]
pub struct StoredMessage {
    /// The JSON members after `"id"` (see [`crate::protocol::reply`]),
    /// serialised once for all recipients.
    pub json_tail: Box<str>,
    /// When the message stops being delivered.
    pub expires_at: Instant,
    /// Whether `expires_at` came from the message's own `ttl` (shorter than
    /// `message_ttl`). Such a message was meant to lapse, so losing it does
    /// not make older cursors `reset`; losing one to retention does.
    pub own_ttl: bool,
    /// The name of its Server-Sent Event, read from `json_tail` by the
    /// first stream that sends it and kept for every other one (a channel
    /// message goes to each subscriber's stream).
    sse_event: OnceLock<Box<str>>,
}

impl StoredMessage {
    /// A message to retain (its stream event name is read when first sent).
    pub fn new(json_tail: Box<str>, expires_at: Instant, own_ttl: bool) -> Self {
        StoredMessage {
            json_tail,
            expires_at,
            own_ttl,
            sse_event: OnceLock::new(),
        }
    }

    /// The `event:` of its Server-Sent Event: the message's event, or
    /// `message` when it has none (or one a single SSE line cannot carry).
    pub fn sse_event(&self) -> &str {
        self.sse_event.get_or_init(|| {
            crate::protocol::reply::event_of(&self.json_tail)
                .filter(|e| !e.is_empty() && !e.contains(['\r', '\n']))
                .unwrap_or_else(|| "message".to_owned())
                .into_boxed_str()
        })
    }
}

/// Shared by reference between every mailbox holding the message.
pub type SharedMessage = Arc<StoredMessage>;

/// What a read found after a cursor.
#[derive(Debug)]
pub struct ReadOutcome {
    /// Messages after the cursor, oldest first, each with its sequence number.
    pub messages: Vec<(u64, SharedMessage)>,
    /// The reply's `cursor`: the position after the last message returned,
    /// which is the head unless the read stopped at its byte budget.
    pub cursor: Cursor,
    /// The cursor could not be honoured (unknown epoch, or messages after it
    /// were dropped), so `messages` holds everything still retained.
    pub reset: bool,
}

/// One client's retained messages.
pub trait MailboxLog: Send {
    /// Appends a message; returns its sequence number. Drops the oldest
    /// message when the log is at its size limit.
    fn append(&mut self, message: SharedMessage, now: Instant) -> u64;
    /// What is retained after `since` (from the oldest when `since` is
    /// `None`), oldest first, stopping before the message that would take
    /// the replies' encoded size past `max_bytes` (see
    /// [`crate::protocol::reply::encoded_len`]); always at least one message
    /// when there is one.
    fn read_after(&mut self, since: Option<Cursor>, now: Instant, max_bytes: usize) -> ReadOutcome;
    /// The position after the newest message, without reading.
    fn head(&self) -> Cursor;
    /// Where a reader new to this mailbox starts so that it misses nothing
    /// no read has returned yet: after the last message a read returned
    /// (a cursor the log answers with `reset` if messages after it were
    /// dropped undelivered).
    fn unread_from(&self) -> Cursor;
    /// Whether a message after `since` could be returned right now.
    fn has_after(&self, since: Option<Cursor>, now: Instant) -> bool;
    /// Drops expired messages (appends, reads, `/stats` and presence do it
    /// as they go).
    fn purge_expired(&mut self, now: Instant);
    /// How many messages are retained.
    fn len(&self) -> usize;
    /// Everything a snapshot needs to rebuild this log: epoch, the first
    /// retained sequence number, `lost_through`, and the messages.
    fn image(&self) -> (u32, u64, u64, Vec<SharedMessage>);
    /// Whether nothing is retained.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A mailbox storage engine.
pub trait Store: Send + Sync {
    /// Opens (creates) the log of a client that has no mailbox yet.
    fn open(&self, client: &ClientId) -> Box<dyn MailboxLog>;
    /// Rebuilds the log of a client recovered by a durable store.
    fn restore(&self, client: &journal::RecoveredClient) -> Box<dyn MailboxLog>;
    /// Messages its logs dropped (to retention or `message_ttl`) before any
    /// read returned them, since the store was opened. Messages that lapse
    /// by their own shorter `ttl` are meant to lapse and do not count.
    fn messages_lost(&self) -> u64 {
        0
    }
}

/// What [`StoreConfig::open`] hands the hub: what its backend is built on.
pub enum Opened {
    /// `memory` or `disk`: mailboxes in this process (see
    /// [`crate::backend::local`]).
    Local {
        /// Opens and restores mailbox logs.
        logs: Arc<dyn Store>,
        /// Where changes are written before they are acknowledged (`disk`).
        journal: Option<Arc<dyn journal::Journal>>,
        /// The state found at start-up (empty for `memory`).
        recovered: Vec<journal::RecoveredClient>,
    },
    /// `redis`: mailboxes in Redis (see [`crate::backend::redis`]).
    Redis(Box<redis::RedisSettings>),
}

/// The `[store]` section. Engines with settings of their own get them as
/// further keys here.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `kind`: which engine.
    pub kind: StoreKind,
    /// `disk`: the data directory (created if missing).
    pub path: std::path::PathBuf,
    /// `disk`: when written changes are flushed to stable storage.
    pub fsync: disk::FsyncPolicy,
    /// `disk`, with `fsync = "periodic"`: how often.
    #[serde(with = "humantime_serde")]
    pub fsync_interval: std::time::Duration,
    /// `disk`: a journal segment's size before the next one starts; a
    /// snapshot is taken once the journal since the last one is larger than
    /// this and than twice the snapshot.
    pub segment_bytes: u64,
    /// `redis`: one server, `redis://[:password@]host:port/db`.
    pub url: String,
    /// `redis`: Redis Cluster seed nodes, instead of `url` (a list; from
    /// the environment, comma-separated:
    /// `COMETBOX_STORE__CLUSTER=redis://a:7000,redis://b:7000`).
    #[serde(deserialize_with = "crate::config::values::list_or_comma_separated")]
    pub cluster: Vec<String>,
    /// `redis`: a PEM file of the certificate authorities that `rediss://`
    /// servers are checked against, instead of the system's.
    pub tls_ca: std::path::PathBuf,
    /// `redis`: prefix of every key (several deployments can share one
    /// Redis; nodes of one deployment must use the same).
    pub key_prefix: String,
    /// `redis`: longest wait for one Redis call (and for a connection);
    /// past it the request answers `503 storage-unavailable`.
    #[serde(with = "humantime_serde")]
    pub timeout: std::time::Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Memory,
            path: "/var/lib/cometbox".into(),
            fsync: disk::FsyncPolicy::Always,
            fsync_interval: std::time::Duration::from_secs(1),
            segment_bytes: disk::DEFAULT_SEGMENT_BYTES,
            url: String::new(),
            cluster: Vec::new(),
            tls_ca: std::path::PathBuf::new(),
            key_prefix: "cometbox:".into(),
            timeout: std::time::Duration::from_secs(2),
        }
    }
}

/// The storage engines.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// Everything in process memory; lost on restart (cursors then `reset`).
    #[default]
    Memory,
    /// In memory, journaled to `path` before every `<ok>`; recovered at
    /// start-up.
    Disk,
    /// In Redis (`url`), shared by every node configured with it.
    Redis,
}

/// Per-mailbox retention limits, from `[limits]`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// `mailbox_max_messages`: the oldest is dropped beyond this.
    pub max_messages: usize,
}

impl StoreConfig {
    /// Opens the configured engine, recovering what a durable one holds
    /// (`max_revoked`: `max_channels_per_client`, the bound of remembered
    /// unsubscribes). Blocking (a durable store reads its files).
    pub fn open(
        &self,
        retention: Retention,
        max_revoked: usize,
    ) -> Result<Opened, disk::OpenError> {
        let logs = Arc::new(memory::MemoryStore::new(retention));
        match self.kind {
            StoreKind::Memory => Ok(Opened::Local {
                logs,
                journal: None,
                recovered: Vec::new(),
            }),
            StoreKind::Redis => Ok(Opened::Redis(Box::new(
                self.redis_settings()?.with_retention(retention),
            ))),
            StoreKind::Disk => {
                let (journal, recovered, report) =
                    disk::DiskJournal::open(self, retention, max_revoked)?;
                disk::log_report(&self.path.display().to_string(), &report, recovered.len());
                Ok(Opened::Local {
                    logs,
                    journal: Some(Arc::new(journal)),
                    recovered,
                })
            }
        }
    }

    /// The Redis settings, checked (`kind = "redis"`).
    pub fn redis_settings(&self) -> Result<redis::RedisSettings, redis::RedisConfigError> {
        redis::RedisSettings::new(self)
    }
}
