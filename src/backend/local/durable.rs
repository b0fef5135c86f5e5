//! The hub with a durable store: recording changes in the order they are
//! made, recovery at start-up, and reloading after a failed write.
//!
//! Every change (a batch, a poll's first visit or new `channels=`, an
//! eviction) is made and submitted to the journal while holding
//! `journal_order`, so the journal's order is the order of the changes. A
//! batch's messages are given their sequence numbers then (reserved in each
//! mailbox) but appended only once the journal has written the batch: a poll
//! never sees a message a crash could take back.
//!
//! A write that fails leaves the in-memory state ahead of the disk (the
//! batch's memberships are already changed). The hub then reloads: once the
//! journal can write again, its recovered state replaces the hub's, as after
//! a restart; until then ingest and anything that would change the state
//! answer `503 storage-unavailable`, and polls of existing mailboxes are
//! served.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::client::{Client, Gone, Revocation};
use super::reaper::ACTIVITY_CHUNK;
use super::LocalBackend;
use crate::backend::common::sweep_interval;
use crate::protocol::ClientId;
use crate::store::journal::{
    AfterCommit, Change, Commit, RecoveredClient, StateImages, StoreError,
};

/// Collects the changes of one step when there is a journal to write them
/// to; does nothing (builds nothing) for the memory store.
pub(super) struct Recorder(Option<Vec<Change>>);

impl Recorder {
    /// Records nothing.
    pub fn off() -> Self {
        Recorder(None)
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records the change `make` builds, if recording.
    pub fn change(&mut self, make: impl FnOnce() -> Change) {
        if let Some(changes) = &mut self.0 {
            changes.push(make());
        }
    }
}

/// Holding `journal_order`, with the recorder that goes with it.
pub(super) struct Ordered<'a> {
    _order: Option<MutexGuard<'a, ()>>,
    pub record: Recorder,
}

impl LocalBackend {
    /// Starts a step that changes the state: takes `journal_order` and a
    /// recording recorder when there is a journal (refusing at once while
    /// the journal cannot write), nothing otherwise.
    pub(super) fn ordered(&self) -> Result<Ordered<'_>, StoreError> {
        let Some(journal) = &self.0.journal else {
            return Ok(Ordered {
                _order: None,
                record: Recorder::off(),
            });
        };
        let order = self
            .0
            .journal_order
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !journal.writable() {
            return Err(unavailable());
        }
        Ok(Ordered {
            _order: Some(order),
            record: Recorder(Some(Vec::new())),
        })
    }

    /// Submits what `ordered` recorded (still holding the order). Without a
    /// journal, or with nothing recorded, runs `after_commit` at once.
    pub(super) fn submit(
        &self,
        ordered: Ordered<'_>,
        after_commit: Option<AfterCommit>,
    ) -> Result<Option<Commit>, StoreError> {
        let (Some(journal), Recorder(Some(changes))) = (&self.0.journal, ordered.record) else {
            if let Some(after) = after_commit {
                after();
            }
            return Ok(None);
        };
        if changes.is_empty() && after_commit.is_none() {
            return Ok(None);
        }
        let (submitted, histogram) = (Instant::now(), self.0.common.commit_seconds.clone());
        let after_commit: AfterCommit = Box::new(move || {
            histogram.observe(submitted.elapsed().as_secs_f64());
            if let Some(after) = after_commit {
                after();
            }
        });
        journal
            .submit(changes, Some(after_commit))
            .map(Some)
            .inspect_err(|_| {
                // The change was made in memory but will not be written.
                self.0.reload.notify_one();
            })
    }

    /// Waits for a submitted step to be written; a failed write makes the
    /// hub reload.
    pub(super) async fn committed(&self, commit: Option<Commit>) -> Result<(), StoreError> {
        let Some(commit) = commit else {
            return Ok(());
        };
        commit
            .wait()
            .await
            .inspect_err(|_| self.0.reload.notify_one())
    }

    /// Puts recovered clients in place (start-up, or a reload on an emptied
    /// hub).
    ///
    /// Idle clocks resume where the journal left them, counting only time
    /// the server was up: a client's idleness is measured to the latest
    /// activity recorded for any client (the server was running then), not
    /// to now, so a server that was down longer than `client_idle_timeout`
    /// does not forget every mailbox at start-up (its browsers could not
    /// poll meanwhile). And one sweep interval is taken off: activity is
    /// recorded once per sweep, so a crash (or a stop) can leave a poll of
    /// the last interval unrecorded, and its client must not look idle for
    /// it.
    pub(super) fn restore(&self, recovered: Vec<RecoveredClient>) {
        let mono = Instant::now();
        let running_until = recovered.iter().map(|r| r.last_active).max();
        let unrecorded = sweep_interval(self.0.common.limits.client_idle_timeout);
        for r in recovered {
            let log = self.0.store.restore(&r);
            let idle_for = running_until
                .and_then(|until| until.duration_since(r.last_active).ok())
                .unwrap_or_default()
                .saturating_sub(unrecorded);
            let last_active = mono.checked_sub(idle_for).unwrap_or(mono);
            let client = Client::new(r.id.clone(), log, last_active);
            {
                let mut state = client.lock();
                state.recorded_active = last_active;
                for channel in r.channels {
                    self.0.channels.add(&channel, &client);
                    state.channels.insert(channel);
                }
                state.revoked = r
                    .revoked
                    .into_iter()
                    .map(|(channel, at)| Revocation { channel, at })
                    .collect();
            }
            self.0.clients.insert(r.id, client);
        }
    }

    /// Writes every client's idle clock as [`LocalBackend::restore`] set it
    /// (credited for what the last life may have left unrecorded) and
    /// returns the commit of the last unit (units commit in order). Without
    /// this, a server killed before its first sweep recorded anything would
    /// lose that credit: the next start would measure from the older
    /// record, while clients created meanwhile move the "server was
    /// running" mark forward, and a chain of short lives could forget a
    /// client that polled in every one of them. The caller holds
    /// `journal_order`, or nothing else runs yet.
    pub(super) fn record_restored_clocks(&self) -> Option<Commit> {
        let journal = self.0.journal.as_ref()?;
        let (wall, mono) = (SystemTime::now(), Instant::now());
        let clocks: Vec<(ClientId, u32, SystemTime)> = (self.0.clients.iter())
            .filter_map(|entry| {
                let client = entry.value();
                let state = client.lock();
                let idle_for = mono.saturating_duration_since(state.last_active);
                state
                    .gone
                    .is_none()
                    .then(|| (client.id.clone(), client.epoch, wall - idle_for))
            })
            .collect();
        let mut last = None;
        for chunk in clocks.chunks(ACTIVITY_CHUNK) {
            let change = Change::Active {
                clients: chunk.to_vec(),
            };
            match journal.submit(vec![change], None) {
                Ok(commit) => last = Some(commit),
                // The journal is not writable: the reload that follows
                // restores (and records) again.
                Err(_) => return None,
            }
        }
        last
    }

    /// Waits until the clocks [`LocalBackend::record_restored_clocks`]
    /// wrote at start-up are on disk, so nothing served before then can
    /// depend on them.
    pub(super) async fn settled(&self) {
        let commit = (self.0.settling.lock())
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(commit) = commit {
            if let Err(e) = commit.wait().await {
                tracing::warn!(error = %e, "the recovered idle clocks were not written; the state will be reloaded");
                self.0.reload.notify_one();
            }
        }
    }

    /// Writes a snapshot when the journal asks for one (from the reaper's
    /// blocking thread).
    pub(super) fn snapshot_if_due(&self) {
        let Some(journal) = &self.0.journal else {
            return;
        };
        if journal.snapshot_due() {
            self.snapshot_now();
        }
    }

    /// Writes a snapshot now (blocking). The journal asks for the clients
    /// only once it has started the segment that outlives the snapshot
    /// (see [`crate::store::journal::Journal::write_snapshot`]).
    pub(super) fn snapshot_now(&self) {
        let Some(journal) = &self.0.journal else {
            return;
        };
        let backend = self.clone();
        let mut state = move || -> StateImages { Box::new(backend.images()) };
        if let Err(e) = journal.write_snapshot(&mut state) {
            tracing::warn!(error = %e, "snapshot not taken; the journal keeps growing until the next try");
        }
    }

    /// Every live client's image, each taken under its own lock as the
    /// iterator reaches it. The client list is collected first, so no shard
    /// of the client map stays locked while the snapshot is written.
    fn images(&self) -> impl Iterator<Item = RecoveredClient> {
        let all: Vec<Arc<Client>> = self.0.clients.iter().map(|c| c.value().clone()).collect();
        let (wall, mono) = (SystemTime::now(), Instant::now());
        all.into_iter().filter_map(move |client| {
            let state = client.lock();
            if state.gone.is_some() {
                return None;
            }
            let (epoch, first_seq, lost_through, messages) = state.log.image();
            Some(RecoveredClient {
                id: client.id.clone(),
                epoch,
                first_seq,
                lost_through,
                messages,
                channels: state.channels.iter().cloned().collect(),
                revoked: state
                    .revoked
                    .iter()
                    .map(|r| (r.channel.clone(), r.at))
                    .collect(),
                last_active: wall - mono.saturating_duration_since(state.last_active),
            })
        })
    }

    /// Replaces the whole state with what the journal holds.
    fn replace_state(&self, recovered: Vec<RecoveredClient>) {
        let old: Vec<Arc<Client>> = self.0.clients.iter().map(|c| c.value().clone()).collect();
        self.0.clients.clear();
        for client in old {
            let channels = {
                let mut state = client.lock();
                state.gone = Some(Gone::Replaced);
                // Its replacement starts offline: this one's `online` gets
                // its `offline` now, and the next poll asks `connect` again.
                self.went_offline(&mut state, &client);
                std::mem::take(&mut state.channels)
            };
            self.drop_memberships(&client, &channels);
            client.wake.notify_waiters();
        }
        self.restore(recovered);
    }
}

/// After a failed write: waits until the journal can write again, then
/// reloads the hub's state from it. Runs until `shutdown`.
pub(super) fn spawn_reloader(backend: LocalBackend, shutdown: CancellationToken) {
    let Some(journal) = backend.0.journal.clone() else {
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = backend.0.reload.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            tracing::warn!("a journal write failed: the state will be reloaded from disk once writes succeed again");
            loop {
                let reopening = journal.clone();
                let reopened = tokio::task::spawn_blocking(move || reopening.reopen()).await;
                match reopened {
                    Ok(Ok(recovered)) => {
                        let _order = backend
                            .0
                            .journal_order
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        let clients = recovered.len();
                        backend.replace_state(recovered);
                        journal.resume();
                        // Not waited for: units commit in order, so no
                        // later change can be on disk without these.
                        drop(backend.record_restored_clocks());
                        tracing::info!(
                            clients,
                            "storage is writable again; state reloaded from disk"
                        );
                        break;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "storage still unavailable"),
                    Err(e) => tracing::error!(error = %e, "reopening the journal failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        }
    });
}

fn unavailable() -> StoreError {
    StoreError::Unavailable("the store cannot write right now; nothing was applied".into())
}
