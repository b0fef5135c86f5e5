//! The connection to Redis: one server (a [`ConnectionManager`]) or a
//! Redis Cluster (the `redis` crate's async cluster connection, which
//! follows slots, `MOVED`/`ASK` redirections and failovers by itself). Both
//! connect lazily and reconnect by themselves; every call is bounded by
//! `store.timeout`.
//!
//! A cluster connection is also watched ([`Connection`]): after a master
//! was killed and restarted, the crate's connection was seen (in
//! `tests/cluster/chaos.rs`) to stay broken, every call timing out or
//! answered `MOVED`, while the cluster itself was fine again. So when every
//! call has failed for [`REBUILD_AFTER`], the connection is replaced by a
//! new one, which learns the slot map afresh from the seed nodes.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

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

/// How long every call to a cluster must have failed before its
/// connection is replaced (and, at most, how often).
const REBUILD_AFTER: Duration = Duration::from_secs(3);

/// The connection the store calls through, replaced when a cluster's stays
/// broken.
pub struct Connection {
    target: Target,
    timeout: Duration,
    current: RwLock<Conn>,
    failing: Mutex<Failing>,
}

/// The cluster connection's recent failures.
struct Failing {
    /// Since when every call failed (`None`: the last one worked).
    since: Option<Instant>,
    /// When the connection was last (re)built.
    built: Instant,
    /// Rebuilds since the last call that worked: the first is a warning,
    /// the next ones (a cluster down for long) only debug lines.
    rebuilds: u32,
}

impl Connection {
    /// Starts connecting in the background on the current runtime.
    pub fn start(target: &Target, timeout: Duration) -> Self {
        Connection {
            target: target.clone(),
            timeout,
            current: RwLock::new(Conn::start(target, timeout)),
            failing: Mutex::new(Failing {
                since: None,
                built: Instant::now(),
                rebuilds: 0,
            }),
        }
    }

    fn conn(&self) -> Conn {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs a script (routed by its first key in a cluster).
    pub async fn invoke(&self, call: &ScriptInvocation<'_>) -> RedisResult<Value> {
        let result = self.conn().invoke(call).await;
        self.watch(&result);
        result
    }

    /// Runs one command (routed by its key in a cluster).
    pub async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        let result = self.conn().query(cmd).await;
        self.watch(&result);
        result
    }

    /// Runs a pipeline whose commands share one key's slot.
    pub async fn query_pipe(&self, pipe: &redis::Pipeline) -> RedisResult<Value> {
        let result = self.conn().query_pipe(pipe).await;
        self.watch(&result);
        result
    }

    /// Runs one command on every master (the one server, or each master
    /// of a cluster); their answers.
    pub async fn query_each_master(&self, cmd: &Cmd) -> RedisResult<Vec<Value>> {
        self.conn().query_each_master(cmd).await
    }

    /// Notes a call's outcome; rebuilds a cluster connection whose calls
    /// all failed for [`REBUILD_AFTER`].
    fn watch(&self, result: &RedisResult<Value>) {
        if !matches!(self.target, Target::Cluster(_)) {
            return;
        }
        let mut failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let Err(e) = result else {
            failing.since = None;
            failing.rebuilds = 0;
            return;
        };
        let since = *failing.since.get_or_insert(now);
        if now - since < REBUILD_AFTER || now - failing.built < REBUILD_AFTER {
            return;
        }
        failing.built = now;
        failing.rebuilds += 1;
        if failing.rebuilds == 1 {
            tracing::warn!(
                error = %e,
                "every call to the Redis Cluster failed for {}s: connecting afresh (the slot map from the seed nodes)",
                REBUILD_AFTER.as_secs()
            );
        } else {
            tracing::debug!(error = %e, rebuilds = failing.rebuilds, "still failing: connecting afresh again");
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) =
            Conn::start(&self.target, self.timeout);
    }
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

    async fn query_pipe(&self, pipe: &redis::Pipeline) -> RedisResult<Value> {
        match self.clone() {
            Conn::Single(mut c) => pipe.query_async(&mut c).await,
            Conn::Cluster(mut c) => pipe.query_async(&mut c).await,
        }
    }

    async fn query_each_master(&self, cmd: &Cmd) -> RedisResult<Vec<Value>> {
        use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo};
        match self.clone() {
            Conn::Single(mut c) => Ok(vec![cmd.query_async(&mut c).await?]),
            Conn::Cluster(mut c) => {
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                match c.route_command(cmd.clone(), all).await? {
                    // No response policy: each master's answer by address.
                    Value::Map(answers) => Ok(answers.into_iter().map(|(_, v)| v).collect()),
                    other => Ok(vec![other]),
                }
            }
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
