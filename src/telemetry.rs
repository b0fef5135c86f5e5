//! Log output: text or JSON lines on stderr, filtered by `RUST_LOG` or
//! `log.level`; and [`Quiet`], which keeps a warning that repeats to one
//! line a minute.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// `level` plus the directives that silence crates whose own lines repeat
/// what cometbox says once: the `redis` crate's cluster client logs every
/// reconnect attempt (hundreds a second while a cluster is down), where
/// cometbox logs one line when Redis becomes unreachable and one when it is
/// back. A `level` naming `redis` itself (`info,redis=debug`) keeps them.
fn with_quiet_crates(level: &str) -> String {
    if level.contains("redis") {
        level.to_owned()
    } else {
        format!("{level},redis::cluster_handling=off")
    }
}

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`.
pub fn init(log: &LogSection) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG={value:?}: {e}"))?
        }
        _ => EnvFilter::try_new(with_quiet_crates(&log.level))
            .map_err(|e| format!("log.level = {:?}: {e}", log.level))?,
    };
    // Colours only for a person at a terminal, not for journald or a file.
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let installed = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_cluster_clients_reconnect_lines_are_left_out_unless_asked_for() {
        for level in ["info", "debug", "warn,cometbox=debug"] {
            let quiet = with_quiet_crates(level);
            assert!(quiet.ends_with(",redis::cluster_handling=off"), "{quiet}");
            assert!(EnvFilter::try_new(&quiet).is_ok(), "{quiet}");
        }
        assert_eq!(with_quiet_crates("info,redis=debug"), "info,redis=debug");
    }
}

/// How long a warning of one kind stays quiet after it was logged.
pub const QUIET_FOR: Duration = Duration::from_secs(60);

/// Warnings said once per kind per [`QUIET_FOR`].
#[derive(Default)]
pub struct Quiet {
    /// Per kind: when it was last said, and how many were kept quiet since.
    said: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Quiet {
    /// `Some(n)` when a warning of `kind` may be logged now, `n` being how
    /// many of that kind were kept quiet since the last; `None` to keep
    /// this one quiet.
    pub fn may_say(&self, kind: &str) -> Option<u64> {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match said.get_mut(kind) {
            Some((at, quiet)) if now.duration_since(*at) < QUIET_FOR => {
                *quiet += 1;
                None
            }
            Some((at, quiet)) => {
                *at = now;
                Some(std::mem::take(quiet))
            }
            None => {
                said.insert(kind.to_owned(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod quiet_tests {
    use super::Quiet;

    #[test]
    fn a_kind_is_said_once_per_window() {
        let quiet = Quiet::default();
        assert_eq!(quiet.may_say("400"), Some(0));
        assert_eq!(quiet.may_say("400"), None);
        assert_eq!(quiet.may_say("400"), None);
        assert_eq!(quiet.may_say("404"), Some(0), "another kind is its own");
    }
}
