//! The backend seam: what the hub needs of a store, and the two backends
//! that provide it.
//!
//! The hub ([`crate::hub`]) is what transports call; it owns nothing of a
//! mailbox. Everything a mailbox rule touches (ids and cursors, `reset`,
//! retention, the reply's byte budget, batches all-or-nothing, channel and
//! wildcard fan-out, grants against backend unsubscribes, eviction,
//! presence) lives in one [`Backend`]:
//!
//! - [`local`]: mailboxes in this process's memory, one lock per client;
//!   with the `disk` store its journal wraps every change (written before
//!   it is acknowledged or seen, recovered at start-up). The `memory` and
//!   `disk` stores are this backend with and without the journal.
//! - [`redis`]: mailboxes in Redis (one server or a Cluster), changed by
//!   Lua scripts one slot group at a time, so that several nodes act as
//!   one server; this node keeps only its own waiting polls.
//!
//! The conformance suite (`tests/cluster/conformance.rs`) holds both, on
//! all four stores, to the same behaviour.
//!
//! The trait is in `seam.rs`, the vocabulary both speak in `outcomes.rs`
//! and `common.rs` (leaves: the backends import them, never this file).
//! [`AnyBackend`] is the one place that dispatches between them (an enum,
//! not a trait object, so a waiting poll's future holds no boxed future of
//! a backend it does not use).

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ChannelName, ClientId, Command, Cursor};
use crate::store::journal::StoreError;

pub mod common;
pub mod local;
pub mod outcomes;
pub mod redis;
pub mod seam;

pub use common::{Common, Counters, HubLimits};
pub use outcomes::{
    ApplyError, ChannelDetail, ChannelSummary, Figures, PollError, PollRequest, Presence, Stats,
    StatsScope, Waited,
};
pub use seam::Backend;

/// The backend a hub runs on.
pub enum AnyBackend {
    /// `memory` or `disk`.
    Local(local::LocalBackend),
    /// `redis`.
    Redis(redis::RedisBackend),
}

/// A lease of either backend: what [`crate::hub::OpenPoll`] holds.
pub enum AnyLease {
    /// Of [`AnyBackend::Local`].
    Local(local::LocalPoll),
    /// Of [`AnyBackend::Redis`]; boxed, it carries the start script's look.
    Redis(Box<redis::RemotePoll>),
}

/// Pairs the hub's backend with a lease it gave out; a lease only ever
/// comes back to the backend that opened it (one hub, one backend).
macro_rules! with_lease {
    ($backend:expr, $lease:expr, |$b:ident, $l:ident| $body:expr) => {
        match ($backend, $lease) {
            (AnyBackend::Local($b), AnyLease::Local($l)) => $body,
            (AnyBackend::Redis($b), AnyLease::Redis($l)) => $body,
            _ => unreachable!("a lease is given back to the backend that opened it"),
        }
    };
}

impl AnyBackend {
    /// [`Backend::apply`].
    pub async fn apply(&self, commands: Vec<Command>) -> Result<(), ApplyError> {
        match self {
            AnyBackend::Local(b) => b.apply(commands).await,
            // Boxed here and below: Redis calls' state stays out of the
            // futures of local requests.
            AnyBackend::Redis(b) => Box::pin(b.apply(commands)).await,
        }
    }

    /// [`Backend::open`].
    pub async fn open(&self, request: &PollRequest) -> Result<AnyLease, PollError> {
        Ok(match self {
            AnyBackend::Local(b) => AnyLease::Local(b.open(request).await?),
            AnyBackend::Redis(b) => AnyLease::Redis(Box::new(Box::pin(b.open(request)).await?)),
        })
    }

    /// [`Backend::head_at_open`].
    pub fn head_at_open(&self, lease: &AnyLease) -> Option<Cursor> {
        with_lease!(self, lease, |b, l| b.head_at_open(l))
    }

    /// [`Backend::waker`].
    pub fn waker<'a>(&self, lease: &'a AnyLease) -> &'a Notify {
        with_lease!(self, lease, |b, l| b.waker(l))
    }

    /// [`Backend::look`].
    pub async fn look(&self, lease: &AnyLease, since: Option<Cursor>) -> Waited {
        match (self, lease) {
            (AnyBackend::Local(b), AnyLease::Local(l)) => b.look(l, since).await,
            (AnyBackend::Redis(b), AnyLease::Redis(l)) => Box::pin(b.look(l, since)).await,
            _ => unreachable!("a lease is given back to the backend that opened it"),
        }
    }

    /// [`Backend::unread_from`].
    pub async fn unread_from(&self, lease: &AnyLease) -> Result<Cursor, StoreError> {
        match (self, lease) {
            (AnyBackend::Local(b), AnyLease::Local(l)) => b.unread_from(l).await,
            (AnyBackend::Redis(b), AnyLease::Redis(l)) => Box::pin(b.unread_from(l)).await,
            _ => unreachable!("a lease is given back to the backend that opened it"),
        }
    }

    /// [`Backend::figures`].
    pub async fn figures(&self) -> Result<Figures, StoreError> {
        match self {
            AnyBackend::Local(b) => b.figures().await,
            AnyBackend::Redis(b) => b.figures().await,
        }
    }

    /// [`Backend::presence`].
    pub async fn presence(&self, id: &ClientId) -> Result<Option<Presence>, StoreError> {
        match self {
            AnyBackend::Local(b) => b.presence(id).await,
            AnyBackend::Redis(b) => b.presence(id).await,
        }
    }

    /// [`Backend::channels`].
    pub async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        match self {
            AnyBackend::Local(b) => b.channels().await,
            AnyBackend::Redis(b) => b.channels().await,
        }
    }

    /// [`Backend::channel`].
    pub async fn channel(&self, name: &ChannelName) -> Result<Option<ChannelDetail>, StoreError> {
        match self {
            AnyBackend::Local(b) => b.channel(name).await,
            AnyBackend::Redis(b) => b.channel(name).await,
        }
    }

    /// [`Backend::set_profile`].
    pub async fn set_profile(
        &self,
        channel: &ChannelName,
        client: &ClientId,
        profile: Option<&str>,
    ) -> Result<(), StoreError> {
        match self {
            AnyBackend::Local(b) => b.set_profile(channel, client, profile).await,
            AnyBackend::Redis(b) => Box::pin(b.set_profile(channel, client, profile)).await,
        }
    }

    /// [`Backend::profiles`].
    pub async fn profiles(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        match self {
            AnyBackend::Local(b) => b.profiles(channel).await,
            AnyBackend::Redis(b) => Box::pin(b.profiles(channel)).await,
        }
    }

    /// [`Backend::healthy`].
    pub fn healthy(&self) -> bool {
        match self {
            AnyBackend::Local(b) => b.healthy(),
            AnyBackend::Redis(b) => b.healthy(),
        }
    }

    /// [`Backend::wake_all`].
    pub fn wake_all(&self) {
        match self {
            AnyBackend::Local(b) => b.wake_all(),
            AnyBackend::Redis(b) => b.wake_all(),
        }
    }

    /// [`Backend::settled`].
    pub async fn settled(&self) {
        match self {
            AnyBackend::Local(b) => Backend::settled(b).await,
            AnyBackend::Redis(b) => Backend::settled(b).await,
        }
    }

    /// [`Backend::spawn_tasks`].
    pub fn spawn_tasks(&self, shutdown: CancellationToken) {
        match self {
            AnyBackend::Local(b) => b.spawn_tasks(shutdown),
            AnyBackend::Redis(b) => b.spawn_tasks(shutdown),
        }
    }
}
