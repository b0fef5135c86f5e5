//! The local backend's figures for `/stats` and one client's presence for
//! `/clients/<id>`.

use std::time::Instant;

use super::LocalBackend;
use crate::backend::common::Counters;
use crate::backend::outcomes::{ChannelDetail, ChannelSummary, Figures, Presence};
use crate::protocol::{ChannelName, ClientId};

impl LocalBackend {
    /// Walks every client (one short lock each, under shard read locks):
    /// `/stats` is rare, and this keeps shared counters off the per-message
    /// path. Blocking for a large hub (about 0.1 s a million clients).
    pub fn figures_now(&self) -> Figures {
        let now = Instant::now();
        let (mut open_polls, mut queued) = (0u64, 0u64);
        for entry in self.0.clients.iter() {
            let mut state = entry.value().lock();
            state.log.purge_expired(now);
            open_polls += u64::from(state.open_polls);
            queued += state.log.len() as u64;
        }
        let (channels, subscriptions) = self.0.channels.counts();
        Figures {
            clients: self.0.clients.len(),
            open_polls,
            queued_messages: queued,
            messages_lost: self.0.store.messages_lost(),
            clients_evicted: Counters::get(&self.0.common.counters.clients_evicted),
            channels,
            subscriptions,
            scope: None,
            hooks_dropped: None,
        }
    }

    /// One client's presence, or `None` if it has no mailbox.
    pub(crate) fn presence_now(&self, id: &ClientId) -> Option<Presence> {
        let client = self.0.clients.get(id).map(|c| c.clone())?;
        let now = Instant::now();
        let mut state = client.lock();
        state.log.purge_expired(now);
        Some(Presence {
            client: id.to_string(),
            online: state.open_polls > 0,
            open_polls: state.open_polls,
            pending_messages: state.log.len(),
            channels: state.channels.iter().map(ToString::to_string).collect(),
            idle_ms: now.duration_since(state.last_active).as_millis() as u64,
        })
    }

    /// Every channel with members, sorted by name.
    pub(super) fn channels_now(&self) -> Vec<ChannelSummary> {
        (self.0.channels.summaries().into_iter())
            .map(|(name, members)| ChannelSummary {
                name: name.to_string(),
                members,
            })
            .collect()
    }

    /// One channel's members, `None` without any.
    pub(super) fn channel_now(&self, name: &ChannelName) -> Option<ChannelDetail> {
        let clients = self.0.channels.subscribed_as(name);
        if clients.is_empty() {
            return None;
        }
        let online = clients.iter().filter(|c| c.lock().open_polls > 0).count();
        let mut members: Vec<String> = clients.iter().map(|c| c.id.to_string()).collect();
        members.sort_unstable();
        Some(ChannelDetail {
            channel: name.to_string(),
            members,
            online,
        })
    }
}
