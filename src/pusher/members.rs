//! Who is in each `presence-` channel, as Pusher counts them: users (by
//! `user_id`, with the `user_info` their backend signed), each present
//! through one or more sockets of this server.
//!
//! A user is added when their first socket joins the channel and removed
//! when their last one leaves; those two moments are what the
//! `member_added` and `member_removed` events announce. The list is this
//! node's: with several nodes on Redis, each node lists the sockets it
//! holds (docs/pusher.md says so).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

/// One user as a presence channel shows them.
#[derive(Debug, Clone, PartialEq)]
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

    /// The users of a presence channel's members (client ids), each once:
    /// a Pusher socket (`pusher:<socket id>`) counts as the user it signed
    /// in as, another client as its id. A socket held by another node is
    /// not known here and shows as its client id.
    pub fn users_of_members(&self, channel: &str, members: &[String]) -> Vec<String> {
        let mut users: Vec<String> = Vec::new();
        for member in members {
            let user = member
                .strip_prefix("pusher:")
                .and_then(|socket| self.user_of(channel, socket))
                .unwrap_or_else(|| member.clone());
            if !users.contains(&user) {
                users.push(user);
            }
        }
        users
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
