//! Whether Redis keeps every acknowledged write across a crash of its
//! machine: only with AOF and `appendfsync always` on every master. With
//! Redis's default `everysec` (or RDB snapshots only), a machine crash or a
//! failover loses the last writes, and the ids they took are given again.
//!
//! The scripts decide, after a Redis restart, whether cursors handed out
//! before it still hold (the instance marker in `prelude.lua`). They cannot
//! read the fsync policy themselves (`CONFIG` is refused inside scripts),
//! so each node asks every master with `CONFIG GET appendfsync` at start
//! and every [`CHECK_EVERY`], and passes what it found with every script
//! call; a script records it beside the marker, so that after a restart it
//! is the policy the lost instance ran with that decides. Anything but a
//! clear "always" everywhere (an error, `CONFIG` renamed away by a managed
//! Redis, another policy) counts as relaxed: cursors then `reset` after a
//! restart, never skip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

use redis::Value;
use tokio_util::sync::CancellationToken;

use super::RedisStore;

/// How often a node asks again (a `CONFIG SET` at run time is seen within
/// this).
const CHECK_EVERY: Duration = Duration::from_secs(30);

/// What a node last found.
#[derive(Default)]
pub(super) struct FsyncPolicy(AtomicBool);

impl FsyncPolicy {
    /// Whether every master last said `appendfsync always`.
    pub fn always(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Asks every master now and every [`CHECK_EVERY`] until `stopped`.
pub(super) fn spawn_watch(store: Weak<RedisStore>, stopped: CancellationToken) {
    tokio::spawn(async move {
        loop {
            let Some(live) = store.upgrade() else { return };
            let always = ask(&live).await;
            if live.fsync.0.swap(always, Ordering::Relaxed) != always || !always {
                tracing::debug!(always, "redis appendfsync checked");
            }
            drop(live);
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = stopped.cancelled() => return,
            }
        }
    });
}

async fn ask(store: &RedisStore) -> bool {
    let answers = store
        .conn
        .query_each_master(redis::cmd("CONFIG").arg("GET").arg("appendfsync"))
        .await;
    match answers {
        Ok(answers) => !answers.is_empty() && answers.iter().all(says_always),
        Err(e) => {
            tracing::debug!(error = %e, "CONFIG GET appendfsync failed: cursors reset after a Redis restart");
            false
        }
    }
}

/// `["appendfsync", "always"]` (RESP2) or `{appendfsync: always}` (RESP3).
fn says_always(answer: &Value) -> bool {
    let value = match answer {
        Value::Array(items) => items.get(1),
        Value::Map(pairs) => pairs.first().map(|(_, v)| v),
        _ => None,
    };
    matches!(value, Some(Value::BulkString(b)) if b.as_slice() == b"always")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_always_counts() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        assert!(says_always(&Value::Array(vec![
            bulk("appendfsync"),
            bulk("always")
        ])));
        assert!(!says_always(&Value::Array(vec![
            bulk("appendfsync"),
            bulk("everysec")
        ])));
        assert!(says_always(&Value::Map(vec![(
            bulk("appendfsync"),
            bulk("always")
        )])));
        assert!(!says_always(&Value::Array(vec![])));
    }
}
