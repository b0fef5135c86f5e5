//! `GET /metrics`: the server's counters in the OpenMetrics text format, for
//! Prometheus.
//!
//! One [`Registry`] (built with the rest of the shared state in
//! [`crate::app_state`]) holds three kinds of family:
//!
//! - read at scrape time from counters that already exist: the hub's
//!   [`Stats`] walk (held polls, clients, channels, subscriptions, queued
//!   messages, messages in/out/lost, polls, evictions) and the listeners'
//!   connection permits. Nothing is added to the message or poll paths for
//!   them; a scrape costs one walk over the clients, like `GET /stats`.
//! - `cometbox_ingest_rejected_total{code}`: counted where an ingest error
//!   becomes a response (one increment per rejected request).
//! - `cometbox_store_commit_seconds`: observed by the journal's writer for
//!   each unit, from its submission to its commit (disk store; with the
//!   memory store the family is there with no observations).
//!
//! - `cometbox_bridge_*{bridge}`: each `[[bridge]]`'s state (one gauge per
//!   state, 1 for the current one) and counters, read at scrape time from
//!   its [`BridgeStatus`].
//!
//! Hooks do not exist yet, so there are no families for them. Nothing is
//! labelled per client: the label sets are fixed and small (bridges are
//! named in the configuration).

use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::bridge::{BridgeStatus, State};
use crate::hub::{Hub, Stats};

/// The media type of the reply: OpenMetrics 1.0, which Prometheus asks for
/// first in its default `scrape_protocols` (and which `prometheus-client`
/// writes, ending in `# EOF`).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every error code an ingest reply can carry (`http::error`), counted from
/// zero so that rates exist before the first rejection.
pub const INGEST_ERROR_CODES: [&str; 12] = [
    "malformed-xml",
    "invalid-json",
    "invalid-id",
    "invalid-request",
    "too-large",
    "unauthorized",
    "not-found",
    "timeout",
    "unsupported-media-type",
    "overloaded",
    "shutting-down",
    "storage-unavailable",
];

/// What a scrape reads from the hub and the listeners.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Polls held open right now.
    pub open_polls: u64,
    /// Clients with a mailbox.
    pub clients: u64,
    /// Channels with at least one member.
    pub channels: u64,
    /// Channel memberships.
    pub subscriptions: u64,
    /// Messages retained over all mailboxes.
    pub queued_messages: u64,
    /// Messages accepted by ingest.
    pub messages_in: u64,
    /// Messages sent in poll replies.
    pub messages_out: u64,
    /// Messages dropped before any poll reply carried them.
    pub messages_lost: u64,
    /// Polls served.
    pub polls: u64,
    /// Clients forgotten for being idle.
    pub clients_evicted: u64,
    /// Open connections of the public listener.
    pub public_connections: u64,
    /// Open connections of the ingest listener.
    pub ingest_connections: u64,
    /// Backend hooks' counters (absent, and not encoded, without hooks).
    pub hooks: Option<crate::hooks::HookStats>,
    /// Bayeux sessions on this node (absent without `[bayeux]`).
    pub bayeux_sessions: Option<u64>,
}

impl Snapshot {
    /// The hub's share, from `/stats`'s walk; connections are set apart.
    pub fn from_stats(stats: &Stats) -> Self {
        Snapshot {
            open_polls: stats.open_polls,
            clients: stats.clients as u64,
            channels: stats.channels as u64,
            subscriptions: stats.subscriptions as u64,
            queued_messages: stats.queued_messages,
            messages_in: stats.messages_in,
            messages_out: stats.messages_out,
            messages_lost: stats.messages_lost,
            polls: stats.polls_total,
            clients_evicted: stats.clients_evicted,
            public_connections: 0,
            ingest_connections: 0,
            bayeux_sessions: None,
            hooks: stats.hooks.clone(),
        }
    }
}

/// The registry and the metrics that are counted as they happen.
pub struct Metrics {
    registry: Registry,
    /// What the scrape-time collector encodes: written by [`Metrics::encode`]
    /// just before encoding, under `scraping`.
    snapshot: Arc<Mutex<Snapshot>>,
    /// One scrape at a time, so a reply encodes the snapshot it wrote
    /// (scrapes are seconds apart; nothing else takes this lock).
    scraping: Mutex<()>,
    rejected: Family<[(&'static str, &'static str); 1], Counter>,
}

impl Metrics {
    /// The registry with every family, reading `hub`'s commit histogram and
    /// the bridges' statuses.
    pub fn new(hub: &Hub, bridges: Arc<[Arc<BridgeStatus>]>) -> Self {
        let mut registry = Registry::default();
        let snapshot = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(HubCollector(snapshot.clone())));
        registry.register_collector(Box::new(BridgeCollector(bridges)));
        let rejected = Family::<[(&'static str, &'static str); 1], Counter>::default();
        for code in INGEST_ERROR_CODES {
            let _ = rejected.get_or_create(&[("code", code)]);
        }
        registry.register(
            "cometbox_ingest_rejected",
            "Ingest requests answered with an error, by the contract's error code",
            rejected.clone(),
        );
        registry.register(
            "cometbox_store_commit_seconds",
            "Seconds from submitting a journal unit to its commit (disk store; no observations with the memory store)",
            hub.commit_seconds(),
        );
        Metrics {
            registry,
            snapshot,
            scraping: Mutex::new(()),
            rejected,
        }
    }

    /// Counts an ingest request rejected with `code`.
    pub fn rejected(&self, code: &'static str) {
        self.rejected.get_or_create(&[("code", code)]).inc();
    }

    /// The text of a scrape reading `snapshot`.
    pub fn encode(&self, snapshot: Snapshot) -> String {
        let _one = lock(&self.scraping);
        *lock(&self.snapshot) = snapshot;
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Encodes the latest [`Snapshot`] as constant gauges and counters.
#[derive(Debug)]
struct HubCollector(Arc<Mutex<Snapshot>>);

impl Collector for HubCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = lock(&self.0).clone();
        let gauges = [
            (
                "cometbox_open_polls",
                "Polls held open right now",
                s.open_polls,
            ),
            ("cometbox_clients", "Clients with a mailbox", s.clients),
            (
                "cometbox_channels",
                "Channels with at least one member",
                s.channels,
            ),
            (
                "cometbox_subscriptions",
                "Channel memberships",
                s.subscriptions,
            ),
            (
                "cometbox_queued_messages",
                "Messages retained over all mailboxes (a channel message counts once per member)",
                s.queued_messages,
            ),
        ];
        for (name, help, value) in gauges {
            let metric = ConstGauge::new(value as i64);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        let counters = [
            (
                "cometbox_messages_in",
                "Messages accepted by ingest (a channel message counts once)",
                s.messages_in,
            ),
            (
                "cometbox_messages_out",
                "Messages sent in poll replies (redeliveries count again)",
                s.messages_out,
            ),
            (
                "cometbox_messages_lost",
                "Messages dropped to retention or message_ttl before any poll reply carried them",
                s.messages_lost,
            ),
            ("cometbox_polls", "Polls served", s.polls),
            (
                "cometbox_clients_evicted",
                "Clients forgotten for being idle",
                s.clients_evicted,
            ),
        ];
        for (name, help, value) in counters {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "cometbox_connections",
                "Open connections, by listener",
                None,
                MetricType::Gauge,
            )?;
            for (listener, open) in [
                ("public", s.public_connections),
                ("ingest", s.ingest_connections),
            ] {
                ConstGauge::new(open as i64)
                    .encode(family.encode_family(&[("listener", listener)])?)?;
            }
        }
        if let Some(h) = &s.hooks {
            encode_hooks(&mut encoder, h)?;
        }
        if let Some(sessions) = s.bayeux_sessions {
            let metric = ConstGauge::new(sessions as i64);
            metric.encode(encoder.encode_descriptor(
                "cometbox_bayeux_sessions",
                "Bayeux sessions live on this node",
                None,
                metric.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// Encodes each bridge's state and counters.
#[derive(Debug)]
struct BridgeCollector(Arc<[Arc<BridgeStatus>]>);

impl Collector for BridgeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshots: Vec<_> = self.0.iter().map(|b| b.snapshot()).collect();
        let mut family = encoder.encode_descriptor(
            "cometbox_bridge_state",
            "Each bridge's connection state: 1 for the current state, 0 for the others",
            None,
            MetricType::Gauge,
        )?;
        for b in &snapshots {
            for state in State::ALL {
                ConstGauge::new(i64::from(b.state == state)).encode(
                    family
                        .encode_family(&[("bridge", b.name.as_str()), ("state", state.as_str())])?,
                )?;
            }
        }
        type Count = fn(&crate::bridge::BridgeStats) -> u64;
        let counters: [(&str, &str, Count); 6] = [
            (
                "cometbox_bridge_received",
                "Messages read from the broker",
                |b| b.received,
            ),
            (
                "cometbox_bridge_delivered",
                "Messages accepted by the hub and the store",
                |b| b.delivered,
            ),
            (
                "cometbox_bridge_skipped",
                "Messages skipped as invalid (payload or routing headers)",
                |b| b.skipped,
            ),
            (
                "cometbox_bridge_rejected",
                "Messages refused by max_clients or max_channels_per_client",
                |b| b.rejected,
            ),
            (
                "cometbox_bridge_connects",
                "Connections made (the first and each reconnection)",
                |b| b.connects,
            ),
            (
                "cometbox_bridge_failures",
                "Failed connection attempts and lost connections",
                |b| b.failures,
            ),
        ];
        for (name, help, count) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for b in &snapshots {
                ConstCounter::new(count(b))
                    .encode(family.encode_family(&[("bridge", b.name.as_str())])?)?;
            }
        }
        Ok(())
    }
}

/// The `cometbox_hook_*` families (only with `[hooks]` on).
fn encode_hooks(
    encoder: &mut DescriptorEncoder,
    h: &crate::hooks::HookStats,
) -> Result<(), std::fmt::Error> {
    let pending = ConstGauge::new(h.pending as i64);
    pending.encode(encoder.encode_descriptor(
        "cometbox_hook_notifications_pending",
        "Hook notifications queued or in flight (at most twice hooks.max_pending)",
        None,
        pending.metric_type(),
    )?)?;
    let counters = [
        (
            "cometbox_hook_notifications_delivered",
            "Hook notifications the backend answered with 2xx",
            h.delivered,
        ),
        (
            "cometbox_hook_notifications_dropped",
            "Hook notifications dropped for want of room: opening ones (online, subscribed) once hooks.max_pending wait, their closing ones then not sent either; closing ones once twice hooks.max_pending wait",
            h.dropped,
        ),
        (
            "cometbox_hook_notifications_rejected",
            "Hook notifications the backend refused for good (a 4xx other than 408 and 429): dropped after one attempt",
            h.rejected,
        ),
        (
            "cometbox_hook_notification_retries",
            "Hook notification attempts that failed and were retried",
            h.retries,
        ),
        (
            "cometbox_hook_requests_failed",
            "Cancellable hook requests that failed or timed out (then hooks.on_error applied)",
            h.errors,
        ),
    ];
    for (name, help, value) in counters {
        let metric = ConstCounter::new(value);
        metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
    }
    let mut family = encoder.encode_descriptor(
        "cometbox_hook_decisions",
        "Cancellable hook events, by outcome (denied includes on_error = \"deny\" after a failure)",
        None,
        MetricType::Counter,
    )?;
    for (outcome, value) in [("allowed", h.allowed), ("denied", h.denied)] {
        ConstCounter::new(value).encode(family.encode_family(&[("outcome", outcome)])?)?;
    }
    Ok(())
}
