//! The hub: what every transport calls (`/poll`, `/events`, Bayeux, the
//! broker bridges and ingest alike), over whichever backend the store
//! configured.
//!
//! It knows nothing of HTTP and nothing of a mailbox's rules: ingest hands
//! it validated [`Command`]s ([`Hub::apply`]); the public face asks it to
//! open a poll and wait on it (`poll.rs`). The hub holds one
//! [`AnyBackend`] (see [`crate::backend`]) and adds only what is the same
//! for every store: the wait for a mailbox to have something to say (one
//! loop for every backend), the reply's encoding, this node's counters and
//! the shutdown.
//!
//! [`Command`]: crate::protocol::Command

use std::sync::Arc;

use crate::backend::local::LocalBackend;
use crate::backend::redis::RedisBackend;
use crate::backend::{AnyBackend, Common, Counters};
use crate::protocol::Command;
use crate::store::Opened;

mod poll;
mod stats;

pub use crate::backend::{
    ApplyError, ChannelDetail, ChannelSummary, HubLimits, PollError, PollRequest, Presence, Stats,
    StatsScope, Waited,
};
pub use poll::{OpenPoll, PollReply};

/// Cheap-clone handle to the hub.
#[derive(Clone)]
pub struct Hub(Arc<Shared>);

struct Shared {
    common: Arc<Common>,
    backend: AnyBackend,
}

impl Hub {
    /// An empty hub keeping mailboxes in memory only.
    pub fn new(store: Arc<dyn crate::store::Store>, limits: HubLimits) -> Self {
        Self::open(
            Opened::Local {
                logs: store,
                journal: None,
                recovered: Vec::new(),
            },
            limits,
        )
    }

    /// A hub on an opened store, holding what the store recovered. With
    /// Redis, starts its connection on the current runtime.
    pub fn open(opened: Opened, limits: HubLimits) -> Self {
        Self::open_with_hooks(opened, limits, None)
    }

    /// [`Hub::open`], telling `hooks` what clients do and asking it first.
    pub fn open_with_hooks(
        opened: Opened,
        limits: HubLimits,
        hooks: Option<Arc<crate::hooks::Hooks>>,
    ) -> Self {
        let common = Common::new(limits, hooks);
        let backend = match opened {
            Opened::Local {
                logs,
                journal,
                recovered,
            } => AnyBackend::Local(LocalBackend::new(common.clone(), logs, journal, recovered)),
            Opened::Redis(settings) => {
                AnyBackend::Redis(RedisBackend::start(common.clone(), *settings))
            }
        };
        Hub(Arc::new(Shared { common, backend }))
    }

    /// Resolves once what the store wrote while opening is durable
    /// ([`crate::backend::seam::Backend::settled`]); serve nothing before.
    pub async fn settled(&self) {
        self.0.backend.settled().await
    }

    /// Starts the backend's own tasks (idle eviction, presence sweeps,
    /// reloading after a failed write) on the current runtime, until
    /// `shutdown`.
    pub fn spawn_tasks(&self, shutdown: tokio_util::sync::CancellationToken) {
        self.0.backend.spawn_tasks(shutdown);
    }

    /// Applies a validated batch: all of it, or nothing when a limit would
    /// be passed or the store cannot take it. Returns how many commands
    /// were applied; with a durable store, once they are written.
    pub async fn apply(&self, commands: Vec<Command>) -> Result<usize, ApplyError> {
        let accepted = commands.len();
        let messages = commands
            .iter()
            .filter(|c| matches!(c, Command::Message { .. }))
            .count();
        self.0.backend.apply(commands).await?;
        Counters::add(&self.0.common.counters.messages_in, messages as u64);
        Ok(accepted)
    }

    /// Starts shutting down: every open poll answers at once (empty, unless
    /// it has messages) and [`Hub::is_shutting_down`] turns true for the HTTP
    /// faces to refuse new work.
    pub fn begin_shutdown(&self) {
        self.0.common.begin_shutdown();
        self.0.backend.wake_all();
    }

    /// Whether [`Hub::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.0.common.is_shutting_down()
    }

    /// The limits in force.
    pub fn limits(&self) -> &HubLimits {
        &self.0.common.limits
    }

    /// The hooks, when configured.
    pub fn hooks(&self) -> Option<&Arc<crate::hooks::Hooks>> {
        self.0.common.hooks.as_ref()
    }

    /// Whether the store answers (`/health`): always for local stores.
    pub fn storage_healthy(&self) -> bool {
        self.0.backend.healthy()
    }

    /// Seconds from submitting a journal unit to its commit (the `disk`
    /// store): a handle on the histogram, for `GET /metrics`.
    pub fn commit_seconds(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.0.common.commit_seconds.clone()
    }

    /// The local backend, when the store is `memory` or `disk` (for
    /// benchmarks that time its sweeps).
    pub fn local_backend(&self) -> Option<&LocalBackend> {
        match &self.0.backend {
            AnyBackend::Local(local) => Some(local),
            AnyBackend::Redis(_) => None,
        }
    }

    /// The local backend, for tests that look inside it.
    #[cfg(test)]
    pub(crate) fn local(&self) -> &LocalBackend {
        self.local_backend()
            .expect("a test of the local backend runs on it")
    }
}
