//! How each server is spoken to: subscriber polls (cometbox's `GET /poll`
//! exactly as `client-js/cometbox.js` sends it, Nchan's long-poll with `If-Modified-Since` /
//! `If-None-Match`), publish requests (cometbox's XML `<message>` /
//! `<batch>`, Nchan's `POST /pub/<id>`), and the server's own count of
//! waiting polls. Everything else in the tool is the same for both.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::client::{self, Client, Response};

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// This crate's release binary.
    Cometbox,
    /// nginx with libnginx-mod-nchan.
    Nchan,
}

impl Kind {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cometbox => "cometbox",
            Kind::Nchan => "nchan",
        }
    }
}

/// A running server's addresses; handed to worker processes as JSON.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Endpoint {
    /// Which server.
    pub kind: Kind,
    /// Where subscribers poll.
    pub public: SocketAddr,
    /// Where publishers post (the same as `public` for Nchan).
    pub ingest: SocketAddr,
    /// cometbox's token secret (unused for Nchan).
    pub secret: String,
    /// With `--nodes N` (cometbox on Redis): every node's (public, ingest),
    /// node 0 first; subscribers and publishers are spread over them.
    /// Empty: just `public` and `ingest`.
    #[serde(default)]
    pub nodes: Vec<(SocketAddr, SocketAddr)>,
}

/// The channel every fan-out subscriber shares.
pub const FAN_CHANNEL: &str = "fan";

/// How `hold` and `fanout` subscribers listen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Transport {
    /// Long-polls, as client-js's poll transport (the default).
    #[default]
    Poll,
    /// One Server-Sent Events stream each (cometbox `/events`, Nchan's
    /// eventsource).
    Sse,
    /// Bayeux sessions, as CometD's long-polling transport (cometbox only).
    Bayeux,
    /// One WebSocket each, as a page's `new WebSocket(url)` (cometbox
    /// `/ws`, Nchan's websocket subscriber).
    Ws,
}

/// How long a poll may be held server-side (cometbox `timeout=`, Nchan
/// `nchan_subscriber_timeout`).
pub const POLL_TIMEOUT: Duration = Duration::from_secs(60);

/// The id of the `i`th client (cometbox client id, Nchan channel id).
pub fn client_id(i: u32) -> String {
    format!("c{i}")
}

/// Microseconds since the Unix epoch: comparable across the tool's
/// processes on one machine.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// What every message carries: `c` the client it was sent to and `s` its
/// per-client sequence number (throughput), `k` the message number
/// (fan-out), `t` when its publish request was sent (µs since the epoch).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub c: u32,
    #[serde(default)]
    pub s: u64,
    #[serde(default)]
    pub k: u32,
    pub t: u64,
}

impl Payload {
    /// The JSON text, written by hand (it is on the publishers' hot path).
    pub fn json(&self) -> String {
        format!(
            r#"{{"c":{},"s":{},"k":{},"t":{}}}"#,
            self.c, self.s, self.k, self.t
        )
    }
}

/// One subscriber's poll state: what to ask for next.
pub enum Subscriber {
    /// A page running `client-js/cometbox.js` as
    /// `new CometBox(url, {token, channels, timeout: 60})`: every poll is
    /// `GET /poll?[since=<cursor>&][channels=<list>&]timeout=60` with the
    /// browser class's headers (see [`BROWSER_POLL_HEADERS`]).
    Cometbox {
        /// `channels=<list>&timeout=<s>`: what every poll repeats.
        query: String,
        /// `Bearer <token>` (the class's default `tokenIn: 'header'`).
        authorization: String,
        cursor: Option<String>,
    },
    /// `GET /sub/<channel>` with the previous reply's caching headers.
    Nchan {
        path: String,
        last_modified: Option<String>,
        etag: Option<String>,
    },
}

/// What one poll reply brought.
pub struct Polled {
    /// The messages' payloads, oldest first (empty: the poll timed out).
    pub payloads: Vec<Payload>,
    /// cometbox said its cursor could not be honoured.
    pub reset: bool,
}

#[derive(Deserialize)]
struct CometboxReply {
    cursor: String,
    messages: Vec<CometboxMessage>,
    #[serde(default)]
    reset: bool,
}

#[derive(Deserialize)]
struct CometboxMessage {
    data: Payload,
}

/// The headers `cometbox.js` gives every poll (`fetch(url, {headers,
/// cache: 'no-store'})`), besides `Authorization`: its own `Accept`, and the
/// `Cache-Control` / `Pragma` that the Fetch standard adds for
/// `cache: 'no-store'`.
pub const BROWSER_POLL_HEADERS: [(&str, &str); 3] = [
    ("Accept", "application/json"),
    ("Cache-Control", "no-cache"),
    ("Pragma", "no-cache"),
];

/// JavaScript's `encodeURIComponent`, as `cometbox.js` applies it to each
/// query value.
pub fn encode_uri_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Subscriber {
    /// Client `client`. On cometbox it polls its own mailbox, naming
    /// `channel` (if given) on every poll as `channels=`, as the browser
    /// class does: the poll subscribes it (the token grants the channel).
    /// On Nchan it polls `channel` if given, else its own channel `c<i>`:
    /// there too every poll names the channel (it is the URL).
    pub fn new(
        endpoint: &Endpoint,
        token: Option<&str>,
        client: u32,
        channel: Option<&str>,
    ) -> Self {
        match endpoint.kind {
            Kind::Cometbox => {
                let mut query = String::new();
                if let Some(channel) = channel {
                    query.push_str(&format!("channels={}&", encode_uri_component(channel)));
                }
                query.push_str(&format!("timeout={}", POLL_TIMEOUT.as_secs()));
                Subscriber::Cometbox {
                    query,
                    authorization: format!(
                        "Bearer {}",
                        token.expect("cometbox subscribers need a token")
                    ),
                    cursor: None,
                }
            }
            Kind::Nchan => Subscriber::Nchan {
                path: format!(
                    "/sub/{}",
                    channel.map_or_else(|| client_id(client), str::to_owned)
                ),
                last_modified: None,
                etag: None,
            },
        }
    }

    /// The next poll request.
    pub fn request(&self) -> Vec<u8> {
        match self {
            Subscriber::Cometbox {
                query,
                authorization,
                cursor,
            } => {
                // The order of cometbox.js's _buildUrl(): since, channels, timeout.
                let path = match cursor {
                    Some(c) => format!("/poll?since={}&{query}", encode_uri_component(c)),
                    None => format!("/poll?{query}"),
                };
                let [accept, cache_control, pragma] = BROWSER_POLL_HEADERS;
                let headers = [
                    accept,
                    ("Authorization", authorization.as_str()),
                    cache_control,
                    pragma,
                ];
                client::request("GET", &path, &headers, b"")
            }
            Subscriber::Nchan {
                path,
                last_modified,
                etag,
            } => {
                let mut headers = Vec::with_capacity(2);
                if let Some(v) = last_modified {
                    headers.push(("If-Modified-Since", v.as_str()));
                }
                if let Some(v) = etag {
                    headers.push(("If-None-Match", v.as_str()));
                }
                client::request("GET", path, &headers, b"")
            }
        }
    }

    /// Takes a poll reply: advances the cursor and returns the payloads.
    pub fn on_response(&mut self, response: &Response) -> Result<Polled, String> {
        match self {
            Subscriber::Cometbox { cursor, .. } => {
                if response.status != 200 {
                    return Err(format!(
                        "poll: status {} {}",
                        response.status,
                        String::from_utf8_lossy(&response.body)
                    ));
                }
                let reply: CometboxReply = serde_json::from_slice(&response.body)
                    .map_err(|e| format!("poll reply: {e}"))?;
                *cursor = Some(reply.cursor);
                Ok(Polled {
                    payloads: reply.messages.into_iter().map(|m| m.data).collect(),
                    reset: reply.reset,
                })
            }
            Subscriber::Nchan {
                last_modified,
                etag,
                ..
            } => match response.status {
                200 => {
                    if let Some(v) = response.header("last-modified") {
                        *last_modified = Some(v.to_owned());
                    }
                    if let Some(v) = response.header("etag") {
                        *etag = Some(v.to_owned());
                    }
                    let payloads = nchan_payloads(response)?;
                    Ok(Polled {
                        payloads,
                        reset: false,
                    })
                }
                // Timed out (408) or nothing new (304): ask again.
                304 | 408 => Ok(Polled {
                    payloads: Vec::new(),
                    reset: false,
                }),
                status => Err(format!(
                    "sub: status {status} {}",
                    String::from_utf8_lossy(&response.body)
                )),
            },
        }
    }
}

/// One message, or several as `multipart/mixed` parts
/// (`nchan_longpoll_multipart_response on`).
fn nchan_payloads(response: &Response) -> Result<Vec<Payload>, String> {
    let content_type = response.header("content-type").unwrap_or("");
    let parse = |body: &[u8]| {
        serde_json::from_slice::<Payload>(body)
            .map_err(|e| format!("sub body {:?}: {e}", String::from_utf8_lossy(body)))
    };
    let Some(boundary) = content_type
        .strip_prefix("multipart/mixed")
        .and_then(|rest| rest.split("boundary=").nth(1))
    else {
        return Ok(vec![parse(&response.body)?]);
    };
    let delimiter = format!("--{}", boundary.trim_matches('"'));
    let mut payloads = Vec::new();
    let mut rest = &response.body[..];
    while let Some(start) = client::find(rest, delimiter.as_bytes()) {
        rest = &rest[start + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let end = client::find(rest, delimiter.as_bytes()).unwrap_or(rest.len());
        let part = &rest[..end];
        // The part's headers end at the first blank line (at once if none).
        let body_start = client::find(part, b"\r\n\r\n").map_or(0, |i| i + 4);
        let body = part[body_start..]
            .strip_suffix(b"\r\n")
            .unwrap_or(&part[body_start..]);
        payloads.push(parse(body)?);
        rest = &rest[end..];
    }
    Ok(payloads)
}

/// One publish request: `messages` to their clients (cometbox: one
/// `<message>` or a `<batch>`; Nchan: exactly one message to channel
/// `c<i>`). Goes to [`Endpoint::publish_addr`].
pub fn publish_to_clients(kind: Kind, messages: &[Payload]) -> Vec<u8> {
    match kind {
        Kind::Cometbox => {
            let mut xml = String::with_capacity(64 + messages.len() * 80);
            if messages.len() > 1 {
                xml.push_str("<batch>");
            }
            for m in messages {
                xml.push_str(&format!(
                    r#"<message to="{}">{}</message>"#,
                    client_id(m.c),
                    m.json()
                ));
            }
            if messages.len() > 1 {
                xml.push_str("</batch>");
            }
            ingest_post(&xml)
        }
        Kind::Nchan => {
            assert_eq!(messages.len(), 1, "Nchan publishes one message per request");
            nchan_post(&client_id(messages[0].c), &messages[0].json())
        }
    }
}

/// One message to a channel.
pub fn publish_to_channel(kind: Kind, channel: &str, payload: &Payload) -> Vec<u8> {
    match kind {
        Kind::Cometbox => ingest_post(&format!(
            r#"<message channel="{channel}">{}</message>"#,
            payload.json()
        )),
        Kind::Nchan => nchan_post(channel, &payload.json()),
    }
}

fn ingest_post(xml: &str) -> Vec<u8> {
    client::request(
        "POST",
        "/",
        &[("Content-Type", "application/xml")],
        xml.as_bytes(),
    )
}

fn nchan_post(channel: &str, json: &str) -> Vec<u8> {
    client::request(
        "POST",
        &format!("/pub/{channel}"),
        &[("Content-Type", "application/json")],
        json.as_bytes(),
    )
}

/// How a publish reply is taken.
pub enum Published {
    /// Applied.
    Ok,
    /// Refused for now (503 overloaded): send the same again.
    Retry(String),
    /// Refused for good.
    Failed(String),
}

/// Reads a publish reply: cometbox 200 `<ok/>`; Nchan 201 (delivered to
/// someone) or 202 (queued, nobody waiting).
pub fn published(kind: Kind, response: &Response) -> Published {
    match (kind, response.status) {
        (Kind::Cometbox, 200) | (Kind::Nchan, 201 | 202) => Published::Ok,
        (_, 503) => Published::Retry(format!(
            "publish: status 503 {}",
            String::from_utf8_lossy(&response.body)
        )),
        (_, status) => Published::Failed(format!(
            "publish: status {status} {}",
            String::from_utf8_lossy(&response.body)
        )),
    }
}

impl Endpoint {
    /// Where publish requests go.
    pub fn publish_addr(&self) -> SocketAddr {
        self.ingest
    }

    /// Where publisher `p` posts: the nodes in turn.
    pub fn publish_addr_for(&self, p: usize) -> SocketAddr {
        match self.nodes.len() {
            0 => self.ingest,
            n => self.nodes[p % n].1,
        }
    }

    /// Where subscriber `i` polls: the nodes in turn.
    pub fn public_for(&self, i: u32) -> SocketAddr {
        match self.nodes.len() {
            0 => self.public,
            n => self.nodes[i as usize % n].0,
        }
    }

    /// How many polls the server says it is holding (cometbox `/stats`
    /// `open_polls`; Nchan `nchan_stub_status` `subscribers`).
    pub async fn held_polls(&self, client: &mut Client) -> Result<u64, String> {
        let path = match self.kind {
            Kind::Cometbox => "/stats",
            Kind::Nchan => "/nchan_status",
        };
        let response = client
            .request(&client::request("GET", path, &[], b""))
            .await
            .map_err(|e| format!("{path}: {e}"))?;
        if response.status != 200 {
            return Err(format!("{path}: status {}", response.status));
        }
        match self.kind {
            Kind::Cometbox => {
                let stats: serde_json::Value =
                    serde_json::from_slice(&response.body).map_err(|e| format!("/stats: {e}"))?;
                stats["open_polls"]
                    .as_u64()
                    .ok_or_else(|| "/stats: no open_polls".to_owned())
            }
            Kind::Nchan => String::from_utf8_lossy(&response.body)
                .lines()
                .find_map(|l| l.strip_prefix("subscribers:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| "/nchan_status: no subscribers line".to_owned()),
        }
    }

    /// Waits until the server holds at least `n` polls; returns how long
    /// it took, or an error naming the last count at `deadline`.
    pub async fn wait_held(&self, n: u64, deadline: Duration) -> Result<Duration, String> {
        let start = std::time::Instant::now();
        let addr = match self.kind {
            Kind::Cometbox => self.ingest,
            Kind::Nchan => self.public,
        };
        let mut client = Client::new(addr);
        // With several nodes, `open_polls` is each node's own: add them up.
        let mut others: Vec<Client> = self
            .nodes
            .iter()
            .skip(1)
            .map(|(_, i)| Client::new(*i))
            .collect();
        let mut last = 0;
        while start.elapsed() < deadline {
            let mut held = self.held_polls(&mut client).await;
            for other in &mut others {
                held = match (held, self.held_polls(other).await) {
                    (Ok(a), Ok(b)) => Ok(a + b),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
            }
            match held {
                Ok(held) if held >= n => return Ok(start.elapsed()),
                Ok(held) => last = held,
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!(
            "{} holds {last} polls, not {n}, after {deadline:?}",
            self.kind.name()
        ))
    }
}

/// Self-checks run by `smoke`.
pub mod checks {
    use super::*;

    /// A fan-out subscriber's polls: the query and headers of `cometbox.js`
    /// with `channels: ['fan'], timeout: 60`, the first without `since`, the
    /// next from the reply's cursor.
    pub fn cometbox_polls_like_the_browser_class() {
        let endpoint = Endpoint {
            kind: Kind::Cometbox,
            public: ([127, 0, 0, 1], 1).into(),
            ingest: ([127, 0, 0, 1], 2).into(),
            secret: String::new(),
            nodes: Vec::new(),
        };
        let mut sub = Subscriber::new(&endpoint, Some("T.O.K"), 7, Some("room:1,x"));
        let first = String::from_utf8(sub.request()).unwrap();
        assert!(
            first.starts_with("GET /poll?channels=room%3A1%2Cx&timeout=60 HTTP/1.1\r\n"),
            "{first}"
        );
        for header in [
            "Accept: application/json\r\n",
            "Authorization: Bearer T.O.K\r\n",
            "Cache-Control: no-cache\r\n",
            "Pragma: no-cache\r\n",
        ] {
            assert!(first.contains(header), "{header} missing in {first}");
        }
        let reply = Response {
            status: 200,
            headers: Vec::new(),
            body: br#"{"cursor":"a b-2","messages":[]}"#.to_vec(),
        };
        sub.on_response(&reply).unwrap();
        let next = String::from_utf8(sub.request()).unwrap();
        assert!(
            next.starts_with(
                "GET /poll?since=a%20b-2&channels=room%3A1%2Cx&timeout=60 HTTP/1.1\r\n"
            ),
            "{next}"
        );
        assert_eq!(encode_uri_component("aZ09-_.!~*'()"), "aZ09-_.!~*'()");
    }

    pub fn splits_nchan_multipart() {
        let body = b"--B\r\nContent-Type: application/json\r\n\r\n{\"t\":1}\r\n--B\r\n\r\n{\"t\":2,\"k\":3}\r\n--B--".to_vec();
        let r = Response {
            status: 200,
            headers: vec![("content-type".into(), "multipart/mixed; boundary=B".into())],
            body,
        };
        let p = nchan_payloads(&r).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!((p[0].t, p[1].t, p[1].k), (1, 2, 3));
    }
}
