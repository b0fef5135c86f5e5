//! Applying an ingest batch: every command or none, and what a poll sees of
//! it.
//!
//! The checks that could refuse a batch (room for new clients, room for
//! more channels per client) all run before the first command applies.
//! Commands then apply in order, but the messages a batch adds to one
//! mailbox are appended together, under one hold of that client's lock:
//! a poll sees all of a batch's messages to its mailbox or none of them.
//! Different mailboxes become visible one after the other, microseconds
//! apart. With a durable store, the appends wait until the journal has
//! written the batch (see `durable.rs`). Membership changes (`<subscribe>`, `<unsubscribe>`,
//! `<disconnect>`) take effect in batch order, so a channel message reaches
//! exactly the clients that are members at its place in the batch.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::client::{Client, Gone};
use super::durable::Recorder;
use super::membership::has_channel_room;
use super::LocalBackend;
use crate::backend::outcomes::ApplyError;
use crate::protocol::message::lifetime;
use crate::protocol::{reply, ChannelName, ClientId, Command, Target};
use crate::store::journal::Change;
use crate::store::{SharedMessage, StoredMessage};

impl LocalBackend {
    /// Applies a validated batch: all of it, or nothing when a limit would
    /// be passed or the store cannot write it; with a durable store,
    /// returns once it is written.
    pub(super) async fn apply_batch(&self, commands: Vec<Command>) -> Result<(), ApplyError> {
        self.check_client_room(&commands)?;
        self.check_channel_room(&commands)?;
        let messages = commands
            .iter()
            .filter(|c| matches!(c, Command::Message { .. }))
            .count();
        let commit = {
            let mut ordered = self.ordered()?;
            let deliveries = self.plan(commands, messages, &mut ordered.record);
            let backend = self.clone();
            self.submit(ordered, Some(Box::new(move || deliveries.flush(&backend))))?
        };
        self.committed(commit).await?;
        if let Some(hooks) = &self.0.common.hooks {
            // Its (un)subscribes and disconnects may have queued hook
            // notifications: acknowledged once they are in the outbox file
            // too (at once without one).
            hooks.written().await;
        }
        Ok(())
    }

    /// Makes the batch's changes in order; its messages are numbered (and
    /// recorded) but appended only by [`Deliveries::flush`].
    fn plan(&self, commands: Vec<Command>, messages: usize, record: &mut Recorder) -> Deliveries {
        let now = Instant::now();
        let ts_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut deliveries = Deliveries::new(messages, record.is_on());
        for command in commands {
            match command {
                Command::Message {
                    target,
                    event,
                    payload,
                    ttl,
                    exclude,
                } => {
                    let channel = match &target {
                        Target::Channel(c) => Some(c),
                        Target::Client(_) => None,
                    };
                    let message = Arc::new(self.stored_message(
                        reply::message_tail(
                            channel,
                            event.as_deref(),
                            exclude.as_deref(),
                            &payload,
                            ts_ms,
                        ),
                        ttl,
                        now,
                    ));
                    let direct = match &target {
                        Target::Client(id) => Some(self.client_or_create(id, now, record)),
                        Target::Channel(_) => None,
                    };
                    let members = match &target {
                        Target::Channel(name) => self.0.channels.members(name),
                        Target::Client(_) => Vec::new(),
                    };
                    let recipients = direct.into_iter().map(|c| (c, true));
                    let recipients = recipients.chain(members.into_iter().map(|m| (m, false)));
                    // With a journal, each recipient's number is given now
                    // and recorded; the append waits for the write.
                    let mut numbered = Vec::new();
                    for (client, by_id) in recipients {
                        if record.is_on() {
                            let seq = client.lock().reserve_seq();
                            numbered.push((client.id.clone(), client.epoch, seq));
                        }
                        deliveries.add(self, client, message.clone(), by_id, now);
                    }
                    if !numbered.is_empty() {
                        record.change(|| Change::Message {
                            message,
                            recipients: numbered,
                        });
                    }
                }
                Command::Subscribe { client, channel } => self.subscribe(&client, &channel, record),
                Command::Leave { client, channel } => self.leave(&client, &channel, record),
                Command::Unsubscribe { client, channel } => {
                    self.unsubscribe(&client, &channel, record)
                }
                Command::Disconnect { client } => self.disconnect(&client, record),
            }
        }
        deliveries
    }

    /// Refuses a batch that would pass `max_clients`.
    fn check_client_room(&self, commands: &[Command]) -> Result<(), ApplyError> {
        let max = self.0.common.limits.max_clients;
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
        let max = self.0.common.limits.max_channels_per_client;
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
        let (lifetime, own_ttl) = lifetime(ttl, self.0.common.limits.message_ttl);
        StoredMessage::new(json_tail, now + lifetime, own_ttl)
    }

    /// Appends to `id`'s current mailbox. A client evicted since it was
    /// looked up is recreated: a message addressed to a client always lands.
    fn deliver_to_id(&self, id: &ClientId, messages: Vec<SharedMessage>, now: Instant) {
        loop {
            let client = self.client_or_create(id, now, &mut Recorder::off());
            match client.append(messages.clone(), 0, now) {
                Err(Gone::Evicted) => continue,
                // Disconnected after this batch looked it up: a
                // `<disconnect>` ordered after the message takes it along.
                // Replaced: a reload brought back what the journal holds.
                Ok(()) | Err(Gone::Disconnected | Gone::Replaced) => return,
            }
        }
    }

    /// `<disconnect>`: forgets the client; its open polls wake and answer
    /// `disconnected`, its channel memberships go.
    pub(super) fn disconnect(&self, id: &ClientId, record: &mut Recorder) {
        let Some((_, client)) = self.0.clients.remove(id) else {
            return;
        };
        record.change(|| Change::Gone {
            client: id.clone(),
            epoch: client.epoch,
        });
        let channels = {
            let mut state = client.lock();
            state.gone = Some(Gone::Disconnected);
            let channels = std::mem::take(&mut state.channels);
            self.leaving(&mut state, &client, &channels);
            channels
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
pub(super) struct Deliveries {
    /// A batch with at most one message gives each mailbox at most one, so
    /// without a journal it appends at once instead of grouping (a
    /// 10,000-member channel message is the common case, and grouping would
    /// be pure overhead).
    immediate: bool,
    /// Whether the messages had their sequence numbers reserved (journal).
    reserved: bool,
    /// Per mailbox: its client and its messages.
    pending: Vec<(Arc<Client>, Vec<Delivery>)>,
    /// Index into `pending` by the client's address (this very entry, not
    /// a later client of the same id); the address is only compared.
    index: HashMap<usize, usize>,
}

impl Deliveries {
    fn new(messages: usize, journaled: bool) -> Self {
        Deliveries {
            immediate: messages <= 1 && !journaled,
            reserved: journaled,
            pending: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn add(
        &mut self,
        backend: &LocalBackend,
        client: Arc<Client>,
        message: SharedMessage,
        by_id: bool,
        now: Instant,
    ) {
        if self.immediate {
            return deliver(backend, &client, &[Delivery { message, by_id }], false, now);
        }
        match self.index.entry(Arc::as_ptr(&client) as usize) {
            Entry::Occupied(at) => self.pending[*at.get()].1.push(Delivery { message, by_id }),
            Entry::Vacant(slot) => {
                slot.insert(self.pending.len());
                self.pending
                    .push((client, vec![Delivery { message, by_id }]));
            }
        }
    }

    /// Appends everything gathered (with a journal: once it is written).
    fn flush(self, backend: &LocalBackend) {
        let now = Instant::now();
        for (client, messages) in &self.pending {
            deliver(backend, client, messages, self.reserved, now);
        }
    }
}

/// Appends one mailbox's share of a batch. If the client was evicted
/// meanwhile, what was addressed to it by id goes to its new mailbox (what
/// came through a channel it no longer belongs to does not).
fn deliver(
    backend: &LocalBackend,
    client: &Client,
    messages: &[Delivery],
    reserved: bool,
    now: Instant,
) {
    let all = messages.iter().map(|d| d.message.clone());
    let reserved = if reserved { messages.len() as u64 } else { 0 };
    if let Err(Gone::Evicted) = client.append(all, reserved, now) {
        let by_id: Vec<SharedMessage> = messages
            .iter()
            .filter(|d| d.by_id)
            .map(|d| d.message.clone())
            .collect();
        if !by_id.is_empty() {
            backend.deliver_to_id(&client.id, by_id, now);
        }
    }
}
