//! The `cometbox` binary: load settings, start logging, bind, run until a
//! signal.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cometbox::config::{self, Settings};
use cometbox::listener::Listener;
use cometbox::{telemetry, Listeners};
use tokio_util::sync::CancellationToken;

/// A server-push relay: browsers hold long-polls on the public port, backends
/// post XML messages to the ingest port.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The TOML configuration file (defaults apply without one).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Once listening, write the bound addresses as JSON to this file.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Check the configuration, print what would listen where, and exit.
    #[arg(long)]
    check_config: bool,
}

/// With the `redis` store, whether Redis answers now (`--check-config`
/// reports it and succeeds either way: the server waits for Redis itself).
fn redis_answers(settings: &Settings) -> Option<String> {
    if settings.store.kind != cometbox::store::StoreKind::Redis {
        return None;
    }
    let redis = settings.store.redis_settings().ok()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    Some(match runtime.block_on(redis.ping()) {
        Ok(()) => "redis: answers".into(),
        Err(e) => format!("redis: does not answer now ({e}); the server would start and answer 503 storage-unavailable until it does"),
    })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let settings = match config::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("cometbox: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("configuration OK");
        for line in settings.summary() {
            println!("  {line}");
        }
        if let Some(answer) = redis_answers(&settings) {
            println!("  {answer}");
        }
        return ExitCode::SUCCESS;
    }
    if let Err(e) = telemetry::init(&settings.log) {
        eprintln!("cometbox: logging: {e}");
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match runtime.block_on(serve(settings, args.ready_file.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings, ready_file: Option<&Path>) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "cometbox starting");
    raise_open_file_limit();
    let (store, hooks) = open_storage(&settings)?;
    let listeners = bind(&settings).await?;
    log_what_serves(&settings, &listeners);
    // Before the ready file and READY=1: whoever signals after those finds
    // the handlers in place (a SIGHUP would otherwise kill the process).
    let signals = Signals::install().context("cannot install signal handlers")?;
    if let Some(path) = ready_file {
        write_ready_file(path, &listeners)
            .with_context(|| format!("cannot write --ready-file {}", path.display()))?;
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(signals.cancel_on_stop(shutdown.clone()));
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    cometbox::run(settings, store, hooks, listeners, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

/// The store (recovering what a disk store holds) and the hooks' outbox.
fn open_storage(
    settings: &Settings,
) -> anyhow::Result<(cometbox::store::Opened, cometbox::Outboxes)> {
    if settings.store.kind == cometbox::store::StoreKind::Disk {
        tracing::info!(
            path = %settings.store.path.display(),
            fsync = ?settings.store.fsync,
            "opening the disk store (recovering what it holds)"
        );
    }
    let store = cometbox::open_store(settings).context("cannot open the store (store.path)")?;
    let hooks = cometbox::open_hooks(settings)
        .context("cannot open the hooks' or Pusher webhooks' outbox (store.path)")?;
    Ok((store, hooks))
}

/// Binds both listeners; an error names the setting.
async fn bind(settings: &Settings) -> anyhow::Result<Listeners> {
    let public = Listener::bind(&settings.public.listen, settings.public.socket_mode)
        .await
        .with_context(|| {
            format!(
                "cannot listen on public.listen = {}",
                settings.public.listen
            )
        })?;
    let ingest = Listener::bind(&settings.ingest.listen, settings.ingest.socket_mode)
        .await
        .with_context(|| {
            format!(
                "cannot listen on ingest.listen = {}",
                settings.ingest.listen
            )
        })?;
    Ok(Listeners { public, ingest })
}

/// Logs where each listener is, what the configuration sets up and the
/// limits in force.
fn log_what_serves(settings: &Settings, listeners: &Listeners) {
    let bayeux = match settings.bayeux.enabled {
        true => format!(", Bayeux at {}", settings.bayeux.path),
        false => String::new(),
    };
    tracing::info!(
        "public listener (browsers: GET /poll, /events, /cometbox.js{bayeux}) on {}",
        listeners.public.url()
    );
    tracing::info!(
        "ingest listener (backends: POST /, /token, /stats) on {}",
        listeners.ingest.url()
    );
    for line in settings.summary().into_iter().skip(2) {
        tracing::info!("{line}");
    }
    log_limits(settings);
}

/// The limits in force, and the connection caps they come to.
fn log_limits(settings: &Settings) {
    let l = &settings.limits;
    tracing::info!(
        store = ?settings.store.kind,
        poll_timeout = ?l.poll_timeout,
        max_poll_timeout = ?l.max_poll_timeout,
        client_idle_timeout = ?l.client_idle_timeout,
        message_ttl = ?l.message_ttl,
        mailbox_max_messages = l.mailbox_max_messages,
        max_polls_per_client = l.max_polls_per_client,
        max_clients = l.max_clients,
        max_body_bytes = l.max_body_bytes,
        max_payload_bytes = l.max_payload_bytes,
        max_header_bytes = l.max_header_bytes,
        send_timeout = ?l.send_timeout,
        "limits in force"
    );
    tracing::info!(
        "up to {} open public connections (held polls included), and {} ingest connections apart",
        cometbox::max_connections(settings),
        settings.limits.max_ingest_connections
    );
}

/// Raises the soft open-file limit to the hard one: every held poll is a
/// file descriptor, and the usual soft default (1024) would cap the server
/// at about a thousand browsers.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::info!(
            open_files = limit,
            "open-file limit raised to {limit}: each held poll takes one file descriptor"
        ),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
}

fn write_ready_file(path: &Path, listeners: &Listeners) -> std::io::Result<()> {
    let body = serde_json::json!({ "public": listeners.public.local_addr(), "ingest": listeners.ingest.local_addr(), "pid": std::process::id() });
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body.to_string())?;
    std::fs::rename(&tmp, path)
}

/// The signals the server acts on. SIGTERM and SIGINT stop it gracefully.
/// SIGHUP, which conventionally means "reload", is caught so that its
/// default action (terminate, without answering open polls) never happens:
/// the configuration is read at start only, so it is logged and otherwise
/// ignored (deploy/README.md; the unit has no `ExecReload`).
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT, then starts the graceful stop.
    async fn cancel_on_stop(mut self, shutdown: CancellationToken) {
        let name = loop {
            tokio::select! {
                _ = self.term.recv() => break "SIGTERM",
                _ = self.int.recv() => break "SIGINT",
                _ = self.hup.recv() => tracing::warn!(
                    "SIGHUP: configuration is read at start only; restart to apply (systemctl restart cometbox)"
                ),
            }
        };
        tracing::info!(
            signal = name,
            "shutting down: answering open polls, finishing in-flight requests"
        );
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        shutdown.cancel();
    }
}

/// jemalloc keeps allocator metadata out of line, so the 8 KiB buffers hyper
/// reserves per connection cost no memory until written: a held poll costs
/// about 5 KB of RSS instead of 13 KB with the system allocator
/// (docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
