//! The durability seam: what the hub tells a durable store, and what such a
//! store gives back at start-up.
//!
//! Mailboxes always live in memory (the logs polls read under each
//! client's lock). A durable store adds a [`Journal`]: the hub describes
//! every change to its state as a [`Change`], physically (this message went
//! to these mailboxes with these sequence numbers; this client was created
//! with this epoch), and submits the changes of one ingest batch as one
//! unit. The journal writes units in the order submitted, many per write
//! (group commit), and only once a unit is written runs its after-commit
//! step (the hub's appends, which make the messages visible to polls) and
//! resolves its [`Commit`], which is when ingest answers `<ok>`. So no poll
//! ever sees a message that a crash could take back, and the same ids come
//! back after a restart.
//!
//! Records carry the epoch of the mailbox incarnation they touch, so that
//! replaying them is idempotent: a record already reflected in a snapshot
//! changes nothing when replayed on top of it.

use std::time::SystemTime;

use tokio::sync::oneshot;

use super::SharedMessage;
use crate::protocol::{ChannelName, ClientId};

/// One change to the hub's state, as a durable store records it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A mailbox was created with this epoch.
    Created {
        /// The client.
        client: ClientId,
        /// Its mailbox's epoch.
        epoch: u32,
    },
    /// A message was appended to these mailboxes.
    Message {
        /// The message, shared by every recipient.
        message: SharedMessage,
        /// Each recipient with its mailbox's epoch and the message's
        /// sequence number there.
        recipients: Vec<(ClientId, u32, u64)>,
    },
    /// A client joined a channel.
    Subscribed {
        /// The client.
        client: ClientId,
        /// Its mailbox's epoch.
        epoch: u32,
        /// The channel.
        channel: ChannelName,
    },
    /// A backend `<unsubscribe>`: left the channel (if a member) and the
    /// revocation is remembered from `at` (unix seconds). `at = 0` is a
    /// browser's own leave ([`crate::protocol::Command::Leave`]): nothing
    /// is remembered.
    Unsubscribed {
        /// The client.
        client: ClientId,
        /// Its mailbox's epoch.
        epoch: u32,
        /// The channel.
        channel: ChannelName,
        /// When, in unix seconds.
        at: u64,
    },
    /// The mailbox was dropped (`<disconnect>` or idle eviction).
    Gone {
        /// The client.
        client: ClientId,
        /// The epoch of the mailbox that went.
        epoch: u32,
    },
    /// When these clients were last active (a poll started or ended); the
    /// idle clock resumes from here after a restart.
    Active {
        /// Each client with its epoch and last activity.
        clients: Vec<(ClientId, u32, SystemTime)>,
    },
}

/// A client as a durable store recovered it.
#[derive(Debug, Clone)]
pub struct RecoveredClient {
    /// The client.
    pub id: ClientId,
    /// Its mailbox's epoch.
    pub epoch: u32,
    /// Sequence number of the oldest retained message (or the next one to
    /// be assigned when none is retained).
    pub first_seq: u64,
    /// The highest sequence number dropped before it was due (0: none).
    pub lost_through: u64,
    /// Retained messages, oldest first, from `first_seq` on.
    pub messages: Vec<SharedMessage>,
    /// Its channels.
    pub channels: Vec<ChannelName>,
    /// Backend unsubscribes remembered against its token grants.
    pub revoked: Vec<(ChannelName, u64)>,
    /// Its last activity.
    pub last_active: SystemTime,
}

/// Every client's image, as a snapshot copies them (lazily: one client's
/// lock at a time).
pub type StateImages = Box<dyn Iterator<Item = RecoveredClient>>;

/// Why a durable store could not take a change.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A write failed (disk full, I/O error) or the store is recovering
    /// from one; nothing of the refused unit was kept.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// Runs once a unit is durable, in submission order.
pub type AfterCommit = Box<dyn FnOnce() + Send>;

/// Resolves when a submitted unit is durable and its after-commit step ran.
#[must_use = "a unit is acknowledged only once its commit resolves"]
pub struct Commit(pub oneshot::Receiver<Result<(), StoreError>>);

impl Commit {
    /// Waits for the unit to be written.
    pub async fn wait(self) -> Result<(), StoreError> {
        self.0
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the journal writer stopped".into())))
    }
}

/// A durable store's write path.
pub trait Journal: Send + Sync {
    /// Queues one unit, to be written whole or not at all, after every unit
    /// submitted before it. Refuses at once (nothing queued) while the store
    /// cannot write. The caller serialises submissions with the state
    /// changes they describe.
    fn submit(
        &self,
        changes: Vec<Change>,
        after_commit: Option<AfterCommit>,
    ) -> Result<Commit, StoreError>;
    /// Whether a unit submitted now could be written (false after a failed
    /// write, until [`Journal::reopen`] succeeds).
    fn writable(&self) -> bool;
    /// After a failed write: checks that writing works again, and if so
    /// returns the state its files hold. Still refuses units until
    /// [`Journal::resume`], so the state cannot move meanwhile. Blocking.
    fn reopen(&self) -> Result<Vec<RecoveredClient>, StoreError>;
    /// Accepts units again (after the caller put the reopened state in
    /// place).
    fn resume(&self);
    /// Whether the journal has grown enough past the state that a snapshot
    /// should replace it.
    fn snapshot_due(&self) -> bool;
    /// Writes the whole state as a snapshot and deletes what it makes
    /// obsolete. Changes may go on meanwhile: the journal first starts a
    /// new segment (kept), and only then asks `state` for every client, so
    /// a change is either in a kept segment or already in the state copied
    /// (or both: replaying it on top of the snapshot is idempotent). A
    /// client created between the two is thus never in neither. Blocking.
    fn write_snapshot(&self, state: &mut dyn FnMut() -> StateImages) -> Result<(), StoreError>;
}
