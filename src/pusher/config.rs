//! `[pusher]`: the Pusher Channels compatibility layer's app credentials.
//! Documented in docs/pusher.md. The secret never appears in `Debug`
//! output, `--check-config` or logs.

use std::fmt;

use serde::Deserialize;

/// The secret's default: public, so refused on an ingest listener open to
/// the network (see [`PusherConfig::validate`]).
pub const DEFAULT_SECRET: &str = "app-secret";

/// `[pusher]`
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PusherConfig {
    /// `enabled`: off by default.
    pub enabled: bool,
    /// `app_id`: the `<app_id>` of `/apps/<app_id>/...` on the ingest
    /// listener.
    pub app_id: String,
    /// `key`: the app key (`auth_key` of signed requests; the browser's
    /// `/app/<key>`).
    pub key: String,
    /// `secret`: signs and checks every request (HMAC-SHA256).
    pub secret: String,
    /// `client_events`: allow `client-` events on private and presence
    /// channels (`GET /app/<key>`).
    pub client_events: bool,
    /// `webhook_url`: where Pusher's webhooks go (`http://host:port/path`
    /// or `unix:/path`, as `hooks.url`); empty sends none.
    pub webhook_url: String,
}

impl Default for PusherConfig {
    fn default() -> Self {
        PusherConfig {
            enabled: false,
            app_id: "cometbox".into(),
            key: "app-key".into(),
            secret: DEFAULT_SECRET.into(),
            client_events: false,
            webhook_url: String::new(),
        }
    }
}

impl fmt::Debug for PusherConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PusherConfig")
            .field("enabled", &self.enabled)
            .field("app_id", &self.app_id)
            .field("key", &self.key)
            .field("secret", &"***")
            .field("client_events", &self.client_events)
            .field("webhook_url", &self.webhook_url)
            .finish()
    }
}

impl PusherConfig {
    /// Checks the section (only when enabled); the error names the key.
    /// `network_facing`: the ingest listener is a TCP address that is not
    /// loopback, where the well-known default secret would let anyone
    /// publish.
    pub fn validate(&self, network_facing: bool) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        let path_safe = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !path_safe(&self.app_id) {
            return Err((
                "pusher.app_id",
                format!(
                    "{:?} must be 1 or more of A-Z a-z 0-9 - _ . (it is a path segment)",
                    self.app_id
                ),
            ));
        }
        if self.key.trim().is_empty() {
            return Err((
                "pusher.key",
                "is required when pusher.enabled is true".into(),
            ));
        }
        if self.key.trim() != self.key || self.key.contains(['&', '=', '/', '?', '#']) {
            return Err((
                "pusher.key",
                "may not hold blanks at its ends or any of & = / ? #".into(),
            ));
        }
        if self.secret.trim().is_empty() {
            return Err((
                "pusher.secret",
                "is required when pusher.enabled is true: every Pusher API request is signed with it"
                    .into(),
            ));
        }
        if network_facing && self.secret == DEFAULT_SECRET {
            return Err((
                "pusher.secret",
                format!("is the default {DEFAULT_SECRET:?} while ingest.listen is not a loopback address: anyone could sign requests; set a secret of your own"),
            ));
        }
        if !self.webhook_url.is_empty() {
            crate::hooks::transport::Target::parse(&self.webhook_url)
                .map_err(|e| ("pusher.webhook_url", e))?;
        }
        Ok(())
    }

    /// The `--check-config` line: on or off, the app id and the key (never
    /// the secret).
    pub fn summary(&self) -> String {
        match self.enabled {
            true => format!(
                "pusher: on, app id {:?}, key {:?} (HTTP API at /apps/{}/... on the ingest listener; secret set); webhooks {}",
                self.app_id,
                self.key,
                self.app_id,
                match self.webhook_url.is_empty() {
                    true => "off".to_owned(),
                    false => format!("to {}", self.webhook_url),
                }
            ),
            false => "pusher: off".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> PusherConfig {
        PusherConfig {
            enabled: true,
            ..PusherConfig::default()
        }
    }

    #[test]
    fn off_is_never_checked_and_defaults_pass_on_loopback() {
        let off = PusherConfig {
            key: String::new(),
            ..PusherConfig::default()
        };
        assert!(off.validate(true).is_ok());
        assert!(on().validate(false).is_ok());
    }

    #[test]
    fn empty_credentials_and_a_public_default_secret_are_refused() {
        let no_key = PusherConfig {
            key: " ".into(),
            ..on()
        };
        assert_eq!(no_key.validate(false).unwrap_err().0, "pusher.key");
        let no_secret = PusherConfig {
            secret: String::new(),
            ..on()
        };
        assert_eq!(no_secret.validate(false).unwrap_err().0, "pusher.secret");
        assert_eq!(on().validate(true).unwrap_err().0, "pusher.secret");
        let bad_app = PusherConfig {
            app_id: "a/b".into(),
            ..on()
        };
        assert_eq!(bad_app.validate(false).unwrap_err().0, "pusher.app_id");
    }

    #[test]
    fn the_secret_is_never_shown() {
        let config = PusherConfig {
            secret: "s3cr3t-value".into(),
            ..on()
        };
        assert!(!format!("{config:?}").contains("s3cr3t-value"));
        assert!(!config.summary().contains("s3cr3t-value"));
        assert!(config.summary().contains("app-key"));
    }
}
