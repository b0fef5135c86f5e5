//! Bayeux 1.0 (`[bayeux]`), for pages written for CometD, Faye, jQuery.Comet
//! or Dojo: `long-polling` and `callback-polling`.
//!
//! A Bayeux session is a reader of a cometbox client's mailbox
//! (`session.rs`): the handshake's token names the client (`sub`) and bounds
//! what it may subscribe to (`channels`) and publish to (`publish`); with
//! `[hooks]`, the backend is asked too (and decides alone when there is no
//! token). `/meta/connect` is a poll of that mailbox (`connect.rs`), so a
//! Bayeux page gets what `/poll` clients get: every message from ingest, a
//! bridge or another page, with a cursor that survives lost replies (with
//! CometD's acknowledgement extension) and lapsed sessions. Subscribing is
//! the hub's browser subscription, wildcards included; publishing is an
//! ingest message to the channel (`meta.rs`). Nothing here knows HTTP:
//! `http/public/bayeux.rs` reads the request and writes the reply.
//!
//! - `wire.rs`: the messages, and how replies and errors are written;
//! - `session.rs`: sessions, their cursors, and their lapse;
//! - `meta.rs`: handshake, subscribe, unsubscribe, disconnect, publish;
//! - `connect.rs`: `/meta/connect`, and mailbox messages as Bayeux ones;
//! - `config.rs`: `[bayeux]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::auth::Tokens;
use crate::hub::Hub;

pub mod config;
mod connect;
mod meta;
mod session;
mod wire;

pub use config::BayeuxConfig;
pub use connect::{Connected, PendingConnect};
pub use meta::is_reserved_for_publish;
pub use wire::{parse_batch, BatchError, Inbound};

use session::Sessions;
use wire::Reconnect;

/// The Bayeux endpoint's state: its sessions, and the hub they read.
pub struct Bayeux {
    hub: Hub,
    sessions: Sessions,
    config: BayeuxConfig,
    /// `max_payload_bytes`: a browser's publish is held to what ingest is.
    max_payload_bytes: usize,
}

/// What a batch came to, short of a held connect.
pub struct Exchange {
    /// The replies, in the order of the messages.
    pub replies: Vec<Value>,
    /// The batch's `/meta/connect`, to be waited on (see [`Bayeux::connect`]).
    pub connect: Option<PendingConnect>,
}

impl Bayeux {
    /// The endpoint on `hub`.
    pub fn new(hub: Hub, config: BayeuxConfig, max_payload_bytes: usize) -> Arc<Self> {
        Arc::new(Bayeux {
            sessions: Sessions::new(config.session_timeout),
            hub,
            config,
            max_payload_bytes,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &BayeuxConfig {
        &self.config
    }

    /// Sessions live now (for `/stats`).
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Answers every message of a batch but its `/meta/connect`, which is
    /// handed back to wait on once the others are answered. Messages are
    /// handled in order: a page's subscribe batched before its publish
    /// takes effect first.
    pub async fn handle(&self, tokens: &Tokens, batch: Vec<Inbound>) -> Exchange {
        let mut exchange = Exchange {
            replies: Vec::with_capacity(batch.len()),
            connect: None,
        };
        for message in batch {
            let reply = match message.channel.as_str() {
                "/meta/handshake" => self.handshake(tokens, &message).await,
                "/meta/connect" if exchange.connect.is_some() => wire::failure(
                    &message,
                    400,
                    "one /meta/connect per request",
                    Reconnect::Unchanged,
                ),
                "/meta/connect" => match self.prepare_connect(message) {
                    Ok(pending) => {
                        exchange.connect = Some(pending);
                        continue;
                    }
                    Err(reply) => reply,
                },
                "/meta/subscribe" => self.subscribe(&message).await,
                "/meta/unsubscribe" => self.unsubscribe(&message).await,
                "/meta/disconnect" => self.disconnect(&message),
                meta if meta.starts_with("/meta/") => {
                    wire::failure(&message, 400, "unknown meta channel", Reconnect::Unchanged)
                }
                _ => self.publish(&message).await,
            };
            exchange.replies.push(reply);
        }
        exchange
    }

    /// Forgets lapsed sessions until `shutdown`, a few times per
    /// `session_timeout`.
    pub fn spawn_sweeper(self: &Arc<Self>, shutdown: CancellationToken) {
        let bayeux = self.clone();
        let every = (self.config.session_timeout / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        // A lapsed session's cursor is worth keeping as long as its
        // client's mailbox is.
        let keep = self.hub.limits().client_idle_timeout;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.cancelled() => return,
                }
                let swept = bayeux.sessions.sweep(Instant::now(), keep);
                if swept.lapsed > 0 {
                    tracing::debug!(lapsed = swept.lapsed, "bayeux sessions lapsed");
                }
            }
        });
    }
}
