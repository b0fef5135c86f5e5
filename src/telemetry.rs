//! Log output: text or JSON lines on stderr, filtered by `RUST_LOG` or
//! `log.level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSection};

/// Installs the global subscriber. `RUST_LOG` wins over `log.level`.
pub fn init(log: &LogSection) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.is_empty() => {
            EnvFilter::try_new(&value).map_err(|e| format!("RUST_LOG={value:?}: {e}"))?
        }
        _ => EnvFilter::try_new(&log.level)
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
