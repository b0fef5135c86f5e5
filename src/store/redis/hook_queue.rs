//! The scripts' calls of cluster-wide hooks: whether a client is online,
//! the presence sweep, and the group's notification queue (its delivery
//! lease, its head, what was delivered); typed, as in `calls.rs`.

use std::time::Duration;

use super::replies::Args;
use super::{RedisStore, Step};
use crate::protocol::ClientId;
use crate::store::journal::StoreError;

impl RedisStore {
    /// With hooks: whether the client is online anywhere, and its channels.
    pub async fn hooks_look(&self, client: &ClientId) -> Result<(bool, Vec<String>), StoreError> {
        let group = self.groups().of(client.as_str());
        let reply = self
            .run(Step::HooksLook, group, vec![client.as_str().into()])
            .await?;
        Ok((
            reply.int(0) != 0,
            (1..reply.len()).map(|i| reply.text(i)).collect(),
        ))
    }

    /// With hooks: one presence sweep batch of `group`: (went offline,
    /// looked at).
    pub async fn presence_sweep(
        &self,
        group: usize,
        batch: usize,
    ) -> Result<(u64, usize), StoreError> {
        let args: Args = vec![batch.to_string().into()];
        let reply = self.run(Step::PresenceSweep, group, args).await?;
        Ok((reply.int(0).max(0) as u64, reply.int(1).max(0) as usize))
    }

    /// With hooks: takes (or renews, for `lease`) `group`'s delivery lease
    /// as `me`, and at most `n` queued events from index `from`; `None`
    /// when another node holds the lease.
    pub async fn hooks_take(
        &self,
        group: usize,
        me: &str,
        lease: Duration,
        n: usize,
        from: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let args: Args = vec![
            me.into(),
            lease.as_millis().to_string().into(),
            n.to_string().into(),
            from.to_string().into(),
        ];
        let reply = self.run(Step::HooksTake, group, args).await?;
        Ok((reply.text(0) == "mine").then(|| (1..reply.len()).map(|i| reply.text(i)).collect()))
    }

    /// With hooks: removes delivered events (their JSON as queued) from
    /// `group`'s queue, and with `release` gives up the lease: how many
    /// were removed.
    pub async fn hooks_done(
        &self,
        group: usize,
        me: &str,
        release: bool,
        done: &[String],
    ) -> Result<usize, StoreError> {
        let mut args: Args = vec![me.into(), if release { "1" } else { "0" }.into()];
        args.extend(done.iter().map(|json| json.clone().into_bytes()));
        let reply = self.run(Step::HooksDone, group, args).await?;
        Ok(reply.int(0).max(0) as usize)
    }
}
