//! What every connection of the public port shares: the server's state,
//! the CORS origins, the port's timeouts and limits, and its budget of
//! request-body bytes in flight.

use std::sync::Arc;
use std::time::Duration;

use super::cors::Cors;
use crate::http::serve::ConnectionPolicy;
use crate::http::AppState;

/// What every connection of the public port shares.
pub struct Face {
    pub(super) state: AppState,
    pub(super) cors: Cors,
    /// `request_timeout`: the most a head may take to arrive.
    pub(super) header_timeout: Duration,
    pub(super) max_header_bytes: usize,
    pub(super) send_timeout: Duration,
    /// Bytes of request bodies being read or held at once, across every
    /// connection (`max_public_body_bytes_in_flight`): one permit a byte.
    pub(super) bodies: Arc<tokio::sync::Semaphore>,
}

impl Face {
    pub(super) fn new(state: AppState, policy: &ConnectionPolicy) -> Arc<Self> {
        Arc::new(Face {
            cors: Cors::new(&state.settings.public.cors_origins),
            header_timeout: policy.header_timeout,
            max_header_bytes: policy.max_header_bytes,
            send_timeout: policy.send_timeout,
            bodies: Arc::new(tokio::sync::Semaphore::new(
                state.settings.limits.max_public_body_bytes_in_flight,
            )),
            state,
        })
    }
}
