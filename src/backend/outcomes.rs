//! The seam's vocabulary: what a transport asks of the hub (a
//! [`PollRequest`], a batch of [`Command`]s) and what comes back from
//! whichever backend serves it ([`Waited`], [`ApplyError`], [`PollError`],
//! [`Stats`], [`Presence`]). Every backend answers in these terms, so the
//! transports encode the same replies whatever the store.
//!
//! [`Command`]: crate::protocol::Command

use std::time::Duration;

use serde::Serialize;

use crate::protocol::{ChannelName, ClientId, Cursor};
use crate::store::journal::StoreError;
use crate::store::ReadOutcome;

/// One `GET /poll`, after its token and parameters were checked.
#[derive(Debug)]
pub struct PollRequest {
    /// The token's `sub`.
    pub client: ClientId,
    /// The token's `iat`, if it has one: a backend `<unsubscribe>` after
    /// it stands against this poll's `subscribe`.
    pub issued_at: Option<u64>,
    /// The `since` cursor, if any.
    pub since: Option<Cursor>,
    /// Channels to subscribe to first (already allowed by the token).
    pub subscribe: Vec<ChannelName>,
    /// The requested `timeout`, before the cap.
    pub timeout: Option<Duration>,
    /// A Bayeux handshake's `ext`, which its `connect` hook carries.
    pub connect_ext: Option<Box<serde_json::Value>>,
    /// The open is all that is wanted (a Bayeux handshake or subscribe):
    /// nothing is read, so nothing is marked as delivered. (With Redis a
    /// poll's start script looks at the mailbox at once.)
    pub open_only: bool,
    /// `since=now`: start after whatever the mailbox holds when the poll
    /// opens (`since` is then `None`); see [`crate::hub::Hub::start_cursor`].
    pub from_now: bool,
}

/// Why a poll was refused before waiting.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// Over `max_polls_per_client`.
    #[error("this client already holds {0} open polls")]
    TooManyPolls(u32),
    /// Over `max_clients`.
    #[error("the server holds its maximum of {0} clients")]
    TooManyClients(usize),
    /// `channels` would pass `max_channels_per_client`.
    #[error("channels: a client may be subscribed to at most {0} channels")]
    TooManyChannels(usize),
    /// A hook refused it (`connect` or `subscribe`), or could not be asked
    /// with `on_error = "deny"`: nothing was applied.
    #[error(transparent)]
    Denied(#[from] crate::hooks::Denied),
    /// The durable store cannot record what this poll changes (a new
    /// mailbox, new channels).
    #[error(transparent)]
    Storage(#[from] crate::store::journal::StoreError),
}

/// What a wait on a mailbox ended with.
#[derive(Debug)]
pub enum Waited {
    /// Messages (or a reset) after the cursor.
    Read(ReadOutcome),
    /// The client was disconnected by a backend; the cursor to reply with.
    Disconnected(Cursor),
    /// The entry was replaced by a reload; the next request finds the new one.
    Replaced(Cursor),
    /// Nothing arrived in time (or the server is shutting down); the
    /// cursor where the next wait resumes.
    Nothing(Cursor),
    /// The store could not be read (Redis unreachable): the poll answers
    /// `503 storage-unavailable`, a stream ends.
    Failed(crate::store::journal::StoreError),
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
    /// The durable store could not write it; nothing was applied.
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// A Redis Cluster took part of the batch and failed the rest (a
    /// master down): what was applied, by command number (1-based), so
    /// that a backend resends only the rest.
    #[error("only part of the batch was applied ({cause}): commands applied: [{}]; channel messages that reached some members only: [{}]; the others were not applied", join(applied), join(partly))]
    PartlyApplied {
        /// Commands applied in full.
        applied: Vec<usize>,
        /// Channel messages applied in some slot groups only.
        partly: Vec<usize>,
        /// Why the rest failed.
        cause: StoreError,
    },
}

fn join(numbers: &[usize]) -> String {
    numbers
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `/stats` body.
#[derive(Debug, Serialize)]
pub struct Stats {
    /// Clients with a mailbox.
    pub clients: usize,
    /// Polls waiting or being answered right now.
    pub open_polls: u64,
    /// Messages retained over all mailboxes (a channel message counts once
    /// per member).
    pub queued_messages: u64,
    /// Messages accepted by ingest (a channel message counts once).
    pub messages_in: u64,
    /// Messages sent in poll replies (redeliveries count again).
    pub messages_out: u64,
    /// Messages dropped (to retention or `message_ttl`) before any poll
    /// reply carried them; not those lapsing by their own `ttl`.
    pub messages_lost: u64,
    /// Polls served since start.
    pub polls_total: u64,
    /// Clients forgotten for being idle.
    pub clients_evicted: u64,
    /// Channels with at least one member.
    pub channels: usize,
    /// Channel memberships.
    pub subscriptions: usize,
    /// Seconds since the hub started.
    pub uptime_s: u64,
    /// With the `redis` store: which figures are the cluster's and which
    /// this node's (absent for local stores, where all are this server's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<StatsScope>,
    /// Backend hooks' counters, when `[hooks]` is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::hooks::HookStats>,
}

/// Which `/stats` figures are whose, with a shared store.
#[derive(Debug, Serialize)]
pub struct StatsScope {
    /// `"redis"`.
    pub store: &'static str,
    /// Nodes that swept for idle clients lately (alive).
    pub nodes: u64,
    /// This node's id (random per process).
    pub node: String,
    /// Figures counted over every node.
    pub cluster: [&'static str; 6],
    /// Figures of this node only.
    pub node_figures: [&'static str; 5],
}

impl StatsScope {
    /// The split the `redis` store reports.
    pub fn redis(nodes: u64, node: &str) -> Self {
        StatsScope {
            store: "redis",
            nodes,
            node: node.to_owned(),
            cluster: [
                "clients",
                "queued_messages",
                "messages_lost",
                "clients_evicted",
                "channels",
                "subscriptions",
            ],
            node_figures: [
                "open_polls",
                "messages_in",
                "messages_out",
                "polls_total",
                "uptime_s",
            ],
        }
    }
}

/// The `/clients/<id>` body.
#[derive(Debug, Serialize)]
pub struct Presence {
    /// The id asked for.
    pub client: String,
    /// Whether at least one poll is open.
    pub online: bool,
    /// Polls open right now (tabs).
    pub open_polls: u32,
    /// Messages retained for it.
    pub pending_messages: usize,
    /// Its channels, sorted.
    pub channels: Vec<String>,
    /// Milliseconds since its last poll started or ended.
    pub idle_ms: u64,
}

/// What a backend reports for `/stats`; the hub adds this node's counters.
#[derive(Debug, Default)]
pub struct Figures {
    /// Clients with a mailbox.
    pub clients: usize,
    /// Polls open right now (on this node).
    pub open_polls: u64,
    /// Messages retained over all mailboxes.
    pub queued_messages: u64,
    /// Messages dropped before any reply carried them.
    pub messages_lost: u64,
    /// Clients forgotten for being idle.
    pub clients_evicted: u64,
    /// Channels with at least one member.
    pub channels: usize,
    /// Channel memberships.
    pub subscriptions: usize,
    /// Whose figures are whose, with a shared store.
    pub scope: Option<StatsScope>,
    /// Hook notifications dropped, when the store decides the drops (Redis,
    /// cluster-wide); `None`: the hooks' own count.
    pub hooks_dropped: Option<u64>,
}

/// One channel in `GET /channels`.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ChannelSummary {
    /// The name subscribed to (a pattern such as `/chat/*` is a name too).
    pub name: String,
    /// Clients subscribed to it.
    pub members: usize,
}

/// `GET /channels/<name>`.
#[derive(Debug, Serialize)]
pub struct ChannelDetail {
    /// The name asked for.
    pub channel: String,
    /// Its members, sorted.
    pub members: Vec<String>,
    /// How many of them hold a poll (or stream) right now.
    pub online: usize,
}
