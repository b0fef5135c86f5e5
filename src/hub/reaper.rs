//! Forgets idle clients and frees expired messages, on a timer.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{Gone, Hub};

impl Hub {
    /// One sweep: drops expired messages everywhere and forgets every client
    /// with no open poll and no activity for `client_idle_timeout`. Returns
    /// how many clients were forgotten.
    pub fn reap(&self, now: Instant) -> usize {
        let idle_limit = self.0.limits.client_idle_timeout;
        let mut evicted = Vec::new();
        self.0.clients.retain(|_, client| {
            let mut state = client.lock();
            state.log.purge_expired(now);
            let idle = state.open_polls == 0
                && now.saturating_duration_since(state.last_active) >= idle_limit;
            if idle {
                // Marked while still locked, so a poll that found this entry
                // a moment ago sees it gone and looks the id up again.
                state.gone = Some(Gone::Evicted);
                evicted.push((client.clone(), std::mem::take(&mut state.channels)));
            }
            !idle
        });
        for (client, channels) in &evicted {
            self.drop_memberships(client, channels);
        }
        self.0
            .clients_evicted
            .fetch_add(evicted.len() as u64, Relaxed);
        evicted.len()
    }
}

/// How often the reaper sweeps: often enough that eviction is at most a
/// quarter late, never more than every 5 seconds.
fn sweep_interval(idle_limit: Duration) -> Duration {
    (idle_limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
}

/// Runs [`Hub::reap`] until `shutdown`.
pub fn spawn_reaper(hub: Hub, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let every = sweep_interval(hub.limits().client_idle_timeout);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let forgotten = hub.reap(Instant::now());
                    if forgotten > 0 {
                        tracing::debug!(forgotten, "idle clients forgotten");
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
    })
}
