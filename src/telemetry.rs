//! Log output: text or JSON lines on stderr, filtered by `RUST_LOG` or
//! `log.level`.

use std::io::IsTerminal;

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
