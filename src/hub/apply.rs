//! Applying an ingest batch: every command or none, and what a poll sees of
//! it.
//!
//! The checks that could refuse a batch (room for new clients, room for
//! more channels per client) all run before the first command applies.
//! Commands then apply in order, but the messages a batch adds to one
//! mailbox are appended together, under one hold of that client's lock:
//! a poll sees all of a batch's messages to its mailbox or none of them.
//! Different mailboxes become visible one after the other, microseconds
//! apart; membership changes (`<subscribe>`, `<unsubscribe>`,
//! `<disconnect>`) take effect in batch order, so a channel message reaches
//! exactly the clients that are members at its place in the batch.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::{Client, Gone};
use super::membership::has_channel_room;
use super::Hub;
use crate::protocol::{reply, ChannelName, ClientId, Command, Target};
use crate::store::{SharedMessage, StoredMessage};

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
    /// Applies a validated batch: all of it, or nothing when a limit would
    /// be passed. Returns how many commands were applied.
    pub fn apply(&self, commands: Vec<Command>) -> Result<usize, ApplyError> {
        self.check_client_room(&commands)?;
        self.check_channel_room(&commands)?;
        let now = Instant::now();
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let accepted = commands.len();
        let message_count = commands
            .iter()
            .filter(|c| matches!(c, Command::Message { .. }))
            .count();
        let mut deliveries = Deliveries::new(message_count);
        for command in commands {
            match command {
                Command::Message {
                    target,
                    event,
                    payload,
                    ttl,
                } => {
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
                        Target::Client(id) => {
                            let client = self.client_or_create(&id, now);
                            deliveries.add(self, client, message, true, now);
                        }
                        Target::Channel(name) => {
                            for member in self.0.channels.members(&name) {
                                deliveries.add(self, member, message.clone(), false, now);
                            }
                        }
                    }
                }
                Command::Subscribe { client, channel } => self.subscribe(&client, &channel),
                Command::Unsubscribe { client, channel } => self.unsubscribe(&client, &channel),
                Command::Disconnect { client } => self.disconnect(&client),
            }
        }
        deliveries.flush(self, now);
        self.0
            .messages_in
            .fetch_add(message_count as u64, Ordering::Relaxed);
        Ok(accepted)
    }

    /// Refuses a batch that would pass `max_clients`.
    fn check_client_room(&self, commands: &[Command]) -> Result<(), ApplyError> {
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

    /// Refuses a batch that would take a client past
    /// `max_channels_per_client`. Like the client limit, concurrent batches
    /// can overshoot it by what is in flight.
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
            if !has_channel_room(existing.as_deref(), channels.into_iter(), max) {
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

    /// Appends to `id`'s current mailbox. A client evicted since it was
    /// looked up is recreated: a message addressed to a client always lands.
    fn deliver_to_id(&self, id: &ClientId, messages: Vec<SharedMessage>, now: Instant) {
        loop {
            match self.client_or_create(id, now).append(messages.clone(), now) {
                Err(Gone::Evicted) => continue,
                // Disconnected after this batch looked it up: a
                // `<disconnect>` ordered after the message takes it along.
                Ok(()) | Err(Gone::Disconnected) => return,
            }
        }
    }

    /// `<disconnect>`: forgets the client; its open polls wake and answer
    /// `disconnected`, its channel memberships go.
    pub(super) fn disconnect(&self, id: &ClientId) {
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
}

/// One message on its way to one mailbox.
struct Delivery {
    message: SharedMessage,
    /// Addressed to the client by id (rather than through a channel).
    by_id: bool,
}

/// The messages one batch appends, per mailbox, in batch order.
struct Deliveries {
    /// A batch with at most one message gives each mailbox at most one, so
    /// it appends at once instead of grouping (a 10,000-member channel
    /// message is the common case, and grouping would be pure overhead).
    immediate: bool,
    /// Per mailbox: its client and its messages.
    pending: Vec<(Arc<Client>, Vec<Delivery>)>,
    /// Index into `pending` by the client's address (this very entry, not
    /// a later client of the same id).
    index: HashMap<*const Client, usize>,
}

impl Deliveries {
    fn new(messages: usize) -> Self {
        Deliveries {
            immediate: messages <= 1,
            pending: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(
        &mut self,
        hub: &Hub,
        client: Arc<Client>,
        message: SharedMessage,
        by_id: bool,
        now: Instant,
    ) {
        if self.immediate {
            return deliver(hub, &client, &[Delivery { message, by_id }], now);
        }
        match self.index.entry(Arc::as_ptr(&client)) {
            Entry::Occupied(at) => self.pending[*at.get()].1.push(Delivery { message, by_id }),
            Entry::Vacant(slot) => {
                slot.insert(self.pending.len());
                self.pending
                    .push((client, vec![Delivery { message, by_id }]));
            }
        }
    }

    fn flush(self, hub: &Hub, now: Instant) {
        for (client, messages) in &self.pending {
            deliver(hub, client, messages, now);
        }
    }
}

/// Appends one mailbox's share of a batch. If the client was evicted
/// meanwhile, what was addressed to it by id goes to its new mailbox (what
/// came through a channel it no longer belongs to does not).
fn deliver(hub: &Hub, client: &Client, messages: &[Delivery], now: Instant) {
    let all = messages.iter().map(|d| d.message.clone());
    if let Err(Gone::Evicted) = client.append(all, now) {
        let by_id: Vec<SharedMessage> = messages
            .iter()
            .filter(|d| d.by_id)
            .map(|d| d.message.clone())
            .collect();
        if !by_id.is_empty() {
            hub.deliver_to_id(&client.id, by_id, now);
        }
    }
}
