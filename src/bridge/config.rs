//! A `[[bridge]]` table as written, and its checked form: which broker,
//! which source on it, and how its messages are routed.
//!
//! Everything that can be wrong with a table is found here, at start-up, so
//! that a running bridge only ever meets the broker's own failures.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::route::Route;
use crate::protocol::ingest::{event_name, PayloadType};
use crate::protocol::ChannelName;

/// One `[[bridge]]` table, as deserialised.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `name`: how logs, `/stats` and `/metrics` call it; `bridge[N]` by
    /// default.
    #[serde(default)]
    pub name: Option<String>,
    /// `url`: `stomp://`, `amqp://`, `nats://` or `redis://`, with any
    /// credentials (`user:password@`).
    pub url: String,
    /// `source`: what to read on the broker (see [`Source`]).
    pub source: String,
    /// `channel`: where messages go unless a header says otherwise.
    #[serde(default)]
    pub channel: Option<String>,
    /// `channel_header`: a header naming the channel.
    #[serde(default)]
    pub channel_header: Option<String>,
    /// `client_header`: a header naming one client instead.
    #[serde(default)]
    pub client_header: Option<String>,
    /// `event_header`: a header giving the event name.
    #[serde(default)]
    pub event_header: Option<String>,
    /// `type`: `json` (default) or `text`.
    #[serde(default = "default_type", rename = "type")]
    pub kind: String,
    /// `event`: a fixed event name (`event_header` wins).
    #[serde(default)]
    pub event: Option<String>,
    /// `group`: the Redis stream consumer group (`cometbox`).
    #[serde(default)]
    pub group: Option<String>,
    /// `consumer`: the consumer name within `group` (`cometbox`). Keep it
    /// stable: a restarted cometbox re-reads what this name left unacknowledged.
    #[serde(default)]
    pub consumer: Option<String>,
    /// `max_backoff`: longest wait between reconnection attempts (`30s`).
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
}

fn default_type() -> String {
    "json".into()
}

/// What a bridge reads, per broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A STOMP 1.2 destination (`/queue/x`, `/topic/x`).
    Stomp {
        /// `host:port`.
        addr: String,
        /// The `host` header of CONNECT (the virtual host): the URL's path
        /// without its `/`, else the host name.
        vhost: String,
        /// `login` and `passcode`, from the URL.
        login: Option<(String, String)>,
        /// The destination subscribed to.
        destination: String,
    },
    /// AMQP 0-9-1: a queue, or an exchange and routing key bound to a
    /// private queue.
    Amqp {
        /// The URL as given (lapin reads the vhost and credentials).
        url: String,
        /// Where messages come from.
        from: AmqpFrom,
    },
    /// A NATS subject (wildcards allowed).
    Nats {
        /// The URL as given.
        url: String,
        /// The subject.
        subject: String,
    },
    /// A Redis pub/sub channel (`PSUBSCRIBE` when it holds `*`, `?` or `[`).
    RedisPubSub {
        /// The URL as given.
        url: String,
        /// The channel or pattern.
        channel: String,
    },
    /// A Redis stream read through a consumer group.
    RedisStream {
        /// The URL as given.
        url: String,
        /// The stream's key.
        key: String,
        /// The consumer group.
        group: String,
        /// This reader's name in the group.
        consumer: String,
    },
}

/// An AMQP source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AmqpFrom {
    /// A queue the operator declared.
    Queue(String),
    /// A server-named, exclusive queue bound to `exchange` with `routing_key`
    /// (at-most-once: it goes away with the connection).
    Exchange {
        /// The exchange.
        exchange: String,
        /// The binding key.
        routing_key: String,
    },
}

/// A checked `[[bridge]]`: ready to run.
#[derive(Debug, Clone)]
pub struct Bridge {
    /// Its name.
    pub name: String,
    /// The URL without its password, for logs and `/stats`.
    pub shown_url: String,
    /// What it reads.
    pub source: Source,
    /// How its messages become commands.
    pub route: Route,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

/// The default `max_backoff`.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A table's problem: the key (within the table) and why.
pub type Invalid = (&'static str, String);

impl BridgeConfig {
    /// Its name: `name`, or `bridge[index]`.
    pub fn name(&self, index: usize) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("bridge[{index}]"))
    }

    /// Checks every key; `max_payload_bytes` is `[limits]`'s.
    pub fn compile(&self, index: usize, max_payload_bytes: usize) -> Result<Bridge, Invalid> {
        if let Some(name) = &self.name {
            if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
                return Err((
                    "name",
                    "must be 1 to 64 characters without control characters".into(),
                ));
            }
        }
        let url = Url::parse(&self.url).map_err(|e| ("url", format!("{:?}: {e}", self.url)))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(("url", format!("{:?} names no host", self.url)));
        }
        if self.source.is_empty() {
            return Err(("source", "must not be empty".into()));
        }
        let source = self.source(&url)?;
        let is_stream = matches!(source, Source::RedisStream { .. });
        if !is_stream && self.group.is_some() {
            return Err((
                "group",
                "applies only to a Redis stream (source = \"stream:<key>\")".into(),
            ));
        }
        if !is_stream && self.consumer.is_some() {
            return Err((
                "consumer",
                "applies only to a Redis stream (source = \"stream:<key>\")".into(),
            ));
        }
        let channel = self
            .channel
            .as_deref()
            .map(ChannelName::parse_target)
            .transpose()
            .map_err(|e| ("channel", e.to_string()))?;
        if channel.is_none() && self.channel_header.is_none() && self.client_header.is_none() {
            return Err((
                "channel",
                "is needed unless channel_header or client_header names where messages go".into(),
            ));
        }
        for (key, header) in [
            ("channel_header", &self.channel_header),
            ("client_header", &self.client_header),
            ("event_header", &self.event_header),
        ] {
            if header
                .as_deref()
                .is_some_and(|h| h.is_empty() || h.contains([':', '\n', '\r']))
            {
                return Err((
                    key,
                    "must be a header name (not empty, no ':' or line break)".into(),
                ));
            }
        }
        let event = self
            .event
            .as_deref()
            .map(event_name)
            .transpose()
            .map_err(|m| ("event", m))?;
        let kind = PayloadType::parse(&self.kind).map_err(|m| ("type", m))?;
        let max_backoff = self.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF);
        if max_backoff < Duration::from_millis(100) {
            return Err(("max_backoff", "must be at least 100ms".into()));
        }
        Ok(Bridge {
            name: self.name(index),
            shown_url: crate::config::values::redact_url(url.as_str()),
            source,
            route: Route {
                channel,
                channel_header: self.channel_header.clone(),
                client_header: self.client_header.clone(),
                event_header: self.event_header.clone(),
                event,
                kind,
                max_payload_bytes,
            },
            max_backoff,
        })
    }

    fn source(&self, url: &Url) -> Result<Source, Invalid> {
        let source = self.source.clone();
        let name = |s: Option<&String>| s.cloned().unwrap_or_else(|| "cometbox".to_owned());
        Ok(match url.scheme() {
            "stomp" => {
                let host = url.host_str().unwrap_or_default().to_owned();
                let port = url.port().unwrap_or(61613);
                let path = url.path().trim_start_matches('/');
                let login = match (url.username(), url.password()) {
                    ("", None) => None,
                    (user, pass) => Some((decode(user), decode(pass.unwrap_or_default()))),
                };
                Source::Stomp {
                    addr: format!("{}:{port}", bracketed(url, &host)),
                    vhost: if path.is_empty() { host } else { decode(path) },
                    login,
                    destination: source,
                }
            }
            "amqp" => Source::Amqp {
                url: self.url.clone(),
                from: match source.split_once('/') {
                    Some((exchange, routing_key)) if !exchange.is_empty() => AmqpFrom::Exchange {
                        exchange: exchange.to_owned(),
                        routing_key: routing_key.to_owned(),
                    },
                    Some(_) => {
                        return Err(("source", "an AMQP source is a queue name or <exchange>/<routing key>, with a non-empty exchange".into()))
                    }
                    None => AmqpFrom::Queue(source),
                },
            },
            "nats" => {
                if source.contains(char::is_whitespace) {
                    return Err(("source", "a NATS subject has no blanks".into()));
                }
                Source::Nats {
                    url: self.url.clone(),
                    subject: source,
                }
            }
            "redis" => match source.strip_prefix("stream:") {
                Some("") => return Err(("source", "stream: needs a key, like stream:events".into())),
                Some(key) => Source::RedisStream {
                    url: self.url.clone(),
                    key: key.to_owned(),
                    group: name(self.group.as_ref()),
                    consumer: name(self.consumer.as_ref()),
                },
                None => Source::RedisPubSub {
                    url: self.url.clone(),
                    channel: source,
                },
            },
            other => {
                return Err((
                    "url",
                    format!("scheme {other:?} is not one of stomp, amqp, nats, redis (TLS schemes are not supported yet)"),
                ))
            }
        })
    }
}

/// An IPv6 host in brackets, for `host:port`.
fn bracketed(url: &Url, host: &str) -> String {
    match url.host() {
        Some(url::Host::Ipv6(_)) if !host.starts_with('[') => format!("[{host}]"),
        _ => host.to_owned(),
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> BridgeConfig {
        config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("a bridge table")
    }

    #[test]
    fn each_scheme_makes_its_source() {
        let b = table(
            "url = \"stomp://u:p%40ss@127.0.0.1:61000/vh\"\nsource = \"/queue/a\"\nchannel = \"c\"",
        );
        let bridge = b.compile(0, 100).unwrap();
        assert_eq!(
            bridge.source,
            Source::Stomp {
                addr: "127.0.0.1:61000".into(),
                vhost: "vh".into(),
                login: Some(("u".into(), "p@ss".into())),
                destination: "/queue/a".into(),
            }
        );
        assert_eq!(bridge.shown_url, "stomp://u:***@127.0.0.1:61000/vh");
        assert_eq!(bridge.name, "bridge[0]");
        let b = table("url = \"amqp://localhost\"\nsource = \"ex/key.#\"\nchannel = \"c\"");
        assert!(matches!(
            b.compile(0, 100).unwrap().source,
            Source::Amqp {
                from: AmqpFrom::Exchange { .. },
                ..
            }
        ));
        let b = table("url = \"redis://localhost\"\nsource = \"stream:s\"\nchannel_header = \"ch\"\ngroup = \"g\"");
        assert!(matches!(
            b.compile(0, 100).unwrap().source,
            Source::RedisStream { ref group, ref consumer, .. } if group == "g" && consumer == "cometbox"
        ));
    }

    #[test]
    fn bad_tables_name_their_key() {
        let cases = [
            ("url = \"http://x\"\nsource = \"s\"\nchannel = \"c\"", "url"),
            (
                "url = \"not a url\"\nsource = \"s\"\nchannel = \"c\"",
                "url",
            ),
            (
                "url = \"nats://x\"\nsource = \"\"\nchannel = \"c\"",
                "source",
            ),
            ("url = \"nats://x\"\nsource = \"s\"", "channel"),
            (
                "url = \"nats://x\"\nsource = \"s\"\nchannel = \"bad channel!\"",
                "channel",
            ),
            (
                "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\ntype = \"xml\"",
                "type",
            ),
            (
                "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\ngroup = \"g\"",
                "group",
            ),
            (
                "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\nevent = \"\"",
                "event",
            ),
            (
                "url = \"nats://x\"\nsource = \"s\"\nchannel_header = \"a:b\"",
                "channel_header",
            ),
            (
                "url = \"redis://x\"\nsource = \"stream:\"\nchannel = \"c\"",
                "source",
            ),
            (
                "url = \"amqp://x\"\nsource = \"/key\"\nchannel = \"c\"",
                "source",
            ),
            (
                "url = \"nats://x\"\nsource = \"s\"\nchannel = \"c\"\nmax_backoff = \"1ms\"",
                "max_backoff",
            ),
        ];
        for (text, key) in cases {
            let err = table(text).compile(0, 100).unwrap_err();
            assert_eq!(err.0, key, "{text}: {err:?}");
        }
    }
}
