//! Checking settings that deserialised: values of the right type that make
//! no sense (zero timeouts, limits that contradict each other, an ingest
//! port open to the network without a key, Redis settings that cannot
//! work), each error naming its key.

use super::{Limits, ListenAddr, Settings};

impl Settings {
    /// Every check, the sections' then the bridges', each error naming its
    /// key.
    pub(super) fn check(&self) -> Result<(), (String, String)> {
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
        let network_facing =
            matches!(self.ingest.listen, ListenAddr::Tcp(addr) if !addr.ip().is_loopback());
        self.pusher.validate(network_facing)?;
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
