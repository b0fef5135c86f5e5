//! End-to-end tests: one integration binary. Most start the server
//! in-process on ephemeral loopback ports through `cometbox::run`; `binary`
//! starts the real executable for configuration, signals and start-up.

mod bayeux;
#[path = "../shared/bayeux_client.rs"]
mod bayeux_client;
mod binary;
mod body_budget;
mod cors;
mod disk;
mod events;
mod helpers;
mod hooks;
mod hostile;
mod ingest;
mod metrics;
mod nosniff;
mod poll;
#[path = "../shared/ports.rs"]
mod ports;
mod public_http;
mod pusher;
mod pusher_webhooks;
mod pusher_ws;
mod scale;
mod slow_clients;
mod strict_http;
mod tokens;
mod ws;
