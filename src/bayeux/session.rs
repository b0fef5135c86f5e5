//! Bayeux sessions: a `clientId` handed out by a handshake, naming a
//! cometbox client (whose mailbox it reads) and where it has read to.
//!
//! A session is a reader of its client's mailbox, nothing more: channel
//! memberships belong to the client, as for `/poll` (two tabs of one user
//! share them), so a session can be forgotten and its client's messages
//! still wait in the mailbox. When a session lapses (no connect for
//! `session_timeout`), its cursor is kept for its client for a while, and
//! the client's next handshake resumes there: a page whose network was
//! away for longer than the session lasts loses nothing. (Without a kept
//! cursor a session starts after what any reply carried: `meta.rs`.)
//!
//! One connect per session is held at a time: a newer one (a client that
//! gave up on a connect the server still holds) answers the older at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::auth::Grant;
use crate::protocol::{ClientId, Cursor};

/// One session.
pub struct Session {
    /// The Bayeux `clientId`: 128 random bits, hex.
    pub id: String,
    /// The cometbox client whose mailbox it reads.
    pub client: ClientId,
    /// What the handshake's token granted; `None` when hooks alone decide.
    pub grant: Option<Grant>,
    /// Whether it speaks CometD's acknowledgement extension.
    pub ack: bool,
    state: Mutex<SessionState>,
    /// Wakes a held connect: a newer connect came, or the session ended.
    pub nudge: Notify,
}

/// What changes as the session goes on.
pub struct SessionState {
    /// Where the next connect reads from.
    pub cursor: Cursor,
    /// Bumped by each connect; a held connect that sees a newer one ends.
    pub connects: u64,
    /// Connects being held now.
    pub holding: u32,
    /// When the last connect ended (or the session began).
    pub last_seen: Instant,
    /// Set by `/meta/disconnect`.
    pub ended: bool,
}

impl Session {
    /// Its state, locked briefly.
    pub fn lock(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every live session, and the cursors of lapsed ones.
pub struct Sessions {
    by_id: DashMap<String, Arc<Session>>,
    /// Each client's sessions, oldest first, to bound them per client.
    by_client: DashMap<ClientId, VecDeque<String>>,
    /// Cursors of lapsed sessions, by client, with when they lapsed.
    resume: DashMap<ClientId, (Cursor, Instant)>,
    count: AtomicUsize,
    timeout: Duration,
}

/// What [`Sessions::sweep`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Sessions forgotten.
    pub lapsed: usize,
}

impl Sessions {
    /// No sessions; each lapses `timeout` after its last connect.
    pub fn new(timeout: Duration) -> Self {
        Sessions {
            by_id: DashMap::new(),
            by_client: DashMap::new(),
            resume: DashMap::new(),
            count: AtomicUsize::new(0),
            timeout,
        }
    }

    /// Sessions live now.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// The session named by a `clientId`.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.by_id.get(id).map(|s| s.clone())
    }

    /// Where a new session of `client` starts: a lapsed session's cursor,
    /// taken (once), if there is one.
    pub fn take_resume(&self, client: &ClientId) -> Option<Cursor> {
        self.resume.remove(client).map(|(_, (cursor, _))| cursor)
    }

    /// A new session reading `client`'s mailbox from `cursor`. A client
    /// holds at most `per_client` sessions: a page reloaded over and over
    /// leaves sessions behind, and the oldest goes first.
    pub fn create(
        &self,
        client: ClientId,
        grant: Option<Grant>,
        ack: bool,
        cursor: Cursor,
        per_client: usize,
    ) -> Arc<Session> {
        let id = format!("{:032x}", rand::random::<u128>());
        let session = Arc::new(Session {
            id: id.clone(),
            client: client.clone(),
            grant,
            ack,
            state: Mutex::new(SessionState {
                cursor,
                connects: 0,
                holding: 0,
                last_seen: Instant::now(),
                ended: false,
            }),
            nudge: Notify::new(),
        });
        self.by_id.insert(id.clone(), session.clone());
        self.count.fetch_add(1, Ordering::Relaxed);
        let oldest = {
            let mut ids = self.by_client.entry(client).or_default();
            ids.push_back(id);
            if ids.len() > per_client.max(1) {
                ids.pop_front()
            } else {
                None
            }
        };
        if let Some(oldest) = oldest {
            self.end(&oldest);
        }
        session
    }

    /// Ends a session (`/meta/disconnect`, or pushed out): a held connect
    /// answers at once and the `clientId` is unknown from now on. Its
    /// cursor is not kept: the client said it left.
    pub fn end(&self, id: &str) -> Option<Arc<Session>> {
        let (_, session) = self.by_id.remove(id)?;
        self.count.fetch_sub(1, Ordering::Relaxed);
        session.lock().ended = true;
        session.nudge.notify_waiters();
        self.forget_id(&session);
        Some(session)
    }

    fn forget_id(&self, session: &Session) {
        if let Some(mut ids) = self.by_client.get_mut(&session.client) {
            ids.retain(|i| i != &session.id);
        }
        self.by_client
            .remove_if(&session.client, |_, ids| ids.is_empty());
    }

    /// Forgets sessions with no connect held for the timeout, keeping each
    /// one's cursor for its client for `keep` (the idle timeout after which
    /// the client's mailbox goes too); drops kept cursors older than that.
    pub fn sweep(&self, now: Instant, keep: Duration) -> Swept {
        let lapsed: Vec<Arc<Session>> = self
            .by_id
            .iter()
            .filter(|s| {
                let state = s.lock();
                state.holding == 0 && now.saturating_duration_since(state.last_seen) >= self.timeout
            })
            .map(|s| s.clone())
            .collect();
        for session in &lapsed {
            let removed = self.by_id.remove_if(&session.id, |_, s| {
                let state = s.lock();
                state.holding == 0 && now.saturating_duration_since(state.last_seen) >= self.timeout
            });
            if removed.is_none() {
                continue; // a connect came meanwhile
            }
            self.count.fetch_sub(1, Ordering::Relaxed);
            let cursor = {
                let mut state = session.lock();
                state.ended = true;
                state.cursor
            };
            self.forget_id(session);
            // The furthest-behind cursor wins: resuming earlier repeats
            // messages, resuming later would skip some.
            self.resume
                .entry(session.client.clone())
                .and_modify(|(kept, at)| {
                    if cursor.epoch != kept.epoch || cursor.seq < kept.seq {
                        *kept = cursor;
                    }
                    *at = now;
                })
                .or_insert((cursor, now));
        }
        self.resume
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < keep);
        Swept {
            lapsed: lapsed.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(s: &str) -> ClientId {
        ClientId::parse(s).unwrap()
    }

    fn at(seq: u64) -> Cursor {
        Cursor { epoch: 7, seq }
    }

    #[test]
    fn a_lapsed_session_leaves_its_cursor_for_the_next_handshake() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let s = sessions.create(client("alice"), None, false, at(3), 4);
        assert!(sessions.get(&s.id).is_some());
        let later = Instant::now() + Duration::from_secs(11);
        assert_eq!(sessions.sweep(later, Duration::from_secs(60)).lapsed, 1);
        assert!(sessions.get(&s.id).is_none(), "unknown once lapsed");
        assert_eq!(sessions.take_resume(&client("alice")), Some(at(3)));
        assert_eq!(sessions.take_resume(&client("alice")), None, "taken once");
        assert_eq!(sessions.len(), 0);
    }

    #[test]
    fn a_held_connect_keeps_its_session() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let s = sessions.create(client("alice"), None, false, at(0), 4);
        s.lock().holding = 1;
        let later = Instant::now() + Duration::from_secs(60);
        assert_eq!(sessions.sweep(later, Duration::from_secs(60)).lapsed, 0);
        assert!(sessions.get(&s.id).is_some());
    }

    #[test]
    fn a_disconnect_keeps_no_cursor_and_the_oldest_session_of_a_client_goes_first() {
        let sessions = Sessions::new(Duration::from_secs(10));
        let first = sessions.create(client("bob"), None, false, at(0), 2);
        let second = sessions.create(client("bob"), None, false, at(0), 2);
        let third = sessions.create(client("bob"), None, false, at(0), 2);
        assert!(sessions.get(&first.id).is_none(), "pushed out");
        assert!(first.lock().ended);
        assert!(sessions.get(&second.id).is_some() && sessions.get(&third.id).is_some());
        sessions.end(&second.id);
        assert!(sessions.get(&second.id).is_none());
        assert_eq!(sessions.take_resume(&client("bob")), None);
        assert_eq!(sessions.len(), 1);
    }
}
