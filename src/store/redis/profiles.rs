//! Pusher presence profiles on Redis: whom each `pusher:<socket id>`
//! client of a `presence-` channel signed in as (`user_id`, `user_info`),
//! one hash per channel, so that a member list names the users of sockets
//! held by every node. Soft state: a socket's entry goes when it leaves;
//! one left by a node that died is ignored once the socket's client is no
//! longer a member (the list is read against the channel's members), and
//! the hash expires a day after its last write.

use redis::Value;

use super::RedisStore;
use crate::protocol::ChannelName;
use crate::store::journal::StoreError;

/// How long a channel's hash outlives its last write.
const PROFILES_TTL_SECS: u64 = 86_400;

impl RedisStore {
    /// The hash of `channel`'s profiles, in the channel's slot group.
    fn profiles_key(&self, channel: &ChannelName) -> String {
        let group = self.groups().of(channel.as_str());
        format!("{}pp:{channel}", self.groups().base(group))
    }

    /// Records (`Some`) or forgets (`None`) `client`'s profile in `channel`.
    pub async fn set_profile(
        &self,
        channel: &ChannelName,
        client: &str,
        profile: Option<&str>,
    ) -> Result<(), StoreError> {
        let key = self.profiles_key(channel);
        let result = match profile {
            Some(profile) => {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .hset(&key, client, profile)
                    .ignore()
                    .expire(&key, PROFILES_TTL_SECS as i64)
                    .ignore();
                self.conn.query_pipe(&pipe).await
            }
            None => {
                self.conn
                    .query(redis::cmd("HDEL").arg(&key).arg(client))
                    .await
            }
        };
        result
            .map(drop)
            .map_err(|e| self.failed_call("profiles", e))
    }

    /// Every profile recorded in `channel`: `(client, profile)`.
    pub async fn profiles(
        &self,
        channel: &ChannelName,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let key = self.profiles_key(channel);
        let value = self
            .conn
            .query(redis::cmd("HGETALL").arg(&key))
            .await
            .map_err(|e| self.failed_call("profiles", e))?;
        let text = |v: &Value| match v {
            Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => String::new(),
        };
        Ok(match value {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
            Value::Array(items) => items
                .chunks(2)
                .filter(|pair| pair.len() == 2)
                .map(|pair| (text(&pair[0]), text(&pair[1])))
                .collect(),
            _ => Vec::new(),
        })
    }
}
