//! A `[[bridge]]` table as written, and its checked form: which broker,
//! which source on it, and how its messages are routed.
//!
//! Everything that can be wrong with a table is found here, at start-up, so
//! that a running bridge only ever meets the broker's own failures.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::credentials::{self, Keys, NatsAuth, Secret};
use super::route::Route;
use super::tls::{Tls, TlsFiles};
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
    /// `url`: `stomp://`, `amqp://`, `nats://` or `redis://`, or their TLS
    /// forms `stomp+ssl://` (`stomps://`), `amqps://`, `tls://`,
    /// `rediss://`; with any credentials (`user:password@`).
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
    /// `user`: the broker user (STOMP login, AMQP, NATS, Redis ACL user);
    /// wins over the URL's.
    #[serde(default)]
    pub user: Option<String>,
    /// `password`: its password (STOMP passcode); wins over the URL's.
    #[serde(default)]
    pub password: Option<Secret>,
    /// `token`: NATS only, an authentication token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// `credentials_file`: NATS only, a `.creds` file (user JWT and seed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// `ca_file`: PEM CA certificates trusted instead of the system's store.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `client_cert`: a PEM client certificate chain, for brokers that ask.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// `client_key`: `client_cert`'s PEM private key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
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
        /// The host, which the broker's certificate must name (TLS).
        host: String,
        /// The `host` header of CONNECT (the virtual host): the URL's path
        /// without its `/`, else the host name.
        vhost: String,
        /// `login` and `passcode`, from the URL or `user` and `password`.
        login: Option<(String, Secret)>,
        /// The destination subscribed to.
        destination: String,
    },
    /// AMQP 0-9-1: a queue, or an exchange and routing key bound to a
    /// private queue.
    Amqp {
        /// The URL with `user` and `password` (lapin reads the vhost and
        /// credentials).
        url: Url,
        /// Where messages come from.
        from: AmqpFrom,
    },
    /// A NATS subject (wildcards allowed), core NATS.
    Nats {
        /// The URL without user information.
        url: String,
        /// Its credentials.
        auth: NatsAuth,
        /// The subject.
        subject: String,
    },
    /// A NATS JetStream stream read through a durable pull consumer.
    JetStream {
        /// The URL without user information.
        url: String,
        /// Its credentials.
        auth: NatsAuth,
        /// The stream's name.
        stream: String,
        /// The durable consumer's name (created when missing).
        consumer: String,
    },
    /// A Redis pub/sub channel (`PSUBSCRIBE` when it holds `*`, `?` or `[`).
    RedisPubSub {
        /// The URL with `user` and `password`.
        url: String,
        /// The channel or pattern.
        channel: String,
    },
    /// A Redis stream read through a consumer group.
    RedisStream {
        /// The URL with `user` and `password`.
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
    /// `bridge[N]`: its table, as configuration errors and the docs number
    /// it (the same as `name` unless `name` is set).
    pub table: String,
    /// The URL without its password, for logs and `/stats`.
    pub shown_url: String,
    /// What it reads.
    pub source: Source,
    /// How its messages become commands.
    pub route: Route,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// TLS settings, for a TLS URL.
    pub tls: Option<Tls>,
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
        let mut url = Url::parse(&self.url).map_err(|e| ("url", format!("{:?}: {e}", self.url)))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(("url", format!("{:?} names no host", self.url)));
        }
        if self.source.is_empty() {
            return Err(("source", "must not be empty".into()));
        }
        let (broker, secure) = scheme(url.scheme()).ok_or_else(|| {
            (
                "url",
                format!(
                    "scheme {:?} is not one of {}",
                    url.scheme(),
                    SCHEMES.map(|(s, ..)| s).join(", ")
                ),
            )
        })?;
        let tls = self.tls(url.scheme(), secure)?;
        let keys = self.keys();
        let (source, shown_url) = match broker {
            Broker::Nats => {
                let shown = credentials::shown_url(url.as_str());
                let auth = keys.nats(&mut url)?;
                (self.nats_source(url.as_str(), auth)?, shown)
            }
            _ => {
                keys.refuse_nats_keys()?;
                keys.merge_into(&mut url)?;
                let shown = credentials::shown_url(url.as_str());
                (self.source(&url, broker)?, shown)
            }
        };
        self.check_stream_keys(&source)?;
        let route = self.route(max_payload_bytes)?;
        let max_backoff = self.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF);
        if max_backoff < Duration::from_millis(100) {
            return Err(("max_backoff", "must be at least 100ms".into()));
        }
        Ok(Bridge {
            name: self.name(index),
            table: format!("bridge[{index}]"),
            shown_url,
            source,
            route,
            max_backoff,
            tls,
        })
    }

    fn keys(&self) -> Keys<'_> {
        Keys {
            user: self.user.as_deref(),
            password: self.password.as_ref(),
            token: self.token.as_ref(),
            credentials_file: self.credentials_file.as_ref(),
        }
    }

    /// The TLS settings: loaded for a TLS scheme, refused for another.
    fn tls(&self, scheme: &str, secure: bool) -> Result<Option<Tls>, Invalid> {
        let files = TlsFiles {
            ca_file: self.ca_file.as_deref(),
            client_cert: self.client_cert.as_deref(),
            client_key: self.client_key.as_deref(),
        };
        if secure {
            return files.load().map(Some);
        }
        let named = [
            ("ca_file", files.ca_file.is_some()),
            ("client_cert", files.client_cert.is_some()),
            ("client_key", files.client_key.is_some()),
        ];
        match named.iter().find(|(_, set)| *set) {
            Some((key, _)) => Err((
                key,
                format!("applies only to a TLS URL (stomp+ssl, stomps, amqps, tls, rediss), not {scheme}"),
            )),
            None => Ok(None),
        }
    }

    /// `group` is the Redis stream's; `consumer` a Redis stream's or a
    /// JetStream consumer's.
    fn check_stream_keys(&self, source: &Source) -> Result<(), Invalid> {
        let redis_stream = matches!(source, Source::RedisStream { .. });
        let jetstream = matches!(source, Source::JetStream { .. });
        if !redis_stream && self.group.is_some() {
            return Err((
                "group",
                "applies only to a Redis stream (source = \"stream:<key>\")".into(),
            ));
        }
        if !redis_stream && !jetstream && self.consumer.is_some() {
            return Err((
                "consumer",
                "applies only to a Redis stream (source = \"stream:<key>\") or a JetStream stream (source = \"jetstream:<stream>\")".into(),
            ));
        }
        Ok(())
    }

    fn route(&self, max_payload_bytes: usize) -> Result<Route, Invalid> {
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
        Ok(Route {
            channel,
            channel_header: self.channel_header.clone(),
            client_header: self.client_header.clone(),
            event_header: self.event_header.clone(),
            event,
            kind,
            max_payload_bytes,
        })
    }

    /// The source of a STOMP, AMQP or Redis URL (credentials merged).
    fn source(&self, url: &Url, broker: Broker) -> Result<Source, Invalid> {
        let source = self.source.clone();
        let name = |s: Option<&String>| s.cloned().unwrap_or_else(|| "cometbox".to_owned());
        Ok(match broker {
            Broker::Stomp => {
                let host = url.host_str().unwrap_or_default().to_owned();
                let port = url
                    .port()
                    .unwrap_or(if url.scheme() == "stomp" { 61613 } else { 61614 });
                let path = url.path().trim_start_matches('/');
                let login = match (url.username(), url.password()) {
                    ("", None) => None,
                    (user, pass) => Some((decode(user), Secret::from(decode(pass.unwrap_or_default()).as_str()))),
                };
                Source::Stomp {
                    addr: format!("{}:{port}", bracketed(url, &host)),
                    vhost: if path.is_empty() { host.clone() } else { decode(path) },
                    host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
                    login,
                    destination: source,
                }
            }
            Broker::Amqp => Source::Amqp {
                url: url.clone(),
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
            Broker::Redis => match source.strip_prefix("stream:") {
                Some("") => return Err(("source", "stream: needs a key, like stream:events".into())),
                Some(key) => Source::RedisStream {
                    url: url.to_string(),
                    key: key.to_owned(),
                    group: name(self.group.as_ref()),
                    consumer: name(self.consumer.as_ref()),
                },
                None => Source::RedisPubSub {
                    url: url.to_string(),
                    channel: source,
                },
            },
            Broker::Nats => unreachable!("NATS sources are made by nats_source"),
        })
    }

    /// A core-NATS subject, or `jetstream:<stream>`.
    fn nats_source(&self, url: &str, auth: NatsAuth) -> Result<Source, Invalid> {
        let source = &self.source;
        if source.contains(char::is_whitespace) {
            return Err((
                "source",
                "a NATS subject or stream name has no blanks".into(),
            ));
        }
        Ok(match source.strip_prefix("jetstream:") {
            Some(stream) if stream.is_empty() || stream.contains(['.', '*', '>', '/', '\\']) => {
                return Err((
                    "source",
                    "jetstream: needs a stream name (no '.', '*', '>', '/'), like jetstream:ORDERS"
                        .into(),
                ))
            }
            Some(stream) => Source::JetStream {
                url: url.to_owned(),
                auth,
                stream: stream.to_owned(),
                consumer: self
                    .consumer
                    .clone()
                    .unwrap_or_else(|| "cometbox".to_owned()),
            },
            None => Source::Nats {
                url: url.to_owned(),
                auth,
                subject: source.clone(),
            },
        })
    }
}

/// The brokers, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broker {
    Stomp,
    Amqp,
    Nats,
    Redis,
}

/// Every accepted scheme: its broker, and whether it is TLS.
const SCHEMES: [(&str, Broker, bool); 9] = [
    ("stomp", Broker::Stomp, false),
    ("stomp+ssl", Broker::Stomp, true),
    ("stomps", Broker::Stomp, true),
    ("amqp", Broker::Amqp, false),
    ("amqps", Broker::Amqp, true),
    ("nats", Broker::Nats, false),
    ("tls", Broker::Nats, true),
    ("redis", Broker::Redis, false),
    ("rediss", Broker::Redis, true),
];

fn scheme(scheme: &str) -> Option<(Broker, bool)> {
    SCHEMES
        .iter()
        .find(|(s, ..)| *s == scheme)
        .map(|&(_, broker, secure)| (broker, secure))
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
mod tests;
