//! A poll on the local backend: its open (the client found or created, the
//! poll counted, `channels=` joined), its looks at the mailbox, and its
//! close when the lease is dropped.

use std::sync::Arc;
use std::time::Instant;

use super::client::{Client, Looked};
use super::LocalBackend;
use crate::backend::outcomes::{PollError, PollRequest, Waited};
use crate::protocol::ClientId;
use crate::protocol::Cursor;

/// A poll counted on a client of this server; dropping it closes the poll.
pub struct LocalPoll {
    pub(super) client: Arc<Client>,
}

impl Drop for LocalPoll {
    fn drop(&mut self) {
        let mut state = self.client.lock();
        state.open_polls -= 1;
        state.last_active = Instant::now();
    }
}

impl LocalBackend {
    /// Opens a poll. With hooks, `connect` and `subscribe` are asked first
    /// (`hooked.rs`).
    pub(super) async fn open_for(&self, request: &PollRequest) -> Result<LocalPoll, PollError> {
        if let Some(hooks) = &self.0.common.hooks {
            // Boxed: the hook requests' state would otherwise be part of
            // every poll's future, and so of every held poll's memory
            // (`a_waiting_poll_future_stays_small`).
            return Box::pin(self.open_hooked_poll(hooks, request)).await;
        }
        let open = self.open_poll(&request.client).await?;
        if !request.subscribe.is_empty() {
            self.subscribe_for_poll(&open.client, &request.subscribe, request.issued_at)?;
        }
        Ok(open)
    }

    /// One look at the lease's mailbox after `since`.
    pub(super) fn look_now(&self, lease: &LocalPoll, since: Option<Cursor>) -> Waited {
        let max_bytes = self.0.common.limits.max_reply_bytes;
        match lease.client.lock().look(since, Instant::now(), max_bytes) {
            Looked::Read(outcome) => Waited::Read(outcome),
            Looked::Disconnected(cursor) => Waited::Disconnected(cursor),
            Looked::Replaced(cursor) => Waited::Replaced(cursor),
            // `since` was absent or valid, so the head at this look is where
            // the next wait resumes (past any message whose own ttl lapsed).
            Looked::Nothing(head) => Waited::Nothing(head),
        }
    }

    /// Finds or creates the client and counts one more open poll on it.
    pub(super) async fn open_poll(&self, id: &ClientId) -> Result<LocalPoll, PollError> {
        let limits = &self.0.common.limits;
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
}
