//! The scripts' calls that read figures and sweep: `/stats` per slot
//! group, presence, channels, and idle eviction (typed, as in `calls.rs`).

use std::time::Duration;

use super::calls::{GroupStats, PresenceReply};
use super::replies::Args;
use super::{RedisStore, Step};
use crate::protocol::{ChannelName, ClientId};
use crate::store::journal::StoreError;

impl RedisStore {
    /// One group's `/stats` figures; nodes that have not swept for
    /// `gone_after` are not counted; with `several` groups, its channel
    /// names (to count each channel once).
    pub async fn group_stats(
        &self,
        group: usize,
        gone_after: Duration,
        several: bool,
    ) -> Result<GroupStats, StoreError> {
        let args: Args = vec![
            gone_after.as_millis().to_string().into(),
            if several { "1" } else { "0" }.into(),
        ];
        let reply = self.run(Step::Stats, group, args).await?;
        let mut stats = GroupStats::default();
        for (i, sum) in stats.sums.iter_mut().enumerate() {
            *sum = reply.int(i).max(0) as u64;
        }
        stats.nodes = reply.int(6).max(0) as u64;
        stats.hooks_dropped = reply.int(7).max(0) as u64;
        stats.channels = (8..reply.len()).map(|i| reply.text(i)).collect();
        Ok(stats)
    }

    /// `/clients/<id>`; `None` without a mailbox.
    pub async fn presence_of(
        &self,
        client: &ClientId,
    ) -> Result<Option<PresenceReply>, StoreError> {
        let group = self.groups().of(client.as_str());
        let reply = self
            .run(Step::Presence, group, vec![client.as_str().into()])
            .await?;
        if reply.is_empty() {
            return Ok(None);
        }
        Ok(Some(PresenceReply {
            open_polls: reply.int(0).max(0) as u32,
            pending_messages: reply.int(1).max(0) as usize,
            idle_ms: reply.int(2).max(0) as u64,
            channels: (3..reply.len()).map(|i| reply.text(i)).collect(),
        }))
    }

    /// `group`'s channels with their members there.
    pub async fn channel_counts(&self, group: usize) -> Result<Vec<(String, u64)>, StoreError> {
        let reply = self.run(Step::Channels, group, Vec::new()).await?;
        Ok((0..reply.len())
            .step_by(2)
            .map(|i| (reply.text(i), reply.int(i + 1).max(0) as u64))
            .collect())
    }

    /// `channel`'s members in `group`, each with whether it holds a live
    /// poll lease.
    pub async fn channel_members(
        &self,
        group: usize,
        channel: &ChannelName,
    ) -> Result<Vec<(String, bool)>, StoreError> {
        let args: Args = vec![channel.as_str().into()];
        let reply = self.run(Step::Channel, group, args).await?;
        Ok((0..reply.len())
            .step_by(2)
            .map(|i| (reply.text(i), reply.int(i + 1) == 1))
            .collect())
    }

    /// One eviction batch of `group` (clients idle for `idle`, at most
    /// `batch` looked at), with this node's heartbeat when `heartbeat` is
    /// its name: (evicted, looked at).
    pub async fn reap(
        &self,
        group: usize,
        idle: Duration,
        batch: usize,
        heartbeat: &str,
        gone_after: Duration,
    ) -> Result<(u64, usize), StoreError> {
        let args: Args = vec![
            idle.as_millis().to_string().into(),
            batch.to_string().into(),
            heartbeat.into(),
            gone_after.as_millis().to_string().into(),
        ];
        let reply = self.run(Step::Reap, group, args).await?;
        Ok((reply.int(0).max(0) as u64, reply.int(1).max(0) as usize))
    }
}
