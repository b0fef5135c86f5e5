//! A real `redis-server` (Debian's) for one test: its own port on loopback,
//! its own directory, started and stopped by pid. Never a mock. Or a real
//! 3-master Redis Cluster of them ([`TestRedis`]), made with `redis-cli
//! --cluster create`: every scenario runs against both ([`Kind`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// The binary: `REDIS_SERVER`, else `redis-server` on the PATH.
fn binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// Persistence of a test Redis.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Persistence {
    /// None: a restart starts empty (data loss).
    None,
    /// AOF with `appendfsync always`: a restart keeps everything.
    Aof,
    /// AOF with `appendfsync everysec` (Redis's default): a machine crash
    /// may lose the last second, so a restart cannot be trusted.
    AofEverysec,
}

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    persistence: Persistence,
    /// A cluster node: its cluster bus port (`cluster-port`).
    bus: Option<u16>,
    /// Extra `--name value` arguments (TLS).
    extra: Vec<String>,
}

pub use crate::ports::free_port;

impl RedisServer {
    /// Starts one on a free port in `dir`, and waits until it answers PING.
    pub async fn start(dir: &Path, persistence: Persistence) -> Self {
        Self::start_with(dir, persistence, None, Vec::new()).await
    }

    /// The same, as a cluster node (`bus`: its cluster bus port) and/or
    /// with extra arguments.
    pub async fn start_with(
        dir: &Path,
        persistence: Persistence,
        bus: Option<u16>,
        extra: Vec<String>,
    ) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
            persistence,
            bus,
            extra,
        };
        // A free port is only free until someone binds it: a start that
        // lost the race tries another.
        for attempt in 1.. {
            match server.launch().await {
                Ok(()) => break,
                Err(e) if attempt < 3 => {
                    eprintln!("redis-server: {e}; trying another port");
                    server.port = free_port();
                }
                Err(e) => panic!("{e}"),
            }
        }
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the process on the same port and directory.
    pub async fn restart(&mut self) {
        if let Err(e) = self.launch().await {
            panic!("{e}");
        }
    }

    /// Starts the process and waits until it answers PING, checking that
    /// the server answering is this child (not another test's Redis that
    /// took the port).
    async fn launch(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "already running");
        std::fs::create_dir_all(&self.dir).unwrap();
        let aof = self.persistence != Persistence::None;
        let fsync = match self.persistence {
            Persistence::AofEverysec => "everysec",
            _ => "always",
        };
        let mut command = Command::new(binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap(), "--save", ""])
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--appendfsync", fsync, "--daemonize", "no"])
            .args(["--logfile", self.dir.join("redis.log").to_str().unwrap()])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(bus) = self.bus {
            command
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus.to_string(),
                ])
                .args(["--cluster-config-file", "nodes.conf"])
                .args(["--cluster-node-timeout", "3000"]);
        }
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (apt-get install redis-server)",
                binary().display()
            )
        });
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!(
                    "redis-server on {} exited at start ({status}): the port was taken?",
                    self.port
                ));
            }
            if self.ping().await {
                let answering = self.process_id().await;
                if answering.is_some() && answering == pid {
                    return Ok(());
                }
                self.child = None; // dropped: killed
                return Err(format!(
                    "another redis-server (pid {answering:?}, ours {pid:?}) answers on {}",
                    self.port
                ));
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer within 20 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends one command, answering its text (the test's own looks).
    pub async fn command(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let mut conn = self.connection().await;
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query_async(&mut conn).await
    }

    /// `process_id` from `INFO server`.
    async fn process_id(&self) -> Option<u32> {
        let text = match self.command(&["INFO", "server"]).await.ok()? {
            redis::Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            redis::Value::VerbatimString { text, .. } => text,
            _ => return None,
        };
        text.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
    }

    async fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return false;
        };
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .is_ok()
    }

    /// A connection for the test's own looks at the data.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// SIGTERM (a clean shutdown: the AOF is flushed), then reap.
    pub async fn stop(&mut self) {
        self.signal(libc::SIGTERM).await;
    }

    /// SIGKILL, then reap.
    pub async fn kill9(&mut self) {
        self.signal(libc::SIGKILL).await;
    }

    async fn signal(&mut self, signal: i32) {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("a pid");
        // SAFETY: kill(2) on our own child, not reaped yet.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
        tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("redis-server exits within 15 s")
            .unwrap();
    }
}

/// Which Redis a scenario runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// One redis-server (`store.url`).
    Single,
    /// A 3-master Redis Cluster (`store.cluster`).
    Cluster,
}

/// The Redis of one scenario: one server, or the three masters of a
/// cluster. Everything a scenario does to "Redis" it does to all of them.
pub struct TestRedis {
    pub servers: Vec<RedisServer>,
    pub kind: Kind,
}

/// `redis-cli`: `REDIS_CLI`, else on the PATH.
fn cli() -> PathBuf {
    std::env::var_os("REDIS_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

impl TestRedis {
    /// Starts `kind` in `dir` and waits until it serves.
    pub async fn start(kind: Kind, dir: &Path, persistence: Persistence) -> Self {
        if kind == Kind::Single {
            return TestRedis {
                servers: vec![RedisServer::start(dir, persistence).await],
                kind,
            };
        }
        let mut servers = Vec::new();
        for i in 0..3 {
            let node = dir.join(format!("node{i}"));
            servers.push(
                RedisServer::start_with(&node, persistence, Some(free_port()), Vec::new()).await,
            );
        }
        let addresses: Vec<String> = servers
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = std::process::Command::new(cli())
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (apt-get install redis-tools)",
                    cli().display()
                )
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let redis = TestRedis { servers, kind };
        redis.wait_ready().await;
        redis
    }

    /// The `COMETBOX_STORE__*` settings that point a node here.
    pub fn store_env(&self) -> Vec<(&'static str, String)> {
        match self.kind {
            Kind::Single => vec![("COMETBOX_STORE__URL", self.servers[0].url())],
            Kind::Cluster => {
                let seeds: Vec<String> = self.servers.iter().map(|s| s.url()).collect();
                vec![("COMETBOX_STORE__CLUSTER", seeds.join(","))]
            }
        }
    }

    /// Until every node says `cluster_state:ok` (a cluster; a single
    /// server answers PING once started).
    pub async fn wait_ready(&self) {
        if self.kind == Kind::Single {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for server in &self.servers {
            loop {
                let info = server.command(&["CLUSTER", "INFO"]).await;
                if matches!(&info, Ok(redis::Value::BulkString(b)) if String::from_utf8_lossy(b).contains("cluster_state:ok"))
                    || matches!(&info, Ok(redis::Value::VerbatimString { text, .. }) if text.contains("cluster_state:ok"))
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "the cluster is not ok within 30 s: {info:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// SIGTERM to every server.
    pub async fn stop(&mut self) {
        for server in &mut self.servers {
            server.stop().await;
        }
    }

    /// SIGKILL to every server.
    pub async fn kill9(&mut self) {
        for server in &mut self.servers {
            server.kill9().await;
        }
    }

    /// Restarts every server (same ports, directories, cluster config).
    pub async fn restart(&mut self) {
        for server in &mut self.servers {
            server.restart().await;
        }
        self.wait_ready().await;
    }

    /// `KEYS pattern` over every server.
    pub async fn keys(&self, pattern: &str) -> Vec<String> {
        let mut all = Vec::new();
        for server in &self.servers {
            let mut conn = server.connection().await;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            all.extend(keys);
        }
        all
    }

    /// The keys of stored message payloads.
    pub async fn payload_keys(&self) -> Vec<String> {
        self.keys(match self.kind {
            Kind::Single => "cometbox:p:*",
            Kind::Cluster => "cometbox:{*}p:*",
        })
        .await
    }

    /// How many copies of one channel message's payload at most: once, or
    /// once per slot group in a cluster.
    pub fn payload_copies(&self) -> usize {
        match self.kind {
            Kind::Single => 1,
            Kind::Cluster => 16,
        }
    }

    /// `used_memory` added up over every server.
    pub async fn used_memory(&self) -> u64 {
        let mut sum = 0;
        for server in &self.servers {
            let mut conn = server.connection().await;
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .query_async(&mut conn)
                .await
                .unwrap();
            sum += info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap();
        }
        sum
    }
}
