//! The seam itself: what the hub needs of a store (see [`super`] for the
//! two backends that provide it).

use std::future::Future;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::outcomes::{
    ApplyError, ChannelDetail, ChannelSummary, Figures, PollError, PollRequest, Presence, Waited,
};
use crate::protocol::{ChannelName, ClientId, Command, Cursor};
use crate::store::journal::StoreError;

/// What the hub needs of a store.
pub trait Backend: Send + Sync {
    /// An open poll (or stream): counted as open, keeping its client online,
    /// until dropped.
    type Lease: Send + Sync;

    /// Applies a validated batch: all of it, or nothing when a limit would
    /// be passed or the store cannot take it. Returns once it is as durable
    /// as the store promises, and visible to polls.
    fn apply(&self, commands: Vec<Command>) -> impl Future<Output = Result<(), ApplyError>> + Send;

    /// Opens a poll: finds or creates the mailbox, counts the poll, joins
    /// the request's channels (asking hooks first when configured).
    fn open(
        &self,
        request: &PollRequest,
    ) -> impl Future<Output = Result<Self::Lease, PollError>> + Send;

    /// The mailbox's head when the poll opened (where `since=now` starts),
    /// if the backend knows it.
    fn head_at_open(&self, lease: &Self::Lease) -> Option<Cursor>;

    /// Notified when the lease's mailbox may have changed (a message, a
    /// disconnect, shutdown). Enabled before [`Backend::look`], so nothing
    /// between a look and the wait is missed.
    fn waker<'a>(&self, lease: &'a Self::Lease) -> &'a Notify;

    /// One look at the mailbox after `since`, within the reply byte budget:
    /// [`Waited::Nothing`] (with the head to resume from) when there is
    /// nothing to say yet.
    fn look(
        &self,
        lease: &Self::Lease,
        since: Option<Cursor>,
    ) -> impl Future<Output = Waited> + Send;

    /// Where a new reader of the mailbox (a Bayeux session) starts: after
    /// the last message any reply carried.
    fn unread_from(
        &self,
        lease: &Self::Lease,
    ) -> impl Future<Output = Result<Cursor, StoreError>> + Send;

    /// The store's figures for `/stats`.
    fn figures(&self) -> impl Future<Output = Result<Figures, StoreError>> + Send;

    /// One client's presence (`/clients/<id>`), `None` without a mailbox.
    fn presence(
        &self,
        id: &ClientId,
    ) -> impl Future<Output = Result<Option<Presence>, StoreError>> + Send;

    /// Every channel with members, and how many (`GET /channels`), sorted
    /// by name.
    fn channels(&self) -> impl Future<Output = Result<Vec<ChannelSummary>, StoreError>> + Send;

    /// One channel's members and how many are online (`GET
    /// /channels/<name>`), `None` without members.
    fn channel(
        &self,
        name: &ChannelName,
    ) -> impl Future<Output = Result<Option<ChannelDetail>, StoreError>> + Send;

    /// Records (`Some`) or forgets (`None`) whom `client` signed in as in
    /// `channel`: a Pusher presence profile (`src/pusher/members.rs`),
    /// shared so that every node lists users held by the others. Nothing
    /// to do where one node holds every socket (the local backend).
    fn set_profile(
        &self,
        channel: &ChannelName,
        client: &ClientId,
        profile: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The profiles recorded in `channel`, `(client, profile)`; `None`
    /// where the backend keeps none (the local one: this node's registry
    /// is the whole list).
    fn profiles(
        &self,
        channel: &ChannelName,
    ) -> impl Future<Output = Result<Option<Vec<(String, String)>>, StoreError>> + Send;

    /// Whether the store answers (`/health`).
    fn healthy(&self) -> bool;

    /// Shutdown began ([`super::Common::begin_shutdown`]): wake every open poll so
    /// it answers, and let presence go offline.
    fn wake_all(&self);

    /// Resolves once what the backend wrote while opening (the disk
    /// store's recovered idle clocks) is durable; the server serves
    /// nothing before.
    fn settled(&self) -> impl Future<Output = ()> + Send;

    /// Starts the backend's own tasks (idle eviction, presence sweeps,
    /// reloading after a failed write) until `shutdown`.
    fn spawn_tasks(&self, shutdown: CancellationToken);
}
