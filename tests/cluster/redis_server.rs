//! A real `redis-server` (Debian's) for one test: its own port on loopback,
//! its own directory, started and stopped by pid. Never a mock.

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
}

/// A running redis-server.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    persistence: Persistence,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts one on a free port in `dir`, and waits until it answers PING.
    pub async fn start(dir: &Path, persistence: Persistence) -> Self {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
            persistence,
        };
        server.restart().await;
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// (Re)starts the process on the same port and directory.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        std::fs::create_dir_all(&self.dir).unwrap();
        let aof = self.persistence == Persistence::Aof;
        let mut command = Command::new(binary());
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--dir", self.dir.to_str().unwrap(), "--save", ""])
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--appendfsync", "always", "--daemonize", "no"])
            .args(["--logfile", self.dir.join("redis.log").to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (apt-get install redis-server)",
                binary().display()
            )
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ping().await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server on {} did not answer within 20 s",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
