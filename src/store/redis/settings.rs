//! What `[store]` says about Redis (`url` or `cluster`, `tls_ca`,
//! `key_prefix`, `timeout`), checked at start-up before anything listens.

use std::time::Duration;

use super::conn::Target;
use super::groups::Groups;

/// What `[store]` says about Redis, checked at start-up (before anything
/// listens).
#[derive(Clone)]
pub struct RedisSettings {
    pub(super) target: Target,
    /// Where the wake-up subscription may connect: the server, or each seed
    /// node of a cluster in turn (one node of a cluster hears every
    /// `PUBLISH`).
    pub(super) subscribe_to: Vec<redis::Client>,
    pub(super) groups: Groups,
    pub(super) prefix: String,
    pub(super) timeout: Duration,
    pub(super) max_messages: usize,
}

/// A `[store]` Redis setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    /// `url` missing or unparsable.
    #[error("store.url: {0}")]
    Url(String),
    /// A `cluster` seed unparsable, or both `url` and `cluster` set.
    #[error("store.cluster: {0}")]
    Cluster(String),
    /// `tls_ca` unreadable or without a certificate.
    #[error("store.tls_ca: {0}")]
    TlsCa(String),
    /// A `key_prefix` that would break the slot groups' hash tags.
    #[error("store.key_prefix: {0}")]
    Prefix(String),
}

impl RedisSettings {
    /// Checks `url` (`redis://[:password@]host:port/db`, `rediss://` for
    /// TLS, `redis+unix://`) or `cluster` (seed node URLs), `tls_ca` and
    /// `key_prefix`.
    pub fn new(store: &crate::store::StoreConfig) -> Result<Self, RedisConfigError> {
        let (url, cluster, prefix, timeout) =
            (&store.url, &store.cluster, &store.key_prefix, store.timeout);
        if prefix.contains(['{', '}']) {
            // A brace would start a hash tag of its own in a cluster.
            return Err(RedisConfigError::Prefix(format!(
                "{prefix:?} holds '{{' or '}}'; use letters, digits and ':'"
            )));
        }
        let certs = tls_ca(&store.tls_ca)?;
        let open = |url: &str| match &certs {
            Some(pem) if url.starts_with("rediss://") => redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            _ => redis::Client::open(url),
        };
        if !cluster.is_empty() {
            if !url.is_empty() {
                return Err(RedisConfigError::Cluster(
                    "set either store.url (one server) or store.cluster (seed nodes), not both"
                        .into(),
                ));
            }
            let seeds = cluster
                .iter()
                .map(|seed| {
                    open(seed).map_err(|e| RedisConfigError::Cluster(format!("{seed}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let target = Target::cluster(cluster, timeout, certs.clone())
                .map_err(|e| RedisConfigError::Cluster(e.to_string()))?;
            return Ok(RedisSettings {
                target,
                subscribe_to: seeds,
                groups: Groups::cluster(prefix),
                prefix: prefix.to_owned(),
                timeout,
                max_messages: 1,
            });
        }
        if url.is_empty() {
            return Err(RedisConfigError::Url(
                "kind = \"redis\" needs url = \"redis://host:port/db\" (or cluster = [seed nodes])"
                    .into(),
            ));
        }
        let client = open(url).map_err(|e| RedisConfigError::Url(e.to_string()))?;
        Ok(RedisSettings {
            target: Target::Single(client.clone()),
            subscribe_to: vec![client],
            groups: Groups::single(prefix),
            prefix: prefix.to_owned(),
            timeout,
            max_messages: 1,
        })
    }

    /// The same, with `[limits]`'s `mailbox_max_messages`.
    pub fn with_retention(mut self, retention: crate::store::Retention) -> Self {
        self.max_messages = retention.max_messages.max(1);
        self
    }
}

/// `tls_ca`'s PEM text (`None` when unset: the system's authorities).
fn tls_ca(path: &std::path::Path) -> Result<Option<Vec<u8>>, RedisConfigError> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let pem = std::fs::read(path)
        .map_err(|e| RedisConfigError::TlsCa(format!("{}: {e}", path.display())))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(RedisConfigError::TlsCa(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(Some(pem))
}

impl RedisSettings {
    /// Whether Redis answers `PING` (every master of a cluster) within the
    /// configured timeout: for `--check-config`, which reports it and goes
    /// on either way (the server itself waits for Redis, answering `503`
    /// meanwhile). Needs a runtime.
    pub async fn ping(&self) -> Result<(), String> {
        let connection = super::conn::Connection::start(&self.target, self.timeout);
        let ping = redis::cmd("PING");
        let answers = connection.query_each_master(&ping);
        match tokio::time::timeout(self.timeout, answers).await {
            Ok(Ok(answers)) if !answers.is_empty() => Ok(()),
            Ok(Ok(_)) => Err("no master answered".into()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }
}
