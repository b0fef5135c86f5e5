//! `[bayeux]`: whether the Bayeux endpoint is served, where, and how long a
//! session outlives its last `/meta/connect`. Documented in docs/bayeux.md.

use std::time::Duration;

use serde::Deserialize;

/// Paths the public port answers itself: `[bayeux] path` may not take one.
const TAKEN: &[&str] = &["/poll", "/events", "/health", "/cometbox.js"];

/// `[bayeux]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BayeuxConfig {
    /// `enabled`: off by default.
    pub enabled: bool,
    /// `path`: where the endpoint is (and every path below it, where
    /// clients append `/handshake`, `/connect`, ...).
    pub path: String,
    /// `session_timeout`: a session with no `/meta/connect` open for this
    /// long is forgotten (told to clients as `advice.maxInterval`); its
    /// client's next handshake resumes from its cursor.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
}

impl Default for BayeuxConfig {
    fn default() -> Self {
        BayeuxConfig {
            enabled: false,
            path: "/bayeux".into(),
            session_timeout: Duration::from_secs(30),
        }
    }
}

impl BayeuxConfig {
    /// Checks the section; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.path.starts_with('/') || self.path.len() < 2 || self.path.ends_with('/') {
            return Err((
                "bayeux.path",
                format!("{:?} is not a path like \"/bayeux\"", self.path),
            ));
        }
        if self.path.contains(['?', '#', ' ']) {
            return Err((
                "bayeux.path",
                format!("{:?} holds a character paths cannot", self.path),
            ));
        }
        if let Some(taken) = TAKEN.iter().find(|t| self.serves(t)) {
            return Err((
                "bayeux.path",
                format!(
                    "{:?} would take {taken}, which the port answers itself",
                    self.path
                ),
            ));
        }
        if self.session_timeout.is_zero() {
            return Err(("bayeux.session_timeout", "must be above zero".into()));
        }
        Ok(())
    }

    /// Whether a request for `path` is Bayeux's: the path, or below it.
    pub fn serves(&self, path: &str) -> bool {
        path.strip_prefix(self.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_and_everything_below_it_are_served() {
        let config = BayeuxConfig::default();
        assert!(config.serves("/bayeux"));
        assert!(config.serves("/bayeux/handshake"));
        assert!(!config.serves("/bayeuxx"));
        assert!(!config.serves("/poll"));
        assert!(config.validate().is_ok());
    }

    #[test]
    fn a_path_that_takes_the_ports_own_is_refused() {
        for bad in ["/", "bayeux", "/poll", "/bayeux/", "/a b"] {
            let config = BayeuxConfig {
                path: bad.into(),
                ..BayeuxConfig::default()
            };
            assert!(config.validate().is_err(), "{bad}");
        }
    }
}
