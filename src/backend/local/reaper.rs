//! Forgets idle clients, on a timer, off the async workers.
//!
//! A sweep first walks the client map under shard *read* locks (polls and
//! deliveries, which only read the map, go on meanwhile; only creating a
//! client waits for the one shard being walked), taking each client's own
//! lock briefly to see whether it is idle.
//! It then removes the idle ones one at a time, each under its shard's
//! write lock for that one entry, checking again that the entry is the same
//! client and still idle (a poll may have arrived in between). The sweep
//! runs on a blocking thread, so a million clients never stall a worker.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::client::{Client, Gone};
use super::durable::Recorder;
use super::LocalBackend;
use crate::backend::common::sweep_interval;
use crate::store::journal::Change;

/// Activity records hold at most this many clients each.
pub(super) const ACTIVITY_CHUNK: usize = 10_000;

/// Evictions made (and recorded) per hold of the journal order, so ingest
/// is never held up for a whole sweep.
const EVICTION_CHUNK: usize = 1_024;

impl LocalBackend {
    /// One sweep: forgets every client with no open poll and no activity
    /// for `client_idle_timeout`; with a journal, also records whose idle
    /// clock moved. Returns how many
    /// clients were forgotten. Blocking: call it off the workers.
    pub fn reap(&self, now: Instant) -> usize {
        let idle_limit = self.0.common.limits.client_idle_timeout;
        let recording = self.0.journal.is_some();
        let wall_now = SystemTime::now();
        let mut candidates = Vec::new();
        let mut active = Vec::new();
        for entry in self.0.clients.iter() {
            let client = entry.value();
            // No purge here: expired messages go when their mailbox is next
            // written or read, and every mailbox is bounded meanwhile.
            // Reaching into each log would cost several cache misses per
            // client, most of a sweep's time.
            let mut state = client.lock();
            self.offline_if_away(&mut state, client, now);
            if state.is_idle(now, idle_limit) {
                candidates.push(client.clone());
            }
            if recording && state.last_active != state.recorded_active {
                state.recorded_active = state.last_active;
                let ago = now.saturating_duration_since(state.last_active);
                active.push((client.id.clone(), client.epoch, wall_now - ago));
            }
        }
        for chunk in active.chunks(ACTIVITY_CHUNK) {
            let Ok(mut ordered) = self.ordered() else {
                break;
            };
            ordered.record.change(|| Change::Active {
                clients: chunk.to_vec(),
            });
            // A failed write makes the hub reload; nothing to wait for here.
            let _ = self.submit(ordered, None);
        }
        let mut evicted = 0;
        for chunk in candidates.chunks(EVICTION_CHUNK) {
            let Ok(mut ordered) = self.ordered() else {
                break;
            };
            for client in chunk {
                if self.evict_if_idle(client, now, idle_limit, &mut ordered.record) {
                    evicted += 1;
                }
            }
            let _ = self.submit(ordered, None);
        }
        self.0
            .common
            .counters
            .clients_evicted
            .fetch_add(evicted as u64, Relaxed);
        self.snapshot_if_due();
        evicted
    }

    /// Removes `client` if its entry is still this one and still idle.
    fn evict_if_idle(
        &self,
        client: &Arc<Client>,
        now: Instant,
        idle_limit: Duration,
        record: &mut Recorder,
    ) -> bool {
        let mut channels = None;
        self.0.clients.remove_if(&client.id, |_, current| {
            let mut state = current.lock();
            let idle = Arc::ptr_eq(current, client) && state.is_idle(now, idle_limit);
            if idle {
                // Marked while still locked, so a poll that found this entry
                // a moment ago sees it gone and looks the id up again.
                state.gone = Some(Gone::Evicted);
                let taken = std::mem::take(&mut state.channels);
                self.leaving(&mut state, current, &taken);
                channels = Some(taken);
            }
            idle
        });
        let Some(channels) = channels else {
            return false;
        };
        self.drop_memberships(client, &channels);
        record.change(|| Change::Gone {
            client: client.id.clone(),
            epoch: client.epoch,
        });
        true
    }
}

/// Runs [`LocalBackend::reap`] on a blocking thread every sweep interval
/// until `shutdown`. With hooks, presence is swept too: `offline` at most a
/// quarter of `offline_after` late.
pub(super) fn spawn_reaper(backend: LocalBackend, shutdown: CancellationToken) {
    let limits = &backend.0.common.limits;
    let every = sweep_interval(
        (backend.0.common.hooks.as_ref()).map_or(limits.client_idle_timeout, |h| {
            h.offline_after().min(limits.client_idle_timeout)
        }),
    );
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let backend = backend.clone();
                    let swept = tokio::task::spawn_blocking(move || backend.reap(Instant::now())).await;
                    match swept {
                        Ok(0) => {}
                        Ok(forgotten) => tracing::debug!(forgotten, "idle clients forgotten"),
                        Err(e) => tracing::error!(error = %e, "the idle sweep failed"),
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    });
}
