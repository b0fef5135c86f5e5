//! Pusher's webhooks (`pusher.webhook_url`): `channel_occupied`,
//! `channel_vacated`, `member_added`, `member_removed` and `client_event`,
//! in Pusher's body and signed as Pusher signs them (`X-Pusher-Key`,
//! `X-Pusher-Signature`), so a backend's Pusher SDK validates them
//! unchanged (docs/pusher.md).
//!
//! They go through the hooks' outbox ([`Hooks`] in Pusher's format): at
//! least once, retried with backoff, in order per channel (the outbox's
//! queue key is the channel), kept in a file of the `disk` store's
//! directory across restarts.
//!
//! **Occupancy** counts a channel's Pusher sockets (`pusher:` clients), on
//! every node where the store is shared. A socket's subscribe or leave
//! and the count after it run under a lock of the channel's stripe
//! ([`Webhooks::occupancy`]), so on one node the first socket in sends
//! `channel_occupied` and the last one out `channel_vacated`, exactly
//! once per change. Two nodes changing one channel in the same moment
//! each count after both changes: both, or neither, may announce it
//! (docs/pusher.md says so).

use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use crate::hooks::{Event, EventType, Hooks};
use crate::hub::Hub;
use crate::protocol::ChannelName;

/// Locks shared by channels whose names hash alike: few enough to cost
/// nothing, enough that unrelated channels rarely wait for each other.
const STRIPES: usize = 64;

/// This server's Pusher webhooks.
pub struct Webhooks {
    hooks: Arc<Hooks>,
    stripes: Vec<Mutex<()>>,
}

/// Held while a socket joins or leaves a channel and the channel is
/// counted after it ([`Webhooks::occupancy`]).
pub struct Occupancy<'w> {
    webhooks: &'w Webhooks,
    channel: &'w ChannelName,
    _stripe: MutexGuard<'w, ()>,
}

impl Webhooks {
    /// Webhooks delivered through `hooks` (built by
    /// [`Hooks::pusher_webhooks`]), whose workers this starts.
    pub fn start(hooks: Arc<Hooks>) -> Self {
        hooks.spawn_workers();
        Webhooks {
            hooks,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    /// The outbox (for `/stats` and the drain at shutdown).
    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    /// Takes `channel`'s stripe: call before a socket's subscribe or leave
    /// is applied, then [`Occupancy::joined`] or [`Occupancy::left`].
    pub async fn occupancy<'w>(&'w self, channel: &'w ChannelName) -> Occupancy<'w> {
        let stripe = &self.stripes[stripe_of(channel.as_str())];
        Occupancy {
            webhooks: self,
            channel,
            _stripe: stripe.lock().await,
        }
    }

    /// `member_added`: `user_id`'s first socket joined presence `channel`.
    pub fn member_added(&self, channel: &ChannelName, user_id: &str) {
        self.member(EventType::MemberAdded, channel, user_id);
    }

    /// `member_removed`: `user_id`'s last socket left presence `channel`.
    pub fn member_removed(&self, channel: &ChannelName, user_id: &str) {
        self.member(EventType::MemberRemoved, channel, user_id);
    }

    fn member(&self, kind: EventType, channel: &ChannelName, user_id: &str) {
        let mut event = self.event(kind, channel);
        event.user_id = Some(user_id.to_owned());
        self.queue(event);
    }

    /// `client_event`: socket `socket_id` (user `user_id` on a presence
    /// channel) sent `name` with `data` (the JSON text it sent) to `channel`.
    pub fn client_event(
        &self,
        channel: &ChannelName,
        name: &str,
        data: &str,
        socket_id: &str,
        user_id: Option<String>,
    ) {
        let mut event = self.event(EventType::ClientEvent, channel);
        event.event = Some(name.to_owned());
        event.data = Some(serde_json::Value::String(data.to_owned()));
        event.socket_id = Some(socket_id.to_owned());
        event.user_id = user_id;
        self.queue(event);
    }

    /// An event about `channel`, queued behind that channel's others.
    fn event(&self, kind: EventType, channel: &ChannelName) -> Event {
        let name = channel.as_str();
        self.hooks.event(kind, name, Some(name))
    }

    fn queue(&self, event: Event) {
        // Pusher's webhooks come in no pairs to keep whole: a full outbox
        // drops the one event (counted in `dropped`).
        let _ = self.hooks.queue(event);
    }
}

impl Occupancy<'_> {
    /// After a socket joined: `channel_occupied` when it is the channel's
    /// only Pusher socket.
    pub async fn joined(self, hub: &Hub) {
        if self.pusher_sockets(hub).await == Some(1) {
            let event = self
                .webhooks
                .event(EventType::ChannelOccupied, self.channel);
            self.webhooks.queue(event);
        }
    }

    /// After a socket left: `channel_vacated` when no Pusher socket is left.
    pub async fn left(self, hub: &Hub) {
        if self.pusher_sockets(hub).await == Some(0) {
            let event = self.webhooks.event(EventType::ChannelVacated, self.channel);
            self.webhooks.queue(event);
        }
    }

    /// The channel's Pusher sockets on every node (`None` when the store
    /// could not be asked: nothing is announced then).
    async fn pusher_sockets(&self, hub: &Hub) -> Option<usize> {
        match hub.current_channel(self.channel).await {
            Ok(detail) => Some(detail.map_or(0, |detail| {
                (detail.members.iter())
                    .filter(|member| member.starts_with("pusher:"))
                    .count()
            })),
            Err(e) => {
                tracing::warn!(error = %e, channel = %self.channel, "a channel could not be counted for Pusher's occupancy webhooks");
                None
            }
        }
    }
}

/// Which stripe `channel` locks (FNV-1a: stable, and cheap for short names).
fn stripe_of(channel: &str) -> usize {
    let hash = channel
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    (hash % STRIPES as u64) as usize
}
