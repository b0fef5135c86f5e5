//! cometbox: a server-push relay.
//!
//! ```text
//!  backends (PHP, Python, curl)                        browsers (client-js, CometD, Faye)
//!    │ POST / <batch>…</batch>                            ▲ GET /poll, GET /events (SSE),
//!    │ POST /token, GET /stats, /metrics                  │ POST /bayeux
//!    ▼                                                    │
//! ┌──────────────┐ protocol::ingest  ┌───────────────┐  ┌─┴────────────────────────┐
//! │ http::ingest │── XML→Commands ──▶│      hub      │◀─┤ transports: http::public │
//! │ (own runtime)│                   │ apply, open,  │  │ (poll, events), bayeux   │
//! └──────────────┘   ┌───────────┐   │ wait, stats   │  └──────────────────────────┘
//!   127.0.0.1:8481   │ bridge::* │──▶└───────┬───────┘   0.0.0.0:8480 (or nginx)
//!   / unix socket    │ STOMP,AMQP│           │ one backend (the seam)
//!                    │ NATS,Redis│   ┌───────┴──────────────────────────────┐
//!                    └───────────┘   ▼                                      ▼
//!                    backend::local: mailboxes,          backend::redis: the same
//!                    channels, polls in memory;          rules in Lua, slot group by
//!                    + store::disk journal wrapping      group (store::redis: scripts,
//!                    every change (the disk store)       typed calls); several nodes
//!                          │                                     │     act as one server
//!                          └── asks connect/subscribe, queues ───┘
//!                              online/offline/(un)subscribed ──▶ hooks ── signed POST ──▶ backend
//! ```
//!
//! - [`protocol`]: the wire contract as pure data (ids, cursors, the XML
//!   reader, the poll reply encoder).
//! - [`hub`]: what every transport calls: apply a batch, open a poll and
//!   wait on it, stats and presence; one wait loop and one reply encoder
//!   for every store.
//! - [`backend`]: the seam under the hub, where each mailbox rule lives
//!   once per backend: [`backend::local`] (memory, and disk with its
//!   journal) and [`backend::redis`] (one server or a Cluster).
//! - [`store`]: where things are kept: in-memory mailbox logs, the `disk`
//!   store's journal, snapshots and recovery, and Redis's connection,
//!   scripts and their typed calls.
//! - [`http`]: the two HTTP faces and the accept loop (ingest on a runtime
//!   of its own).
//! - [`metrics`]: `GET /metrics` on the ingest face, read from the hub's
//!   counters at scrape time.
//! - [`bridge`]: `[[bridge]]` brokers (STOMP, AMQP, NATS, Redis) whose
//!   messages are applied like ingest's, one supervised task each.
//! - [`hooks`]: `[hooks]`, signed requests to the backend: each backend awaits
//!   `connect`/`subscribe` before a poll changes anything and queues
//!   `online`/`offline`/`subscribed`/`unsubscribed` into the outbox, which
//!   a few workers deliver (and a `disk` store's directory keeps).
//! - [`bayeux`]: `[bayeux]`, the Bayeux endpoint on the public face: its
//!   sessions read clients' mailboxes like polls do.
//! - [`pusher`]: `[pusher]`, Pusher Channels compatibility: Pusher's
//!   signed HTTP API on the ingest face, turned into hub commands.
//! - [`config`], [`auth`], [`listener`], [`telemetry`]: start-up pieces.
//!
//! [`open_store`] recovers the configured store before anything listens;
//! [`open_hooks`] reads back pending hook notifications next to it;
//! [`run`] takes both, already-bound listeners and a shutdown token, so tests
//! bind port 0 and the binary binds what the configuration says.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub mod auth;
pub mod backend;
pub mod bayeux;
pub mod bridge;
pub mod config;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod pusher;
pub mod store;
pub mod telemetry;

use config::Settings;
use http::serve::{serve, ConnectionPolicy};
use http::AppState;
use hub::{Hub, HubLimits};
use listener::Listener;
use store::Retention;

/// The two bound listeners.
pub struct Listeners {
    /// Browsers.
    pub public: Listener,
    /// Backends.
    pub ingest: Listener,
}

/// File descriptors kept back from `max_connections` for the listeners,
/// logs and whatever else the process opens.
const RESERVED_FDS: usize = 64;

/// The public connection cap in force: the configured one, or what the
/// open-file limit allows once the ingest listener's own capacity is kept
/// back (so browsers can never take the descriptors backends need).
pub fn max_connections(settings: &Settings) -> usize {
    match settings.limits.max_connections {
        0 => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            (soft as usize)
                .saturating_sub(RESERVED_FDS + settings.limits.max_ingest_connections)
                .max(16)
        }
        n => n,
    }
}

/// Opens the configured store, recovering what a durable one holds (before
/// anything listens: a store that cannot be opened stops start-up, named).
/// Blocking.
pub fn open_store(settings: &Settings) -> Result<store::Opened, store::disk::OpenError> {
    let limits = &settings.limits;
    settings.store.open(
        Retention {
            max_messages: limits.mailbox_max_messages,
        },
        limits.max_channels_per_client,
    )
}

/// The outboxes of what cometbox tells backends: the hooks' notifications
/// (`[hooks]`) and Pusher's webhooks (`pusher.webhook_url`), each when
/// configured.
#[derive(Default)]
pub struct Outboxes {
    /// `[hooks]`.
    pub hooks: Option<Arc<hooks::Hooks>>,
    /// Pusher's webhooks.
    pub pusher_webhooks: Option<Arc<hooks::Hooks>>,
}

/// The configured hooks and Pusher webhooks, their pending notifications
/// read back from the `disk` store's directory (before anything listens).
/// Blocking.
pub fn open_hooks(settings: &Settings) -> Result<Outboxes, hooks::outbox::OutboxError> {
    let dir =
        (settings.store.kind == store::StoreKind::Disk).then_some(settings.store.path.as_path());
    let hooks = match settings.hooks.enabled() {
        true => Some(Arc::new(hooks::Hooks::new(&settings.hooks, dir)?)),
        false => None,
    };
    let pusher = &settings.pusher;
    let pusher_webhooks = match pusher.enabled && !pusher.webhook_url.is_empty() {
        true => Some(Arc::new(hooks::Hooks::pusher_webhooks(
            pusher,
            &settings.hooks.node_name(),
            dir,
        )?)),
        false => None,
    };
    Ok(Outboxes {
        hooks,
        pusher_webhooks,
    })
}

/// How long a stopping server waits for pending hook notifications to be
/// delivered (with a `disk` store, what is left is sent after the restart).
const HOOKS_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Builds what both faces share: the hub on the opened store (and its
/// reaper, on the current runtime), the token keys, and the connection and
/// ingest permits; starts the hooks' workers.
pub fn app_state(
    settings: Settings,
    store: store::Opened,
    outboxes: Outboxes,
    shutdown: CancellationToken,
) -> AppState {
    let Outboxes {
        hooks,
        pusher_webhooks,
    } = outboxes;
    if let Some(hooks) = &hooks {
        hooks.spawn_workers();
    }
    let pusher_webhooks =
        pusher_webhooks.map(|hooks| Arc::new(pusher::webhooks::Webhooks::start(hooks)));
    let limits = &settings.limits;
    let hub = start_hub(store, hub_limits(limits), hooks, &shutdown);
    let bayeux = settings.bayeux.enabled.then(|| {
        let bayeux = bayeux::Bayeux::new(
            hub.clone(),
            settings.bayeux.clone(),
            limits.max_payload_bytes,
        );
        bayeux.spawn_sweeper(shutdown.clone());
        bayeux
    });
    let max_connections = max_connections(&settings);
    let bridges = bridge::statuses(&compiled_bridges(&settings));
    let metrics = metrics::Metrics::new(&hub, bridges.clone());
    AppState::new(http::Shared {
        hub,
        metrics,
        tokens: auth::Tokens::new(&token_secret(&settings)),
        ingest_slots: Semaphore::new(limits.max_ingest_in_flight),
        connections: Arc::new(Semaphore::new(max_connections)),
        max_connections,
        ingest_connections: Arc::new(Semaphore::new(limits.max_ingest_connections)),
        bridges,
        bayeux,
        pusher_members: Default::default(),
        pusher_webhooks,
        settings,
        shutdown,
    })
}

/// The key tokens are signed with: `auth.secret`, or a random one (logged:
/// tokens then die with the process).
fn token_secret(settings: &Settings) -> Vec<u8> {
    if settings.auth.secret.is_empty() {
        tracing::warn!("auth.secret is not set: using a random secret, so tokens will not survive a restart (set auth.secret or COMETBOX_AUTH__SECRET)");
        rand::random::<[u8; 32]>().to_vec()
    } else {
        settings.auth.secret.as_bytes().to_vec()
    }
}

/// The hub's share of `[limits]`.
fn hub_limits(limits: &config::Limits) -> HubLimits {
    HubLimits {
        poll_timeout: limits.poll_timeout,
        max_poll_timeout: limits.max_poll_timeout,
        client_idle_timeout: limits.client_idle_timeout,
        message_ttl: limits.message_ttl,
        max_polls_per_client: limits.max_polls_per_client,
        max_clients: limits.max_clients,
        max_channels_per_client: limits.max_channels_per_client,
        max_reply_bytes: limits.max_reply_bytes,
    }
}

/// The hub on the opened store, its background tasks (the reaper) running
/// on the current runtime, and told when `shutdown` comes.
fn start_hub(
    store: store::Opened,
    limits: HubLimits,
    hooks: Option<Arc<hooks::Hooks>>,
    shutdown: &CancellationToken,
) -> Hub {
    let hub = Hub::open_with_hooks(store, limits, hooks);
    hub.spawn_tasks(shutdown.clone());
    tokio::spawn({
        let (hub, shutdown) = (hub.clone(), shutdown.clone());
        async move {
            shutdown.cancelled().await;
            hub.begin_shutdown();
        }
    });
    hub
}

/// The configured bridges, checked (`config::load` has refused any bad
/// one already; settings built by hand that hold one lose it, logged).
fn compiled_bridges(settings: &Settings) -> Vec<bridge::Bridge> {
    let max_payload = settings.limits.max_payload_bytes;
    (settings.bridge.iter().enumerate())
        .filter_map(|(i, b)| match b.compile(i, max_payload) {
            Ok(bridge) => Some(bridge),
            Err((key, message)) => {
                tracing::error!("bridge[{i}].{key}: {message}; this bridge does not run");
                None
            }
        })
        .collect()
}

/// Serves both listeners until `shutdown` is cancelled, then answers every
/// open poll, finishes in-flight requests and returns.
pub async fn run(
    settings: Settings,
    store: store::Opened,
    outboxes: Outboxes,
    listeners: Listeners,
    shutdown: CancellationToken,
) {
    let state = app_state(settings, store, outboxes, shutdown.clone());
    state.hub.settled().await;
    let public = tokio::spawn(http::public::serve(
        listeners.public,
        state.clone(),
        connection_policy(&state, "public", &state.connections),
        shutdown.clone(),
    ));
    let ingest = serve_ingest(listeners.ingest, &state, shutdown.clone());
    // Bridges run on the main runtime and stop with `shutdown`; whatever
    // they had not acknowledged is redelivered by the broker later.
    let mut bridges = bridge::spawn_all(
        compiled_bridges(&state.settings),
        &state.bridges,
        &state.hub,
        &shutdown,
    );
    let (public, _) = tokio::join!(public, ingest);
    while bridges.join_next().await.is_some() {}
    if let Err(e) = public {
        tracing::error!(error = %e, "the public accept loop failed");
    }
    let webhooks = state.pusher_webhooks.as_ref().map(|w| w.hooks());
    for hooks in state.hub.hooks().into_iter().chain(webhooks) {
        drain_hooks(hooks).await;
    }
}

/// A listener's connection policy. Each listener has its own permits:
/// whatever browsers do to the public port, backends find room on the
/// ingest port.
fn connection_policy(
    state: &AppState,
    name: &'static str,
    connections: &Arc<Semaphore>,
) -> ConnectionPolicy {
    let limits = &state.settings.limits;
    ConnectionPolicy {
        connections: connections.clone(),
        header_timeout: limits.request_timeout,
        max_header_bytes: limits.max_header_bytes,
        send_timeout: limits.send_timeout,
        name,
    }
}

/// Serves the ingest listener until `shutdown`, on a runtime (and a
/// thread) of its own: however busy browsers keep the main runtime's
/// workers, the operating system still schedules this one, so backends
/// and `/health` are answered promptly. The receiver resolves when it has
/// stopped.
fn serve_ingest(
    listener: Listener,
    state: &AppState,
    shutdown: CancellationToken,
) -> tokio::sync::oneshot::Receiver<()> {
    let router = http::ingest::router(state.clone());
    let policy = connection_policy(state, "ingest", &state.ingest_connections);
    on_own_runtime("cometbox-ingest", move || async move {
        match listener.into_current_runtime() {
            Ok(listener) => serve(listener, router, policy, shutdown).await,
            Err(e) => tracing::error!(error = %e, "cannot serve the ingest listener"),
        }
    })
}

/// Gives pending hook notifications [`HOOKS_DRAIN`] to go out, then stops
/// the hooks' workers. With a local store the shutdown queued an `offline`
/// for every online client; on Redis presence is cluster-wide and the
/// clients' polls lapse into `offline` from whichever node sweeps next.
async fn drain_hooks(hooks: &hooks::Hooks) {
    let left = hooks.drain(HOOKS_DRAIN).await;
    if left > 0 {
        tracing::warn!(
            pending = left,
            "stopping with hook notifications undelivered"
        );
    }
    hooks.stop();
}

/// Runs the future `make` returns on a new current-thread runtime, on a
/// thread of its own; the receiver resolves when it has ended.
///
/// One thread, not a multi-thread runtime: every accepted message wakes
/// polls on the main runtime, and each extra runtime thread on a small
/// machine is one more to be scheduled between a publish and its delivery.
/// Measured with `throughput 1000 8 --mode single` (docs/performance.md,
/// "Issue #24's ingest runtime, measured again"): latency p99 4.4-6.0 ms
/// against 7.6-66 ms with two workers, at about the same throughput. Backend
/// requests are short; a large batch holds the others (and `/health`) for
/// as long as it takes to parse and apply.
fn on_own_runtime<F>(
    name: &'static str,
    make: impl FnOnce() -> F + Send + 'static,
) -> tokio::sync::oneshot::Receiver<()>
where
    F: std::future::Future<Output = ()>,
{
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .thread_name(name)
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => runtime.block_on(make()),
                Err(e) => tracing::error!(error = %e, "cannot start the {name} runtime"),
            }
            let _ = done.send(());
        })
        .expect("a thread for the ingest runtime");
    ended
}
