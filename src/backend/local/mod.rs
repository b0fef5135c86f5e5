//! The local backend: every client's mailbox in this process's memory, for
//! the `memory` and `disk` stores.
//!
//! Clients live in a sharded map with one lock per client inside, so no
//! lock is global: a message to one client touches one shard briefly and
//! that client's own lock, and wakes only that client's polls. With the
//! `disk` store, a journal wraps every change (`durable.rs`): the change is
//! made and recorded in one order, and what it makes visible waits until
//! the journal wrote it. Without a journal the same code records nothing.
//!
//! - `client.rs`: one client's state and its lock;
//! - `channels.rs`: channel name -> members;
//! - `apply.rs`: a batch, all or nothing, and its deliveries;
//! - `open.rs`: a poll's open, look and close;
//! - `membership.rs`: subscribing and unsubscribing, by backends and by
//!   browsers' grants, and what each may undo of the other;
//! - `reaper.rs`: idle eviction off the async workers; `stats.rs`: figures
//!   and presence;
//! - `hooked.rs`: backend hooks (asking, and presence notifications);
//! - `durable.rs`: the journal's order, recovery at start-up, reloading
//!   after a failed write.

use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::common::Common;
use crate::backend::outcomes::{
    ApplyError, ChannelDetail, ChannelSummary, Figures, PollError, PollRequest, Presence, Waited,
};
use crate::backend::seam::Backend;
use crate::protocol::{ChannelName, ClientId, Command, Cursor};
use crate::store::journal::{Change, Commit, Journal, RecoveredClient, StoreError};
use crate::store::Store;

mod apply;
mod channels;
mod client;
mod durable;
mod hooked;
mod membership;
mod open;
mod reaper;
mod stats;

pub use open::LocalPoll;

use channels::Channels;
use client::Client;
use durable::Recorder;

/// Cheap-clone handle to the local backend.
#[derive(Clone)]
pub struct LocalBackend(Arc<Local>);

struct Local {
    common: Arc<Common>,
    /// Every client with a mailbox. Sharded (DashMap) so that lookups from
    /// many cores rarely contend; values are `Arc` so a poll can hold its
    /// client without holding a shard lock.
    clients: DashMap<ClientId, Arc<Client>>,
    channels: Channels,
    store: Arc<dyn Store>,
    /// Where changes are written before they are acknowledged (the `disk`
    /// store); `None` for `memory`, whose paths skip all of it.
    journal: Option<Arc<dyn Journal>>,
    /// Held while a change is made and submitted to the journal, so that
    /// the journal's order is the order in which changes were made (and
    /// replaying it rebuilds the same ids). Taken only with a journal, and
    /// always before any other lock of the backend.
    journal_order: std::sync::Mutex<()>,
    /// With hooks: clients whose `connect` is being asked, so that tabs
    /// opening together ask it once (`hooked.rs`).
    connecting: DashMap<ClientId, Arc<tokio::sync::Mutex<()>>>,
    /// Wakes the task that reloads the state from the journal after a
    /// failed write.
    reload: Notify,
    /// With a journal: the commit of the idle clocks recorded at start-up
    /// ([`LocalBackend::record_restored_clocks`]), until
    /// [`LocalBackend::settled`] has waited for it.
    settling: std::sync::Mutex<Option<Commit>>,
}

impl LocalBackend {
    /// A backend on `store`'s logs, wrapped by `journal` when there is one,
    /// holding what the journal recovered.
    pub fn new(
        common: Arc<Common>,
        store: Arc<dyn Store>,
        journal: Option<Arc<dyn Journal>>,
        recovered: Vec<RecoveredClient>,
    ) -> Self {
        let backend = LocalBackend(Arc::new(Local {
            common,
            clients: DashMap::new(),
            channels: Channels::default(),
            store,
            journal,
            journal_order: std::sync::Mutex::new(()),
            connecting: DashMap::new(),
            reload: Notify::new(),
            settling: std::sync::Mutex::new(None),
        }));
        backend.restore(recovered);
        let recorded = backend.record_restored_clocks();
        *(backend.0.settling.lock()).unwrap_or_else(|poisoned| poisoned.into_inner()) = recorded;
        backend
    }

    /// The client's entry, created if missing (no `max_clients` check: the
    /// caller made it); a creation is recorded.
    fn client_or_create(&self, id: &ClientId, now: Instant, record: &mut Recorder) -> Arc<Client> {
        if let Some(client) = self.0.clients.get(id) {
            return client.clone();
        }
        let mut created = false;
        let client = self
            .0
            .clients
            .entry(id.clone())
            .or_insert_with(|| {
                created = true;
                Client::new(id.clone(), self.0.store.open(id), now)
            })
            .clone();
        if created {
            record.change(|| Change::Created {
                client: id.clone(),
                epoch: client.epoch,
            });
        }
        client
    }
}

impl Backend for LocalBackend {
    type Lease = LocalPoll;

    async fn apply(&self, commands: Vec<Command>) -> Result<(), ApplyError> {
        self.apply_batch(commands).await
    }

    async fn open(&self, request: &PollRequest) -> Result<LocalPoll, PollError> {
        self.open_for(request).await
    }

    fn head_at_open(&self, lease: &LocalPoll) -> Option<Cursor> {
        Some(lease.client.lock().log.head())
    }

    fn waker<'a>(&self, lease: &'a LocalPoll) -> &'a Notify {
        &lease.client.wake
    }

    async fn look(&self, lease: &LocalPoll, since: Option<Cursor>) -> Waited {
        self.look_now(lease, since)
    }

    async fn unread_from(&self, lease: &LocalPoll) -> Result<Cursor, StoreError> {
        Ok(lease.client.lock().log.unread_from())
    }

    async fn figures(&self) -> Result<Figures, StoreError> {
        // A walk over every client: off the async workers.
        let backend = self.clone();
        Ok(tokio::task::spawn_blocking(move || backend.figures_now())
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())))
    }

    async fn presence(&self, id: &ClientId) -> Result<Option<Presence>, StoreError> {
        Ok(self.presence_now(id))
    }

    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        Ok(self.channels_now())
    }

    async fn channel(&self, name: &ChannelName) -> Result<Option<ChannelDetail>, StoreError> {
        Ok(self.channel_now(name))
    }

    async fn set_profile(
        &self,
        _channel: &ChannelName,
        _client: &ClientId,
        _profile: Option<&str>,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    async fn profiles(
        &self,
        _channel: &ChannelName,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        Ok(None)
    }

    fn healthy(&self) -> bool {
        true
    }

    fn wake_all(&self) {
        self.all_offline();
        for client in self.0.clients.iter() {
            client.wake.notify_waiters();
        }
    }

    async fn settled(&self) {
        LocalBackend::settled(self).await
    }

    fn spawn_tasks(&self, shutdown: CancellationToken) {
        reaper::spawn_reaper(self.clone(), shutdown.clone());
        durable::spawn_reloader(self.clone(), shutdown);
    }
}

#[cfg(test)]
mod clock_tests;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;
