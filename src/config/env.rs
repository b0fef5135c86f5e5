//! The `COMETBOX_*` environment: which variables are settings
//! (`COMETBOX_<SECTION>__<KEY>`, and `COMETBOX_BRIDGE__<N>__<KEY>` for the
//! `[[bridge]]` list), which are cometbox's own tools' ([`NOT_SETTINGS`]),
//! and why any other is refused, with the setting it most resembles.

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
const SECTIONS: [&str; 10] = [
    "PUBLIC", "INGEST", "AUTH", "LIMITS", "STORE", "LOG", "BRIDGE", "HOOKS", "BAYEUX", "PUSHER",
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

/// The `COMETBOX_*` variables, sorted by what they set.
pub(super) struct Environment {
    /// `COMETBOX_<SECTION>__<KEY>`, for the loader's environment source.
    pub(super) settings: config::Map<String, String>,
    /// `[[bridge]]` keys (`bridge[N].key`) and their values, set as
    /// overrides: the environment source cannot index a list.
    pub(super) bridges: Vec<(String, String)>,
}

impl Environment {
    /// Sorts the `COMETBOX_*` variables of `env`; other variables are
    /// ignored. A `COMETBOX_` name that is neither a setting nor one of
    /// [`NOT_SETTINGS`] is refused: a mistyped setting must not pass
    /// silently (a key meant for `ingest.key` would leave the ingest port
    /// keyless).
    pub(super) fn split(env: impl IntoIterator<Item = (String, String)>) -> Result<Self, String> {
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
