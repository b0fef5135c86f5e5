//! The configured CORS origins (`[public] cors_origins`) and what
//! `Access-Control-Allow-Origin` says to a request's `Origin`.

use super::response::AllowOrigin;

/// Origins refused so far are logged once each, up to this many (an
/// `Origin` header is the client's to invent).
const REFUSED_ORIGINS_LOGGED: usize = 64;

/// The configured CORS origins.
pub struct Cors {
    /// `*` was configured.
    any: bool,
    origins: Vec<String>,
    /// Refused origins already logged.
    logged: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Cors {
    /// From `[public] cors_origins` (validated at start-up).
    pub fn new(origins: &[String]) -> Self {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins.to_vec(),
            logged: Default::default(),
        }
    }

    /// What `Access-Control-Allow-Origin` says to a request from `origin`;
    /// `credentials` (Bayeux): browsers refuse `*` with credentials, so an
    /// allowed origin is always echoed. A refused origin is logged once.
    /// No copy of the origin is made on the way (this runs on every poll of
    /// a cross-origin page).
    pub fn allow(&self, origin: Option<String>, credentials: bool) -> Option<AllowOrigin> {
        if self.any && !credentials {
            return Some(AllowOrigin::Any);
        }
        let origin = origin?;
        if self.any || self.origins.contains(&origin) {
            return Some(AllowOrigin::Echo(origin));
        }
        self.note_refused(origin);
        None
    }

    /// Logs a refused origin the first time it is seen.
    fn note_refused(&self, origin: String) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() < REFUSED_ORIGINS_LOGGED && !logged.contains(&origin) {
            tracing::warn!(
                origin,
                "a page on another origin is refused: add it to [public] cors_origins (COMETBOX_PUBLIC__CORS_ORIGINS) to allow it; logged once per origin"
            );
            logged.insert(origin);
        }
    }
}
