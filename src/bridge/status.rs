//! What each bridge is doing and has done: its connection state (logged
//! once per change) and its counters, read by `/stats` and `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// A bridge's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The first connection attempt, not yet done (later attempts are made
    /// in `Disconnected`, so that a broker that stays down is one state).
    Connecting,
    /// Connected and subscribed: messages flow.
    Connected,
    /// The last attempt failed or the connection was lost; waiting to retry.
    Disconnected,
    /// Shut down with the server.
    Stopped,
}

impl State {
    /// Every state, for `/metrics` (one gauge per state, 1 for the current).
    pub const ALL: [State; 4] = [
        State::Connecting,
        State::Connected,
        State::Disconnected,
        State::Stopped,
    ];

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Connecting => "connecting",
            State::Connected => "connected",
            State::Disconnected => "disconnected",
            State::Stopped => "stopped",
        }
    }
}

/// One bridge's live status, shared by its task and the stats endpoints.
#[derive(Debug)]
pub struct BridgeStatus {
    /// The bridge's name.
    pub name: String,
    /// Its URL, password hidden.
    pub url: String,
    /// Its `source`.
    pub source: String,
    state: Mutex<(State, Option<String>)>,
    /// Messages read from the broker.
    pub received: AtomicU64,
    /// Messages accepted by the hub (and the store).
    pub delivered: AtomicU64,
    /// Messages skipped as invalid (payload, headers).
    pub skipped: AtomicU64,
    /// Messages the hub refused (`max_clients`, `max_channels_per_client`).
    pub rejected: AtomicU64,
    /// Successful connections (the first and every reconnection).
    pub connects: AtomicU64,
    /// Failed attempts and lost connections.
    pub failures: AtomicU64,
}

/// A bridge in `/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeStats {
    /// Its name.
    pub name: String,
    /// Its URL, password hidden.
    pub url: String,
    /// Its `source`.
    pub source: String,
    /// Its state.
    pub state: State,
    /// Why it was last disconnected, if it was.
    pub last_error: Option<String>,
    /// Messages read from the broker.
    pub received: u64,
    /// Messages accepted.
    pub delivered: u64,
    /// Messages skipped as invalid.
    pub skipped: u64,
    /// Messages refused by the hub's limits.
    pub rejected: u64,
    /// Connections made.
    pub connects: u64,
    /// Failed attempts and lost connections.
    pub failures: u64,
}

impl BridgeStatus {
    /// A bridge about to connect.
    pub fn new(name: String, url: String, source: String) -> Self {
        BridgeStatus {
            name,
            url,
            source,
            state: Mutex::new((State::Connecting, None)),
            received: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Its state now.
    pub fn state(&self) -> State {
        self.lock().0
    }

    /// Sets the state; true when it changed (the caller logs only then).
    pub fn set(&self, state: State, error: Option<String>) -> bool {
        let mut guard = self.lock();
        let changed = guard.0 != state;
        match state {
            State::Connected => {
                self.connects.fetch_add(1, Ordering::Relaxed);
            }
            State::Disconnected => {
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
            State::Connecting | State::Stopped => {}
        }
        *guard = (state, error.or_else(|| guard.1.take()));
        changed
    }

    /// A copy for `/stats`.
    pub fn snapshot(&self) -> BridgeStats {
        let (state, last_error) = self.lock().clone();
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        BridgeStats {
            name: self.name.clone(),
            url: self.url.clone(),
            source: self.source.clone(),
            state,
            last_error,
            received: n(&self.received),
            delivered: n(&self.delivered),
            skipped: n(&self.skipped),
            rejected: n(&self.rejected),
            connects: n(&self.connects),
            failures: n(&self.failures),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Option<String>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}
