//! Settings: defaults, then the TOML file, then `COMETBOX_<SECTION>__<KEY>`
//! environment variables, deserialised into typed sections and validated.
//! Every error names where the bad value came from and its key.
//!
//! - this file: the sections, their defaults, and loading;
//! - `config/env.rs`: which `COMETBOX_*` variables are settings;
//! - `config/validate.rs`: the checks made once the settings deserialised;
//! - `config/summary.rs`: what a configuration sets up, in a few lines;
//! - `config/values.rs`: value readers every section shares.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::store::StoreConfig;

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// `[public]`: the browser-facing listener.
    pub public: PublicSection,
    /// `[ingest]`: the backend-facing listener.
    pub ingest: IngestSection,
    /// `[auth]`: token signing.
    pub auth: AuthSection,
    /// `[limits]`: every bound the server enforces.
    pub limits: Limits,
    /// `[store]`: where mailboxes live.
    pub store: StoreConfig,
    /// `[log]`: log format and level.
    pub log: LogSection,
    /// `[[bridge]]`: message brokers relayed to clients (see
    /// [`crate::bridge`]).
    pub bridge: Vec<crate::bridge::config::BridgeConfig>,
    /// `[hooks]`: backend hooks (off without a `url`).
    pub hooks: crate::hooks::config::HooksConfig,
    /// `[bayeux]`: the Bayeux endpoint (off by default).
    pub bayeux: crate::bayeux::config::BayeuxConfig,
    /// `[pusher]`: Pusher Channels compatibility (off by default).
    pub pusher: crate::pusher::config::PusherConfig,
}

/// `[public]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublicSection {
    /// `listen`: `host:port` or `unix:/path`.
    pub listen: ListenAddr,
    /// `cors_origins`: origins allowed cross-origin; `["*"]` for any. From
    /// the environment, a comma-separated list.
    #[serde(deserialize_with = "values::list_or_comma_separated")]
    pub cors_origins: Vec<String>,
    /// `socket_mode`: permissions of a `unix:` socket file.
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
}

impl Default for PublicSection {
    fn default() -> Self {
        PublicSection {
            listen: ListenAddr::Tcp(([0, 0, 0, 0], 8480).into()),
            cors_origins: Vec::new(),
            socket_mode: 0o660,
        }
    }
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// `listen`: `host:port` or `unix:/path`.
    pub listen: ListenAddr,
    /// `key`: bearer key backends must send; empty for none.
    pub key: String,
    /// `socket_mode`: permissions of a `unix:` socket file.
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
}

impl Default for IngestSection {
    fn default() -> Self {
        IngestSection {
            listen: ListenAddr::Tcp(([127, 0, 0, 1], 8481).into()),
            key: String::new(),
            socket_mode: 0o660,
        }
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// `secret`: the HS256 key; empty means a random one per start.
    pub secret: String,
    /// `token_ttl`: lifetime of tokens from `POST /token` without `ttl`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
    /// `max_token_ttl`: cap on `ttl` of `POST /token`.
    #[serde(with = "humantime_serde")]
    pub max_token_ttl: Duration,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            secret: String::new(),
            token_ttl: Duration::from_secs(3600),
            max_token_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// `[limits]`: every bound in one place. Each one caps memory or time that
/// a client, a backend or a burst could otherwise take without limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// How long an empty poll is held; below common proxy timeouts (60 s).
    #[serde(with = "humantime_serde")]
    pub poll_timeout: Duration,
    /// Cap on `?timeout=`.
    #[serde(with = "humantime_serde")]
    pub max_poll_timeout: Duration,
    /// A client with no open poll this long is forgotten with its mailbox.
    #[serde(with = "humantime_serde")]
    pub client_idle_timeout: Duration,
    /// Messages retained per client; the oldest is dropped beyond it.
    pub mailbox_max_messages: usize,
    /// Longest a message is retained.
    #[serde(with = "humantime_serde")]
    pub message_ttl: Duration,
    /// Open polls per client (tabs); more get 429.
    pub max_polls_per_client: u32,
    /// Largest ingest request body; checked while reading.
    pub max_body_bytes: usize,
    /// Largest single message payload.
    pub max_payload_bytes: usize,
    /// Most clients (mailboxes) held at once.
    pub max_clients: usize,
    /// Most commands in one ingest request.
    pub max_batch_commands: usize,
    /// Channels one client may be subscribed to (by backends and by its own
    /// token grants together).
    pub max_channels_per_client: usize,
    /// Open connections on the public listener; 0 derives it from the
    /// open-file limit (less what ingest may take). Beyond it, new
    /// connections wait in the kernel's backlog.
    pub max_connections: usize,
    /// Open connections on the ingest listener, counted apart from the public
    /// ones so that browsers filling the public port can never make backends
    /// (or a load balancer's `/health`) wait.
    pub max_ingest_connections: usize,
    /// Request line plus headers, on either listener; past it `431` and the
    /// connection is closed. Also bounds hyper's read buffer, so a client
    /// trickling an endless header holds at most this much memory.
    pub max_header_bytes: usize,
    /// How long a connection may accept no byte of a reply before it is
    /// closed (and its poll stops counting). A reader that stalls would
    /// otherwise hold its socket, its reply and kernel buffers forever.
    #[serde(with = "humantime_serde")]
    pub send_timeout: Duration,
    /// Ingest requests read and parsed at once; more get 503 `overloaded`.
    /// Bounds the memory of buffered bodies to this times `max_body_bytes`.
    pub max_ingest_in_flight: usize,
    /// Bytes of request bodies (Bayeux POSTs) read or held at once across
    /// the public port; a body that would pass it gets 503 `overloaded`
    /// before it is read. Each body takes its declared length (a chunked
    /// one, each chunk's) until it is parsed, so clients declaring bodies
    /// and stalling hold at most this much.
    pub max_public_body_bytes_in_flight: usize,
    /// Time a client has to send its request headers, and an ingest body.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Most bytes of messages in one poll reply (always at least one
    /// message); the client polls again at once for the rest. Without it a
    /// full mailbox of large messages is one reply of mailbox × payload
    /// bytes, held in memory per poll until a slow reader takes it.
    pub max_reply_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            poll_timeout: Duration::from_secs(25),
            max_poll_timeout: Duration::from_secs(60),
            client_idle_timeout: Duration::from_secs(120),
            mailbox_max_messages: 1000,
            message_ttl: Duration::from_secs(300),
            max_polls_per_client: 16,
            max_body_bytes: 1 << 20,
            max_payload_bytes: 64 << 10,
            max_clients: 1_000_000,
            max_batch_commands: 10_000,
            max_channels_per_client: 256,
            max_connections: 0,
            max_ingest_connections: 1024,
            max_header_bytes: 16 << 10,
            send_timeout: Duration::from_secs(30),
            max_ingest_in_flight: 64,
            max_public_body_bytes_in_flight: 64 << 20,
            request_timeout: Duration::from_secs(10),
            max_reply_bytes: 1 << 20,
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `format`: `text` for people, `json` for log shippers.
    pub format: LogFormat,
    /// `level`: a tracing filter (`info`, `cometbox=debug`); `RUST_LOG` wins.
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// Where a listener binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path (`unix:/path`).
    Unix(PathBuf),
}

impl ListenAddr {
    /// Parses `host:port` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, like unix:/run/cometbox/ingest.sock".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(ListenAddr::Tcp)
            .map_err(|_| format!("{s:?} is not ip:port (like 127.0.0.1:8481) or unix:/path"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        ListenAddr::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    match u32::from_str_radix(&s, 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(serde::de::Error::custom(format!(
            "{s:?} is not an octal file mode like \"0660\""
        ))),
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or the environment could not be read or deserialised.
    #[error("configuration ({origin}): {message}")]
    Load {
        /// The file, or "defaults and environment".
        origin: String,
        /// What the loader said, which names the key.
        message: String,
    },
    /// A value of the right type that makes no sense.
    #[error("configuration ({origin}): {key}: {message}")]
    Invalid {
        /// The file, or "defaults and environment".
        origin: String,
        /// `section.key`, or `bridge[N].key`.
        key: String,
        /// Why.
        message: String,
    },
}

/// Loads defaults, then `file`, then the environment, and validates.
pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
    load_from(file, std::env::vars())
}

/// [`load`], with the environment passed in (for tests).
pub fn load_from(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let origin = match file {
        Some(path) => format!("{} and COMETBOX_* environment", path.display()),
        None => "defaults and COMETBOX_* environment".to_owned(),
    };
    let load_error = |message| ConfigError::Load {
        origin: origin.clone(),
        message,
    };
    let env = Environment::split(env).map_err(load_error)?;
    let settings = deserialize(file, env).map_err(|e| load_error(e.to_string()))?;
    settings
        .check()
        .map_err(|(key, message)| ConfigError::Invalid {
            origin,
            key,
            message,
        })?;
    Ok(settings)
}

/// Defaults, then `file`, then the environment, deserialised (not yet
/// validated).
fn deserialize(file: Option<&Path>, env: Environment) -> Result<Settings, config::ConfigError> {
    let mut builder = config::Config::builder();
    if let Some(path) = file {
        builder = builder.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(true),
        );
    }
    builder = builder.add_source(
        config::Environment::with_prefix("COMETBOX")
            .prefix_separator("_")
            .separator("__")
            .source(Some(env.settings)),
    );
    for (path, value) in env.bridges {
        builder = builder.set_override(path, value)?;
    }
    builder.build()?.try_deserialize::<Settings>()
}

mod env;
mod summary;
mod validate;
pub mod values;

use env::Environment;
pub use env::NOT_SETTINGS;

#[cfg(test)]
mod tests;
