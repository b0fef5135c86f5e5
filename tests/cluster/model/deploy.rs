//! The processes of one model run and the faults done to them: one
//! cometbox node on a `memory` or `disk` store, or two nodes on one
//! redis-server or on a 3-master Redis Cluster (AOF, `appendfsync
//! always`). Every process is the test's own child, signalled by pid.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{self, token, Server, Spec};
use crate::nodes::node_spec;
use crate::redis_server::{Kind, Persistence, TestRedis};

/// The store under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Disk,
    Redis,
    Cluster,
}

/// A fault the runner can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL a cometbox node.
    KillNode,
    /// SIGTERM a cometbox node (a clean restart).
    StopNode,
    /// SIGKILL a redis-server (on a Cluster, a master).
    KillRedis,
}

impl Backend {
    /// What happens to it, in the order the runner rotates through.
    pub fn faults(self) -> &'static [Fault] {
        match self {
            Backend::Memory | Backend::Disk => &[Fault::KillNode, Fault::StopNode],
            Backend::Redis | Backend::Cluster => &[Fault::KillRedis, Fault::KillNode],
        }
    }

    /// A restart forgets everything.
    pub fn forgets(self) -> bool {
        self == Backend::Memory
    }

    fn nodes(self) -> usize {
        match self {
            Backend::Memory | Backend::Disk => 1,
            Backend::Redis | Backend::Cluster => 2,
        }
    }
}

/// What is down, to be brought back.
#[derive(Clone, Copy, Debug)]
pub enum Down {
    Node(usize),
    Redis(usize),
}

pub struct Deployment {
    pub backend: Backend,
    redis: Option<TestRedis>,
    specs: Vec<Spec>,
    /// `None` while killed.
    nodes: Vec<Option<Arc<Server>>>,
    /// Killed or stopped nodes whose process is still held by a task: reaped
    /// once it lets go, or dropped (killed) at the end.
    graveyard: Vec<Arc<Server>>,
}

impl Deployment {
    pub async fn start(backend: Backend, dir: &Path, limits: &[(&str, &str)]) -> Self {
        let redis = match backend {
            Backend::Redis => Some(Kind::Single),
            Backend::Cluster => Some(Kind::Cluster),
            _ => None,
        };
        let redis = match redis {
            Some(kind) => Some(TestRedis::start(kind, &dir.join("redis"), Persistence::Aof).await),
            None => None,
        };
        let specs: Vec<Spec> = (0..backend.nodes())
            .map(|_| {
                let spec = match (&redis, backend) {
                    (Some(redis), _) => node_spec(redis, dir, &[]),
                    (None, Backend::Disk) => Spec::disk(&dir.join("store"), dir),
                    (None, _) => Spec {
                        store: None,
                        run_dir: dir.to_owned(),
                        env: Vec::new(),
                    },
                };
                limits.iter().fold(spec, |spec, (k, v)| spec.with(k, v))
            })
            .collect();
        let mut nodes = Vec::new();
        for spec in &specs {
            nodes.push(Some(Arc::new(harness::start(spec).await)));
        }
        Deployment {
            backend,
            redis,
            specs,
            nodes,
            graveyard: Vec::new(),
        }
    }

    /// The nodes serving now.
    pub fn live(&self) -> Vec<Arc<Server>> {
        self.nodes.iter().flatten().cloned().collect()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn redis_count(&self) -> usize {
        self.redis.as_ref().map_or(0, |r| r.servers.len())
    }

    /// The node `n`, if it is up.
    pub fn node(&self, n: usize) -> Option<Arc<Server>> {
        self.nodes[n].clone()
    }

    /// SIGKILL (or SIGTERM) to node `n`; it stays down until [`Self::bring_back`].
    pub fn signal_node(&mut self, n: usize, signal: i32) {
        let server = self.nodes[n].take().expect("the node is up");
        // SAFETY: kill(2) on the pid of a node this test started and still
        // holds unreaped: our own child.
        unsafe {
            libc::kill(server.pid() as libc::pid_t, signal);
        }
        self.graveyard.push(server);
    }

    /// SIGKILL to redis-server `r` (reaped at once).
    pub async fn kill_redis(&mut self, r: usize) {
        self.redis.as_mut().expect("a Redis backend").servers[r]
            .kill9()
            .await;
    }

    /// Restarts what is down (same data, ports and config for Redis; the
    /// same store for a node) and waits until every node serves.
    pub async fn bring_back(&mut self, down: Down) {
        match down {
            Down::Node(n) => {
                self.bury().await;
                self.nodes[n] = Some(Arc::new(harness::start(&self.specs[n]).await));
            }
            Down::Redis(r) => {
                let redis = self.redis.as_mut().expect("a Redis backend");
                redis.servers[r].restart().await;
                redis.wait_ready().await;
            }
        }
        self.wait_serving().await;
    }

    /// Reaps the signalled nodes no task holds any more (a stopped one must
    /// have exited cleanly).
    async fn bury(&mut self) {
        let mut held = Vec::new();
        for server in self.graveyard.drain(..) {
            match Arc::try_unwrap(server) {
                // kill9 also reaps a process that SIGTERM ended already.
                Ok(server) => drop(server.kill9().await),
                Err(still_held) => held.push(still_held),
            }
        }
        self.graveyard = held;
    }

    /// Until every live node answers a poll and takes a request (a node
    /// reconnects to a restarted Redis by itself; its first calls may
    /// still answer 503).
    pub async fn wait_serving(&self) {
        let probe = token("probe", &[]);
        for node in self.live() {
            let deadline = Instant::now() + Duration::from_secs(40);
            loop {
                let poll = node.poll(&probe, "timeout=0").await;
                let post = node.post(r#"<message to="probe">{}</message>"#).await;
                if matches!((&poll, &post), (Ok((200, _)), Ok((200, _)))) {
                    break;
                }
                let last = format!("{poll:?} / {post:?}");
                assert!(
                    Instant::now() < deadline,
                    "a node does not serve 40 s after a restart: {last}\n{}",
                    tail(&node.log(), 60)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
