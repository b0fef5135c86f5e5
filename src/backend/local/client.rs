//! One client: its mailbox log, open polls, channel memberships, and the
//! notifier that wakes exactly its own waiting polls.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::protocol::{ChannelName, ClientId, Cursor};
use crate::store::{MailboxLog, ReadOutcome, SharedMessage};

/// Why a client left the hub while someone still held a reference to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gone {
    /// A backend sent `<disconnect>`: open polls are told so, and messages
    /// still on their way to this mailbox go with it.
    Disconnected,
    /// Idle past `client_idle_timeout` (it had no open poll). A message
    /// addressed to it by id lands in a new mailbox.
    Evicted,
    /// The hub reloaded its state from the journal (after a failed write):
    /// a newer entry stands for this client.
    Replaced,
}

/// A client as the hub holds it; shared by the client map, channel member
/// sets and open polls.
pub(super) struct Client {
    /// The backend-chosen id.
    pub id: ClientId,
    /// Its mailbox's epoch, fixed for the life of this entry: what journal
    /// records name it by.
    pub epoch: u32,
    /// Wakes this client's waiting polls and nobody else's.
    pub wake: Notify,
    /// One lock per client, never held across an `.await`: appends to and
    /// reads from one mailbox are serialised, different mailboxes never
    /// contend. Lock order: a client's lock may be taken while holding a
    /// shard of the client map, and a channel shard may be taken while
    /// holding a client's lock; never the other way round.
    state: Mutex<ClientState>,
}

pub(super) struct ClientState {
    pub log: Box<dyn MailboxLog>,
    pub open_polls: u32,
    /// Last poll start or end (or creation): what idle eviction measures.
    pub last_active: Instant,
    /// Sorted so presence replies list them in a stable order. Always equal
    /// to the set of channels whose member map holds this client: both are
    /// changed together under this lock.
    pub channels: BTreeSet<ChannelName>,
    /// Channels a backend `<unsubscribe>`d this client from, oldest first,
    /// with the unix second it happened: a poll's `channels=` does not undo
    /// them (see `membership.rs`). At most `max_channels_per_client`; past
    /// that the oldest is forgotten.
    pub revoked: VecDeque<Revocation>,
    /// Set when the client was removed from the hub's map.
    pub gone: Option<Gone>,
    /// With a journal: messages given a sequence number in a record but not
    /// appended yet (they are appended once the record is written). The
    /// next message's number counts them; the reaper leaves such a client
    /// alone.
    pub reserved: u64,
    /// With a journal: the `last_active` most recently recorded, so a sweep
    /// records only what changed.
    pub recorded_active: Instant,
    /// With hooks: whether the client is online, as `online`/`offline`
    /// notifications tell it (see `hooked.rs`).
    pub presence: Presence,
    /// With hooks: channels whose `subscribed` was dropped (the queue was
    /// full), so their `unsubscribed` is not sent either. Empty unless the
    /// notification queue overflowed.
    pub unannounced: Vec<ChannelName>,
}

/// A client's presence as hook notifications tell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    /// No `online` sent (or its `offline` sent already).
    Offline,
    /// Came online; `announced` when its `online` was queued (not dropped
    /// for want of room), so that its `offline` is owed.
    Online { announced: bool },
}

/// A backend's `<unsubscribe>`, remembered against the browser's own grant.
pub(super) struct Revocation {
    pub channel: ChannelName,
    /// Unix seconds: a token issued after this may ask for the channel again.
    pub at: u64,
}

impl Client {
    pub fn new(id: ClientId, log: Box<dyn MailboxLog>, now: Instant) -> Arc<Self> {
        Arc::new(Client {
            id,
            epoch: log.head().epoch,
            wake: Notify::new(),
            state: Mutex::new(ClientState {
                log,
                open_polls: 0,
                last_active: now,
                channels: BTreeSet::new(),
                revoked: VecDeque::new(),
                gone: None,
                reserved: 0,
                recorded_active: now,
                presence: Presence::Offline,
                unannounced: Vec::new(),
            }),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, ClientState> {
        // A panic while holding this lock would be a bug in a few lines of
        // bookkeeping; the state is still consistent enough to keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues messages (all under one lock hold, so a poll sees all of them
    /// or none) and wakes this client's polls; `reserved` of them had their
    /// sequence numbers given out already. Queues nothing and says why when
    /// the client already left the hub.
    pub fn append(
        &self,
        messages: impl IntoIterator<Item = SharedMessage>,
        reserved: u64,
        now: Instant,
    ) -> Result<(), Gone> {
        {
            let mut state = self.lock();
            state.reserved -= reserved;
            if let Some(gone) = state.gone {
                return Err(gone);
            }
            for message in messages {
                state.log.append(message, now);
            }
        }
        self.wake.notify_waiters();
        Ok(())
    }
}

/// What one look at a mailbox found for a poll.
pub(super) enum Looked {
    /// Nothing to say yet: keep waiting. The mailbox's head at that look,
    /// read under the same lock: where a reply with nothing resumes. (Read
    /// any later, it could name a message appended since, which the
    /// reader would then skip.)
    Nothing(Cursor),
    /// Messages (or a reset) to reply with.
    Read(ReadOutcome),
    /// The client was disconnected; reply with this cursor.
    Disconnected(Cursor),
    /// The entry was replaced by a reload: reply empty with this cursor
    /// (the next poll finds the new entry).
    Replaced(Cursor),
}

impl ClientState {
    pub fn look(&mut self, since: Option<Cursor>, now: Instant, max_bytes: usize) -> Looked {
        match self.gone {
            Some(Gone::Disconnected) => {
                return Looked::Disconnected(since.unwrap_or_else(|| self.log.head()))
            }
            Some(Gone::Replaced) => {
                return Looked::Replaced(since.unwrap_or_else(|| self.log.head()))
            }
            _ => {}
        }
        if self.log.has_after(since, now) {
            Looked::Read(self.log.read_after(since, now, max_bytes))
        } else {
            Looked::Nothing(self.log.head())
        }
    }

    /// No open poll, no poll for `idle_limit` and no message on its way:
    /// the reaper may forget it.
    pub fn is_idle(&self, now: Instant, idle_limit: Duration) -> bool {
        self.open_polls == 0
            && self.reserved == 0
            && now.saturating_duration_since(self.last_active) >= idle_limit
    }

    /// The sequence number the next message will get, counting those
    /// reserved for records not yet written; reserves it.
    pub fn reserve_seq(&mut self) -> u64 {
        self.reserved += 1;
        self.log.head().seq + self.reserved
    }
}
