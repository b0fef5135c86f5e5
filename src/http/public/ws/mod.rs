//! `GET /ws`: a poll that goes on as a WebSocket (RFC 6455). The same
//! query parameters and token as `/poll`; the socket counts as an open
//! poll for as long as it lasts (`max_polls_per_client`, presence), on
//! every store, like an `/events` stream.
//!
//! - `handshake.rs` checks the opening handshake and answers `101`; a bad
//!   one is refused over HTTP (`400`/`426 bad-upgrade`).
//! - Here, after the upgrade: the token and parameters, then the loop
//!   that writes each wait's messages as one text frame (the poll reply's
//!   JSON object, so at most `max_reply_bytes` of messages), reads the
//!   browser's frames (`frames.rs`), pings, and closes with a code the
//!   browser can read (a failed upgrade shows a page no status at all,
//!   so a refused token or poll is told after the upgrade, as a close).
//! - Framing is `tokio-tungstenite`'s, over the connection's socket and
//!   whatever bytes the head read past, in a task of its own once the
//!   `101` is written (`Connection::hand_over`): the HTTP loop's state is
//!   freed, so a held socket costs its session only.
//!   `permessage-deflate` is not offered.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::admit::{admit, grant_of};
use super::connection::{Connection, Socket};
use super::error::PublicError;
use super::face::Face;
use super::request::Head;
use super::routed::Routed;
use crate::auth::{Grant, TokenError};
use crate::http::send_timeout::Abort;
use crate::hub::{OpenPoll, PollError, PollRequest, Waited};
use crate::protocol::reply::{encoded_len, ReplyWriter};
use crate::protocol::Cursor;
use crate::store::ReadOutcome;

mod frames;
pub(super) mod handshake;

/// How often the server pings; a socket from which nothing (a pong, a
/// frame) came for two of these is closed.
pub(super) const PING_EVERY: Duration = Duration::from_secs(25);

/// When a socket pings and when it gives up on a silent peer, for `/ws`
/// and Pusher's `/app/<key>` alike.
pub(super) struct Heartbeat {
    next_ping: Instant,
    heard: Instant,
    /// How long without a frame (a pong included) the peer is gone.
    silence: Duration,
}

/// What a [`Heartbeat`] says is due now.
pub(super) enum Due {
    /// Nothing: wait at most this long for a message or a frame.
    Wait(Duration),
    /// Send a ping, then wait at most this long.
    Ping(Duration),
    /// Nothing came for the silence allowed: the peer is gone.
    Silent,
}

impl Heartbeat {
    /// Pings every [`PING_EVERY`]; gone after `silence` without a frame.
    pub(super) fn new(silence: Duration) -> Self {
        let now = Instant::now();
        Heartbeat {
            next_ping: now + PING_EVERY,
            heard: now,
            silence,
        }
    }

    /// A frame came from the peer.
    pub(super) fn heard(&mut self) {
        self.heard = Instant::now();
    }

    /// What is due now (a ping due is counted as sent).
    pub(super) fn due(&mut self) -> Due {
        let now = Instant::now();
        if now < self.next_ping {
            return Due::Wait(self.next_ping - now);
        }
        if now.duration_since(self.heard) >= self.silence {
            return Due::Silent;
        }
        self.next_ping = now + PING_EVERY;
        Due::Ping(PING_EVERY)
    }
}

/// What a frame from the browser may weigh past `max_payload_bytes` (the
/// publish frame's envelope).
const FRAME_OVERHEAD: usize = 16 << 10;

/// How long a closing socket waits for the browser's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Close codes (RFC 6455 §7.4; 4000-4999 are the application's).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1008;
    pub const TRY_LATER: u16 = 1013;
    pub const TOKEN_EXPIRED: u16 = 4001;
    pub const DENIED: u16 = 4003;
    pub const TOO_MANY_POLLS: u16 = 4029;
}

/// The socket once upgraded.
pub(super) type Ws<'s, S> = WebSocketStream<&'s mut S>;

/// Answers a WebSocket upgrade: checks the handshake (refused over HTTP),
/// the token and parameters (refused after the upgrade, as a close),
/// writes the `101` and hands the socket to [`session`].
pub async fn serve<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    head: Head,
) -> Result<Routed, PublicError> {
    let accept = handshake::accept_key(face, &head)?;
    let admitted = admit(face, &head)
        .and_then(|(request, expires_at)| Ok((request, grant_of(face, &head)?, expires_at)));
    drop(head);
    if connection
        .write_all(&handshake::switching(&accept), &[])
        .await
        .is_err()
    {
        return Ok(Routed::Streamed);
    }
    let face = connection.face().clone();
    connection.hand_over(Box::new(move |socket, read| {
        Box::pin(session(socket, read, face, admitted))
    }));
    Ok(Routed::Upgraded)
}

/// What [`admit`] made of the upgrade request: the poll, the grant and the
/// token's `exp`, or why not.
type Admitted = Result<(PollRequest, Grant, u64), PublicError>;

/// One WebSocket, on its own task, until it closes.
async fn session<S: Socket>(mut socket: S, read: Vec<u8>, face: Arc<Face>, admitted: Admitted) {
    let face = &*face;
    let mut ws =
        WebSocketStream::from_partially_read(&mut socket, read, Role::Server, Some(config(face)))
            .await;
    let (request, grant, expires_at) = match admitted {
        Ok(admitted) => admitted,
        Err(e) => {
            let (code, reason) = refusal(&e);
            Box::pin(end(&mut ws, face, code, reason)).await;
            return;
        }
    };
    let hub = &face.state.hub;
    let opened = match Box::pin(hub.open_for(&request)).await {
        Ok(open) => hub.start_cursor(&open, &request).map(|since| (open, since)),
        Err(e) => Err(e),
    };
    match opened {
        Ok((open, since)) => {
            let mut session = Session {
                face,
                grant,
                expires_at,
                open,
                since,
            };
            session.run(&mut ws).await;
        }
        Err(e) => {
            let (code, reason) = refusal(&PublicError::Poll(e));
            Box::pin(end(&mut ws, face, code, reason)).await;
        }
    }
}

/// The framing's limits: a frame from the browser holds at most a publish
/// of `max_payload_bytes`. The read buffer starts at [`READ_BUFFER`], not
/// the framing's default of 128 KiB: the framing zero-fills the whole
/// buffer before each read, so what it starts with stays in memory for the
/// socket's life, and a held socket mostly waits while what the browser
/// sends is small (the buffer grows to a frame's size when one needs more).
/// Frames are written out at once (`write_buffer_size` 0): each send is
/// flushed anyway.
pub(super) fn config(face: &Face) -> WebSocketConfig {
    let most = face.state.settings.limits.max_payload_bytes + FRAME_OVERHEAD;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(most))
        .max_frame_size(Some(most))
}

/// What each socket reserves for reading the browser's frames: a
/// subscribe or ping frame fits (`benches/load` `hold --transport ws`
/// measured 4 KiB of it per held socket when it was 4096).
const READ_BUFFER: usize = 256;

/// One open WebSocket: what it needs between frames.
struct Session<'f> {
    face: &'f Face,
    grant: Grant,
    expires_at: u64,
    /// Counts the socket as an open poll until dropped.
    open: OpenPoll,
    since: Option<Cursor>,
}

/// Why the loop ended: the close to send, or none (the browser left).
type Ending = Option<(u16, &'static str)>;

impl Session<'_> {
    /// Until the socket closes: messages out as they arrive, frames in,
    /// pings, the token's `exp`, shutdown.
    async fn run<S: Socket>(&mut self, ws: &mut Ws<'_, S>) {
        let Err(ending) = self.exchange(ws).await;
        if let Some((code, reason)) = ending {
            Box::pin(end(ws, self.face, code, reason)).await;
        }
    }

    /// Runs until something ends the socket; returns only that `Ending`.
    async fn exchange<S: Socket>(
        &mut self,
        ws: &mut Ws<'_, S>,
    ) -> Result<std::convert::Infallible, Ending> {
        let hub = &self.face.state.hub;
        let mut heartbeat = Heartbeat::new(2 * PING_EVERY);
        loop {
            if hub.is_shutting_down() {
                return Err(Some((close::GOING_AWAY, "shutting-down")));
            }
            let left = until_unix(self.expires_at);
            if left.is_zero() {
                return Err(Some((close::TOKEN_EXPIRED, "token-expired")));
            }
            let quiet = match heartbeat.due() {
                Due::Wait(quiet) => quiet,
                Due::Ping(quiet) => {
                    self.send(ws, Message::Ping(Default::default())).await?;
                    quiet
                }
                Due::Silent => return Err(None), // nothing answers: the peer is gone
            };
            tokio::select! {
                waited = hub.wait(&self.open, self.since, quiet.min(left)) => self.deliver(ws, waited).await?,
                frame = ws.next() => {
                    heartbeat.heard();
                    self.receive(ws, frame).await?;
                }
            }
        }
    }

    /// Writes what a wait returned; `Err` ends the socket.
    async fn deliver<S: Socket>(
        &mut self,
        ws: &mut Ws<'_, S>,
        waited: Waited,
    ) -> Result<(), Ending> {
        match waited {
            Waited::Read(outcome) => {
                self.since = Some(outcome.cursor);
                self.send(ws, Message::text(encode(&outcome))).await
            }
            Waited::Nothing(cursor) => {
                self.since = Some(cursor);
                Ok(())
            }
            Waited::Disconnected(cursor) => {
                let body = ReplyWriter::new(cursor, 0).finish(false, true);
                self.send(ws, Message::text(body)).await?;
                Err(Some((close::NORMAL, "disconnected")))
            }
            // The store cannot be reached: the browser reconnects later.
            Waited::Replaced(_) | Waited::Failed(_) => {
                Err(Some((close::TRY_LATER, "storage-unavailable")))
            }
        }
    }

    /// Handles one frame from the browser; `Err` ends the socket.
    async fn receive<S: Socket>(
        &mut self,
        ws: &mut Ws<'_, S>,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Ending> {
        let message = match frame {
            Some(Ok(message)) => message,
            // Gone, or a frame the framing refused (too large, unmasked).
            None | Some(Err(_)) => return Err(None),
        };
        match message {
            Message::Text(text) => {
                // Boxed: a frame's answer (a subscribe's open, a publish's
                // hook request) would otherwise be part of every held
                // socket's future.
                let answer = Box::pin(frames::answer(self.face, &self.grant, text.as_str()))
                    .await
                    .map_err(|_| Some((close::PROTOCOL, "invalid-frame")))?;
                match answer {
                    Some(answer) => self.send(ws, Message::text(answer)).await,
                    None => Ok(()),
                }
            }
            Message::Binary(_) => Err(Some((close::PROTOCOL, "text frames only"))),
            // The framing answered a ping with a pong; send it now.
            Message::Ping(_) => self.flush(ws).await,
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            // The framing answered the close; nothing more to send.
            Message::Close(_) => {
                let _ = self.flush(ws).await;
                Err(None)
            }
        }
    }

    async fn send<S: Socket>(&self, ws: &mut Ws<'_, S>, message: Message) -> Result<(), Ending> {
        send_within(self.face, ws, message).await
    }

    async fn flush<S: Socket>(&self, ws: &mut Ws<'_, S>) -> Result<(), Ending> {
        flush_within(self.face, ws).await
    }
}

/// Sends one frame within `send_timeout`; a stalled reader is cut.
pub(super) async fn send_within<S: Socket>(
    face: &Face,
    ws: &mut Ws<'_, S>,
    message: Message,
) -> Result<(), Ending> {
    let sent = tokio::time::timeout(face.send_timeout, ws.send(message)).await;
    settle(ws, sent)
}

/// Flushes what the framing holds (an automatic pong, a close reply)
/// within `send_timeout`.
pub(super) async fn flush_within<S: Socket>(face: &Face, ws: &mut Ws<'_, S>) -> Result<(), Ending> {
    let sent = tokio::time::timeout(face.send_timeout, ws.flush()).await;
    settle(ws, sent)
}

/// What a bounded write came to; past `send_timeout` the socket is reset
/// on close (freeing the kernel's buffers), as a stalled poll's is.
fn settle<S: Socket, E>(
    ws: &Ws<'_, S>,
    sent: Result<Result<(), E>, tokio::time::error::Elapsed>,
) -> Result<(), Ending> {
    match sent {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => {
            Abort::abort_on_close(&**ws.get_ref());
            Err(None)
        }
    }
}

/// Sends a close frame (within `send_timeout`) and waits briefly for the
/// browser's, so the close is clean.
pub(super) async fn end<S: Socket>(
    ws: &mut Ws<'_, S>,
    face: &Face,
    code: u16,
    reason: &'static str,
) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    let sent = tokio::time::timeout(face.send_timeout, ws.close(Some(frame))).await;
    if settle(ws, sent).is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// The close for a refused socket: its code, and the error code as the
/// reason.
fn refusal(e: &PublicError) -> (u16, &'static str) {
    match e {
        PublicError::Token(TokenError::Expired) => (close::TOKEN_EXPIRED, "token-expired"),
        PublicError::Token(TokenError::Invalid(_)) => (close::DENIED, "invalid-token"),
        PublicError::ChannelForbidden(_) => (close::DENIED, "channel-forbidden"),
        PublicError::Poll(PollError::Denied(_)) => (close::DENIED, "denied"),
        PublicError::Poll(PollError::TooManyPolls(_)) => (close::TOO_MANY_POLLS, "too-many-polls"),
        PublicError::ShuttingDown => (close::GOING_AWAY, "shutting-down"),
        PublicError::Poll(PollError::TooManyClients(_)) => (close::TRY_LATER, "overloaded"),
        PublicError::Poll(PollError::Storage(_)) => (close::TRY_LATER, "storage-unavailable"),
        _ => (close::PROTOCOL, "invalid-request"),
    }
}

/// A wait's messages as one frame: the poll reply's JSON object.
fn encode(outcome: &ReadOutcome) -> String {
    let size = outcome
        .messages
        .iter()
        .map(|(_, m)| encoded_len(&m.json_tail))
        .sum();
    let mut writer = ReplyWriter::new(outcome.cursor, size);
    let epoch = outcome.cursor.epoch;
    for (seq, message) in &outcome.messages {
        writer.push(Cursor { epoch, seq: *seq }, &message.json_tail);
    }
    writer.finish(outcome.reset, false)
}

/// Time until the unix second `at` (zero once it passed).
pub(super) fn until_unix(at: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Duration::from_secs(at).saturating_sub(now)
}

/// The request a subscribe frame opens (and closes at once), as Bayeux's
/// `/meta/subscribe` does: the hub asks the `subscribe` hook and checks
/// `max_channels_per_client` on every store.
pub(super) fn subscribe_request(
    grant: &Grant,
    subscribe: Vec<crate::protocol::ChannelName>,
) -> PollRequest {
    PollRequest {
        client: grant.client.clone(),
        issued_at: grant.issued_at,
        since: None,
        subscribe,
        timeout: Some(Duration::ZERO),
        connect_ext: None,
        open_only: true,
        from_now: false,
    }
}
