//! The scripts' calls, typed: what each takes and what its reply means.
//! Everything that knows a script's argument order or a reply's positions
//! is here (and in the `.lua` files); the Redis backend
//! (`src/backend/redis/`) works with the values below.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::replies::{Args, Reply};
use super::{unexpected_reply, RedisStore, Step};
use crate::protocol::message::lifetime;
use crate::protocol::reply::{message_tail, MAX_ENTRY_OVERHEAD};
use crate::protocol::{ChannelName, ClientId, Command, Cursor, Target};
use crate::store::journal::StoreError;
use crate::store::{ReadOutcome, StoredMessage};

/// What a look at a mailbox found.
#[derive(Debug)]
pub enum MailboxRead {
    /// The mailbox is gone (disconnected).
    Gone,
    /// Nothing after the cursor; the head to resume from.
    Nothing(Cursor),
    /// Messages (or a reset) after the cursor.
    Read(ReadOutcome),
}

/// A limit a script refused on.
#[derive(Debug)]
pub enum Verdict {
    /// Within every limit.
    Ok,
    /// `max_clients`: how many clients the share would have created.
    TooManyClients(usize),
    /// `max_channels_per_client`, passed by this client (when named).
    TooManyChannels(Option<ClientId>),
    /// `max_polls_per_client`: the polls the client holds.
    TooManyPolls(u32),
}

/// How an apply script treats its limits (`apply.lua`).
#[derive(Clone, Copy, Debug)]
pub enum ApplyMode {
    /// Checks, then applies all of the share or nothing.
    Apply,
    /// Checks only: applies nothing.
    Check,
    /// Applies without checking (every share was checked just before).
    Force,
}

/// The limits an apply script checks.
pub struct ShareLimits {
    /// `mailbox_max_messages`.
    pub max_messages: usize,
    /// `max_clients`.
    pub max_clients: usize,
    /// `max_channels_per_client`.
    pub max_channels: usize,
}

/// One slot group's share of a batch, as the apply script reads it.
#[derive(Clone, Default)]
pub struct Share(Args);

impl Share {
    /// Whether it holds no command.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Appends `command`, encoded (a message's JSON tail made now, its
    /// expiry `message_ttl` or its own shorter `ttl` from now).
    pub fn push(&mut self, encoded: &EncodedCommand) {
        self.0.extend(encoded.0.iter().cloned());
    }
}

/// One command as the apply script reads it.
pub struct EncodedCommand(Args);

impl EncodedCommand {
    /// Encodes `command`; returns it with the client it is for (`None`: a
    /// channel message, which every group applies to its own members).
    pub fn new(command: Command, message_ttl: Duration, now_ms: u64) -> (Self, Option<ClientId>) {
        let (words, client) = match command {
            Command::Message {
                target,
                event,
                payload,
                ttl,
                exclude,
            } => {
                let (kind, name, channel) = match &target {
                    Target::Client(id) => ("c", id.as_str(), None),
                    Target::Channel(c) => ("h", c.as_str(), Some(c)),
                };
                let tail = message_tail(
                    channel,
                    event.as_deref(),
                    exclude.as_deref(),
                    &payload,
                    now_ms,
                );
                let (lifetime, own) = lifetime(ttl, message_ttl);
                let words = vec![
                    "m".into(),
                    kind.into(),
                    name.into(),
                    (now_ms + lifetime.as_millis() as u64).to_string().into(),
                    if own { "1" } else { "0" }.into(),
                    String::from(tail).into_bytes(),
                ];
                let client = match target {
                    Target::Client(id) => Some(id),
                    Target::Channel(_) => None,
                };
                (words, client)
            }
            Command::Subscribe { client, channel } => {
                (member("s", &client, &channel), Some(client))
            }
            Command::Unsubscribe { client, channel } => {
                (member("u", &client, &channel), Some(client))
            }
            Command::Leave { client, channel } => (member("l", &client, &channel), Some(client)),
            Command::Disconnect { client } => {
                (vec!["d".into(), client.as_str().into()], Some(client))
            }
        };
        (EncodedCommand(words), client)
    }

    /// Whether it is a message.
    pub fn is_message(&self) -> bool {
        self.0.first().is_some_and(|w| w == b"m")
    }
}

fn member(kind: &str, client: &ClientId, channel: &ChannelName) -> Args {
    vec![kind.into(), client.as_str().into(), channel.as_str().into()]
}

/// A poll's start, as the poll-start script reads it.
pub struct PollOpen<'a> {
    /// The client.
    pub client: &'a ClientId,
    /// The lease's name.
    pub lease: &'a str,
    /// When the lease lapses by itself (unix ms).
    pub lease_deadline_ms: u64,
    /// `max_polls_per_client`.
    pub max_polls: u32,
    /// `max_clients`.
    pub max_clients: usize,
    /// `max_channels_per_client`.
    pub max_channels: usize,
    /// The token's `iat`, against backend unsubscribes.
    pub issued_at: Option<u64>,
    /// Where the first look starts.
    pub since: Option<Cursor>,
    /// The first look's byte budget; 0 opens without reading (and answers
    /// the head).
    pub max_bytes: usize,
    /// `channels=`.
    pub subscribe: &'a [ChannelName],
}

/// One slot group's `/stats` figures.
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Clients, channels, subscriptions, queued, lost, evicted.
    pub sums: [u64; 6],
    /// Nodes alive (the first group's figure counts).
    pub nodes: u64,
    /// Hook notifications dropped.
    pub hooks_dropped: u64,
    /// The group's channel names (with several groups only).
    pub channels: Vec<String>,
}

/// A client's presence as Redis holds it.
#[derive(Debug)]
pub struct PresenceReply {
    /// Polls open on every node.
    pub open_polls: u32,
    /// Messages retained.
    pub pending_messages: usize,
    /// Milliseconds since its last poll started or ended.
    pub idle_ms: u64,
    /// Its channels.
    pub channels: Vec<String>,
}

/// Limits go to Lua as decimal text; `usize::MAX` would not survive Lua's
/// doubles, so huge values are capped (nothing counts that high).
fn limit(n: usize) -> Vec<u8> {
    n.min(1 << 50).to_string().into_bytes()
}

fn read_args(since: Option<Cursor>, max_bytes: usize) -> Args {
    let (has, epoch, seq) = match since {
        Some(c) => ("1", c.epoch, c.seq),
        None => ("0", 0, 0),
    };
    vec![
        has.into(),
        epoch.to_string().into(),
        seq.to_string().into(),
        max_bytes.to_string().into(),
        MAX_ENTRY_OVERHEAD.to_string().into(),
    ]
}

/// A look's reply: `ok`, epoch, head seq, reset, then (seq, tail) pairs.
fn mailbox_read(reply: &Reply) -> MailboxRead {
    if reply.text(0) != "ok" {
        return MailboxRead::Gone;
    }
    let cursor = Cursor {
        epoch: reply.int(1) as u32,
        seq: reply.int(2) as u64,
    };
    let reset = reply.int(3) == 1;
    // Redis already left out what expired: the clock fields are
    // placeholders (only `json_tail` is read from here on).
    let now = Instant::now();
    let messages: Vec<_> = (4..reply.len())
        .step_by(2)
        .map(|i| {
            let message = StoredMessage::new(reply.text(i + 1).into_boxed_str(), now, false);
            (reply.int(i) as u64, Arc::new(message))
        })
        .collect();
    if messages.is_empty() && !reset {
        MailboxRead::Nothing(cursor)
    } else {
        MailboxRead::Read(ReadOutcome {
            messages,
            cursor,
            reset,
        })
    }
}

/// A limit script's first word.
fn verdict(reply: &Reply) -> Result<Verdict, StoreError> {
    Ok(match reply.text(0).as_str() {
        "ok" | "gone" => Verdict::Ok,
        "too-many-clients" => Verdict::TooManyClients(reply.int(1).max(0) as usize),
        "too-many-polls" => Verdict::TooManyPolls(reply.int(1).max(0) as u32),
        "too-many-channels" => Verdict::TooManyChannels(ClientId::parse(&reply.text(1)).ok()),
        other => return Err(unexpected_reply(other)),
    })
}

impl RedisStore {
    /// Applies (or checks) one group's share of a batch; `others`: the
    /// clients of the other groups ([`super::ClientCounts::others`]).
    pub async fn apply_share(
        &self,
        group: usize,
        mode: ApplyMode,
        limits: &ShareLimits,
        others: Vec<u8>,
        share: &Share,
    ) -> Result<Verdict, StoreError> {
        Ok(self.run_share(group, mode, limits, others, share).await?.0)
    }

    /// Checks one group's share (applies nothing): its verdict, and how
    /// many clients it would create.
    pub async fn check_share(
        &self,
        group: usize,
        limits: &ShareLimits,
        others: Vec<u8>,
        share: &Share,
    ) -> Result<(Verdict, usize), StoreError> {
        self.run_share(group, ApplyMode::Check, limits, others, share)
            .await
    }

    async fn run_share(
        &self,
        group: usize,
        mode: ApplyMode,
        limits: &ShareLimits,
        others: Vec<u8>,
        share: &Share,
    ) -> Result<(Verdict, usize), StoreError> {
        let mode = match mode {
            ApplyMode::Apply => "apply",
            ApplyMode::Check => "check",
            ApplyMode::Force => "force",
        };
        let mut args: Args = vec![
            limit(limits.max_messages),
            limit(limits.max_clients),
            limit(limits.max_channels),
            (super::unix_ms() / 1000).to_string().into(),
            others,
            mode.into(),
        ];
        args.extend(share.0.iter().cloned());
        let reply = self.run(Step::Apply, group, args).await?;
        let verdict = verdict(&reply)?;
        // `check` answers `ok` with the share's new clients.
        let new_clients = match verdict {
            Verdict::Ok => reply.int(1).max(0) as usize,
            _ => 0,
        };
        Ok((verdict, new_clients))
    }

    /// Starts a poll (its lease, its `channels=`) and looks once: the look,
    /// or the limit that refused it.
    pub async fn poll_open(
        &self,
        open: &PollOpen<'_>,
    ) -> Result<Result<MailboxRead, Verdict>, StoreError> {
        let group = self.groups().of(open.client.as_str());
        let mut args: Args = vec![
            open.client.as_str().into(),
            open.lease.into(),
            open.lease_deadline_ms.to_string().into(),
            open.max_polls.to_string().into(),
            limit(open.max_clients),
            limit(open.max_channels),
            open.issued_at
                .map_or(String::new(), |iat| iat.to_string())
                .into(),
        ];
        args.extend(read_args(open.since, open.max_bytes));
        args.push(self.client_counts(open.max_clients).await?.others(group));
        args.extend(open.subscribe.iter().map(|c| c.as_str().into()));
        let reply = self.run(Step::PollOpen, group, args).await?;
        Ok(match verdict(&reply)? {
            Verdict::Ok => Ok(mailbox_read(&reply)),
            refused => Err(refused),
        })
    }

    /// A held poll's look (renewing its lease until `lease_deadline_ms`).
    pub async fn poll_read(
        &self,
        client: &ClientId,
        since: Option<Cursor>,
        max_bytes: usize,
        lease: &str,
        lease_deadline_ms: u64,
    ) -> Result<MailboxRead, StoreError> {
        let mut args: Args = vec![client.as_str().into()];
        args.extend(read_args(since, max_bytes));
        args.extend([lease.into(), lease_deadline_ms.to_string().into()]);
        let group = self.groups().of(client.as_str());
        Ok(mailbox_read(&self.run(Step::PollRead, group, args).await?))
    }

    /// Ends a poll's lease.
    pub async fn poll_close(&self, client: &ClientId, lease: String) -> Result<(), StoreError> {
        let group = self.groups().of(client.as_str());
        let args = vec![client.as_str().into(), lease.into_bytes()];
        self.run(Step::PollClose, group, args).await.map(drop)
    }

    /// The mailbox's delivered mark; `None` when the mailbox is gone.
    pub async fn unread_from(&self, client: &ClientId) -> Result<Option<Cursor>, StoreError> {
        let group = self.groups().of(client.as_str());
        let reply = self
            .run(Step::UnreadFrom, group, vec![client.as_str().into()])
            .await?;
        Ok((reply.text(0) == "ok").then(|| Cursor {
            epoch: reply.int(1) as u32,
            seq: reply.int(2) as u64,
        }))
    }
}
