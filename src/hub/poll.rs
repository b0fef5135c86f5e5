//! Long-poll, for every backend: answer at once when the mailbox has
//! something after the cursor, otherwise wait for its waker (messages,
//! disconnect, shutdown) or the timeout, whichever comes first.

use std::pin::pin;
use std::time::Duration;

use super::Hub;
use crate::backend::common::Counters;
use crate::backend::outcomes::{PollError, PollRequest, Waited};
use crate::backend::AnyLease;
use crate::protocol::reply::ReplyWriter;
use crate::protocol::Cursor;
use crate::store::journal::StoreError;
use crate::store::ReadOutcome;

/// A poll's answer.
pub struct PollReply {
    /// The encoded JSON body.
    pub body: String,
    /// Keep it until the body is written: the poll counts against
    /// `max_polls_per_client` (and keeps its client online) until then.
    pub open: OpenPoll,
}

/// Counts an open poll for as long as it lives; dropping it (reply written,
/// or the browser went away and the request was dropped) closes it.
pub struct OpenPoll(AnyLease);

impl std::fmt::Debug for OpenPoll {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenPoll")
    }
}

impl Hub {
    /// Serves one long-poll until it has something to say.
    pub async fn poll(&self, request: PollRequest) -> Result<PollReply, PollError> {
        let open = self.open_for(&request).await?;
        let timeout = self.limits().poll_wait(request.timeout);
        let since = self.start_cursor(&open, &request)?;
        let waited = self.wait(&open, since, timeout).await;
        Ok(match waited {
            Waited::Failed(e) => return Err(e.into()),
            Waited::Read(outcome) => reply(outcome, open),
            Waited::Disconnected(cursor) => empty_reply(cursor, true, open),
            Waited::Replaced(cursor) | Waited::Nothing(cursor) => empty_reply(cursor, false, open),
        })
    }

    /// Opens a poll (or a stream, which counts as one for as long as it
    /// lasts): finds or creates the client, counts the open poll, and
    /// subscribes the request's channels; with hooks, `connect` and
    /// `subscribe` are asked first.
    pub async fn open_for(&self, request: &PollRequest) -> Result<OpenPoll, PollError> {
        let lease = self.0.backend.open(request).await?;
        Counters::add(&self.0.common.counters.polls_total, 1);
        Ok(OpenPoll(lease))
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
        match self.0.backend.head_at_open(&open.0) {
            Some(head) => Ok(Some(head)),
            None => Err(PollError::Storage(StoreError::Unavailable(
                "the mailbox's head is unknown".into(),
            ))),
        }
    }

    /// Waits up to `timeout` for something after `since` in the mailbox of
    /// `open`'s client. Messages read are counted as delivered.
    pub async fn wait(&self, open: &OpenPoll, since: Option<Cursor>, timeout: Duration) -> Waited {
        let backend = &self.0.backend;
        let sleep = tokio::time::sleep(timeout);
        tokio::pin!(sleep);
        let waited = loop {
            // Register for a wake-up before looking, so a message appended
            // between the look and the wait is never missed.
            let mut notified = pin!(backend.waker(&open.0).notified());
            notified.as_mut().enable();
            match backend.look(&open.0, since).await {
                Waited::Nothing(head) if !self.is_shutting_down() => {
                    tokio::select! {
                        _ = notified => continue,
                        // (What came after this look waits for the next
                        // poll, which resumes at this look's head.)
                        _ = &mut sleep => break Waited::Nothing(head),
                    }
                }
                said => break said,
            }
        };
        if let Waited::Read(outcome) = &waited {
            let carried = outcome.messages.len() as u64;
            Counters::add(&self.0.common.counters.messages_out, carried);
        }
        waited
    }

    /// Where a new reader of `open`'s mailbox (a Bayeux session) starts:
    /// after the last message any reply carried, so what was accepted and
    /// never delivered is not skipped, and what was delivered is not
    /// replayed. Every store keeps that mark (Redis as the mailbox's `d`).
    pub async fn unread_from(&self, open: &OpenPoll) -> Result<Cursor, StoreError> {
        self.0.backend.unread_from(&open.0).await
    }
}

fn reply(outcome: ReadOutcome, open: OpenPoll) -> PollReply {
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

fn empty_reply(cursor: Cursor, disconnected: bool, open: OpenPoll) -> PollReply {
    PollReply {
        body: ReplyWriter::new(cursor, 0).finish(false, disconnected),
        open,
    }
}
