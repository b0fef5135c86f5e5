//! `[[bridge]]`: messages from a broker (STOMP, AMQP 0-9-1, NATS, Redis)
//! delivered like ingest messages.
//!
//! ```text
//!  broker ──▶ source (stomp.rs, amqp.rs, nats.rs, redis.rs), over TLS (tls.rs)
//!                │  headers + payload
//!                ▼
//!             Sink::route (Route::command) ──▶ Sink::apply (Hub::apply) ──▶ ack (where the source can)
//! ```
//!
//! - [`config`]: the table and its checks (a bad one stops start-up, named).
//! - [`credentials`], [`tls`]: user, password, token; CA and client
//!   certificate, loaded at start-up (a missing file is a bad table).
//! - [`route`]: headers and payload to the same [`crate::protocol::Command`]
//!   ingest builds, with ingest's own validation.
//! - [`status`]: state and counters for `/stats` and `/metrics`.
//! - this file: the supervisor. Each bridge is one task that connects, runs
//!   its source until the connection fails, then waits (capped exponential
//!   backoff with jitter) and connects again, until shutdown. State changes
//!   are logged once each; a broker that stays down is not logged again.
//!
//! Acknowledgement: a source that can acknowledge does so only after
//! [`Sink::apply`] (or [`Sink::deliver`], one message) returned `Ok`, which
//! is after `Hub::apply` returned —
//! with the `disk` store, after the journal wrote the message. A store that
//! cannot write returns an error instead; the source then drops the
//! connection unacknowledged, and the broker redelivers after reconnection.

pub mod amqp;
pub mod config;
pub mod credentials;
pub mod nats;
pub mod redis;
pub mod route;
pub mod status;
pub mod stomp;
pub mod tls;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

pub use config::{Bridge, BridgeConfig, Source};
pub use status::{BridgeStats, BridgeStatus, State};

use crate::hub::{ApplyError, Hub};
use crate::protocol::Command;

/// Why a bridge's connection ended (then it is retried).
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The broker could not be reached or refused us.
    #[error("connect: {0}")]
    Connect(String),
    /// The connection failed or was closed after it was up.
    #[error("connection lost: {0}")]
    Lost(String),
    /// The broker sent something this bridge cannot go on with.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The store could not accept a message; it was not acknowledged.
    #[error("the store did not accept a message (left unacknowledged): {0}")]
    Store(#[from] crate::store::journal::StoreError),
}

/// Where a source hands its messages: routes, applies and counts them.
pub struct Sink {
    hub: Hub,
    bridge: Bridge,
    status: Arc<BridgeStatus>,
    /// Skip reasons are logged at `info`, each kind once a minute (a
    /// producer sending bad payloads would otherwise flood the log).
    quiet: crate::telemetry::Quiet,
}

/// Reports a bridge's state changes, logging each once; clonable for
/// sources whose client reconnects by itself (NATS).
#[derive(Clone)]
pub struct Reporter {
    name: String,
    table: String,
    url: String,
    status: Arc<BridgeStatus>,
}

impl Reporter {
    /// Connected (and subscribed): messages flow.
    pub fn connected(&self) {
        if self.status.set(State::Connected, None) {
            tracing::info!(bridge = %self.name, table = %self.table, url = %self.url, "bridge connected");
        }
    }

    /// Disconnected: `why`, and a retry is coming.
    pub fn disconnected(&self, why: &str) {
        if self.status.set(State::Disconnected, Some(why.to_owned())) {
            tracing::warn!(bridge = %self.name, table = %self.table, error = why, "bridge disconnected; retrying with backoff");
        } else {
            tracing::debug!(bridge = %self.name, error = why, "bridge still cannot connect");
        }
    }
}

impl Sink {
    /// The bridge's configuration.
    pub fn bridge(&self) -> &Bridge {
        &self.bridge
    }

    /// Its state reporter.
    pub fn reporter(&self) -> Reporter {
        Reporter {
            name: self.bridge.name.clone(),
            table: self.bridge.table.clone(),
            url: self.bridge.shown_url.clone(),
            status: self.status.clone(),
        }
    }

    /// Marks the bridge connected (subscribed), logging the change.
    pub fn connected(&self) {
        self.reporter().connected();
    }

    /// Delivers one message. `Ok` means it is done with — accepted, or
    /// skipped as invalid, or refused by a hub limit (all counted) — and may
    /// be acknowledged; `Err` means the store did not take it, and it must
    /// not be acknowledged.
    pub async fn deliver<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        payload: &[u8],
    ) -> Result<(), BridgeError> {
        match self.route(header, payload) {
            Some(command) => self.apply(vec![command]).await,
            None => Ok(()),
        }
    }

    /// The command for one message read from the broker, or `None` when it
    /// is skipped as invalid (counted). For sources that read in batches:
    /// [`Sink::apply`] then takes the batch's commands at once.
    pub fn route<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h str>,
        payload: &[u8],
    ) -> Option<Command> {
        self.status.received.fetch_add(1, Ordering::Relaxed);
        match self.bridge.route.command(header, payload) {
            Ok(command) => Some(command),
            Err(skip) => {
                self.status.skipped.fetch_add(1, Ordering::Relaxed);
                let reason = skip.to_string();
                // Kinds by the reason's first words, not its details.
                let kind: String = reason.split(':').next().unwrap_or("").to_owned();
                match self.quiet.may_say(&kind) {
                    Some(alike_since_last) => tracing::info!(
                        bridge = %self.bridge.name,
                        reason,
                        alike_since_last,
                        "bridge message skipped (counted in /stats skipped; logged once a minute per reason)"
                    ),
                    None => {
                        tracing::debug!(bridge = %self.bridge.name, reason, "bridge message skipped")
                    }
                }
                None
            }
        }
    }

    /// Applies routed messages: one hub batch (so, with the disk store, one
    /// journal write) for all of them. `Ok` and `Err` as for
    /// [`Sink::deliver`], for every message of the batch. When a hub limit
    /// refuses the batch, each message is tried alone, so that only those
    /// over the limit are refused.
    pub async fn apply(&self, commands: Vec<Command>) -> Result<(), BridgeError> {
        if commands.is_empty() {
            return Ok(());
        }
        let count = commands.len() as u64;
        let refused = match self.hub.apply(commands.clone()).await {
            Ok(_) => {
                self.status.delivered.fetch_add(count, Ordering::Relaxed);
                return Ok(());
            }
            Err(ApplyError::Storage(e)) => return Err(BridgeError::Store(e)),
            Err(e) => e,
        };
        if count == 1 {
            self.status.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(bridge = %self.bridge.name, error = %refused, "bridge message refused by a limit");
            return Ok(());
        }
        for command in commands {
            Box::pin(self.apply(vec![command])).await?;
        }
        Ok(())
    }
}

/// The statuses of the configured bridges, in order; built before anything
/// runs so that `/stats` lists every bridge from the start.
pub fn statuses(bridges: &[Bridge]) -> Arc<[Arc<BridgeStatus>]> {
    bridges
        .iter()
        .map(|b| {
            Arc::new(BridgeStatus::new(
                b.name.clone(),
                b.shown_url.clone(),
                source_text(&b.source),
            ))
        })
        .collect()
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Stomp { destination, .. } => destination.clone(),
        Source::Amqp { from, .. } => match from {
            config::AmqpFrom::Queue(q) => q.clone(),
            config::AmqpFrom::Exchange {
                exchange,
                routing_key,
            } => format!("{exchange}/{routing_key}"),
        },
        Source::Nats { subject, .. } => subject.clone(),
        Source::JetStream {
            stream, consumer, ..
        } => format!("jetstream:{stream} (consumer {consumer})"),
        Source::RedisPubSub { channel, .. } => channel.clone(),
        Source::RedisStream { key, .. } => format!("stream:{key}"),
    }
}

/// Starts one task per bridge; each ends when `shutdown` is cancelled.
pub fn spawn_all(
    bridges: Vec<Bridge>,
    statuses: &[Arc<BridgeStatus>],
    hub: &Hub,
    shutdown: &CancellationToken,
) -> tokio::task::JoinSet<()> {
    let mut set = tokio::task::JoinSet::new();
    for (bridge, status) in bridges.into_iter().zip(statuses) {
        tracing::info!(
            bridge = %bridge.name,
            table = %bridge.table,
            url = %bridge.shown_url,
            tls = bridge.tls.is_some(),
            source = %status.source,
            "bridge starting"
        );
        let sink = Sink {
            hub: hub.clone(),
            bridge,
            status: status.clone(),
            quiet: Default::default(),
        };
        set.spawn(supervise(sink, shutdown.clone()));
    }
    set
}

/// A connection that stayed up this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

/// Connects, runs and reconnects one bridge until shutdown.
async fn supervise(sink: Sink, shutdown: CancellationToken) {
    let mut attempt: u32 = 0;
    loop {
        let started = Instant::now();
        let ended = tokio::select! {
            ended = run_source(&sink) => ended,
            () = shutdown.cancelled() => break,
        };
        let was_up = sink.status.state() == State::Connected;
        if was_up && started.elapsed() >= STABLE {
            attempt = 0;
        }
        let why = match ended {
            Ok(()) => "the broker closed the connection".to_owned(),
            Err(e) => e.to_string(),
        };
        sink.reporter().disconnected(&why);
        let delay = backoff(attempt, sink.bridge.max_backoff);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => break,
        }
    }
    sink.status.set(State::Stopped, None);
    tracing::info!(bridge = %sink.bridge.name, "bridge stopped");
}

async fn run_source(sink: &Sink) -> Result<(), BridgeError> {
    match &sink.bridge.source {
        Source::Stomp { .. } => stomp::run(sink).await,
        Source::Amqp { .. } => amqp::run(sink).await,
        Source::Nats { .. } => nats::run(sink).await,
        Source::JetStream { .. } => nats::run_jetstream(sink).await,
        Source::RedisPubSub { .. } => redis::run_pubsub(sink).await,
        Source::RedisStream { .. } => redis::run_stream(sink).await,
    }
}

/// The wait before reconnection attempt `attempt` (0-based): 250 ms doubling
/// up to `max`, then a random point in its upper half, so that many
/// cometboxes restarted together do not reconnect in step.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let full = Duration::from_millis(250)
        .saturating_mul(1u32 << attempt.min(16))
        .min(max);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let max = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, max);
            let full = Duration::from_millis(250)
                .saturating_mul(1 << attempt.min(16))
                .min(max);
            assert!(d >= full / 2 && d <= full, "{attempt}: {d:?}");
        }
        assert!(backoff(100, Duration::from_secs(2)) <= Duration::from_secs(2));
    }
}
