//! A batch on Redis: the batch's share in each slot group is one script
//! (the whole batch with one server); the shares run concurrently, and
//! `<ok>` comes only once every share is applied.
//!
//! A share's script checks its limits and applies all of it or nothing.
//! With several shares a limit could refuse one after others applied, so
//! when a batch spans several groups and any share could be refused (it
//! creates clients or subscribes), the shares that could be are checked
//! first (`check`) and then every share is applied without checking again
//! (`force`): a refusal then applies nothing. A share Redis fails to take
//! (a master down: `503`) while others applied is answered as what it is:
//! [`ApplyError::PartlyApplied`] names the commands applied, never
//! "nothing".

use super::RedisBackend;
use crate::backend::outcomes::ApplyError;
use crate::protocol::{Command, Target};
use crate::store::journal::StoreError;
use crate::store::redis::{
    unexpected_reply, unix_ms, ApplyMode, EncodedCommand, Share, ShareLimits, Verdict,
};

impl RedisBackend {
    /// Applies a validated batch, share by share.
    pub(super) async fn apply_batch(&self, commands: Vec<Command>) -> Result<(), ApplyError> {
        let groups = self.store.groups().len();
        let (shares, refusable, homes) = self.split(commands, groups);
        let shares: Vec<(usize, Share)> = shares
            .into_iter()
            .enumerate()
            .filter(|(_, share)| !share.is_empty())
            .collect();
        let mode = if shares.len() > 1 && refusable.iter().any(|r| *r) {
            let checks = shares.iter().filter(|(g, _)| refusable[*g]);
            self.check_all(checks).await?;
            ApplyMode::Force
        } else {
            ApplyMode::Apply
        };
        let verdicts = self.run_shares(mode, shares.iter()).await?;
        // A share Redis did not take answers first (503), then a refusal.
        let mut failed = Vec::new();
        let (mut first_error, mut refused) = (None, None);
        for ((g, _), verdict) in shares.iter().zip(verdicts) {
            match verdict {
                Ok(verdict) => {
                    if let Err(refusal) = self.refusal(verdict) {
                        refused.get_or_insert(refusal);
                    }
                }
                Err(e) => {
                    failed.push(*g);
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            if failed.len() == shares.len() {
                return Err(ApplyError::Storage(e));
            }
            return Err(partly_applied(&homes, &failed, e));
        }
        refused.map_or(Ok(()), Err)
    }

    /// Splits the batch into one share per slot group: the shares, which
    /// groups' shares a limit could refuse, and each command's group
    /// (`None`: a channel message, in every group).
    fn split(
        &self,
        commands: Vec<Command>,
        groups: usize,
    ) -> (Vec<Share>, Vec<bool>, Vec<Option<usize>>) {
        let now_ms = unix_ms();
        let ttl = self.common.limits.message_ttl;
        let mut shares = vec![Share::default(); groups];
        let mut refusable = vec![false; groups];
        let mut homes = Vec::with_capacity(commands.len());
        for command in commands {
            let may_refuse = matches!(
                &command,
                Command::Message {
                    target: Target::Client(_),
                    ..
                } | Command::Subscribe { .. }
            );
            let (encoded, client) = EncodedCommand::new(command, ttl, now_ms);
            match client {
                Some(id) => {
                    let g = self.store.groups().of(id.as_str());
                    refusable[g] |= may_refuse;
                    shares[g].push(&encoded);
                    homes.push(Some(g));
                }
                // A channel message: each group appends to its members.
                None => {
                    for share in &mut shares {
                        share.push(&encoded);
                    }
                    homes.push(None);
                }
            }
        }
        (shares, refusable, homes)
    }

    /// Checks every share that a limit could refuse, and then the batch as
    /// a whole: each share counts only its own group's new clients, so
    /// their sum is held against `max_clients` here (k new clients in k
    /// groups would each pass alone).
    async fn check_all<'a>(
        &self,
        shares: impl Iterator<Item = &'a (usize, Share)>,
    ) -> Result<(), ApplyError> {
        let max = self.common.limits.max_clients;
        let counts = self.store.client_counts(max).await?;
        let limits = self.share_limits();
        let runs = shares
            .map(|(g, share)| (self.store).check_share(*g, &limits, counts.others(*g), share));
        let mut new = 0;
        for checked in futures_util::future::join_all(runs).await {
            let (verdict, new_clients) = checked?;
            self.refusal(verdict)?;
            new += new_clients;
        }
        if new > 0 && counts.total() + new as u64 > max as u64 {
            return Err(ApplyError::TooManyClients { new, max });
        }
        Ok(())
    }

    fn share_limits(&self) -> ShareLimits {
        let limits = &self.common.limits;
        ShareLimits {
            max_messages: self.store.max_messages(),
            max_clients: limits.max_clients,
            max_channels: limits.max_channels_per_client,
        }
    }

    /// Runs the apply script on each share concurrently.
    async fn run_shares<'a>(
        &self,
        mode: ApplyMode,
        shares: impl Iterator<Item = &'a (usize, Share)>,
    ) -> Result<Vec<Result<Verdict, StoreError>>, ApplyError> {
        let counts = (self.store)
            .client_counts(self.common.limits.max_clients)
            .await?;
        let share_limits = self.share_limits();
        let runs = shares.map(|(g, share)| {
            self.store
                .apply_share(*g, mode, &share_limits, counts.others(*g), share)
        });
        Ok(futures_util::future::join_all(runs).await)
    }

    /// A share's verdict as the batch's answer.
    fn refusal(&self, verdict: Verdict) -> Result<(), ApplyError> {
        let limits = &self.common.limits;
        match verdict {
            Verdict::Ok => Ok(()),
            Verdict::TooManyClients(new) => Err(ApplyError::TooManyClients {
                new,
                max: limits.max_clients,
            }),
            Verdict::TooManyChannels(Some(client)) => Err(ApplyError::TooManyChannels {
                client,
                max: limits.max_channels_per_client,
            }),
            other => Err(unexpected_reply(format!("{other:?}")).into()),
        }
    }
}

/// A batch some of whose shares Redis took while others failed: which
/// commands (1-based, as ingest numbers them) are applied in full, and which
/// channel messages reached the members in some groups only.
fn partly_applied(homes: &[Option<usize>], failed: &[usize], cause: StoreError) -> ApplyError {
    let (mut applied, mut partly) = (Vec::new(), Vec::new());
    for (i, home) in homes.iter().enumerate() {
        match home {
            Some(g) if !failed.contains(g) => applied.push(i + 1),
            Some(_) => {}
            None => partly.push(i + 1),
        }
    }
    ApplyError::PartlyApplied {
        applied,
        partly,
        cause,
    }
}
