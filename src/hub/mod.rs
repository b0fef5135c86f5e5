//! The hub: every client's mailbox, channel memberships, and waiting polls.
//!
//! It knows nothing of HTTP. Ingest hands it validated [`Command`]s; the
//! public face asks it to [`Hub::poll`]. Clients live in a sharded map with
//! one lock per client inside, so no lock is global: a message to one client
//! touches one shard briefly and that client's own lock, and wakes only that
//! client's polls.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use std::collections::HashMap;

use dashmap::DashMap;

use crate::protocol::{reply, ChannelName, ClientId, Command, Target};
use crate::store::{SharedMessage, Store, StoredMessage};

mod channels;
mod client;
mod poll;
mod reaper;
mod stats;

pub use client::{Client, Gone};
pub use poll::{OpenPoll, PollError, PollReply, PollRequest};
pub use reaper::spawn_reaper;
pub use stats::{Presence, Stats};

use channels::Channels;

/// The hub's share of the `[limits]` section.
#[derive(Debug, Clone)]
pub struct HubLimits {
    /// How long a poll with no `timeout` waits.
    pub poll_timeout: Duration,
    /// Cap on a poll's `timeout`.
    pub max_poll_timeout: Duration,
    /// A client with no open poll this long is forgotten.
    pub client_idle_timeout: Duration,
    /// Longest a message is retained; caps a message's own `ttl`.
    pub message_ttl: Duration,
    /// Open polls one client may hold (tabs).
    pub max_polls_per_client: u32,
    /// Clients (mailboxes) the hub holds at most.
    pub max_clients: usize,
    /// Channels one client may be subscribed to: a browser whose token
    /// grants a prefix could otherwise subscribe to names without end.
    pub max_channels_per_client: usize,
}

/// Cheap-clone handle to the hub.
#[derive(Clone)]
pub struct Hub(Arc<Shared>);

struct Shared {
    /// Every client with a mailbox. Sharded (DashMap) so that lookups from
    /// many cores rarely contend; values are `Arc` so a poll can hold its
    /// client without holding a shard lock.
    clients: DashMap<ClientId, Arc<Client>>,
    channels: Channels,
    store: Arc<dyn Store>,
    limits: HubLimits,
    /// Monotonic counters for `/stats`; relaxed, each bumped once per request.
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    polls_total: AtomicU64,
    clients_evicted: AtomicU64,
    started: Instant,
    /// Set once shutdown begins. Open polls learn of it through their own
    /// client's notifier, so no poll registers with a signal shared by all
    /// (a shared one would be a lock taken by every poll).
    shutting_down: AtomicBool,
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// It would subscribe a client to more than `max_channels_per_client`
    /// channels; nothing was applied.
    #[error("the batch would subscribe {client} to more than {max} channels")]
    TooManyChannels {
        /// The client.
        client: ClientId,
        /// `max_channels_per_client`.
        max: usize,
    },
    /// Creating its clients would pass `max_clients`; nothing was applied.
    #[error("the batch would create {new} clients, over the limit of {max}")]
    TooManyClients {
        /// Clients the batch would have created.
        new: usize,
        /// `max_clients`.
        max: usize,
    },
}

impl Hub {
    /// An empty hub storing mailboxes in `store`.
    pub fn new(store: Arc<dyn Store>, limits: HubLimits) -> Self {
        Hub(Arc::new(Shared {
            clients: DashMap::new(),
            channels: Channels::default(),
            store,
            limits,
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            polls_total: AtomicU64::new(0),
            clients_evicted: AtomicU64::new(0),
            started: Instant::now(),
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// Starts shutting down: every open poll answers at once (empty, unless
    /// it has messages) and [`Hub::is_shutting_down`] turns true for the HTTP
    /// faces to refuse new work.
    pub fn begin_shutdown(&self) {
        // The flag is stored before the wake-ups, and a poll enables its
        // notifier before it reads the flag: either it sees the flag or it
        // is woken.
        self.0.shutting_down.store(true, Ordering::SeqCst);
        for client in self.0.clients.iter() {
            client.wake.notify_waiters();
        }
    }

    /// Whether [`Hub::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::SeqCst)
    }

    /// The limits in force.
    pub fn limits(&self) -> &HubLimits {
        &self.0.limits
    }

    /// Applies a validated batch in order. The only check left (room for new
    /// clients) is made before the first command, so either all apply or none.
    pub fn apply(&self, commands: Vec<Command>) -> Result<usize, ApplyError> {
        self.check_room_for(&commands)?;
        self.check_channel_room(&commands)?;
        let now = Instant::now();
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut messages = 0;
        let accepted = commands.len();
        for command in commands {
            match command {
                Command::Message {
                    target,
                    event,
                    payload,
                    ttl,
                } => {
                    messages += 1;
                    let channel = match &target {
                        Target::Channel(c) => Some(c),
                        Target::Client(_) => None,
                    };
                    let message = Arc::new(self.stored_message(
                        reply::message_tail(channel, event.as_deref(), &payload, ts_ms),
                        ttl,
                        now,
                    ));
                    match target {
                        Target::Client(id) => self.deliver(&id, message, now),
                        Target::Channel(name) => self.publish(&name, message, now),
                    }
                }
                Command::Subscribe { client, channel } => self.subscribe(&client, &channel),
                Command::Unsubscribe { client, channel } => self.unsubscribe(&client, &channel),
                Command::Disconnect { client } => self.disconnect(&client),
            }
        }
        self.0.messages_in.fetch_add(messages, Ordering::Relaxed);
        Ok(accepted)
    }

    fn check_room_for(&self, commands: &[Command]) -> Result<(), ApplyError> {
        let max = self.0.limits.max_clients;
        let mut new: Vec<&ClientId> = commands
            .iter()
            .filter_map(Command::creates_client)
            .filter(|id| !self.0.clients.contains_key(*id))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        new.sort_unstable();
        new.dedup();
        // Concurrent batches can each pass this check, so the limit may be
        // overshot by what is in flight; it bounds memory, not an exact count.
        if self.0.clients.len() + new.len() > max {
            return Err(ApplyError::TooManyClients {
                new: new.len(),
                max,
            });
        }
        Ok(())
    }

    /// Checks that no client would pass `max_channels_per_client`. Like the
    /// client limit, concurrent batches can overshoot it by what is in flight.
    fn check_channel_room(&self, commands: &[Command]) -> Result<(), ApplyError> {
        let mut wanted: HashMap<&ClientId, Vec<&ChannelName>> = HashMap::new();
        for command in commands {
            if let Command::Subscribe { client, channel } = command {
                wanted.entry(client).or_default().push(channel);
            }
        }
        let max = self.0.limits.max_channels_per_client;
        for (client, channels) in wanted {
            let existing = self.0.clients.get(client).map(|c| c.clone());
            if !room_for(existing.as_deref(), channels.into_iter(), max) {
                return Err(ApplyError::TooManyChannels {
                    client: client.clone(),
                    max,
                });
            }
        }
        Ok(())
    }

    fn stored_message(
        &self,
        json_tail: Box<str>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> StoredMessage {
        let retention = self.0.limits.message_ttl;
        let own_ttl = ttl.is_some_and(|t| t < retention);
        let lifetime = ttl.map_or(retention, |t| t.min(retention));
        StoredMessage {
            json_tail,
            expires_at: now + lifetime,
            own_ttl,
        }
    }

    /// The client's entry, created if missing (no `max_clients` check: the
    /// caller made it).
    fn client_or_create(&self, id: &ClientId, now: Instant) -> Arc<Client> {
        if let Some(client) = self.0.clients.get(id) {
            return client.clone();
        }
        self.0
            .clients
            .entry(id.clone())
            .or_insert_with(|| Client::new(id.clone(), self.0.store.open(id), now))
            .clone()
    }

    fn deliver(&self, id: &ClientId, message: SharedMessage, now: Instant) {
        // A client evicted between lookup and append is recreated: a message
        // addressed to a client always lands in its current mailbox.
        while !self.client_or_create(id, now).append(message.clone(), now) {}
    }

    fn publish(&self, channel: &ChannelName, message: SharedMessage, now: Instant) {
        for member in self.0.channels.members(channel) {
            member.append(message.clone(), now);
        }
    }

    fn subscribe(&self, id: &ClientId, channel: &ChannelName) {
        loop {
            let client = self.client_or_create(id, Instant::now());
            self.0.channels.add(channel, &client);
            let mut state = client.lock();
            if state.gone.is_none() {
                state.channels.insert(channel.clone());
                return;
            }
            drop(state);
            self.0.channels.remove(channel, &client);
        }
    }

    fn unsubscribe(&self, id: &ClientId, channel: &ChannelName) {
        let Some(client) = self.0.clients.get(id).map(|c| c.clone()) else {
            return;
        };
        client.lock().channels.remove(channel);
        self.0.channels.remove(channel, &client);
    }

    /// `<disconnect>`: forgets the client; its open polls wake and answer
    /// `disconnected`, its channel memberships go.
    fn disconnect(&self, id: &ClientId) {
        let Some((_, client)) = self.0.clients.remove(id) else {
            return;
        };
        let channels = {
            let mut state = client.lock();
            state.gone = Some(Gone::Disconnected);
            std::mem::take(&mut state.channels)
        };
        client.wake.notify_waiters();
        self.drop_memberships(&client, &channels);
    }

    fn drop_memberships<'a>(
        &self,
        client: &Arc<Client>,
        channels: impl IntoIterator<Item = &'a ChannelName>,
    ) {
        for channel in channels {
            self.0.channels.remove(channel, client);
        }
    }
}

/// Whether `client` (or a new client, if `None`) can take `channels` without
/// passing `max` subscriptions.
fn room_for<'a>(
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

#[cfg(test)]
mod tests;
