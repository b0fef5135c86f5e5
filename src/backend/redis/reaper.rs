//! Idle eviction on Redis: every sweep interval, one node's sweep (any
//! node's; each script run is atomic) evicts idle clients cluster-wide,
//! slot group by slot group in batches, and records this node's heartbeat
//! (what `/stats` counts as `nodes`).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::backend::common::sweep_interval;
use crate::store::redis::RedisStore;

/// Clients one eviction script looks at, so Redis is never held long.
const REAP_BATCH: usize = 500;

/// A node that has not swept for this long no longer counts in `nodes`.
pub(super) fn node_gone_after(idle_limit: Duration) -> Duration {
    sweep_interval(idle_limit) * 3
}

/// Sweeps every sweep interval until `shutdown`.
pub(super) fn spawn_reaper(redis: Arc<RedisStore>, idle: Duration, shutdown: CancellationToken) {
    let every = sweep_interval(idle);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            for g in 0..redis.groups().len() {
                sweep_group(&redis, g, idle).await;
            }
        }
    });
}

/// One group's sweep, in batches until it looked at every client due.
async fn sweep_group(redis: &RedisStore, g: usize, idle: Duration) {
    // This node's heartbeat goes with the first group's sweep.
    let heartbeat = if g == 0 { redis.node() } else { "" };
    loop {
        match redis
            .reap(g, idle, REAP_BATCH, heartbeat, node_gone_after(idle))
            .await
        {
            Ok((evicted, looked)) => {
                if evicted > 0 {
                    tracing::debug!(evicted, group = g, "idle clients forgotten");
                }
                if looked < REAP_BATCH {
                    return;
                }
            }
            Err(_) => return, // logged by the store; the next tick retries
        }
    }
}
