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
    /// The `since` cursor, if any.
    pub since: Option<Cursor>,
    /// Channels to subscribe to first (already allowed by the token).
    pub subscribe: Vec<ChannelName>,
    /// The requested `timeout`, before the cap.
    pub timeout: Option<Duration>,
}

/// The JSON body of a poll reply, and the poll's place among its client's
/// open polls: the poll counts against `max_polls_per_client` until `open`
/// is dropped, which the HTTP face does once the body is written.
#[derive(Debug)]
pub struct PollReply {
    /// The encoded reply.
    pub body: String,
    /// How many messages it carries.
    pub delivered: usize,
    /// Keeps the poll open while the reply is being sent.
    pub open: OpenPoll,
}

/// A reply before its guard is attached.
struct Encoded {
    body: String,
    delivered: usize,
}

impl Encoded {
    fn held_by(self, open: OpenPoll) -> PollReply {
        PollReply {
            body: self.body,
            delivered: self.delivered,
            open,
        }
    }
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
}

/// Counts an open poll for as long as it lives; dropping it (reply written,
/// or the browser went away and the request or its reply was dropped)
/// closes it. Opaque: only the hub opens polls.
pub struct OpenPoll {
    client: Arc<Client>,
}

impl std::fmt::Debug for OpenPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenPoll")
    }
}

impl Drop for OpenPoll {
    fn drop(&mut self) {
        let mut state = self.client.lock();
        state.open_polls -= 1;
        state.last_active = Instant::now();
    }
}

impl Hub {
    /// Serves one long-poll until it has something to say.
    pub async fn poll(&self, request: PollRequest) -> Result<PollReply, PollError> {
        let open = self.open_poll(&request.client)?;
        let max_channels = self.0.limits.max_channels_per_client;
        if !request.subscribe.is_empty()
            && !super::room_for(Some(&open.client), request.subscribe.iter(), max_channels)
        {
            return Err(PollError::TooManyChannels(max_channels));
        }
        for channel in &request.subscribe {
            self.subscribe(&request.client, channel);
        }
        self.0.polls_total.fetch_add(1, Ordering::Relaxed);
        let limits = &self.0.limits;
        let timeout = request
            .timeout
            .map_or(limits.poll_timeout, |t| t.min(limits.max_poll_timeout));
        let deadline = tokio::time::Instant::now() + timeout;
        let sleep = tokio::time::sleep_until(deadline);
        tokio::pin!(sleep);
        let encoded = loop {
            // Register for a wake-up before looking, so a message appended
            // between the look and the wait is never missed.
            let mut notified = pin!(open.client.wake.notified());
            notified.as_mut().enable();
            let looked = open.client.lock().look(request.since, Instant::now());
            match looked {
                Looked::Read(outcome) => break self.reply(outcome),
                Looked::Disconnected(cursor) => break empty_reply(cursor, true),
                Looked::Nothing if self.is_shutting_down() => break timed_out(&open),
                Looked::Nothing => {}
            }
            tokio::select! {
                _ = notified => continue,
                _ = &mut sleep => break timed_out(&open),
            }
        };
        Ok(encoded.held_by(open))
    }

    /// Finds or creates the client and counts one more open poll on it.
    fn open_poll(&self, id: &ClientId) -> Result<OpenPoll, PollError> {
        let limits = &self.0.limits;
        loop {
            let client = match self.0.clients.get(id) {
                Some(client) => client.clone(),
                None if self.0.clients.len() >= limits.max_clients => {
                    return Err(PollError::TooManyClients(limits.max_clients))
                }
                None => self.client_or_create(id, Instant::now()),
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
            return Ok(OpenPoll { client });
        }
    }

    fn reply(&self, outcome: ReadOutcome) -> Encoded {
        let size = outcome
            .messages
            .iter()
            .map(|(_, m)| m.json_tail.len() + 32)
            .sum();
        let mut writer = ReplyWriter::new(outcome.cursor, size);
        let epoch = outcome.cursor.epoch;
        for (seq, message) in &outcome.messages {
            writer.push(Cursor { epoch, seq: *seq }, &message.json_tail);
        }
        let delivered = outcome.messages.len();
        self.0
            .messages_out
            .fetch_add(delivered as u64, Ordering::Relaxed);
        Encoded {
            body: writer.finish(outcome.reset, false),
            delivered,
        }
    }
}

/// Timed out, or shutting down, with nothing new: `since` was absent or
/// valid, so the head is where the next poll resumes (past any message
/// whose own ttl lapsed).
fn timed_out(open: &OpenPoll) -> Encoded {
    let head = open.client.lock().log.head();
    empty_reply(head, false)
}

fn empty_reply(cursor: Cursor, disconnected: bool) -> Encoded {
    Encoded {
        body: ReplyWriter::new(cursor, 0).finish(false, disconnected),
        delivered: 0,
    }
}
