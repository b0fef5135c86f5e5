//! The real cometbox executable as a child of the test, for every Rust
//! suite that starts it: `tests/it/binary.rs` (start-up logs, signals,
//! configuration errors) and `tests/durability/harness.rs` (and through the
//! latter `tests/cluster` and `benches/disk_restart.rs`).
//!
//! It owns the command line (an empty environment but `PATH`, the child
//! killed on drop and with this test process, `PR_SET_PDEATHSIG`), the start
//! (ports `127.0.0.1:0` or what the caller sets, `--ready-file`, stderr to a
//! log file), the wait for readiness — the ready file, naming our child's pid
//! — with exit detection (a child that exits during start-up fails at once
//! with its status and log, not after the wait), and signals by pid to that
//! child only. What a suite's server is configured with stays in the suite.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

/// A command running `program` with only `PATH` from this environment, plus
/// `envs` and `args`; stdin closed, stdout and stderr piped (a caller of
/// `output()` reads them; `try_start` redirects stderr to a log). The child
/// is killed when dropped and when this test process dies.
pub fn command<K, V>(program: &Path, envs: &[(K, V)], args: &[&str]) -> Command
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut command = Command::new(program);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    dies_with_parent(&mut command);
    command
}

/// Asks the kernel to SIGKILL the server if this test process dies first.
fn dies_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// A server that did not come up: how it exited (`None`: it was not ready
/// in time and was killed) and what it wrote to stderr.
#[derive(Debug)]
pub struct Refused {
    pub status: Option<ExitStatus>,
    pub stderr: String,
}

/// A started server: our child, its addresses from the ready file, and its
/// stderr log.
pub struct Process {
    child: Child,
    pid: u32,
    pub public: String,
    pub ingest: String,
    log: PathBuf,
}

/// Spawns `command` with `--ready-file <ready>` and stderr to `log`, and
/// waits for the ready file. `Err` as soon as the child exits before it
/// (its status and log), or when it is not ready within `limit` (then it
/// is killed and reaped first). The ready file must name the child's pid:
/// a file left by another server is not taken for ours.
pub async fn try_start(
    mut command: Command,
    ready: &Path,
    log: &Path,
    limit: Duration,
) -> Result<Process, Refused> {
    let _ = std::fs::remove_file(ready);
    command
        .arg("--ready-file")
        .arg(ready)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let mut child = command.spawn().expect("spawn the cometbox binary");
    let pid = child.id().expect("a pid");
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(ready) {
            let addrs: Value = serde_json::from_str(&text).expect("ready file is JSON");
            assert_eq!(addrs["pid"], pid, "ready file names our child: {text}");
            return Ok(Process {
                child,
                pid,
                public: addrs["public"].as_str().unwrap().to_owned(),
                ingest: addrs["ingest"].as_str().unwrap().to_owned(),
                log: log.to_owned(),
            });
        }
        if let Some(status) = child.try_wait().unwrap() {
            return Err(Refused {
                status: Some(status),
                stderr: read_log(),
            });
        }
        if Instant::now() > deadline {
            signal_pid(pid, libc::SIGKILL);
            let _ = child.wait().await;
            return Err(Refused {
                status: None,
                stderr: read_log(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// As `try_start`, failing the test (with the exit status and the log) if
/// the server does not come up.
pub async fn start(command: Command, ready: &Path, log: &Path, limit: Duration) -> Process {
    let program = command.as_std().get_program().to_owned();
    match try_start(command, ready, log, limit).await {
        Ok(process) => process,
        Err(Refused {
            status: Some(status),
            stderr,
        }) => panic!(
            "{} exited ({status}) before its ready file:\n{stderr}",
            Path::new(&program).display()
        ),
        Err(Refused {
            status: None,
            stderr,
        }) => panic!(
            "{} wrote no ready file within {limit:?} (killed):\n{stderr}",
            Path::new(&program).display()
        ),
    }
}

/// A signal to one pid this module started and has not reaped yet.
fn signal_pid(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child we still hold (not reaped), so
    // it names our own process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        rc,
        0,
        "kill -{signal} {pid}: {}",
        std::io::Error::last_os_error()
    );
}

impl Process {
    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` (`libc::SIGTERM`, …) to the server.
    pub fn signal(&self, signal: libc::c_int) {
        signal_pid(self.pid, signal);
    }

    /// Waits at most `limit` for the server to exit (after a signal): its
    /// status, how long that took, and its log.
    pub async fn exit(mut self, limit: Duration) -> (ExitStatus, Duration, String) {
        let started = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("exits within {limit:?}:\n{}", self.log()))
            .unwrap();
        (status, started.elapsed(), self.log())
    }

    /// SIGKILL, then reap; returns the log.
    pub async fn kill9(self) -> String {
        self.signal(libc::SIGKILL);
        self.exit(Duration::from_secs(10)).await.2
    }

    /// SIGTERM, then wait (at most `limit`) for a clean exit; returns the log.
    pub async fn stop(self, limit: Duration) -> String {
        self.signal(libc::SIGTERM);
        let (status, _, log) = self.exit(limit).await;
        assert!(status.success(), "clean exit, got {status:?}:\n{log}");
        log
    }
}
