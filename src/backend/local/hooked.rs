//! The hub's side of backend hooks: asking `connect` and `subscribe` before
//! a poll changes anything, and queueing `online`, `offline`, `subscribed`
//! and `unsubscribed` as presence and memberships change.
//!
//! Presence (`ClientState::presence`): a client goes online when a poll
//! opens while it is offline (after `connect` allowed it); it goes offline
//! when no poll has been open for `offline_after` (the reaper's sweep), or
//! when it leaves the hub (`<disconnect>`, idle eviction), or at shutdown.
//! Re-polls in between change nothing, so presence does not flap between
//! polls. Every notification is queued under the client's own lock, so
//! the queue's order per client is the order of the changes; every `online`
//! gets exactly one `offline`. Queueing never touches the disk (with the
//! `disk` store a writer thread does, `hooks/journal.rs`), so the lock is
//! held only for the look and the hand-over.
//!
//! The re-poll of an online client holding its channels costs one look
//! under its own lock and asks nothing.

use std::sync::Arc;
use std::time::Instant;

use super::client::{Client, ClientState, Presence};
use super::open::LocalPoll;
use super::LocalBackend;
use crate::backend::outcomes::{PollError, PollRequest};
use crate::hooks::{EventType, Hooks};
use crate::protocol::{ChannelName, ClientId};

/// Holds a client's turn to ask `connect`; the map entry goes with the
/// last holder or waiter.
struct ConnectTurn {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    backend: LocalBackend,
    id: ClientId,
}

impl Drop for ConnectTurn {
    fn drop(&mut self) {
        drop(self.guard.take());
        // Only the map's own reference left: nobody waits.
        self.backend
            .0
            .connecting
            .remove_if(&self.id, |_, lock| Arc::strong_count(lock) == 1);
    }
}

impl LocalBackend {
    /// [`LocalBackend::open_poll`] and the poll's `channels=`, with hooks: asks
    /// `connect` when the client is offline and `subscribe` for each channel
    /// it does not hold yet, and applies nothing unless all are allowed.
    pub(super) async fn open_hooked_poll(
        &self,
        hooks: &Hooks,
        request: &PollRequest,
    ) -> Result<LocalPoll, PollError> {
        let id = request.client.as_str();
        loop {
            let (mut online, mut new) =
                self.before_poll(&request.client, &request.subscribe, request.issued_at);
            // One `connect` at a time per client: a second tab opening at
            // the same moment waits for the first, then finds it online.
            let _turn = match online {
                true => None,
                false => {
                    let turn = self.connect_turn(&request.client).await;
                    (online, new) =
                        self.before_poll(&request.client, &request.subscribe, request.issued_at);
                    Some(turn)
                }
            };
            if !online {
                hooks
                    .ask_connect(id, request.connect_ext.as_deref())
                    .await
                    .map_err(PollError::Denied)?;
            }
            if !new.is_empty() {
                let asks = new
                    .iter()
                    .map(|c| hooks.ask(EventType::Subscribe, id, Some(c.as_str())));
                for answer in futures_util::future::join_all(asks).await {
                    answer.map_err(PollError::Denied)?;
                }
            }
            let open = self.open_poll(&request.client).await?;
            if !self.go_online(hooks, &open.client, !online) {
                // It went offline between the look and now, and `connect`
                // was not asked: ask it.
                continue;
            }
            if !new.is_empty() {
                // Only what was asked about; a channel that turned up since
                // is asked by the next poll.
                self.subscribe_for_poll(&open.client, &new, request.issued_at)?;
            }
            if !online || !new.is_empty() {
                // This poll queued notifications: answered once they are
                // in the outbox file (at once without one).
                hooks.written().await;
            }
            return Ok(open);
        }
    }

    /// Waits for this client's turn to ask `connect`.
    async fn connect_turn(&self, id: &ClientId) -> ConnectTurn {
        let lock = self.0.connecting.entry(id.clone()).or_default().clone();
        ConnectTurn {
            guard: Some(lock.lock_owned().await),
            backend: self.clone(),
            id: id.clone(),
        }
    }

    /// Whether the client is online, and the poll's channels it does not
    /// hold (deduplicated): all of them for a client not in the hub.
    fn before_poll(
        &self,
        id: &ClientId,
        channels: &[ChannelName],
        issued_at: Option<u64>,
    ) -> (bool, Vec<ChannelName>) {
        let client = self.0.clients.get(id).map(|c| c.clone());
        let state = client.as_ref().map(|c| c.lock());
        let online = state
            .as_ref()
            .is_some_and(|s| s.gone.is_none() && s.presence != Presence::Offline);
        let mut new: Vec<ChannelName> = channels
            .iter()
            .filter(|c| {
                state
                    .as_ref()
                    .is_none_or(|s| super::membership::joinable(s, c, issued_at))
            })
            .cloned()
            .collect();
        new.sort_unstable();
        new.dedup();
        (online, new)
    }

    /// Marks the client online (queueing `online`) if it is not; false when
    /// it is offline and `connect` was not asked for this poll. A poll
    /// opened after shutdown began does not bring its client online: the
    /// shutdown sweep may have passed it already.
    fn go_online(&self, hooks: &Hooks, client: &Client, connect_asked: bool) -> bool {
        let mut state = client.lock();
        if state.presence != Presence::Offline {
            return true;
        }
        if !connect_asked {
            return false;
        }
        if !self.0.common.is_shutting_down() {
            let announced = hooks.notify(EventType::Online, client.id.as_str(), None);
            state.presence = Presence::Online { announced };
        }
        true
    }

    /// Queues `subscribed` for a channel just joined (under its lock).
    pub(super) fn joined(&self, state: &mut ClientState, client: &Client, channel: &ChannelName) {
        let Some(hooks) = &self.0.common.hooks else {
            return;
        };
        if !hooks.notify(
            EventType::Subscribed,
            client.id.as_str(),
            Some(channel.as_str()),
        ) {
            state.unannounced.push(channel.clone());
        }
    }

    /// Queues `unsubscribed` for a channel just left (under its lock),
    /// unless its `subscribed` was dropped.
    pub(super) fn left(&self, state: &mut ClientState, client: &Client, channel: &ChannelName) {
        let Some(hooks) = &self.0.common.hooks else {
            return;
        };
        if let Some(at) = state.unannounced.iter().position(|c| c == channel) {
            state.unannounced.swap_remove(at);
            return;
        }
        hooks.notify(
            EventType::Unsubscribed,
            client.id.as_str(),
            Some(channel.as_str()),
        );
    }

    /// The client leaves the hub (`<disconnect>`, eviction), its `channels`
    /// taken from it already: `unsubscribed` for each, then `offline`.
    pub(super) fn leaving(
        &self,
        state: &mut ClientState,
        client: &Client,
        channels: &std::collections::BTreeSet<ChannelName>,
    ) {
        if self.0.common.hooks.is_none() {
            return;
        }
        for channel in channels {
            self.left(state, client, channel);
        }
        self.went_offline(state, client);
    }

    /// Queues `offline` if the client was online.
    pub(super) fn went_offline(&self, state: &mut ClientState, client: &Client) {
        let Some(hooks) = &self.0.common.hooks else {
            return;
        };
        if let Presence::Online { announced } = state.presence {
            state.presence = Presence::Offline;
            if announced {
                hooks.notify(EventType::Offline, client.id.as_str(), None);
            }
        }
    }

    /// The reaper's presence check: online, no poll open, none for
    /// `offline_after`.
    pub(super) fn offline_if_away(&self, state: &mut ClientState, client: &Client, now: Instant) {
        let Some(hooks) = &self.0.common.hooks else {
            return;
        };
        if state.presence != Presence::Offline
            && state.open_polls == 0
            && now.saturating_duration_since(state.last_active) >= hooks.offline_after()
        {
            self.went_offline(state, client);
        }
    }

    /// Shutdown: every online client goes offline.
    pub(super) fn all_offline(&self) {
        if self.0.common.hooks.is_none() {
            return;
        }
        let clients: Vec<Arc<Client>> = self.0.clients.iter().map(|c| c.value().clone()).collect();
        for client in clients {
            let mut state = client.lock();
            self.went_offline(&mut state, &client);
        }
    }
}
