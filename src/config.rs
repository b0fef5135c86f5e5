//! Settings: defaults, then the TOML file, then `COMETBOX_<SECTION>__<KEY>`
//! environment variables, deserialised into typed sections and validated.
//! Every error names where the bad value came from and its key.

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

/// `COMETBOX_*` variables that are not settings, used by cometbox's own
/// tools and tests: the binary to test, a server's URL for the client
/// suites, and a test switch. Any other `COMETBOX_` name without `__` is
/// refused at start-up.
pub const NOT_SETTINGS: [&str; 4] = [
    "COMETBOX_BIN",
    "COMETBOX_URL",
    "COMETBOX_KEEP_TEST_LOGS",
    "COMETBOX_PHP_CLIENT",
];

/// `bridge[N].key` for the `N__KEY` of `COMETBOX_BRIDGE__N__KEY`.
fn bridge_path(item: &str) -> Option<String> {
    let (index, key) = item.split_once("__")?;
    let index: usize = index.parse().ok()?;
    let key_ok = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    key_ok.then(|| format!("bridge[{index}].{}", key.to_ascii_lowercase()))
}

/// The sections a `COMETBOX_<SECTION>__<KEY>` variable can name.
const SECTIONS: [&str; 9] = [
    "PUBLIC", "INGEST", "AUTH", "LIMITS", "STORE", "LOG", "BRIDGE", "HOOKS", "BAYEUX",
];

/// Why `name` is refused, with the setting it most resembles: the same
/// words with `__` after the section (`COMETBOX_INGEST_KEY` is
/// `COMETBOX_INGEST__KEY`).
fn unknown_variable(name: &str, rest: &str) -> String {
    let guess = SECTIONS.iter().find_map(|section| {
        let key = rest.strip_prefix(section)?.strip_prefix('_')?;
        (!key.is_empty()).then(|| format!("COMETBOX_{section}__{key}"))
    });
    let hint = match guess {
        Some(setting) => format!("did you mean {setting}?"),
        None => format!(
            "settings are COMETBOX_<SECTION>__<KEY>, with two underscores after one of {}",
            SECTIONS.join(", ")
        ),
    };
    format!(
        "environment variable {name} names no setting ({hint}); only {} may be set besides settings",
        NOT_SETTINGS.join(", ")
    )
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

/// The `COMETBOX_*` variables, sorted by what they set.
struct Environment {
    /// `COMETBOX_<SECTION>__<KEY>`, for the loader's environment source.
    settings: config::Map<String, String>,
    /// `[[bridge]]` keys (`bridge[N].key`) and their values, set as
    /// overrides: the environment source cannot index a list.
    bridges: Vec<(String, String)>,
}

impl Environment {
    /// Sorts the `COMETBOX_*` variables of `env`; other variables are
    /// ignored. A `COMETBOX_` name that is neither a setting nor one of
    /// [`NOT_SETTINGS`] is refused: a mistyped setting must not pass
    /// silently (a key meant for `ingest.key` would leave the ingest port
    /// keyless).
    fn split(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
        let mut sorted = Environment {
            settings: config::Map::new(),
            bridges: Vec::new(),
        };
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("COMETBOX_") else {
                continue;
            };
            if let Some(item) = rest.strip_prefix("BRIDGE__") {
                // `[[bridge]]` is a list: COMETBOX_BRIDGE__<N>__<KEY> sets key
                // KEY of the Nth table (from 0, in file order; one past the
                // file's adds a table).
                let path = bridge_path(item).ok_or_else(|| format!(
                    "environment variable {name}: a bridge's settings are COMETBOX_BRIDGE__<N>__<KEY>, N from 0 (COMETBOX_BRIDGE__0__URL)"
                ))?;
                sorted.bridges.push((path, value));
            } else if rest.contains("__") {
                sorted.settings.insert(name, value);
            } else if !NOT_SETTINGS.contains(&name.as_str()) {
                return Err(unknown_variable(&name, rest));
            }
        }
        Ok(sorted)
    }
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

impl Settings {
    /// Every check, the sections' then the bridges', each error naming its
    /// key.
    fn check(&self) -> Result<(), (String, String)> {
        self.validate()
            .map_err(|(key, message)| (key.to_owned(), message))?;
        self.validate_bridges()
    }

    /// The checks of every section but `[[bridge]]`, in a fixed order (so
    /// that of several mistakes the same one is named first).
    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.validate_above_zero()?;
        self.limits.validate()?;
        if self.auth.token_ttl > self.auth.max_token_ttl {
            return Err(("auth.token_ttl", "is above auth.max_token_ttl".into()));
        }
        self.validate_ingest_key()?;
        self.validate_store()?;
        self.hooks.validate()?;
        self.bayeux.validate()?;
        self.validate_listeners()?;
        self.validate_cors_origins()
    }

    /// Durations and counts that make no sense at zero.
    fn validate_above_zero(&self) -> Result<(), (&'static str, String)> {
        let l = &self.limits;
        let positive = [
            ("limits.poll_timeout", l.poll_timeout.is_zero()),
            ("limits.max_poll_timeout", l.max_poll_timeout.is_zero()),
            (
                "limits.client_idle_timeout",
                l.client_idle_timeout.is_zero(),
            ),
            ("limits.message_ttl", l.message_ttl.is_zero()),
            ("limits.request_timeout", l.request_timeout.is_zero()),
            ("limits.send_timeout", l.send_timeout.is_zero()),
            (
                "limits.max_ingest_connections",
                l.max_ingest_connections == 0,
            ),
            ("limits.mailbox_max_messages", l.mailbox_max_messages == 0),
            ("limits.max_polls_per_client", l.max_polls_per_client == 0),
            ("limits.max_body_bytes", l.max_body_bytes == 0),
            ("limits.max_payload_bytes", l.max_payload_bytes == 0),
            ("limits.max_clients", l.max_clients == 0),
            ("limits.max_batch_commands", l.max_batch_commands == 0),
            (
                "limits.max_channels_per_client",
                l.max_channels_per_client == 0,
            ),
            ("limits.max_ingest_in_flight", l.max_ingest_in_flight == 0),
            ("limits.max_reply_bytes", l.max_reply_bytes == 0),
            ("auth.token_ttl", self.auth.token_ttl.is_zero()),
            ("auth.max_token_ttl", self.auth.max_token_ttl.is_zero()),
        ];
        match positive.iter().find(|(_, zero)| *zero) {
            Some((key, _)) => Err((key, "must be above zero".into())),
            None => Ok(()),
        }
    }

    /// With `store = "redis"`: its URL, cluster, prefix and TLS settings,
    /// and a timeout above zero.
    fn validate_store(&self) -> Result<(), (&'static str, String)> {
        if self.store.kind != crate::store::StoreKind::Redis {
            return Ok(());
        }
        if let Err(e) = self.store.redis_settings() {
            use crate::store::redis::RedisConfigError as E;
            let key = match e {
                E::Url(_) => "store.url",
                E::Cluster(_) => "store.cluster",
                E::Prefix(_) => "store.key_prefix",
                E::TlsCa(_) => "store.tls_ca",
            };
            return Err((key, e.to_string()));
        }
        if self.store.timeout.is_zero() {
            return Err(("store.timeout", "must be above zero".into()));
        }
        Ok(())
    }

    /// The two listeners on different addresses (port 0 twice is two
    /// ports).
    fn validate_listeners(&self) -> Result<(), (&'static str, String)> {
        if self.public.listen == self.ingest.listen
            && !matches!(self.public.listen, ListenAddr::Tcp(a) if a.port() == 0)
        {
            return Err((
                "ingest.listen",
                "is the same address as public.listen".into(),
            ));
        }
        Ok(())
    }

    /// Each CORS origin a scheme and a host (no path), or `*`.
    fn validate_cors_origins(&self) -> Result<(), (&'static str, String)> {
        for origin in &self.public.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://"))
                || origin.ends_with('/')
            {
                return Err(("public.cors_origins", format!("{origin:?} is not an origin like \"https://app.example\" (scheme and host, no path) or \"*\"")));
            }
        }
        Ok(())
    }

    /// Each `[[bridge]]` table, named by its index.
    fn validate_bridges(&self) -> Result<(), (String, String)> {
        let mut names = std::collections::HashSet::new();
        for (i, bridge) in self.bridge.iter().enumerate() {
            bridge
                .compile(i, self.limits.max_payload_bytes)
                .map_err(|(key, message)| (format!("bridge[{i}].{key}"), message))?;
            if !names.insert(bridge.name(i)) {
                return Err((
                    format!("bridge[{i}].name"),
                    format!("{:?} is the name of an earlier bridge", bridge.name(i)),
                ));
            }
        }
        Ok(())
    }

    /// A key of blanks counts as no key: it would pass "a key is set" while
    /// protecting nothing (and no `Authorization` header could carry it,
    /// since surrounding whitespace is trimmed).
    fn validate_ingest_key(&self) -> Result<(), (&'static str, String)> {
        let key = &self.ingest.key;
        let blank = !key.is_empty() && key.trim().is_empty();
        if let ListenAddr::Tcp(addr) = self.ingest.listen {
            if !addr.ip().is_loopback() && key.trim().is_empty() {
                let (name, why) = if blank {
                    ("ingest.key", "is only whitespace, which counts as no key")
                } else {
                    ("ingest.listen", "needs a key")
                };
                return Err((
                    name,
                    format!("{why}: ingest.listen {addr} is not a loopback address; set ingest.key so that only your backends can post messages"),
                ));
            }
        }
        if key.trim() != key {
            return Err((
                "ingest.key",
                "has leading or trailing whitespace, which no Authorization header can carry"
                    .into(),
            ));
        }
        Ok(())
    }
}

impl Limits {
    /// Limits that must agree with each other.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_public_body_bytes_in_flight < self.max_body_bytes {
            return Err((
                "limits.max_public_body_bytes_in_flight",
                format!(
                    "{} is below limits.max_body_bytes ({}): a body of that size would always be refused",
                    self.max_public_body_bytes_in_flight, self.max_body_bytes
                ),
            ));
        }
        if self.max_public_body_bytes_in_flight > MAX_BODY_BUDGET {
            return Err((
                "limits.max_public_body_bytes_in_flight",
                format!(
                    "{} is above {MAX_BODY_BUDGET}",
                    self.max_public_body_bytes_in_flight
                ),
            ));
        }
        if self.poll_timeout > self.max_poll_timeout {
            return Err((
                "limits.poll_timeout",
                format!(
                    "{:?} is above limits.max_poll_timeout ({:?})",
                    self.poll_timeout, self.max_poll_timeout
                ),
            ));
        }
        if self.max_header_bytes < MIN_HEADER_BYTES {
            return Err((
                "limits.max_header_bytes",
                format!("{} is below {MIN_HEADER_BYTES}: hyper's read buffer cannot be smaller, and browsers send several KB of cookies", self.max_header_bytes),
            ));
        }
        if self.max_payload_bytes > self.max_body_bytes {
            return Err((
                "limits.max_payload_bytes",
                "is above limits.max_body_bytes: no request could carry such a payload".into(),
            ));
        }
        Ok(())
    }
}

/// hyper refuses a read buffer below 8 KiB, so a smaller header limit could
/// not bound memory any further.
const MIN_HEADER_BYTES: usize = 8192;

/// Largest `max_public_body_bytes_in_flight`: the budget is a semaphore of
/// one permit a byte, and tokio's holds at most `usize::MAX >> 3` permits.
const MAX_BODY_BUDGET: usize = usize::MAX >> 3;

mod summary;
pub mod values;

#[cfg(test)]
mod tests;
