//! Channel membership: channel name -> the clients subscribed to it.
//!
//! A membership is held under the name subscribed to, which may be a
//! wildcard pattern (`/chat/*`, `/chat/**`: see
//! [`ChannelName::is_pattern`]). A message to a channel reaches its exact
//! members and the members of every pattern matching it, each client once.
//! While no pattern is subscribed anywhere (the common case), a publish
//! looks up its exact name only: one atomic load decides.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use super::Client;
use crate::protocol::{ChannelName, ClientId};

/// Members of every channel. Sharded by channel name; a publish clones the
/// member list (one `Arc` each) and appends outside the shard lock, so a
/// 10,000-member fan-out never blocks subscribes to other channels.
#[derive(Default)]
pub(super) struct Channels {
    members: DashMap<ChannelName, HashMap<ClientId, Arc<Client>>>,
    /// How many of `members`' keys are patterns.
    patterns: AtomicUsize,
}

impl Channels {
    pub fn add(&self, channel: &ChannelName, client: &Arc<Client>) {
        let mut members = match self.members.entry(channel.clone()) {
            Entry::Occupied(entry) => entry.into_ref(),
            Entry::Vacant(entry) => {
                if channel.is_pattern() {
                    self.patterns.fetch_add(1, Ordering::Relaxed);
                }
                entry.insert(HashMap::new())
            }
        };
        members.insert(client.id.clone(), client.clone());
    }

    /// Removes `client` (this very entry, not a newer client of the same id).
    pub fn remove(&self, channel: &ChannelName, client: &Arc<Client>) {
        if let Some(mut members) = self.members.get_mut(channel) {
            if members
                .get(&client.id)
                .is_some_and(|m| Arc::ptr_eq(m, client))
            {
                members.remove(&client.id);
            }
        }
        let removed = self
            .members
            .remove_if(channel, |_, members| members.is_empty());
        if removed.is_some() && channel.is_pattern() {
            self.patterns.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Who a message to `channel` reaches: its members, and the members of
    /// every pattern matching it, each client once.
    pub fn members(&self, channel: &ChannelName) -> Vec<Arc<Client>> {
        let exact = self.members_of(channel.as_str());
        if self.patterns.load(Ordering::Relaxed) == 0 {
            return exact;
        }
        let mut lists: Vec<Vec<Arc<Client>>> = std::iter::once(exact)
            .chain(
                channel
                    .matching_patterns()
                    .map(|pattern| self.members_of(&pattern)),
            )
            .filter(|list| !list.is_empty())
            .collect();
        if lists.len() <= 1 {
            // One list holds no client twice: no set to build.
            return lists.pop().unwrap_or_default();
        }
        let mut seen = HashSet::new();
        lists
            .into_iter()
            .flatten()
            .filter(|member| seen.insert(Arc::as_ptr(member)))
            .collect()
    }

    fn members_of(&self, name: &str) -> Vec<Arc<Client>> {
        self.members
            .get(name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every channel with its member count, sorted by name.
    pub fn summaries(&self) -> Vec<(ChannelName, usize)> {
        let mut all: Vec<(ChannelName, usize)> = (self.members.iter())
            .map(|entry| (entry.key().clone(), entry.len()))
            .collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The clients subscribed under exactly `name` (no pattern matching:
    /// what `GET /channels/<name>` lists).
    pub fn subscribed_as(&self, name: &ChannelName) -> Vec<Arc<Client>> {
        self.members_of(name.as_str())
    }

    /// (channels, memberships) for `/stats`.
    pub fn counts(&self) -> (usize, usize) {
        self.members
            .iter()
            .fold((0, 0), |(c, m), entry| (c + 1, m + entry.len()))
    }
}
