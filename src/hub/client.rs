//! One client: its mailbox log, open polls, channel memberships, and the
//! notifier that wakes exactly its own waiting polls.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::protocol::{ChannelName, ClientId, Cursor};
use crate::store::{MailboxLog, ReadOutcome, SharedMessage};

/// Why a client left the hub while someone still held a reference to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    /// A backend sent `<disconnect>`: open polls are told so.
    Disconnected,
    /// Idle past `client_idle_timeout` (it had no open poll).
    Evicted,
}

/// A client as the hub holds it; shared by the client map, channel member
/// sets and open polls.
pub struct Client {
    /// The backend-chosen id.
    pub id: ClientId,
    /// Wakes this client's waiting polls and nobody else's.
    pub(super) wake: Notify,
    /// One lock per client, never held across an `.await`: appends to and
    /// reads from one mailbox are serialised, different mailboxes never contend.
    state: Mutex<ClientState>,
}

pub(super) struct ClientState {
    pub log: Box<dyn MailboxLog>,
    pub open_polls: u32,
    /// Last poll start or end (or creation): what idle eviction measures.
    pub last_active: Instant,
    /// Sorted so presence replies list them in a stable order.
    pub channels: BTreeSet<ChannelName>,
    /// Set when the client was removed from the hub's map.
    pub gone: Option<Gone>,
}

impl Client {
    pub(super) fn new(id: ClientId, log: Box<dyn MailboxLog>, now: Instant) -> Arc<Self> {
        Arc::new(Client {
            id,
            wake: Notify::new(),
            state: Mutex::new(ClientState {
                log,
                open_polls: 0,
                last_active: now,
                channels: BTreeSet::new(),
                gone: None,
            }),
        })
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, ClientState> {
        // A panic while holding this lock would be a bug in a few lines of
        // bookkeeping; the state is still consistent enough to keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a message and wakes this client's polls. Returns `false` (and
    /// queues nothing) when the client already left the hub.
    pub(super) fn append(&self, message: SharedMessage, now: Instant) -> bool {
        {
            let mut state = self.lock();
            if state.gone.is_some() {
                return false;
            }
            state.log.append(message, now);
        }
        self.wake.notify_waiters();
        true
    }
}

/// What one look at a mailbox found for a poll.
pub(super) enum Looked {
    /// Nothing to say yet: keep waiting.
    Nothing,
    /// Messages (or a reset) to reply with.
    Read(ReadOutcome),
    /// The client was disconnected; reply with this cursor.
    Disconnected(Cursor),
}

impl ClientState {
    pub(super) fn look(&mut self, since: Option<Cursor>, now: Instant) -> Looked {
        if self.gone == Some(Gone::Disconnected) {
            return Looked::Disconnected(since.unwrap_or_else(|| self.log.head()));
        }
        if self.log.has_after(since, now) {
            Looked::Read(self.log.read_after(since, now))
        } else {
            Looked::Nothing
        }
    }
}
