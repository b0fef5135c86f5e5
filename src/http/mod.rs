//! The two HTTP faces: `public` for browsers (long-poll, the JS class) and
//! `ingest` for backends (XML commands, tokens, stats,
//! metrics, the status page). Handlers are thin
//! adapters between HTTP and the hub.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::config::Settings;
use crate::hub::Hub;

pub mod error;
pub mod framing;
pub mod ingest;
pub mod public;
pub mod send_timeout;
pub mod serve;
pub mod status;

/// What every handler of both listeners shares: one `Arc`, so extracting
/// the state per request is one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The fields behind [`AppState`].
pub struct Shared {
    /// Mailboxes, channels and polls.
    pub hub: Hub,
    /// The `GET /metrics` registry and the counters kept as things happen.
    pub metrics: crate::metrics::Metrics,
    /// Token signing and checking.
    pub tokens: Tokens,
    /// The configuration in force.
    pub settings: Settings,
    /// Cancelled when the server starts shutting down (the accept loops and
    /// the reaper watch it; handlers ask [`Hub::is_shutting_down`]).
    pub shutdown: CancellationToken,
    /// Open-connection permits of the public listener.
    pub connections: Arc<Semaphore>,
    /// `max_connections` as resolved at start.
    pub max_connections: usize,
    /// Open-connection permits of the ingest listener
    /// (`max_ingest_connections`), apart from the public ones.
    pub ingest_connections: Arc<Semaphore>,
    /// Ingest bodies being read or parsed at once (`max_ingest_in_flight`).
    pub ingest_slots: Semaphore,
    /// Who is in each Pusher `presence-` channel on this node
    /// (`GET /app/<key>` sockets; empty unless `[pusher] enabled`).
    pub pusher_members: crate::pusher::members::Members,
    /// Pusher's webhooks, when `pusher.webhook_url` is set.
    pub pusher_webhooks: Option<Arc<crate::pusher::webhooks::Webhooks>>,
    /// The Bayeux endpoint, when `[bayeux] enabled`.
    pub bayeux: Option<Arc<crate::bayeux::Bayeux>>,
    /// Each `[[bridge]]`'s state and counters, in configuration order.
    pub bridges: Arc<[Arc<crate::bridge::BridgeStatus>]>,
}

impl AppState {
    /// Wraps the shared fields.
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
