//! Channel membership: channel name -> the clients subscribed to it.

use std::collections::HashMap;
use std::sync::Arc;

use dashmap::DashMap;

use super::Client;
use crate::protocol::{ChannelName, ClientId};

/// Members of every channel. Sharded by channel name; a publish clones the
/// member list (one `Arc` each) and appends outside the shard lock, so a
/// 10,000-member fan-out never blocks subscribes to other channels.
#[derive(Default)]
pub(super) struct Channels(DashMap<ChannelName, HashMap<ClientId, Arc<Client>>>);

impl Channels {
    pub fn add(&self, channel: &ChannelName, client: &Arc<Client>) {
        self.0
            .entry(channel.clone())
            .or_default()
            .insert(client.id.clone(), client.clone());
    }

    /// Removes `client` (this very entry, not a newer client of the same id).
    pub fn remove(&self, channel: &ChannelName, client: &Arc<Client>) {
        if let Some(mut members) = self.0.get_mut(channel) {
            if members
                .get(&client.id)
                .is_some_and(|m| Arc::ptr_eq(m, client))
            {
                members.remove(&client.id);
            }
        }
        self.0.remove_if(channel, |_, members| members.is_empty());
    }

    pub fn members(&self, channel: &ChannelName) -> Vec<Arc<Client>> {
        self.0
            .get(channel)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// (channels, memberships) for `/stats`.
    pub fn counts(&self) -> (usize, usize) {
        self.0
            .iter()
            .fold((0, 0), |(c, m), entry| (c + 1, m + entry.len()))
    }
}
