//! Who is in each `presence-` channel, as Pusher counts them: users (by
//! `user_id`, with the `user_info` their backend signed), each present
//! through one or more sockets of this server.
//!
//! A user is added when their first socket joins the channel and removed
//! when their last one leaves; those two moments are what the
//! `member_added` and `member_removed` events announce. The registry is
//! this node's; with several nodes on Redis each socket's profile is also
//! recorded in the store (`Hub::set_profile`), and [`Members::users_everywhere`]
//! adds the users of sockets other nodes hold.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::Hub;
use crate::protocol::ChannelName;

/// One user as a presence channel shows them (and as their profile is
/// recorded in the store: this object as JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// `channel_data.user_id`, as a string (Pusher allows a number).
    pub user_id: String,
    /// `channel_data.user_info`, shown to the other members as signed.
    pub user_info: Option<Value>,
}

/// Presence channels: channel → socket id → the member that socket is.
#[derive(Debug, Default)]
pub struct Members {
    channels: Mutex<HashMap<String, HashMap<String, Member>>>,
}

impl Members {
    /// `socket` joins `channel` as `member`; whether it is the user's first
    /// socket there (so the others are told `member_added`).
    pub fn join(&self, channel: &str, socket: &str, member: Member) -> bool {
        let mut channels = self.channels.lock().expect("never poisoned");
        let sockets = channels.entry(channel.to_owned()).or_default();
        let first = !sockets.values().any(|m| m.user_id == member.user_id);
        sockets.insert(socket.to_owned(), member);
        first
    }

    /// `socket` leaves `channel`; the member when that was their last
    /// socket there (so the others are told `member_removed`).
    pub fn leave(&self, channel: &str, socket: &str) -> Option<Member> {
        let mut channels = self.channels.lock().expect("never poisoned");
        let sockets = channels.get_mut(channel)?;
        let gone = sockets.remove(socket)?;
        let last = !sockets.values().any(|m| m.user_id == gone.user_id);
        if sockets.is_empty() {
            channels.remove(channel);
        }
        last.then_some(gone)
    }

    /// The user whose socket `socket` is in `channel`, if on this node.
    pub fn user_of(&self, channel: &str, socket: &str) -> Option<String> {
        let channels = self.channels.lock().expect("never poisoned");
        Some(channels.get(channel)?.get(socket)?.user_id.clone())
    }

    /// The users in `channel`, each once, in `user_id` order.
    pub fn users(&self, channel: &str) -> Vec<Member> {
        let channels = self.channels.lock().expect("never poisoned");
        let mut users: Vec<Member> = Vec::new();
        if let Some(sockets) = channels.get(channel) {
            for member in sockets.values() {
                if !users.iter().any(|u| u.user_id == member.user_id) {
                    users.push(member.clone());
                }
            }
        }
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        users
    }
}

impl Members {
    /// Records `member` as `socket`'s profile in `channel` in the store, for
    /// the other nodes (nothing to do on a single node's store).
    pub async fn share(
        &self,
        hub: &Hub,
        channel: &ChannelName,
        socket: &str,
        member: Option<&Member>,
    ) {
        let Ok(client) = crate::protocol::ClientId::parse(&format!("pusher:{socket}")) else {
            return;
        };
        let profile = member.map(|m| serde_json::to_string(m).expect("a member serialises"));
        if let Err(e) = hub.set_profile(channel, &client, profile.as_deref()).await {
            tracing::debug!(error = %e, %channel, "a Pusher presence profile could not be recorded");
        }
    }

    /// The profiles of `channel`'s current members, by client id, where the
    /// store keeps them (Redis): users of sockets any node holds. `None`
    /// where this node's registry is the whole list.
    async fn shared(&self, hub: &Hub, channel: &ChannelName) -> Option<Vec<(String, Member)>> {
        let profiles = match hub.profiles(channel).await {
            Ok(profiles) => profiles?,
            Err(e) => {
                tracing::debug!(error = %e, %channel, "Pusher presence profiles could not be read; listing this node's");
                return None;
            }
        };
        let members = hub
            .current_channel(channel)
            .await
            .ok()
            .flatten()
            .map(|detail| detail.members)
            .unwrap_or_default();
        Some(
            profiles
                .into_iter()
                .filter(|(client, _)| members.contains(client))
                .filter_map(|(client, profile)| {
                    Some((client, serde_json::from_str(&profile).ok()?))
                })
                .collect(),
        )
    }

    /// The users in `channel` on every node, each once, in `user_id` order.
    pub async fn users_everywhere(&self, hub: &Hub, channel: &ChannelName) -> Vec<Member> {
        let mut users = self.users(channel.as_str());
        for (_, member) in self.shared(hub, channel).await.unwrap_or_default() {
            if !users.iter().any(|u| u.user_id == member.user_id) {
                users.push(member);
            }
        }
        users.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        users
    }

    /// The user ids of a presence channel's members (client ids), each
    /// once: a Pusher socket counts as the user it signed in as (from this
    /// node's registry or the store's profiles), another client as its id.
    pub async fn user_ids_everywhere(
        &self,
        hub: &Hub,
        channel: &ChannelName,
        members: &[String],
    ) -> Vec<String> {
        let shared = self.shared(hub, channel).await.unwrap_or_default();
        let mut users: Vec<String> = Vec::new();
        for member in members {
            let user = member
                .strip_prefix("pusher:")
                .and_then(|socket| {
                    self.user_of(channel.as_str(), socket).or_else(|| {
                        shared
                            .iter()
                            .find(|(c, _)| c == member)
                            .map(|(_, m)| m.user_id.clone())
                    })
                })
                .unwrap_or_else(|| member.clone());
            if !users.contains(&user) {
                users.push(user);
            }
        }
        users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str) -> Member {
        Member {
            user_id: id.into(),
            user_info: None,
        }
    }

    #[test]
    fn a_user_is_added_with_their_first_socket_and_removed_with_their_last() {
        let members = Members::default();
        assert!(members.join("presence-a", "1.1", user("ann")));
        assert!(
            !members.join("presence-a", "1.2", user("ann")),
            "a second tab"
        );
        assert!(members.join("presence-a", "2.1", user("bob")));
        assert_eq!(members.users("presence-a").len(), 2);
        assert_eq!(
            members.leave("presence-a", "1.1"),
            None,
            "ann is still there"
        );
        assert_eq!(members.leave("presence-a", "1.2"), Some(user("ann")));
        assert_eq!(members.leave("presence-a", "1.2"), None, "already gone");
        assert_eq!(members.users("presence-a"), vec![user("bob")]);
        assert_eq!(members.leave("presence-a", "2.1"), Some(user("bob")));
        assert!(members.users("presence-a").is_empty());
    }
}
