//! `GET /stats` and `GET /clients/<id>` for every backend: the backend's
//! figures with this node's counters.

use super::Hub;
use crate::backend::common::Counters;
use crate::backend::outcomes::{ChannelDetail, ChannelSummary, Presence, Stats};
use crate::protocol::{ChannelName, ClientId};
use crate::store::journal::StoreError;

impl Hub {
    /// `/stats`: the store's figures (cluster-wide on Redis) and this node's
    /// counters.
    pub async fn current_stats(&self) -> Result<Stats, StoreError> {
        let figures = self.0.backend.figures().await?;
        let (common, counters) = (&self.0.common, &self.0.common.counters);
        Ok(Stats {
            clients: figures.clients,
            open_polls: figures.open_polls,
            queued_messages: figures.queued_messages,
            messages_in: Counters::get(&counters.messages_in),
            messages_out: Counters::get(&counters.messages_out),
            messages_lost: figures.messages_lost,
            polls_total: Counters::get(&counters.polls_total),
            clients_evicted: figures.clients_evicted,
            channels: figures.channels,
            subscriptions: figures.subscriptions,
            uptime_s: common.started.elapsed().as_secs(),
            scope: figures.scope,
            hooks: common.hooks.as_ref().map(|h| {
                let mine = h.stats();
                crate::hooks::HookStats {
                    dropped: figures.hooks_dropped.unwrap_or(mine.dropped),
                    ..mine
                }
            }),
        })
    }

    /// `/clients/<id>` (cluster-wide with Redis).
    pub async fn current_presence(&self, id: &ClientId) -> Result<Option<Presence>, StoreError> {
        self.0.backend.presence(id).await
    }

    /// `GET /channels`: every channel with members (cluster-wide with
    /// Redis), sorted by name.
    pub async fn current_channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        self.0.backend.channels().await
    }

    /// [`crate::backend::Backend::set_profile`]: a Pusher presence profile.
    pub async fn set_profile(
        &self,
        channel: &ChannelName,
        client: &crate::protocol::ClientId,
        profile: Option<&str>,
    ) -> Result<(), StoreError> {
        self.0.backend.set_profile(channel, client, profile).await
    }

    /// [`crate::backend::Backend::profiles`].
    pub async fn profiles(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        self.0.backend.profiles(channel).await
    }

    /// `GET /channels/<name>`: its members and how many are online.
    pub async fn current_channel(
        &self,
        name: &ChannelName,
    ) -> Result<Option<ChannelDetail>, StoreError> {
        self.0.backend.channel(name).await
    }
}
