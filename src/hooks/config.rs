//! `[hooks]`: where hook requests go and how they behave. The contract's
//! keys (`url`, `secret`, `timeout`, `on_error`, `offline_after`, `events`)
//! and ours (`node`, `max_pending`, `concurrency`, `max_asks`,
//! `retry_max`), all documented in docs/hooks.md.

use std::time::Duration;

use serde::Deserialize;

use super::events::{EventSet, EventType};
use super::transport::Target;

/// What a cancellable event gets when the backend fails or is too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Refuse the action (the default: a backend that cannot be asked
    /// cannot have said yes).
    Deny,
    /// Let it happen.
    Allow,
}

/// `[hooks]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HooksConfig {
    /// `url`: `http://host:port/path` or `unix:/path`; empty turns hooks off.
    pub url: String,
    /// `secret`: signs every request; required with `url`.
    pub secret: String,
    /// `timeout`: per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// `on_error`: `deny` or `allow`.
    pub on_error: OnError,
    /// `offline_after`: no poll open this long and the client is offline.
    #[serde(with = "humantime_serde")]
    pub offline_after: Duration,
    /// `events`: which are sent (a list, or comma-separated from the
    /// environment).
    #[serde(deserialize_with = "events_list")]
    pub events: Vec<EventType>,
    /// `node`: this server's name in every event; the host name by default.
    pub node: String,
    /// `max_pending`: opening notifications waiting at most, all of them
    /// twice that (see `outbox.rs`).
    pub max_pending: usize,
    /// `concurrency`: notification requests in flight at once (each client's
    /// in order, different clients in parallel).
    pub concurrency: usize,
    /// `max_asks`: cancellable requests in flight at once; a poll that finds
    /// none free waits, within `timeout`.
    pub max_asks: usize,
    /// `retry_max`: the longest pause between retries of a notification
    /// (they start at 100 ms and double).
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        HooksConfig {
            url: String::new(),
            secret: String::new(),
            timeout: Duration::from_secs(2),
            on_error: OnError::Deny,
            offline_after: Duration::from_secs(15),
            events: EventType::ALL.to_vec(),
            node: String::new(),
            max_pending: 100_000,
            concurrency: 8,
            max_asks: 256,
            retry_max: Duration::from_secs(30),
        }
    }
}

impl HooksConfig {
    /// Whether hooks are on.
    pub fn enabled(&self) -> bool {
        !self.url.is_empty()
    }

    /// The configured events as a set.
    pub fn event_set(&self) -> EventSet {
        EventSet::of(&self.events)
    }

    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled() {
            return Ok(());
        }
        Target::parse(&self.url).map_err(|e| ("hooks.url", e))?;
        if self.secret.trim().is_empty() {
            return Err((
                "hooks.secret",
                "is required when hooks.url is set: every hook request is signed with it".into(),
            ));
        }
        let zero = [
            ("hooks.timeout", self.timeout.is_zero()),
            ("hooks.offline_after", self.offline_after.is_zero()),
            ("hooks.max_pending", self.max_pending == 0),
            ("hooks.concurrency", self.concurrency == 0),
            ("hooks.max_asks", self.max_asks == 0),
            ("hooks.retry_max", self.retry_max.is_zero()),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, zero)| *zero) {
            return Err((key, "must be above zero".into()));
        }
        Ok(())
    }

    /// `node`, or the host name when unset.
    pub fn node_name(&self) -> String {
        if !self.node.is_empty() {
            return self.node.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "cometbox".into())
    }
}

fn events_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<EventType>, D::Error> {
    crate::config::values::list_or_comma_separated(d)?
        .into_iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::String(name.clone()))
                .ok()
                .filter(|kind: &EventType| !kind.is_pusher())
                .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{name:?} is not an event: expected connect, subscribe, publish, online, offline, subscribed, unsubscribed"
                ))
            })
        })
        .collect()
}
