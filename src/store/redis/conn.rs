//! The connection to Redis: one server (a [`ConnectionManager`]) or a
//! Redis Cluster (the `redis` crate's async cluster connection, which
//! follows slots, `MOVED`/`ASK` redirections and failovers by itself). Both
//! connect lazily and reconnect by themselves; every call is bounded by
//! `store.timeout`.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisResult, ScriptInvocation, Value};

/// Where the store's keys live.
// Built once at start-up: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub enum Target {
    /// One server (or a primary behind one address).
    Single(redis::Client),
    /// A Redis Cluster, by its seed nodes.
    Cluster(ClusterClient),
}

/// An open (lazily connecting) connection.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Starts connecting in the background on the current runtime.
    pub fn start(target: &Target, timeout: Duration) -> Self {
        match target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(timeout))
                    .set_connection_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client.clone(), config)
                        .expect("a lazy connection manager (a tokio runtime is running)"),
                )
            }
            Target::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(timeout)
                    .set_response_timeout(timeout);
                Conn::Cluster(client.get_pending_async_connection_with_config(config))
            }
        }
    }

    /// Runs a script (routed by its first key in a cluster).
    pub async fn invoke(&self, call: &ScriptInvocation<'_>) -> RedisResult<Value> {
        match self.clone() {
            Conn::Single(mut c) => call.invoke_async(&mut c).await,
            Conn::Cluster(mut c) => call.invoke_async(&mut c).await,
        }
    }

    /// Runs one command (routed by its key in a cluster).
    pub async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        match self.clone() {
            Conn::Single(mut c) => cmd.query_async(&mut c).await,
            Conn::Cluster(mut c) => cmd.query_async(&mut c).await,
        }
    }
}

impl Target {
    /// A cluster client for `seeds`, failing fast (a call answers within
    /// about `timeout`, then the next one tries again).
    /// `ca`: the authorities `rediss://` seeds are checked against.
    pub fn cluster(seeds: &[String], timeout: Duration, ca: Option<Vec<u8>>) -> RedisResult<Self> {
        let mut builder = ClusterClient::builder(seeds.iter().map(String::as_str));
        // (`certs` turns TLS on: only for `rediss://` seeds.)
        if let Some(pem) = ca.filter(|_| seeds.iter().all(|s| s.starts_with("rediss://"))) {
            builder = builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            });
        }
        let client = builder
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .overall_response_timeout(Some(timeout * 2))
            .retries(2)
            .min_retry_wait(50)
            .max_retry_wait(500)
            .build()?;
        Ok(Target::Cluster(client))
    }
}
