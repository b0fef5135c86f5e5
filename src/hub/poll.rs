//! Long-poll: answer at once when the mailbox has something after the
//! cursor, otherwise wait for this client's notifier (messages, disconnect,
//! shutdown) or the timeout, whichever comes first.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{Client, Looked};
use super::Hub;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::{ChannelName, ClientId, Cursor};
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
    /// opens (`since` is then `None`); see [`Hub::start_cursor`].
    pub from_now: bool,
}

/// A poll's answer.
pub struct PollReply {
    /// The encoded JSON body.
    pub body: String,
    /// Keep it until the body is written: the poll counts against
    /// `max_polls_per_client` (and keeps its client online) until then.
    pub open: OpenPoll,
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

/// Counts an open poll for as long as it lives; dropping it (reply written,
/// or the browser went away and the request was dropped) closes it.
pub struct OpenPoll(pub(super) Open);

/// Whose poll it is: this server's client (memory, disk), or a lease in
/// Redis (`remote.rs`); each undoes its count when dropped.
pub(super) enum Open {
    Local(LocalPoll),
    /// Boxed: it carries the start script's first look.
    Remote(Box<super::remote::RemotePoll>),
}

/// A poll counted on a client of this server.
pub(super) struct LocalPoll {
    pub(super) client: Arc<Client>,
}

impl std::fmt::Debug for OpenPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenPoll")
    }
}

impl Drop for LocalPoll {
    fn drop(&mut self) {
        let mut state = self.client.lock();
        state.open_polls -= 1;
        state.last_active = Instant::now();
    }
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

impl Hub {
    /// Serves one long-poll until it has something to say.
    pub async fn poll(&self, request: PollRequest) -> Result<PollReply, PollError> {
        let open = self.open_for(&request).await?;
        let limits = &self.0.limits;
        let timeout = request
            .timeout
            .map_or(limits.poll_timeout, |t| t.min(limits.max_poll_timeout));
        let since = self.start_cursor(&open, &request)?;
        let waited = self.wait(&open, since, timeout).await;
        Ok(match waited {
            Waited::Failed(e) => return Err(e.into()),
            Waited::Read(outcome) => self.reply(outcome, open),
            Waited::Disconnected(cursor) => empty_reply(cursor, true, open),
            Waited::Replaced(cursor) | Waited::Nothing(cursor) => empty_reply(cursor, false, open),
        })
    }

    /// Opens a poll (or a stream, which counts as one for as long as it
    /// lasts): finds or creates the client, counts the open poll, and
    /// subscribes the request's channels.
    /// With hooks, `connect` and `subscribe` are asked first (`hooked.rs`).
    /// With Redis, the poll is a lease there (`remote.rs`).
    pub async fn open_for(&self, request: &PollRequest) -> Result<OpenPoll, PollError> {
        if let Some(redis) = &self.0.redis {
            // Boxed for the same reason as the hooked open below: Redis
            // calls (and hook requests) stay out of local polls' futures.
            return Box::pin(self.open_remote(redis, request)).await;
        }
        let open = match &self.0.hooks {
            // Boxed: the hook requests' state would otherwise be part of
            // every poll's future, and so of every held poll's memory
            // (`a_waiting_poll_future_stays_small`).
            Some(hooks) => Box::pin(self.open_hooked_poll(hooks, request)).await?,
            None => {
                let open = self.open_poll(&request.client).await?;
                if !request.subscribe.is_empty() {
                    self.subscribe_for_poll(&open.client, &request.subscribe, request.issued_at)?;
                }
                open
            }
        };
        self.0.polls_total.fetch_add(1, Ordering::Relaxed);
        Ok(OpenPoll(Open::Local(open)))
    }

    /// Where an opened poll or stream reads from: its `since`, or with
    /// `since=now` the mailbox's head as the open found it (so only what
    /// arrives afterwards is carried).
    pub fn start_cursor(
        &self,
        open: &OpenPoll,
        request: &PollRequest,
    ) -> Result<Option<Cursor>, PollError> {
        if !request.from_now {
            return Ok(request.since);
        }
        Ok(Some(match &open.0 {
            Open::Local(open) => open.client.lock().log.head(),
            Open::Remote(open) => open.head_at_open().ok_or_else(|| {
                PollError::Storage(crate::store::journal::StoreError::Unavailable(
                    "the mailbox's head is unknown".into(),
                ))
            })?,
        }))
    }

    /// Waits up to `timeout` for something after `since` in the mailbox of
    /// `open`'s client. Messages read are counted as delivered.
    pub async fn wait(&self, open: &OpenPoll, since: Option<Cursor>, timeout: Duration) -> Waited {
        let open = match &open.0 {
            Open::Local(open) => open,
            // Boxed: the Redis call's state stays out of local waits.
            Open::Remote(open) => return Box::pin(self.wait_remote(open, since, timeout)).await,
        };
        let limits = &self.0.limits;
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        let looked = loop {
            // Register for a wake-up before looking, so a message appended
            // between the look and the wait is never missed.
            let mut notified = pin!(open.client.wake.notified());
            notified.as_mut().enable();
            let looked = open
                .client
                .lock()
                .look(since, Instant::now(), limits.max_reply_bytes);
            let head = match looked {
                Looked::Nothing(head) if !self.is_shutting_down() => head,
                said => break said,
            };
            tokio::select! {
                _ = notified => continue,
                // (What came after this look waits for the next poll,
                // which resumes at this look's head.)
                _ = &mut sleep => break Looked::Nothing(head),
            }
        };
        match looked {
            Looked::Read(outcome) => {
                self.0
                    .messages_out
                    .fetch_add(outcome.messages.len() as u64, Ordering::Relaxed);
                Waited::Read(outcome)
            }
            Looked::Disconnected(cursor) => Waited::Disconnected(cursor),
            Looked::Replaced(cursor) => Waited::Replaced(cursor),
            // Timed out, or shutting down, with nothing new: `since` was
            // absent or valid, so the head at the last look is where the
            // next wait resumes (past any message whose own ttl lapsed).
            Looked::Nothing(head) => Waited::Nothing(head),
        }
    }

    /// Where a new reader of `open`'s mailbox (a Bayeux session) starts:
    /// after the last message any reply carried, so what was accepted and
    /// never delivered is not skipped, and what was delivered is not
    /// replayed. Every store keeps that mark (Redis as the mailbox's `d`).
    pub async fn unread_from(
        &self,
        open: &OpenPoll,
    ) -> Result<Cursor, crate::store::journal::StoreError> {
        match &open.0 {
            Open::Local(open) => Ok(open.client.lock().log.unread_from()),
            Open::Remote(open) => Box::pin(self.unread_from_remote(open)).await,
        }
    }

    /// Finds or creates the client and counts one more open poll on it.
    pub(super) async fn open_poll(&self, id: &ClientId) -> Result<LocalPoll, PollError> {
        let limits = &self.0.limits;
        loop {
            let client = match self.0.clients.get(id).map(|c| c.clone()) {
                Some(client) => client,
                None if self.0.clients.len() >= limits.max_clients => {
                    return Err(PollError::TooManyClients(limits.max_clients))
                }
                None => self.create_for_poll(id).await?,
            };
            let mut state = client.lock();
            if state.gone.is_some() {
                continue; // removed meanwhile: look it up again
            }
            if state.open_polls >= limits.max_polls_per_client {
                return Err(PollError::TooManyPolls(state.open_polls));
            }
            state.open_polls += 1;
            state.last_active = Instant::now();
            drop(state);
            return Ok(LocalPoll { client });
        }
    }

    /// A poll's first visit creates the mailbox. With a durable store the
    /// poll waits until the creation is written: the cursors it hands out
    /// must name an epoch a restart brings back.
    async fn create_for_poll(&self, id: &ClientId) -> Result<Arc<Client>, PollError> {
        let (client, commit) = {
            let mut ordered = self.ordered()?;
            let client = self.client_or_create(id, Instant::now(), &mut ordered.record);
            (client, self.submit(ordered, None)?)
        };
        self.committed(commit).await?;
        Ok(client)
    }

    fn reply(&self, outcome: ReadOutcome, open: OpenPoll) -> PollReply {
        let size = outcome
            .messages
            .iter()
            .map(|(_, m)| crate::protocol::reply::encoded_len(&m.json_tail))
            .sum();
        let mut writer = ReplyWriter::new(outcome.cursor, size);
        let epoch = outcome.cursor.epoch;
        for (seq, message) in &outcome.messages {
            writer.push(Cursor { epoch, seq: *seq }, &message.json_tail);
        }
        PollReply {
            body: writer.finish(outcome.reset, false),
            open,
        }
    }
}

fn empty_reply(cursor: Cursor, disconnected: bool, open: OpenPoll) -> PollReply {
    PollReply {
        body: ReplyWriter::new(cursor, 0).finish(false, disconnected),
        open,
    }
}
