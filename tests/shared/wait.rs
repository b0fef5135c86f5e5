//! Waiting for a state, for every Rust suite: tests wait for states, not
//! for guessed durations.

use std::time::Duration;

/// Waits until `condition` holds, looking every 20 ms for at most `limit`;
/// fails the test naming `what` if it never does.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
