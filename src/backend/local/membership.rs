//! Channel membership: who joins and leaves, and who may undo whom.
//!
//! A client's channels are changed in one step under its own lock, the
//! client's set and the channel's member map together, so the two never
//! disagree (a membership that presence lists is one that publishes reach).
//!
//! Two parties subscribe a client. The backend, through ingest
//! (`<subscribe>`, `<unsubscribe>`), has the last word. The browser, through
//! `channels=` on its polls, joins what its token grants; the browser class
//! repeats `channels=` on every poll, so a channel it already has costs a
//! set lookup under its own lock and nothing else. A backend's
//! `<unsubscribe>` (a kick from a room) is remembered: `channels=` does not
//! rejoin that channel until the backend `<subscribe>`s the client to it
//! again, or the browser presents a token issued (its `iat`) after the
//! unsubscribe.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::client::{Client, ClientState, Revocation};
use super::durable::Recorder;
use super::LocalBackend;
use crate::backend::outcomes::PollError;
use crate::protocol::{ChannelName, ClientId};
use crate::store::journal::Change;

impl LocalBackend {
    /// `<subscribe>`: joins, and lifts an earlier `<unsubscribe>` of the
    /// same channel.
    pub(super) fn subscribe(&self, id: &ClientId, channel: &ChannelName, record: &mut Recorder) {
        loop {
            let client = self.client_or_create(id, Instant::now(), record);
            let mut state = client.lock();
            if state.gone.is_some() {
                continue; // removed meanwhile: look the id up again
            }
            let was_revoked = state.revoked.iter().any(|r| &r.channel == channel);
            state.revoked.retain(|r| &r.channel != channel);
            if state.channels.insert(channel.clone()) {
                self.0.channels.add(channel, &client);
                self.joined(&mut state, &client, channel);
            } else if !was_revoked {
                return; // nothing changed
            }
            record.change(|| Change::Subscribed {
                client: id.clone(),
                epoch: client.epoch,
                channel: channel.clone(),
            });
            return;
        }
    }

    /// `<unsubscribe>`: leaves, and remembers it against the browser's own
    /// grant. A client with no mailbox has nothing to leave or remember.
    pub(super) fn unsubscribe(&self, id: &ClientId, channel: &ChannelName, record: &mut Recorder) {
        let Some(client) = self.0.clients.get(id).map(|c| c.clone()) else {
            return;
        };
        let mut state = client.lock();
        if state.gone.is_some() {
            return;
        }
        if state.channels.remove(channel) {
            self.0.channels.remove(channel, &client);
            self.left(&mut state, &client, channel);
        }
        state.revoked.retain(|r| &r.channel != channel);
        // Bounded like subscriptions; forgetting the oldest kick is the
        // price of not letting a backend grow a mailbox without end.
        if state.revoked.len() >= self.0.common.limits.max_channels_per_client {
            state.revoked.pop_front();
        }
        let at = unix_seconds();
        state.revoked.push_back(Revocation {
            channel: channel.clone(),
            at,
        });
        record.change(|| Change::Unsubscribed {
            client: id.clone(),
            epoch: client.epoch,
            channel: channel.clone(),
            at,
        });
    }

    /// A browser's own leave ([`crate::protocol::Command::Leave`]): like
    /// `<unsubscribe>`, without remembering a revocation.
    pub(super) fn leave(&self, id: &ClientId, channel: &ChannelName, record: &mut Recorder) {
        let Some(client) = self.0.clients.get(id).map(|c| c.clone()) else {
            return;
        };
        let mut state = client.lock();
        if state.gone.is_some() || !state.channels.remove(channel) {
            return;
        }
        self.0.channels.remove(channel, &client);
        self.left(&mut state, &client, channel);
        record.change(|| Change::Unsubscribed {
            client: id.clone(),
            epoch: client.epoch,
            channel: channel.clone(),
            at: 0,
        });
    }

    /// A poll's `channels=` (each already allowed by the token issued at
    /// `issued_at`): joins those not joined yet and not revoked since the
    /// token was issued. Refuses all of them if that would pass
    /// `max_channels_per_client`.
    pub(super) fn subscribe_for_poll(
        &self,
        client: &Arc<Client>,
        channels: &[ChannelName],
        issued_at: Option<u64>,
    ) -> Result<(), PollError> {
        if !self.has_new_channels(client, channels, issued_at) {
            return Ok(()); // the re-poll path: nothing new, no shared lock
        }
        let mut ordered = self.ordered()?;
        self.join_channels(client, channels, issued_at, &mut ordered.record)?;
        // Not waited for: a membership lost in a crash is asked for again
        // by the browser's next poll.
        self.submit(ordered, None)?;
        Ok(())
    }

    fn has_new_channels(
        &self,
        client: &Client,
        channels: &[ChannelName],
        issued_at: Option<u64>,
    ) -> bool {
        let state = client.lock();
        state.gone.is_none() && channels.iter().any(|c| joinable(&state, c, issued_at))
    }

    fn join_channels(
        &self,
        client: &Arc<Client>,
        channels: &[ChannelName],
        issued_at: Option<u64>,
        record: &mut Recorder,
    ) -> Result<(), PollError> {
        let mut state = client.lock();
        if state.gone.is_some() {
            return Ok(());
        }
        let mut new: Vec<&ChannelName> = channels
            .iter()
            .filter(|c| joinable(&state, c, issued_at))
            .collect();
        new.sort_unstable();
        new.dedup();
        let max = self.0.common.limits.max_channels_per_client;
        if state.channels.len() + new.len() > max {
            return Err(PollError::TooManyChannels(max));
        }
        for channel in new {
            state.channels.insert(channel.clone());
            self.0.channels.add(channel, client);
            self.joined(&mut state, client, channel);
            record.change(|| Change::Subscribed {
                client: client.id.clone(),
                epoch: client.epoch,
                channel: channel.clone(),
            });
        }
        Ok(())
    }

    /// Removes a forgotten client from the member maps of `channels`.
    pub(super) fn drop_memberships<'a>(
        &self,
        client: &Arc<Client>,
        channels: impl IntoIterator<Item = &'a ChannelName>,
    ) {
        for channel in channels {
            self.0.channels.remove(channel, client);
        }
    }
}

/// Whether a poll's `channels=` would join `channel`: not held, and not
/// revoked since its token was issued.
pub(super) fn joinable(state: &ClientState, channel: &ChannelName, issued_at: Option<u64>) -> bool {
    !state.channels.contains(channel) && !revoked(state, channel, issued_at)
}

/// Whether a backend `<unsubscribe>` of `channel` stands against a token
/// issued at `issued_at` (a token without `iat` is taken as older).
fn revoked(state: &ClientState, channel: &ChannelName, issued_at: Option<u64>) -> bool {
    state
        .revoked
        .iter()
        .any(|r| &r.channel == channel && issued_at.is_none_or(|iat| iat <= r.at))
}

fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether `client` (or a new client, if `None`) can take `channels` without
/// passing `max` subscriptions.
pub(super) fn has_channel_room<'a>(
    client: Option<&Client>,
    channels: impl Iterator<Item = &'a ChannelName>,
    max: usize,
) -> bool {
    let mut channels: Vec<&ChannelName> = channels.collect();
    channels.sort_unstable();
    channels.dedup();
    match client {
        None => channels.len() <= max,
        Some(client) => {
            let state = client.lock();
            let new = channels
                .iter()
                .filter(|c| !state.channels.contains(**c))
                .count();
            state.channels.len() + new <= max
        }
    }
}
