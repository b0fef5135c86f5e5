//! A poll on Redis: a lease there (counted in Redis, so `max_polls` and
//! presence are cluster-wide) and a waiter here (woken by the pub/sub
//! hints), from the poll-start script until the reply is written.

use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{RedisBackend, LEASE_GRACE};
use crate::backend::outcomes::{PollError, PollRequest, Waited};
use crate::protocol::{ClientId, Cursor};
use crate::store::redis::{unix_ms, LocalClient, MailboxRead, PollOpen, RedisStore, Verdict};

/// A poll open on this node: counted in Redis (a lease) and here (a
/// waiter) until its reply is written.
pub struct RemotePoll {
    store: Arc<RedisStore>,
    client: ClientId,
    lease: String,
    /// Whether Redis may hold the lease: from the moment the start script
    /// is sent (a cancelled call may still have run it) until it refused.
    /// A drop then ends the lease rather than leave it for timeout + 30 s.
    lease_sent: bool,
    /// Whether this node counts the poll as open (`/stats` `open_polls`):
    /// only once the start script ran, so the poll is subscribed to its
    /// channels and will be woken by the next message for it.
    counted: bool,
    local: Arc<LocalClient>,
    /// How long the poll may wait: each look renews the lease that long
    /// (plus [`LEASE_GRACE`]).
    timeout: Duration,
    /// The start script's look, and the `since` it looked after: the
    /// first look with that `since` answers with it (no second round
    /// trip).
    first: Mutex<Option<(Option<Cursor>, Waited)>>,
    /// `local.woken` before the start script looked: a hint after that
    /// look came before the first wait could listen, so that look is not
    /// trusted and Redis is read again.
    woken_before: u64,
}

impl RemotePoll {
    /// The mailbox's head as the start script saw it (when it read
    /// nothing: `since=now`).
    pub(super) fn head_at_open(&self) -> Option<Cursor> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        match first.as_ref()? {
            (None, Waited::Nothing(head)) => Some(*head),
            _ => None,
        }
    }

    pub(super) fn waker(&self) -> &Notify {
        &self.local.wake
    }

    pub(super) fn client(&self) -> &ClientId {
        &self.client
    }

    /// The start script's look, if it looked after `since` and no hint
    /// came since.
    fn take_first(&self, since: Option<Cursor>) -> Option<Waited> {
        let first = self.first.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (_, waited) = first.filter(|(after, _)| *after == since)?;
        let hinted = self.local.woken.load(SeqCst) != self.woken_before;
        match waited {
            Waited::Nothing(_) if hinted => None,
            waited => Some(waited),
        }
    }
}

impl Drop for RemotePoll {
    fn drop(&mut self) {
        if self.counted {
            self.local.uncount_open();
        }
        self.store.waiters.leave(&self.client);
        if !self.lease_sent {
            return;
        }
        let (store, client, lease) = (
            self.store.clone(),
            self.client.clone(),
            std::mem::take(&mut self.lease),
        );
        // Without a runtime (process exit) the lease lapses by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.poll_close(&client, lease).await;
            });
        }
    }
}

/// A look as a wait on any store says it; a gone mailbox answers with the
/// `since` cursor, where a new mailbox would answer `reset` anyway.
fn waited(read: MailboxRead, since: Option<Cursor>) -> Waited {
    match read {
        MailboxRead::Gone => Waited::Disconnected(since.unwrap_or(Cursor { epoch: 0, seq: 0 })),
        MailboxRead::Nothing(head) => Waited::Nothing(head),
        MailboxRead::Read(outcome) => Waited::Read(outcome),
    }
}

/// When a lease held for `timeout` from now lapses by itself.
fn lease_deadline(timeout: Duration) -> u64 {
    unix_ms() + (timeout + LEASE_GRACE).as_millis() as u64
}

impl RedisBackend {
    /// Opens a poll: with hooks, `connect` and `subscribe` asked first;
    /// then the start script takes the lease, joins `channels=` and looks.
    pub(super) async fn open_lease(&self, request: &PollRequest) -> Result<RemotePoll, PollError> {
        if let Some(hooks) = &self.common.hooks {
            self.ask_hooks(hooks, request).await?;
        }
        let limits = &self.common.limits;
        let redis = &self.store;
        let timeout = limits.poll_wait(request.timeout);
        let local = redis.waiters.join(&request.client);
        let mut open = RemotePoll {
            store: redis.clone(),
            lease: format!("{}:{:016x}", redis.node(), rand::random::<u64>()),
            woken_before: local.woken.load(SeqCst),
            local,
            client: request.client.clone(),
            lease_sent: true,
            counted: false,
            timeout,
            first: Mutex::new(None),
        };
        // A byte budget of 0: the script opens without reading (and
        // answers the head, where `since=now` starts).
        let max_bytes = if request.open_only || request.from_now {
            0
        } else {
            limits.max_reply_bytes
        };
        let started = redis
            .poll_open(&PollOpen {
                client: &request.client,
                lease: &open.lease,
                lease_deadline_ms: lease_deadline(timeout),
                max_polls: limits.max_polls_per_client,
                max_clients: limits.max_clients,
                max_channels: limits.max_channels_per_client,
                issued_at: request.issued_at,
                since: request.since,
                max_bytes,
                subscribe: &request.subscribe,
            })
            .await;
        let read = match started {
            Ok(Ok(read)) => read,
            Ok(Err(refused)) => {
                // A refusal took no lease.
                open.lease_sent = false;
                return Err(self.refused(refused));
            }
            // A failed call may have taken one.
            Err(e) => return Err(e.into()),
        };
        open.local.count_open();
        open.counted = true;
        *open.first.get_mut().unwrap_or_else(|e| e.into_inner()) =
            Some((request.since, waited(read, request.since)));
        Ok(open)
    }

    fn refused(&self, verdict: Verdict) -> PollError {
        let limits = &self.common.limits;
        match verdict {
            Verdict::TooManyClients(_) => PollError::TooManyClients(limits.max_clients),
            Verdict::TooManyPolls(held) => PollError::TooManyPolls(held),
            Verdict::TooManyChannels(_) => {
                PollError::TooManyChannels(limits.max_channels_per_client)
            }
            Verdict::Ok => unreachable!("an accepted start is not a refusal"),
        }
    }

    /// One look: the start script's, if it is the one asked for and no
    /// hint came since; else a script reads the mailbox (renewing the
    /// lease, so a long stream stays counted).
    pub(super) async fn look_at(&self, open: &RemotePoll, since: Option<Cursor>) -> Waited {
        if let Some(first) = open.take_first(since) {
            return first;
        }
        let max_bytes = self.common.limits.max_reply_bytes;
        let deadline = lease_deadline(open.timeout);
        match (self.store)
            .poll_read(&open.client, since, max_bytes, &open.lease, deadline)
            .await
        {
            Ok(read) => waited(read, since),
            // Logged by the store.
            Err(e) => Waited::Failed(e),
        }
    }
}
