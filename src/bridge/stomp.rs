//! The STOMP 1.2 source (ActiveMQ, RabbitMQ's STOMP plugin, Artemis).
//!
//! Connects with `accept-version:1.2` and heart-beats both ways, subscribes
//! to the destination with `ack:client-individual`, applies each MESSAGE
//! (with those already waiting in the socket, as one batch) and ACKs them
//! (by their `ack` header) only once [`Sink::apply`] returned: on a queue, a
//! message that cometbox did not store is redelivered after a crash or a
//! lost connection. On a topic the broker keeps nothing for an absent
//! subscriber, so what is published while cometbox is disconnected is not
//! seen (at-most-once). A MESSAGE's headers — JMS properties included, as
//! ActiveMQ sends them — are the routing headers. A `stomp+ssl://` (or
//! `stomps://`) URL speaks the same over TLS ([`super::tls`]).

mod codec;

use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use tokio_util::either::Either;

pub use codec::{CodecError, Frame, Item, StompCodec};

use super::{BridgeError, Sink, Source};

/// Heart-beat interval we offer and ask for.
const HEART_BEAT: Duration = Duration::from_secs(10);
/// Largest frame accepted: well above any payload `max_payload_bytes`
/// allows, which [`Sink::route`] checks.
const MAX_FRAME: usize = 16 << 20;
/// The receipt id asked for on SUBSCRIBE.
const SUBSCRIBED: &str = "cometbox-subscribed";
/// How long the broker has to answer CONNECT.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl From<CodecError> for BridgeError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::Io(e) => BridgeError::Lost(e.to_string()),
            other => BridgeError::Protocol(other.to_string()),
        }
    }
}

/// Runs until the connection ends.
pub async fn run(sink: &Sink) -> Result<(), BridgeError> {
    let Source::Stomp {
        addr,
        host,
        vhost,
        login,
        destination,
    } = &sink.bridge().source
    else {
        unreachable!("stomp::run is only called for a STOMP source");
    };
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, open(addr, host, sink))
        .await
        .map_err(|_| BridgeError::Connect(format!("{addr}: timed out")))??;
    let mut conn = Framed::new(stream, StompCodec::new(MAX_FRAME));
    let beat = HEART_BEAT.as_millis().to_string();
    let beats = format!("{beat},{beat}");
    let mut connect = vec![
        ("accept-version", "1.2"),
        ("host", vhost.as_str()),
        ("heart-beat", beats.as_str()),
    ];
    if let Some((user, pass)) = login {
        connect.push(("login", user));
        connect.push(("passcode", pass.expose()));
    }
    conn.send(Item::Frame(Frame::new("CONNECT", &connect)))
        .await?;
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, next_frame(&mut conn))
        .await
        .map_err(|_| BridgeError::Connect("no CONNECTED frame in time".into()))??;
    match connected.command.as_str() {
        "CONNECTED" => {}
        "ERROR" => return Err(BridgeError::Connect(error_text(&connected))),
        other => {
            return Err(BridgeError::Protocol(format!(
                "{other} instead of CONNECTED"
            )))
        }
    }
    let (send_every, read_within) = heart_beats(connected.header("heart-beat"));
    conn.send(Item::Frame(Frame::new(
        "SUBSCRIBE",
        &[
            ("id", "0"),
            ("destination", destination),
            ("ack", "client-individual"),
            ("receipt", SUBSCRIBED),
        ],
    )))
    .await?;
    // Connected once the broker confirms the subscription (its RECEIPT, or
    // a first MESSAGE): a refused SUBSCRIBE is an ERROR instead, and the
    // bridge never shows as connected, nor logs it, between retries.
    let mut subscribed = false;
    let mut beat = tokio::time::interval(send_every.unwrap_or(Duration::from_secs(3600)));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let read = async {
            match read_within {
                Some(limit) => tokio::time::timeout(limit, conn.next()).await.map_err(|_| {
                    BridgeError::Lost(format!("nothing from the broker in {limit:?}"))
                }),
                None => Ok(conn.next().await),
            }
        };
        let item = tokio::select! {
            item = read => Some(item?),
            _ = beat.tick(), if send_every.is_some() => None,
        };
        let Some(item) = item else {
            conn.send(Item::HeartBeat).await?;
            continue;
        };
        let frame = match item {
            None => return Err(BridgeError::Lost("the broker closed the connection".into())),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(frame))) => frame,
        };
        if frame.command == "MESSAGE" {
            if !subscribed {
                subscribed = true;
                sink.connected();
            }
            // What the socket already holds joins this MESSAGE in one hub
            // batch (one journal write); a frame of another kind waits.
            let (batch, other) = take_ready(&mut conn, frame)?;
            let commands = batch
                .iter()
                .filter_map(|f| sink.route(|name| f.header(name), &f.body))
                .collect();
            sink.apply(commands).await?;
            for id in batch.iter().filter_map(|f| f.header("ack")) {
                conn.feed(Item::Frame(Frame::new("ACK", &[("id", id)])))
                    .await?;
            }
            conn.flush().await?;
            let Some(frame) = other else { continue };
            handle_other(sink, &frame, &mut subscribed)?;
        } else {
            handle_other(sink, &frame, &mut subscribed)?;
        }
    }
}

/// Most MESSAGE frames stored in one batch.
const MAX_BATCH: usize = 256;

/// A plain or a TLS socket.
type Stream = Either<TcpStream, TlsStream<TcpStream>>;

type Conn = Framed<Stream, StompCodec>;

/// Connects to `addr`, with TLS when the bridge has it.
async fn open(addr: &str, host: &str, sink: &Sink) -> Result<Stream, BridgeError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| BridgeError::Connect(format!("{addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    match &sink.bridge().tls {
        None => Ok(Either::Left(tcp)),
        Some(tls) => super::tls::handshake(tcp, host, tls)
            .await
            .map(Either::Right)
            .map_err(BridgeError::Connect),
    }
}

/// `first` and the MESSAGE frames already received after it, up to
/// [`MAX_BATCH`]; and the first frame of another kind, if one came.
fn take_ready(conn: &mut Conn, first: Frame) -> Result<(Vec<Frame>, Option<Frame>), BridgeError> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match conn.next().now_or_never() {
            None => break,
            Some(None) => return Err(BridgeError::Lost("the broker closed the connection".into())),
            Some(Some(Err(e))) => return Err(e.into()),
            Some(Some(Ok(Item::HeartBeat))) => {}
            Some(Some(Ok(Item::Frame(f)))) if f.command == "MESSAGE" => batch.push(f),
            Some(Some(Ok(Item::Frame(f)))) => return Ok((batch, Some(f))),
        }
    }
    Ok((batch, None))
}

/// A frame other than MESSAGE: the subscription's RECEIPT, or an ERROR.
fn handle_other(sink: &Sink, frame: &Frame, subscribed: &mut bool) -> Result<(), BridgeError> {
    match frame.command.as_str() {
        "RECEIPT" if !*subscribed => {
            *subscribed = true;
            sink.connected();
            Ok(())
        }
        "ERROR" => Err(BridgeError::Protocol(error_text(frame))),
        _ => Ok(()),
    }
}

async fn next_frame(conn: &mut Conn) -> Result<Frame, BridgeError> {
    loop {
        match conn.next().await {
            None => {
                return Err(BridgeError::Connect(
                    "the broker closed the connection".into(),
                ))
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Item::HeartBeat)) => continue,
            Some(Ok(Item::Frame(f))) => return Ok(f),
        }
    }
}

fn error_text(frame: &Frame) -> String {
    let message = frame.header("message").unwrap_or("ERROR frame");
    let body = String::from_utf8_lossy(&frame.body);
    let body = body.trim();
    if body.is_empty() {
        message.to_owned()
    } else {
        format!("{message}: {}", body.chars().take(200).collect::<String>())
    }
}

/// From the broker's `heart-beat: sx,sy` and ours (`HEART_BEAT` both ways):
/// how often we must send (max(ours, sy)), and how long a silence means the
/// connection is dead (three times max(sx, ours)); `None` where either side
/// said 0.
fn heart_beats(header: Option<&str>) -> (Option<Duration>, Option<Duration>) {
    let (sx, sy) = header
        .and_then(|h| h.split_once(','))
        .map(|(x, y)| {
            (
                x.trim().parse::<u64>().unwrap_or(0),
                y.trim().parse::<u64>().unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    let ours = HEART_BEAT.as_millis() as u64;
    let send = (sy > 0).then(|| Duration::from_millis(sy.max(ours)));
    let read = (sx > 0).then(|| Duration::from_millis(3 * sx.max(ours)));
    (send, read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heart_beats_follow_the_spec() {
        assert_eq!(heart_beats(None), (None, None));
        assert_eq!(heart_beats(Some("0,0")), (None, None));
        assert_eq!(
            heart_beats(Some("20000,5000")),
            (Some(Duration::from_secs(10)), Some(Duration::from_secs(60)))
        );
    }
}
