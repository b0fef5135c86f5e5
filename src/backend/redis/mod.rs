//! The Redis backend: every node configured with one Redis acts as one
//! server.
//!
//! The truth (mailboxes, ids, memberships, poll counts, idle clocks) is in
//! Redis and every change is one Lua script in one slot group, so a batch's
//! share in a group, its ids and its wake-up hint are one atomic step
//! (`src/store/redis/`, which also owns every script's arguments and reply
//! positions). With one server there is one group; in a Redis Cluster a
//! batch is split by group (a channel message goes to every group, each
//! appending to its own members) and the shares run concurrently; figures
//! are added up over the groups. A node keeps only its own waiting polls,
//! each woken by a hint and then reading Redis again.
//!
//! - `apply.rs`: a batch, split by slot group, all or nothing;
//! - `lease.rs`: a poll's lease, its looks and its close;
//! - `reaper.rs`: idle eviction cluster-wide and this node's heartbeat;
//! - `presence.rs`: with hooks, presence and notifications cluster-wide.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::backend::common::Common;
use crate::backend::outcomes::{
    ApplyError, ChannelDetail, ChannelSummary, Figures, PollError, PollRequest, Presence,
    StatsScope, Waited,
};
use crate::backend::seam::Backend;
use crate::protocol::{ChannelName, ClientId, Command, Cursor};
use crate::store::journal::StoreError;
use crate::store::redis::{HookEvents, RedisSettings, RedisStore};

mod apply;
mod lease;
mod presence;
mod reaper;

pub use lease::RemotePoll;

/// The backend on a Redis server or Cluster.
pub struct RedisBackend {
    common: Arc<Common>,
    store: Arc<RedisStore>,
}

impl RedisBackend {
    /// Starts the connection on the current runtime, telling the scripts
    /// which hook notifications to queue.
    pub fn start(common: Arc<Common>, settings: RedisSettings) -> Self {
        let store = RedisStore::start(settings);
        if let Some(hooks) = &common.hooks {
            use crate::hooks::EventType::{Offline, Online, Subscribed, Unsubscribed};
            let wanted = HookEvents {
                online: hooks.wants(Online),
                offline: hooks.wants(Offline),
                subscribed: hooks.wants(Subscribed),
                unsubscribed: hooks.wants(Unsubscribed),
            };
            store.set_hooks(
                wanted,
                hooks.offline_after(),
                hooks.max_pending(),
                hooks.node(),
            );
        }
        RedisBackend { common, store }
    }
}

impl Backend for RedisBackend {
    type Lease = RemotePoll;

    async fn apply(&self, commands: Vec<Command>) -> Result<(), ApplyError> {
        self.apply_batch(commands).await
    }

    async fn open(&self, request: &PollRequest) -> Result<RemotePoll, PollError> {
        self.open_lease(request).await
    }

    fn head_at_open(&self, lease: &RemotePoll) -> Option<Cursor> {
        lease.head_at_open()
    }

    fn waker<'a>(&self, lease: &'a RemotePoll) -> &'a Notify {
        lease.waker()
    }

    async fn look(&self, lease: &RemotePoll, since: Option<Cursor>) -> Waited {
        self.look_at(lease, since).await
    }

    async fn unread_from(&self, lease: &RemotePoll) -> Result<Cursor, StoreError> {
        // Gone since the poll opened: a new mailbox starts empty.
        Ok((self.store.unread_from(lease.client()).await?).unwrap_or(Cursor { epoch: 0, seq: 0 }))
    }

    /// The cluster's figures, added up over the slot groups (a channel with
    /// members in several groups counted once; the node heartbeats are the
    /// first group's), and this node's open polls.
    async fn figures(&self) -> Result<Figures, StoreError> {
        let redis = &self.store;
        let gone_after = reaper::node_gone_after(self.common.limits.client_idle_timeout);
        let several = redis.groups().len() > 1;
        let runs = (0..redis.groups().len()).map(|g| redis.group_stats(g, gone_after, several));
        let mut sums = [0u64; 6];
        let mut channels = std::collections::HashSet::new();
        let (mut nodes, mut hooks_dropped) = (0, 0);
        for (g, group) in futures_util::future::join_all(runs)
            .await
            .into_iter()
            .enumerate()
        {
            let group = group?;
            for (sum, add) in sums.iter_mut().zip(group.sums) {
                *sum += add;
            }
            if g == 0 {
                nodes = group.nodes;
            }
            hooks_dropped += group.hooks_dropped;
            channels.extend(group.channels);
        }
        let [clients, channel_count, subscriptions, queued, lost, evicted] = sums;
        Ok(Figures {
            clients: clients as usize,
            open_polls: redis.waiters.open_polls(),
            queued_messages: queued,
            messages_lost: lost,
            clients_evicted: evicted,
            channels: if several {
                channels.len()
            } else {
                channel_count as usize
            },
            subscriptions: subscriptions as usize,
            scope: Some(StatsScope::redis(nodes, redis.node())),
            // Redis decides the drops (its queues are bounded): the
            // cluster's count. The other hook counters are this node's.
            hooks_dropped: Some(hooks_dropped),
        })
    }

    async fn presence(&self, id: &ClientId) -> Result<Option<Presence>, StoreError> {
        Ok(self.store.presence_of(id).await?.map(|p| Presence {
            client: id.to_string(),
            online: p.open_polls > 0,
            open_polls: p.open_polls,
            pending_messages: p.pending_messages,
            channels: p.channels,
            idle_ms: p.idle_ms,
        }))
    }

    /// Every group's channels, added up by name.
    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        let redis = &self.store;
        let runs = (0..redis.groups().len()).map(|g| redis.channel_counts(g));
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for group in futures_util::future::join_all(runs).await {
            for (name, members) in group? {
                *counts.entry(name).or_default() += members;
            }
        }
        Ok((counts.into_iter())
            .map(|(name, members)| ChannelSummary {
                name,
                members: members as usize,
            })
            .collect())
    }

    /// The channel's members in every group.
    async fn channel(&self, name: &ChannelName) -> Result<Option<ChannelDetail>, StoreError> {
        let redis = &self.store;
        let runs = (0..redis.groups().len()).map(|g| redis.channel_members(g, name));
        let (mut members, mut online) = (Vec::new(), 0);
        for group in futures_util::future::join_all(runs).await {
            for (id, live) in group? {
                online += usize::from(live);
                members.push(id);
            }
        }
        if members.is_empty() {
            return Ok(None);
        }
        members.sort_unstable();
        Ok(Some(ChannelDetail {
            channel: name.to_string(),
            members,
            online,
        }))
    }

    async fn set_profile(
        &self,
        channel: &ChannelName,
        client: &ClientId,
        profile: Option<&str>,
    ) -> Result<(), StoreError> {
        self.store
            .set_profile(channel, client.as_str(), profile)
            .await
    }

    async fn profiles(
        &self,
        channel: &ChannelName,
    ) -> Result<Option<Vec<(String, String)>>, StoreError> {
        self.store.profiles(channel).await.map(Some)
    }

    fn healthy(&self) -> bool {
        self.store.healthy()
    }

    fn wake_all(&self) {
        self.store.waiters.wake_all();
        self.store.stop();
    }

    /// Redis writes nothing while opening.
    async fn settled(&self) {}

    fn spawn_tasks(&self, shutdown: CancellationToken) {
        if let Some(hooks) = &self.common.hooks {
            // Presence is cluster-wide here (`presence.rs`).
            presence::spawn_presence(self.store.clone(), hooks.clone(), shutdown.clone());
        }
        reaper::spawn_reaper(
            self.store.clone(),
            self.common.limits.client_idle_timeout,
            shutdown,
        );
    }
}

/// A lease outlives its poll's timeout by this much before Redis stops
/// counting it (a node killed with polls open).
const LEASE_GRACE: Duration = Duration::from_secs(30);
