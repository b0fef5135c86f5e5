//! What a failed notification attempt means, and when to try again.
//!
//! - A `4xx` answer other than `408` (Request Timeout) and `429` (Too Many
//!   Requests) is **permanent**: the backend read the event and will never
//!   take it (a `400`, a `401` from a wrong secret, a `404` from a wrong
//!   path). The event is dropped and counted (`rejected`); retrying it would
//!   only hold up the client's later events for ever.
//! - Anything else (a `5xx`, `408`, `429`, a timeout, a connection error) is
//!   **passing**: retried after [`FIRST_RETRY`], doubling up to
//!   `hooks.retry_max`, without end.
//!
//! [`Quiet`](crate::telemetry::Quiet) keeps these warnings from flooding the log when many events
//! fail the same way: once per kind per [`crate::telemetry::QUIET_FOR`], with how many were
//! kept quiet since.

use std::time::Duration;

use super::transport::SendError;

/// The first pause before a notification is retried; it doubles up to
/// `retry_max`.
pub const FIRST_RETRY: Duration = Duration::from_millis(100);

/// What one attempt to deliver a notification came to.
#[derive(Debug)]
pub enum Attempt {
    /// The backend answered 2xx.
    Delivered,
    /// The backend refused it for good (a 4xx but 408 and 429): dropped.
    Rejected(SendError),
    /// It failed for now: try again after a pause.
    Failed(SendError),
}

impl From<Result<(), SendError>> for Attempt {
    fn from(sent: Result<(), SendError>) -> Self {
        match sent {
            Ok(()) => Attempt::Delivered,
            Err(e) if is_permanent(&e) => Attempt::Rejected(e),
            Err(e) => Attempt::Failed(e),
        }
    }
}

/// Whether the backend will never take this event: a 4xx status other than
/// 408 and 429, which say "later".
pub fn is_permanent(error: &SendError) -> bool {
    matches!(error, SendError::Status(status @ 400..=499) if *status != 408 && *status != 429)
}

/// The pauses between one event's attempts: [`FIRST_RETRY`], doubling,
/// capped at `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: FIRST_RETRY }
    }
}

impl Backoff {
    /// The pause before the next attempt; the one after is twice as long,
    /// up to `max`.
    pub fn pause(&mut self, max: Duration) -> Duration {
        let pause = self.next.min(max);
        self.next = (pause * 2).min(max);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_hundreds_but_408_and_429_are_permanent() {
        let status = |s| Attempt::from(Err(SendError::Status(s)));
        for s in [400, 401, 403, 404, 410, 422, 499] {
            assert!(matches!(status(s), Attempt::Rejected(_)), "{s}");
        }
        for s in [408, 429, 500, 502, 503, 504, 301] {
            assert!(matches!(status(s), Attempt::Failed(_)), "{s}");
        }
        let timeout = Attempt::from(Err(SendError::Timeout(Duration::from_secs(1))));
        assert!(matches!(timeout, Attempt::Failed(_)));
        let refused = Attempt::from(Err(SendError::Io("connection refused".into())));
        assert!(matches!(refused, Attempt::Failed(_)));
        assert!(matches!(Attempt::from(Ok(())), Attempt::Delivered));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let max = Duration::from_millis(500);
        let pauses: Vec<u128> = (0..5).map(|_| backoff.pause(max).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 500, 500]);
        // A cap below the first pause is the pause.
        assert_eq!(
            Backoff::default()
                .pause(Duration::from_millis(30))
                .as_millis(),
            30
        );
    }
}
