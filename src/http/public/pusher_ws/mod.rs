//! `GET /app/<key>`: the Pusher Channels protocol (version 7) over a
//! WebSocket, as pusher-js 8 and Laravel Echo 2 speak it, when `[pusher]
//! enabled` (docs/pusher.md).
//!
//! Each socket is a cometbox client of its own, `pusher:<socket id>`,
//! whose mailbox starts empty (`since=now`) and ends with the socket: its
//! channels are cometbox channels, so a backend's ingest message, a
//! Pusher API event and another page's client event all arrive the same
//! way, through the hub, on every store and across nodes. This module owns
//! the session (the handshake, the loop, the end); `frames.rs` reads the
//! page's events and writes Pusher's.
//!
//! Authorisation is Pusher's: public channels (no prefix) are open to
//! every page that knows the key, `private-` and `presence-` ones need the
//! signature the site's auth endpoint makes with the app secret. The
//! `subscribe` hook, when configured, is asked as for every transport.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::connection::{Connection, Socket};
use super::error::PublicError;
use super::face::Face;
use super::request::Head;
use super::routed::Routed;
use super::ws::{
    config, end, flush_within, handshake, send_within, Due, Heartbeat, Ws, PING_EVERY,
};
use crate::hub::{OpenPoll, PollRequest, Waited};
use crate::protocol::{ChannelName, ClientId, Command, Cursor};

mod frames;

/// Pusher's close codes (its protocol's "Error codes").
pub mod close {
    /// The key names no app here.
    pub const APP_DOES_NOT_EXIST: u16 = 4001;
    /// The `protocol` the page speaks is not one served.
    pub const UNSUPPORTED_PROTOCOL: u16 = 4007;
    /// Over capacity: reconnect after a while.
    pub const OVER_CAPACITY: u16 = 4100;
    /// Reconnect at once (the server is restarting).
    pub const RECONNECT: u16 = 4200;
    /// No pong (nor anything else) in time.
    pub const PONG_NOT_RECEIVED: u16 = 4201;
    /// A frame that is not Pusher's.
    pub const PROTOCOL: u16 = 4009;
}

/// What pusher-js is told to wait between pings of its own (seconds).
pub const ACTIVITY_TIMEOUT: u64 = 120;

/// Answers the upgrade (a bad handshake is refused over HTTP), writes the
/// `101` and hands the socket to [`session`].
pub async fn serve<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    head: Head,
    key: &str,
) -> Result<Routed, PublicError> {
    let accept = handshake::accept_key(face, &head)?;
    let protocol = protocol_of(head.query());
    drop(head);
    if connection
        .write_all(&handshake::switching(&accept), &[])
        .await
        .is_err()
    {
        return Ok(Routed::Streamed);
    }
    let (face, key) = (connection.face().clone(), key.to_owned());
    connection.hand_over(Box::new(move |socket, read| {
        Box::pin(session(socket, read, face, key, protocol))
    }));
    Ok(Routed::Upgraded)
}

/// One Pusher socket, on its own task, until it closes: the key and the
/// protocol version checked (refused with Pusher's codes), then the
/// socket's client opened and the session run.
async fn session<S: Socket>(
    mut socket: S,
    read: Vec<u8>,
    face: Arc<Face>,
    key: String,
    protocol: Option<u32>,
) {
    let face = &*face;
    let mut ws =
        WebSocketStream::from_partially_read(&mut socket, read, Role::Server, Some(config(face)))
            .await;
    let settings = &face.state.settings.pusher;
    if key != settings.key {
        let text =
            format!("App key {key} not in this cluster. Did you forget to specify the cluster?");
        refuse(&mut ws, face, close::APP_DOES_NOT_EXIST, &text).await;
        return;
    }
    if !(5..=7).contains(&protocol.unwrap_or(0)) {
        let text = "Unsupported protocol version: this server speaks versions 5 to 7";
        refuse(&mut ws, face, close::UNSUPPORTED_PROTOCOL, text).await;
        return;
    }
    let socket_id = new_socket_id();
    let client = ClientId::parse(&format!("pusher:{socket_id}")).expect("a valid client id");
    let request = PollRequest {
        client: client.clone(),
        issued_at: None,
        since: None,
        subscribe: Vec::new(),
        timeout: None,
        connect_ext: None,
        open_only: false,
        from_now: true,
    };
    let hub = &face.state.hub;
    let opened = match Box::pin(hub.open_for(&request)).await {
        Ok(open) => hub.start_cursor(&open, &request).map(|since| (open, since)),
        Err(e) => Err(e),
    };
    let (open, since) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let text = format!("Over capacity: {e}");
            refuse(&mut ws, face, close::OVER_CAPACITY, &text).await;
            return;
        }
    };
    let mut session = Session {
        face,
        socket_id,
        client,
        open,
        since,
        channels: Vec::new(),
    };
    session.run(&mut ws).await;
    session.finish().await;
}

/// `?protocol=7` (pusher-js sends it with `client`, `version`, `flash`).
fn protocol_of(query: &str) -> Option<u32> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("protocol="))
        .and_then(|v| v.parse().ok())
}

/// A Pusher socket id: two random numbers joined by a dot, as Pusher's.
fn new_socket_id() -> String {
    let (a, b): (u32, u32) = (rand::random(), rand::random());
    format!("{a}.{b}")
}

/// Tells the page why (`pusher:error` with the code) and closes with the
/// same code.
async fn refuse<S: Socket>(ws: &mut Ws<'_, S>, face: &Face, code: u16, text: &str) {
    let error = Message::text(frames::error(Some(code), text));
    if send_within(face, ws, error).await.is_ok() {
        end(ws, face, code, "").await;
    }
}

/// One open Pusher socket.
struct Session<'f> {
    face: &'f Face,
    socket_id: String,
    client: ClientId,
    /// Counts the socket as an open poll until dropped.
    open: OpenPoll,
    since: Option<Cursor>,
    /// The channels subscribed to, in order.
    channels: Vec<String>,
}

/// Why the loop ended: the close to send, or none (the page left).
type Ending = Option<(u16, &'static str)>;

impl Session<'_> {
    async fn run<S: Socket>(&mut self, ws: &mut Ws<'_, S>) {
        let established = frames::connection_established(&self.socket_id);
        if self.send(ws, established).await.is_err() {
            return;
        }
        let Err(ending) = self.exchange(ws).await;
        if let Some((code, reason)) = ending {
            end(ws, self.face, code, reason).await;
        }
    }

    /// Until something ends the socket.
    async fn exchange<S: Socket>(
        &mut self,
        ws: &mut Ws<'_, S>,
    ) -> Result<std::convert::Infallible, Ending> {
        let hub = &self.face.state.hub;
        let mut heartbeat = Heartbeat::new(Duration::from_secs(ACTIVITY_TIMEOUT) + PING_EVERY);
        loop {
            if hub.is_shutting_down() {
                return Err(Some((close::RECONNECT, "server restarting")));
            }
            let quiet = match heartbeat.due() {
                Due::Wait(quiet) => quiet,
                Due::Ping(quiet) => {
                    self.send_message(ws, Message::Ping(Default::default()))
                        .await?;
                    quiet
                }
                Due::Silent => return Err(Some((close::PONG_NOT_RECEIVED, "pong not received"))),
            };
            tokio::select! {
                waited = hub.wait(&self.open, self.since, quiet) => self.deliver(ws, waited).await?,
                frame = ws.next() => {
                    heartbeat.heard();
                    self.receive(ws, frame).await?;
                }
            }
        }
    }

    /// Writes what a wait returned as Pusher events.
    async fn deliver<S: Socket>(
        &mut self,
        ws: &mut Ws<'_, S>,
        waited: Waited,
    ) -> Result<(), Ending> {
        match waited {
            Waited::Read(outcome) => {
                self.since = Some(outcome.cursor);
                for (_, message) in &outcome.messages {
                    if let Some(event) = frames::outbound(&message.json_tail, &self.socket_id) {
                        self.send(ws, event).await?;
                    }
                }
                Ok(())
            }
            Waited::Nothing(cursor) => {
                self.since = Some(cursor);
                Ok(())
            }
            Waited::Disconnected(_) => Err(Some((close::RECONNECT, "disconnected"))),
            Waited::Replaced(_) | Waited::Failed(_) => {
                Err(Some((close::OVER_CAPACITY, "storage unavailable")))
            }
        }
    }

    /// One frame from the page.
    async fn receive<S: Socket>(
        &mut self,
        ws: &mut Ws<'_, S>,
        frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> Result<(), Ending> {
        let message = match frame {
            Some(Ok(message)) => message,
            None | Some(Err(_)) => return Err(None),
        };
        match message {
            Message::Text(text) => {
                // Boxed: a subscribe's open and a client event's apply would
                // otherwise be part of every held socket's future.
                let answers = Box::pin(frames::answer(self, text.as_str())).await?;
                for answer in answers {
                    self.send(ws, answer).await?;
                }
                Ok(())
            }
            Message::Binary(_) => Err(Some((close::PROTOCOL, "text frames only"))),
            Message::Ping(_) => self.flush(ws).await,
            Message::Pong(_) | Message::Frame(_) => Ok(()),
            Message::Close(_) => {
                let _ = self.flush(ws).await;
                Err(None)
            }
        }
    }

    async fn send<S: Socket>(&self, ws: &mut Ws<'_, S>, text: String) -> Result<(), Ending> {
        self.send_message(ws, Message::text(text)).await
    }

    async fn send_message<S: Socket>(
        &self,
        ws: &mut Ws<'_, S>,
        message: Message,
    ) -> Result<(), Ending> {
        send_within(self.face, ws, message).await
    }

    async fn flush<S: Socket>(&self, ws: &mut Ws<'_, S>) -> Result<(), Ending> {
        flush_within(self.face, ws).await
    }

    /// After the socket: presence members leave (the others are told),
    /// and the socket's client is forgotten with its memberships (with
    /// Pusher's webhooks, channel by channel first, so that each is
    /// counted for `channel_vacated`).
    async fn finish(self) {
        let Session {
            face,
            socket_id,
            client,
            open,
            channels,
            ..
        } = self;
        drop(open);
        let mut commands = Vec::new();
        if face.state.pusher_webhooks.is_some() {
            // One leave per channel, each counted for its occupancy.
            for channel in channels.iter().filter_map(|c| ChannelName::parse(c).ok()) {
                frames::leave(face, &client, &channel, &socket_id, true).await;
            }
        } else {
            for channel in &channels {
                commands.extend(frames::member_left(face, channel, &socket_id).await);
            }
        }
        commands.push(Command::Disconnect { client });
        if let Err(e) = face.state.hub.apply(commands).await {
            tracing::debug!(error = %e, "a closed Pusher socket's end could not be applied");
        }
    }
}
