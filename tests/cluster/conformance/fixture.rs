//! The store fixture every conformance check takes: which store, the
//! scratch directory and the Redis it needs, and the nodes a check starts
//! on it. The two reopening variants of the disk store restart a check's
//! node at each of its checkpoints ([`Fixture::checkpoint`]): a clean stop
//! (SIGTERM) or a SIGKILL, then a start on the same data directory; every
//! other store carries on with the same process.

use std::ops::Deref;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::harness::{self, Scratch, Server, Spec};
use crate::nodes::node_spec;
use crate::redis_server::{Kind, Persistence, TestRedis};

/// The stores (and ways of running them) every check runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Store {
    Memory,
    Disk,
    /// The disk store, stopped cleanly and reopened at every checkpoint.
    DiskReopened,
    /// The disk store, SIGKILLed and reopened at every checkpoint.
    DiskKilled,
    /// One redis-server.
    Redis,
    /// A 3-master Redis Cluster.
    RedisCluster,
}

/// How a node is stopped before it is started again.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Stop {
    /// SIGTERM, and a clean exit.
    Clean,
    /// SIGKILL.
    Kill,
}

impl Store {
    /// The store a test function is named after (`conformance::<check>::<store>`).
    pub fn named(name: &str) -> Store {
        match name {
            "memory" => Store::Memory,
            "disk" => Store::Disk,
            "disk_reopened" => Store::DiskReopened,
            "disk_killed" => Store::DiskKilled,
            "redis" => Store::Redis,
            "redis_cluster" => Store::RedisCluster,
            other => panic!("no store named {other:?}"),
        }
    }

    /// Whether what a node acknowledged outlives the node's process (all
    /// but memory: PROTOCOL.md "Storage").
    pub fn keeps_state(self) -> bool {
        self != Store::Memory
    }

    fn redis_kind(self) -> Option<Kind> {
        match self {
            Store::Redis => Some(Kind::Single),
            Store::RedisCluster => Some(Kind::Cluster),
            _ => None,
        }
    }

    fn is_disk(self) -> bool {
        matches!(self, Store::Disk | Store::DiskReopened | Store::DiskKilled)
    }

    /// What a checkpoint does to the node: nothing, or a restart.
    fn at_checkpoint(self) -> Option<Stop> {
        match self {
            Store::DiskReopened => Some(Stop::Clean),
            Store::DiskKilled => Some(Stop::Kill),
            _ => None,
        }
    }
}

/// One check's store: its scratch directory (kept when the check fails)
/// and, for Redis, the servers, stopped with the fixture.
pub struct Fixture {
    pub store: Store,
    // Dropped after `redis` (field order): the servers stop before their
    // directories go.
    redis: Option<TestRedis>,
    dir: Scratch,
    nodes: AtomicU32,
}

/// A node a check started: the server, and what started it (to start it
/// again on the same data).
pub struct Node {
    server: Server,
    spec: Spec,
}

impl Deref for Node {
    type Target = Server;

    fn deref(&self) -> &Server {
        &self.server
    }
}

impl Fixture {
    /// The store of `check`, started (Redis) and empty.
    pub async fn new(store: Store, check: &str) -> Fixture {
        let dir = Scratch::new(&format!("conformance-{check}-{store:?}"));
        let redis = match store.redis_kind() {
            Some(kind) => {
                Some(TestRedis::start(kind, &dir.0.join("redis"), Persistence::None).await)
            }
            None => None,
        };
        Fixture {
            store,
            redis,
            dir,
            nodes: AtomicU32::new(0),
        }
    }

    /// Starts a node on the store with `settings` (`COMETBOX_*` pairs);
    /// on disk each node has its own data directory.
    pub async fn node(&self, settings: &[(&str, &str)]) -> Node {
        let n = self.nodes.fetch_add(1, Ordering::Relaxed);
        let run_dir = &self.dir.0;
        let mut spec = match &self.redis {
            Some(redis) => node_spec(redis, run_dir, &[]),
            None if self.store.is_disk() => Spec::disk(&run_dir.join(format!("data-{n}")), run_dir),
            None => Spec {
                store: None,
                run_dir: run_dir.clone(),
                env: Vec::new(),
            },
        };
        for (key, value) in settings {
            spec = spec.with(key, value);
        }
        Node {
            server: harness::start(&spec).await,
            spec,
        }
    }

    /// Stops `node` (`stop`) and starts it again on the same store: the
    /// same data directory, or the same Redis (another process: a node
    /// keeps nothing of its own there).
    pub async fn restart(&self, node: Node, stop: Stop) -> Node {
        let log = match stop {
            Stop::Clean => node.server.stop().await,
            Stop::Kill => node.server.kill9().await,
        };
        assert!(!log.contains("panicked"), "the node panicked:\n{log}");
        Node {
            server: harness::start(&node.spec).await,
            spec: node.spec,
        }
    }

    /// A point in a check where a restart of the node must change nothing
    /// a browser or a backend can see: the reopening variants restart it
    /// here; the other stores go on with the same process.
    pub async fn checkpoint(&self, node: Node) -> Node {
        match self.store.at_checkpoint() {
            Some(stop) => self.restart(node, stop).await,
            None => node,
        }
    }
}
