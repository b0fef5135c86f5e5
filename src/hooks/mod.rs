//! Backend hooks (`[hooks]`): cometbox tells the backend what browsers do,
//! and lets it say no.
//!
//! - **Cancellable** events (`connect`, `subscribe`, `publish`) are asked
//!   with [`Hooks::ask`] (and [`Hooks::publish`]) and awaited by whoever is
//!   about to act: the hub's poll path awaits `connect` and `subscribe`
//!   before it changes anything (`backend/local/hooked.rs`); a Bayeux publish awaits
//!   `publish` (`bayeux/meta.rs`). A failure or a timeout follows
//!   `on_error`.
//! - **Notifications** (`online`, `offline`, `subscribed`, `unsubscribed`)
//!   are queued with [`Hooks::notify`] under the client's own lock (so
//!   their order is the order of the changes) and delivered by
//!   [`Hooks::spawn_workers`], at least once, in order per client, retried
//!   with backoff unless the backend refuses them for good (`retry.rs`);
//!   see `outbox.rs` for the bound and the disk file.
//!
//! Files: `config.rs` (the section), `events.rs` (the JSON), `signing.rs`
//! (the header), `transport.rs` (one POST), `retry.rs` (which failures are
//! retried, and when), `outbox.rs` (the queue), `journal.rs` (its file).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub mod config;
pub mod events;
mod journal;
pub mod outbox;
pub mod retry;
pub mod signing;
pub mod transport;

pub use config::{HooksConfig, OnError};

/// The file of pending Pusher webhooks in a durable store's directory.
pub const PUSHER_FILE_NAME: &str = "pusher-webhooks.log";

/// How long a stopping server waits, beyond [`Hooks::drain`]'s limit, for
/// the outbox file's writer (it writes in a moment unless the disk hangs).
const WRITE_GRACE: Duration = Duration::from_secs(1);
use crate::telemetry::Quiet;
pub use events::{Answer, Event, EventSet, EventType};
use outbox::Outbox;
use retry::Attempt;
use transport::{SendError, Target};

/// A cancellable event the backend refused (or could not be asked about,
/// with `on_error = "deny"`): the reason is given to the browser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

/// How a notification is written and signed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Format {
    /// cometbox's event object, `Cometbox-Signature` with `hooks.secret`.
    Cometbox,
    /// Pusher's webhook body, `X-Pusher-Key` and `X-Pusher-Signature` with
    /// the app's secret (`src/pusher/webhooks.rs`).
    Pusher {
        /// The app key.
        key: String,
    },
}

/// The hooks of one server: the target, the secret, the notification queue
/// and the counters. (Pusher's webhooks are a second one of these, with
/// Pusher's [`Format`].)
pub struct Hooks {
    target: Target,
    format: Format,
    secret: Vec<u8>,
    timeout: Duration,
    on_error: OnError,
    offline_after: Duration,
    events: EventSet,
    node: String,
    concurrency: usize,
    max_pending: usize,
    retry_max: Duration,
    /// Cancellable requests in flight (`max_asks`).
    asks: Semaphore,
    outbox: Outbox,
    allowed: AtomicU64,
    denied: AtomicU64,
    ask_errors: AtomicU64,
    /// Notifications delivered (2xx), refused for good, and failed attempts
    /// (retried).
    delivered: AtomicU64,
    rejected: AtomicU64,
    failed_attempts: AtomicU64,
    /// Keeps the warnings about failed notifications to one per kind a
    /// minute, however many events fail alike.
    quiet: Quiet,
    /// Stops the notification workers ([`Hooks::stop`]).
    stop: CancellationToken,
}

/// The hooks' share of `/stats` (`"hooks": {...}`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct HookStats {
    /// Notifications queued or in flight.
    pub pending: u64,
    /// Notifications delivered (the backend answered 2xx).
    pub delivered: u64,
    /// Notifications dropped for want of room: opening ones once
    /// `max_pending` wait (their closing ones are then not sent either),
    /// closing ones once twice that wait.
    pub dropped: u64,
    /// Notifications the backend refused for good (a 4xx other than 408
    /// and 429): dropped after one attempt.
    pub rejected: u64,
    /// Notification attempts that failed and were retried.
    pub retries: u64,
    /// Cancellable events the backend allowed.
    pub allowed: u64,
    /// Cancellable events refused (by the backend, or by `on_error = "deny"`).
    pub denied: u64,
    /// Cancellable requests that failed or timed out (then `on_error`).
    pub errors: u64,
}

impl Hooks {
    /// Hooks as configured; with a durable store's `dir`, pending
    /// notifications are kept in a file there (and read back now).
    pub fn new(config: &HooksConfig, dir: Option<&Path>) -> Result<Self, outbox::OutboxError> {
        let file = dir.map(|dir| dir.join(outbox::FILE_NAME));
        Self::with_format(config, Format::Cometbox, file.as_deref())
    }

    /// Pusher's webhooks to `pusher.webhook_url`, signed with the app's
    /// key and secret, queued (with a durable store) in
    /// `dir`/[`PUSHER_FILE_NAME`]; `[hooks]`'s defaults for the rest.
    pub fn pusher_webhooks(
        pusher: &crate::pusher::config::PusherConfig,
        node: &str,
        dir: Option<&Path>,
    ) -> Result<Self, outbox::OutboxError> {
        let config = HooksConfig {
            url: pusher.webhook_url.clone(),
            secret: pusher.secret.clone(),
            node: node.to_owned(),
            ..HooksConfig::default()
        };
        let format = Format::Pusher {
            key: pusher.key.clone(),
        };
        let file = dir.map(|dir| dir.join(PUSHER_FILE_NAME));
        Self::with_format(&config, format, file.as_deref())
    }

    fn with_format(
        config: &HooksConfig,
        format: Format,
        file: Option<&Path>,
    ) -> Result<Self, outbox::OutboxError> {
        let node = config.node_name();
        let outbox = match file {
            Some(file) => Outbox::open(file, config.max_pending, |client| {
                Event::new(EventType::Offline, client, None, &node)
            })?,
            None => Outbox::in_memory(config.max_pending),
        };
        Ok(Hooks {
            target: Target::parse(&config.url).expect("validated with the configuration"),
            format,
            secret: config.secret.as_bytes().to_vec(),
            timeout: config.timeout,
            on_error: config.on_error,
            offline_after: config.offline_after,
            events: config.event_set(),
            node,
            concurrency: config.concurrency,
            max_pending: config.max_pending,
            retry_max: config.retry_max,
            asks: Semaphore::new(config.max_asks),
            outbox,
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            ask_errors: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            quiet: Quiet::default(),
            stop: CancellationToken::new(),
        })
    }

    /// Whether events of `kind` are sent.
    pub fn wants(&self, kind: EventType) -> bool {
        self.events.contains(kind)
    }

    /// `offline_after`.
    pub fn offline_after(&self) -> Duration {
        self.offline_after
    }

    /// Asks the backend about a cancellable event (not sent, and allowed,
    /// when `kind` is not in `events`). Waits at most `timeout`, a free
    /// request slot included.
    pub async fn ask(
        &self,
        kind: EventType,
        client: &str,
        channel: Option<&str>,
    ) -> Result<Answer, Denied> {
        self.ask_event(Event::new(kind, client, channel, &self.node))
            .await
    }

    /// Asks `connect` for `client`, carrying a Bayeux handshake's `ext`
    /// when there is one.
    pub async fn ask_connect(&self, client: &str, ext: Option<&Value>) -> Result<Answer, Denied> {
        let mut event = Event::new(EventType::Connect, client, None, &self.node);
        event.ext = ext.cloned();
        self.ask_event(event).await
    }

    /// Asks `publish` for a browser's publish of `data` to `channel`:
    /// `Ok(Some(data))` when the backend replaced the payload, `Ok(None)` to
    /// publish it as it is.
    pub async fn publish(
        &self,
        client: &str,
        channel: &str,
        data: Value,
    ) -> Result<Option<Value>, Denied> {
        let mut event = Event::new(EventType::Publish, client, Some(channel), &self.node);
        event.data = Some(data);
        Ok(self.ask_event(event).await?.data)
    }

    /// A new event stamped with this server's `node`, for callers that add
    /// fields before asking: a Bayeux handshake's `connect` carries `ext`.
    pub fn event(&self, kind: EventType, client: &str, channel: Option<&str>) -> Event {
        Event::new(kind, client, channel, &self.node)
    }

    /// Asks the backend about a cancellable `event` built with
    /// [`Hooks::event`] (allowed without asking when its type is not in
    /// `events`).
    pub async fn ask_event(&self, event: Event) -> Result<Answer, Denied> {
        let allow = Answer {
            allow: true,
            reason: None,
            data: None,
        };
        if !self.wants(event.kind) {
            return Ok(allow);
        }
        let asked = tokio::time::timeout(self.timeout, async {
            let _slot = self.asks.acquire().await;
            let body = event.body();
            let headers = signing::headers(&self.secret, &body);
            transport::post(&self.target, &headers, body, self.timeout).await
        })
        .await
        .unwrap_or(Err(SendError::Timeout(self.timeout)));
        let answer = asked.and_then(|body| {
            serde_json::from_slice::<Answer>(&body)
                .map_err(|e| SendError::Io(format!("the answer is not {{\"allow\": ...}}: {e}")))
        });
        match answer {
            Ok(answer) if answer.allow => {
                self.allowed.fetch_add(1, Relaxed);
                Ok(answer)
            }
            Ok(answer) => {
                self.denied.fetch_add(1, Relaxed);
                let reason = answer.reason.unwrap_or_default();
                Err(Denied(if reason.is_empty() {
                    "denied by the backend".into()
                } else {
                    reason
                }))
            }
            Err(e) => {
                self.ask_errors.fetch_add(1, Relaxed);
                tracing::warn!(kind = ?event.kind, client = %event.client, error = %e, on_error = ?self.on_error, "hook request failed");
                match self.on_error {
                    OnError::Allow => Ok(allow),
                    OnError::Deny => {
                        self.denied.fetch_add(1, Relaxed);
                        Err(Denied(format!("the backend could not be asked: {e}")))
                    }
                }
            }
        }
    }

    /// Queues a notification (nothing when `kind` is not in `events`).
    /// Returns false when it was dropped for want of room: after an opening
    /// one (`online`, `subscribed`), the caller then skips its closing one.
    /// Call it under the client's lock: the queue's order per client is the
    /// order of the calls.
    pub fn notify(&self, kind: EventType, client: &str, channel: Option<&str>) -> bool {
        if !self.wants(kind) {
            return true;
        }
        self.outbox
            .push(Event::new(kind, client, channel, &self.node))
    }

    /// Queues `event` whatever `events` says (Pusher's webhooks, which
    /// come in no pairs); false when it was dropped for want of room.
    pub fn queue(&self, event: Event) -> bool {
        self.outbox.push(event)
    }

    /// Waits until the notifications queued before the call are in the
    /// outbox file (at once without one: the `memory` store). The hub
    /// awaits it, outside any lock, before it answers a poll or an ingest
    /// request that queued some, so that a crash never loses one that was
    /// acknowledged.
    pub async fn written(&self) {
        self.outbox.written().await;
    }

    /// Starts `concurrency` workers delivering notifications until
    /// [`Hooks::stop`].
    pub fn spawn_workers(self: &Arc<Self>) {
        for _ in 0..self.concurrency {
            let (hooks, stop) = (self.clone(), self.stop.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = hooks.work(&hooks.outbox, |_| {}) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    }

    /// One worker over `outbox` (this server's, or with the `redis` store a
    /// group's window, `src/backend/redis/presence.rs`): takes the next ready
    /// client's event, makes one attempt, and lets go of it. An event done
    /// with (delivered, or refused for good) is settled and given to
    /// `settled`; a client whose event failed waits out its pause in the
    /// outbox, not in this worker. Never returns.
    pub async fn work(&self, outbox: &Outbox, settled: impl Fn(&Event)) {
        loop {
            let event = outbox.next().await;
            match self.attempt(&event).await {
                Attempt::Delivered | Attempt::Rejected(_) => {
                    outbox.settle(&event);
                    settled(&event);
                }
                Attempt::Failed(_) => {
                    outbox.retry_later(&event, self.retry_max);
                }
            }
        }
    }

    /// One attempt at a notification: counted, and its failure logged
    /// (once per kind a minute: see [`Quiet`]).
    pub async fn attempt(&self, event: &Event) -> Attempt {
        let (body, headers) = match &self.format {
            Format::Cometbox => {
                let body = event.body();
                let headers = signing::headers(&self.secret, &body);
                (body, headers)
            }
            Format::Pusher { key } => {
                let body = event.pusher_body();
                let headers = signing::pusher_headers(key, &self.secret, &body);
                (body, headers)
            }
        };
        let sent = transport::post(&self.target, &headers, body, self.timeout).await;
        let attempt = Attempt::from(sent.map(|_| ()));
        match &attempt {
            Attempt::Delivered => {
                self.delivered.fetch_add(1, Relaxed);
            }
            Attempt::Rejected(e) => {
                self.rejected.fetch_add(1, Relaxed);
                if let Some(quiet) = self.quiet.may_say(&format!("rejected {}", e.kind())) {
                    tracing::warn!(url = %self.target, error = %e, id = %event.id, kind = ?event.kind, client = %event.client, alike_since_last = quiet, "hook notification refused by the backend for good; dropped (such refusals are logged once a minute)");
                }
            }
            Attempt::Failed(e) => {
                self.failed_attempts.fetch_add(1, Relaxed);
                if let Some(quiet) = self.quiet.may_say(&format!("failed {}", e.kind())) {
                    tracing::warn!(url = %self.target, error = %e, id = %event.id, kind = ?event.kind, client = %event.client, alike_since_last = quiet, "hook notification failed; retrying (such failures are logged once a minute)");
                }
            }
        }
        attempt
    }

    /// `node`: this server's name in every event.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// `max_pending`.
    pub fn max_pending(&self) -> usize {
        self.max_pending
    }

    /// `concurrency`.
    pub fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// Stops the notification workers (what is pending stays pending: in
    /// the outbox file with a durable store).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Waits until every notification is delivered, or `limit` passed;
    /// returns how many are still pending. Either way, with a file, then
    /// waits (a moment) for the writer to have written what it was handed,
    /// so that the process exits with the file complete.
    pub async fn drain(&self, limit: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + limit;
        while self.outbox.pending() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = tokio::time::timeout(WRITE_GRACE, self.outbox.written()).await;
        self.outbox.pending()
    }

    /// The counters for `/stats` and `/metrics`.
    pub fn stats(&self) -> HookStats {
        HookStats {
            pending: self.outbox.pending() as u64,
            delivered: self.delivered.load(Relaxed),
            dropped: self.outbox.dropped.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            retries: self.failed_attempts.load(Relaxed),
            allowed: self.allowed.load(Relaxed),
            denied: self.denied.load(Relaxed),
            errors: self.ask_errors.load(Relaxed),
        }
    }
}
