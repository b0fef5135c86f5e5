//! Pusher Channels compatibility (`[pusher]`, docs/pusher.md).
//!
//! This module owns what makes cometbox answer as a Pusher app: its
//! settings (`config.rs`), Pusher's signatures (`signing.rs`: the HTTP
//! API's request signature and the private/presence channel
//! authorisation), and Pusher's HTTP API for backends on the ingest
//! listener (`api.rs`: events, batch events, channel queries), whose
//! events become ordinary hub commands, so a Pusher event reaches every
//! transport's subscribers of the channel; who is in each presence
//! channel (`members.rs`). The browser side, `GET /app/<key>`, is in
//! `src/http/public/pusher_ws/`. Pusher's webhooks (`webhooks.rs`) go
//! through the hooks' outbox.

pub mod api;
pub mod config;
pub mod members;
pub mod signing;
pub mod webhooks;
