//! What a configuration sets up, in a few lines a person reads: printed by
//! `--check-config` and logged at start-up. Credentials never appear
//! (`redis://:secret@host` shows as `redis://:***@host`), here and in
//! `/stats` (bridges).

use super::values::redact_url;
use super::Settings;
use crate::store::StoreKind;

impl Settings {
    /// One line per part: the listeners, the ingest key, the store, hooks,
    /// Bayeux, Pusher and the bridges.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = vec![
            format!("public listener: {}", self.public.listen),
            format!("ingest listener: {}", self.ingest.listen),
            match self.ingest.key.is_empty() {
                true => "ingest key: none (the ingest listener must be loopback or a Unix socket)"
                    .into(),
                false => "ingest key: set (backends send Authorization: Bearer <key>)".into(),
            },
            self.store_line(),
        ];
        lines.push(match self.hooks.enabled() {
            true => format!(
                "hooks: {} (events: {})",
                redact_url(&self.hooks.url),
                self.hooks
                    .events
                    .iter()
                    .map(|e| format!("{e:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            false => "hooks: off".into(),
        });
        lines.push(match self.bayeux.enabled {
            true => format!("bayeux: on, at {}", self.bayeux.path),
            false => "bayeux: off".into(),
        });
        lines.push(self.pusher.summary());
        if self.bridge.is_empty() {
            lines.push("bridges: none".into());
        }
        for (i, bridge) in self.bridge.iter().enumerate() {
            let name = bridge
                .name
                .clone()
                .unwrap_or_else(|| format!("bridge[{i}]"));
            lines.push(format!(
                "bridge {name}: {} (source {})",
                crate::bridge::credentials::shown_url(&bridge.url),
                bridge.source
            ));
        }
        lines
    }

    fn store_line(&self) -> String {
        let s = &self.store;
        match s.kind {
            StoreKind::Memory => "store: memory (lost on restart: cursors then reset)".into(),
            StoreKind::Disk => format!("store: disk at {} (fsync {:?})", s.path.display(), s.fsync),
            StoreKind::Redis if s.cluster.is_empty() => {
                format!("store: redis at {}", redact_url(&s.url))
            }
            StoreKind::Redis => format!(
                "store: redis cluster, seeds {}",
                s.cluster
                    .iter()
                    .map(|u| redact_url(u))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}
