//! The real executable: start-up logs, the ready file, configuration
//! errors, signals, and a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

use crate::helpers::{post_request, scratch_dir, token, unix_exchange, wait_until, SECRET};

#[allow(dead_code)] // `Process::stop`: `Running::stop` does not assert the exit status
#[path = "../shared/binary.rs"]
mod process;

pub(crate) struct Running {
    process: process::Process,
    pub(crate) public: String,
    pub(crate) ingest: String,
    dir: PathBuf,
}

fn command(envs: &[(&str, &str)], args: &[&str]) -> Command {
    process::command(Path::new(env!("CARGO_BIN_EXE_cometbox")), envs, args)
}

/// Starts the binary on ephemeral ports and waits for its ready file; a
/// server that exits first fails the test at once with its exit status and
/// log, not after the wait.
pub(crate) async fn start(name: &str, extra_env: &[(&str, &str)]) -> Running {
    let dir = scratch_dir(name);
    let mut envs = vec![
        ("COMETBOX_PUBLIC__LISTEN", "127.0.0.1:0"),
        ("COMETBOX_INGEST__LISTEN", "127.0.0.1:0"),
        ("COMETBOX_AUTH__SECRET", SECRET),
    ];
    envs.extend_from_slice(extra_env);
    let process = process::start(
        command(&envs, &[]),
        &dir.join("ready.json"),
        &dir.join("stderr.log"),
        Duration::from_secs(15),
    )
    .await;
    Running {
        public: process.public.clone(),
        ingest: process.ingest.clone(),
        process,
        dir,
    }
}

impl Running {
    /// The server's resident memory in KiB, from `/proc/<pid>/status`.
    pub(crate) fn rss_kib(&self) -> u64 {
        let pid = self.process.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/<pid>/status")
    }

    /// Stops the server (SIGTERM) and removes its scratch directory.
    pub(crate) async fn stop(self) {
        self.signal(libc::SIGTERM);
        self.exit().await;
    }

    /// Kills the server with SIGKILL (no shutdown at all) and waits for it.
    pub(crate) async fn kill9(self) {
        self.process.kill9().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn log(&self) -> String {
        self.process.log()
    }

    fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    async fn exit(self) -> (std::process::ExitStatus, Duration, String) {
        let exited = self.process.exit(Duration::from_secs(10)).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        exited
    }
}

async fn get_json(http: &reqwest::Client, url: String) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

async fn post(http: &reqwest::Client, ingest: &str, xml: &str) {
    let reply = http
        .post(format!("http://{ingest}/"))
        .header("content-type", "application/xml")
        .body(xml.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
}

#[tokio::test]
async fn start_up_logs_say_what_listens_where_and_sigterm_answers_open_polls() {
    let server = start("sigterm", &[("COMETBOX_LIMITS__POLL_TIMEOUT", "30s")]).await;
    let log = server.log();
    assert!(
        log.contains(&format!(
            "public listener (browsers: GET /poll, /events, /cometbox.js) on http://{}",
            server.public
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("on http://{}", server.ingest)),
        "{log}"
    );
    assert!(
        log.contains("limits in force") && log.contains("poll_timeout=30s"),
        "{log}"
    );
    assert!(log.contains("open-file limit"), "{log}");
    let http = reqwest::Client::new();
    let url = format!("http://{}/poll?token={}", server.public, token("sig", &[]));
    let held = tokio::spawn({
        let http = http.clone();
        async move {
            let reply = http.get(url).send().await.unwrap();
            (reply.status(), reply.json::<Value>().await.unwrap())
        }
    });
    wait_until("the poll is held", Duration::from_secs(5), || async {
        let url = format!("http://{}/clients/sig", server.ingest);
        let presence = http.get(url).send().await.unwrap();
        presence.status() == 200 && presence.json::<Value>().await.unwrap()["online"] == json!(true)
    })
    .await;
    server.signal(libc::SIGTERM);
    let (status, took, log) = server.exit().await;
    assert!(status.success(), "exit 0, got {status:?}: {log}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    let (poll_status, body) = held.await.unwrap();
    assert_eq!(poll_status, 200);
    assert_eq!(body["messages"], json!([]));
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
}

/// SIGHUP ("reload" by convention) must not kill it: the configuration is
/// read at start only, so it says so and goes on serving.
#[tokio::test]
async fn sighup_is_logged_and_it_keeps_serving() {
    let server = start("sighup", &[]).await;
    let http = reqwest::Client::new();
    for n in 1..=2 {
        server.signal(libc::SIGHUP);
        wait_until("the SIGHUP log line", Duration::from_secs(5), || async {
            server.log().matches("SIGHUP").count() == n
        })
        .await;
        post(
            &http,
            &server.ingest,
            &format!(r#"<message to="hup">{n}</message>"#),
        )
        .await;
    }
    let url = format!(
        "http://{}/poll?token={}&timeout=0",
        server.public,
        token("hup", &[])
    );
    let reply = get_json(&http, url).await;
    let datas: Vec<&Value> = reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["data"])
        .collect();
    assert_eq!(datas, [&json!(1), &json!(2)], "{reply}");
    server.signal(libc::SIGTERM);
    let (status, _, log) = server.exit().await;
    assert!(
        status.success(),
        "exit 0 after SIGHUPs and a SIGTERM, got {status:?}: {log}"
    );
    assert!(
        log.contains("restart to apply") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test]
async fn sigint_stops_it_too_and_a_restart_resets_old_cursors() {
    let server = start("restart", &[]).await;
    let http = reqwest::Client::new();
    post(
        &http,
        &server.ingest,
        r#"<message to="r">"before"</message>"#,
    )
    .await;
    let reply = get_json(
        &http,
        format!("http://{}/poll?token={}", server.public, token("r", &[])),
    )
    .await;
    let old_cursor = reply["cursor"].as_str().unwrap().to_owned();
    server.signal(libc::SIGINT);
    assert!(server.exit().await.0.success());
    let again = start("restart2", &[]).await;
    post(&http, &again.ingest, r#"<message to="r">"after"</message>"#).await;
    let since = format!(
        "http://{}/poll?token={}&since={old_cursor}",
        again.public,
        token("r", &[])
    );
    let reply = get_json(&http, since).await;
    assert_eq!(reply["reset"], json!(true));
    assert_eq!(reply["messages"][0]["data"], json!("after"));
    again.signal(libc::SIGTERM);
    again.exit().await;
}

#[tokio::test]
async fn without_a_secret_it_warns_and_json_logs_are_json() {
    let server = start(
        "json",
        &[
            ("COMETBOX_AUTH__SECRET", ""),
            ("COMETBOX_LOG__FORMAT", "json"),
        ],
    )
    .await;
    // The warning comes from building the server state, after the ready
    // file is written: wait for it rather than for a guessed time.
    wait_until(
        "the random-secret warning",
        Duration::from_secs(5),
        || async { server.log().contains("random secret") },
    )
    .await;
    let log = server.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "WARN"
                && l["message"].as_str().unwrap().contains("random secret")),
        "{log}"
    );
    server.signal(libc::SIGTERM);
    server.exit().await;
}

/// Runs the binary to its exit; a server that starts instead is killed
/// (the child is `kill_on_drop`) and the test fails, not hangs.
async fn run_to_exit(envs: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(15), command(envs, args).output())
        .await
        .unwrap_or_else(|_| panic!("started instead of refusing: {envs:?} {args:?}"))
        .unwrap()
}

/// Runs the binary and expects a configuration error (exit code 2).
async fn refuses_to_start(envs: &[(&str, &str)], args: &[&str]) -> String {
    let output = run_to_exit(envs, args).await;
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn bad_configuration_names_the_file_and_key() {
    let dir = scratch_dir("config");
    let file = dir.join("cometbox.toml");
    std::fs::write(
        &file,
        "[limits]\npoll_timeout = \"10s\"\npoll_timout = \"5s\"\n",
    )
    .unwrap();
    let err = refuses_to_start(&[], &["--config", file.to_str().unwrap()]).await;
    assert!(
        err.contains("poll_timout") && err.contains(file.to_str().unwrap()),
        "{err}"
    );
    std::fs::write(&file, "[limits]\npoll_timeout = \"90s\"\n").unwrap();
    let err = refuses_to_start(&[], &["--config", file.to_str().unwrap()]).await;
    assert!(
        err.contains("limits.poll_timeout") && err.contains("max_poll_timeout"),
        "{err}"
    );
    let err = refuses_to_start(
        &[],
        &["--config", dir.join("missing.toml").to_str().unwrap()],
    )
    .await;
    assert!(err.contains("missing.toml"), "{err}");
    let err = refuses_to_start(&[("COMETBOX_LIMITS__MAX_CLIENTS", "lots")], &[]).await;
    assert!(err.contains("max_clients"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_non_loopback_ingest_address_needs_a_key() {
    let err = refuses_to_start(&[("COMETBOX_INGEST__LISTEN", "0.0.0.0:0")], &[]).await;
    assert!(
        err.contains("ingest.listen") && err.contains("ingest.key"),
        "{err}"
    );
    let ok = command(
        &[
            ("COMETBOX_INGEST__LISTEN", "0.0.0.0:0"),
            ("COMETBOX_INGEST__KEY", "k"),
        ],
        &["--check-config"],
    )
    .output()
    .await
    .unwrap();
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration OK"));
}

/// Both listeners on the IPv6 loopback: a post and a poll go through, and
/// the ready file names the addresses as the config would.
#[tokio::test]
async fn it_listens_and_serves_on_the_ipv6_loopback() {
    // Not skipped where IPv6 is missing: the test fails, saying why.
    if let Err(e) = std::net::TcpListener::bind("[::1]:0") {
        panic!(
            "this machine has no IPv6 loopback (cannot bind [::1]: {e}); this test needs ::1 on lo"
        );
    }
    let server = start(
        "ipv6",
        &[
            ("COMETBOX_PUBLIC__LISTEN", "[::1]:0"),
            ("COMETBOX_INGEST__LISTEN", "[::1]:0"),
        ],
    )
    .await;
    for addr in [&server.public, &server.ingest] {
        assert!(addr.starts_with("[::1]:"), "{addr}");
    }
    let http = reqwest::Client::new();
    post(
        &http,
        &server.ingest,
        r#"<message to="six">"over v6"</message>"#,
    )
    .await;
    let url = format!(
        "http://{}/poll?token={}&timeout=0",
        server.public,
        token("six", &[])
    );
    let reply = get_json(&http, url).await;
    assert_eq!(reply["messages"][0]["data"], json!("over v6"), "{reply}");
    server.stop().await;
}

/// The loopback rule of `ingest.listen` holds for IPv6 too: `[::]` (every
/// address) needs a key, and so does an IPv4-mapped address, which the
/// rule does not try to see through.
#[tokio::test]
async fn a_non_loopback_ipv6_ingest_address_needs_a_key() {
    for addr in ["[::]:0", "[2001:db8::1]:0", "[::ffff:127.0.0.1]:0"] {
        let err = refuses_to_start(&[("COMETBOX_INGEST__LISTEN", addr)], &[]).await;
        assert!(
            err.contains("ingest.listen") && err.contains("ingest.key") && err.contains("loopback"),
            "{addr}: {err}"
        );
    }
}

#[tokio::test]
async fn a_busy_port_is_reported_with_its_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let output = command(
        &[
            ("COMETBOX_PUBLIC__LISTEN", &addr),
            ("COMETBOX_INGEST__LISTEN", "127.0.0.1:0"),
        ],
        &[],
    )
    .output()
    .await
    .unwrap();
    assert!(!output.status.success());
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("public.listen") && err.contains(&addr),
        "{err}"
    );
}

/// `ingest.listen = "unix:…"` where a file already is. A socket nobody
/// listens on (left by a server that was SIGKILLed) is replaced; one a
/// live server listens on is left alone and the start refused, naming it;
/// so is a file that is not a socket.
#[tokio::test]
async fn a_stale_ingest_socket_is_replaced_and_a_live_one_refused() {
    let dir = scratch_dir("socket");
    let path = dir.join("ingest.sock");
    let listen = format!("unix:{}", path.display());
    // Bound and closed: std leaves the file behind, as a SIGKILL does.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let server = start("stale-socket", &[("COMETBOX_INGEST__LISTEN", &listen)]).await;
    assert_eq!(server.ingest, listen);
    let ok = r#"<ok accepted="1"/>"#;
    let posted = unix_exchange(&path, post_request(r#"<message to="u">1</message>"#)).await;
    assert!(
        posted.starts_with("HTTP/1.1 200") && posted.ends_with(ok),
        "{posted}"
    );

    let second = run_to_exit(
        &[
            ("COMETBOX_PUBLIC__LISTEN", "127.0.0.1:0"),
            ("COMETBOX_INGEST__LISTEN", &listen),
        ],
        &[],
    )
    .await;
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("ingest.listen")
            && err.contains("another server listens on")
            && err.contains(path.to_str().unwrap()),
        "{err}"
    );
    // The first server still has its socket.
    let posted = unix_exchange(&path, post_request(r#"<message to="u">2</message>"#)).await;
    assert!(
        posted.starts_with("HTTP/1.1 200") && posted.ends_with(ok),
        "{posted}"
    );
    server.stop().await;
    assert!(!path.exists(), "the socket file is removed on exit");

    std::fs::write(&path, "not a socket").unwrap();
    let third = run_to_exit(
        &[
            ("COMETBOX_PUBLIC__LISTEN", "127.0.0.1:0"),
            ("COMETBOX_INGEST__LISTEN", &listen),
        ],
        &[],
    )
    .await;
    let err = String::from_utf8_lossy(&third.stderr);
    assert!(
        !third.status.success() && err.contains("is not a socket"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `public.listen = "unix:…"` follows the same rule as ingest: a stale
/// socket file is replaced and the server serves polls on it; a second
/// server on the live socket refuses to start naming `public.listen` and
/// the path, and the first keeps serving.
#[tokio::test]
async fn a_stale_public_socket_is_replaced_and_a_live_one_refused() {
    let dir = scratch_dir("public-socket");
    let path = dir.join("public.sock");
    let listen = format!("unix:{}", path.display());
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let server = start(
        "stale-public-socket",
        &[("COMETBOX_PUBLIC__LISTEN", &listen)],
    )
    .await;
    assert_eq!(server.public, listen);
    let http = reqwest::Client::new();
    let poll = format!(
        "GET /poll?token={}&timeout=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        token("pu", &[])
    );
    post(
        &http,
        &server.ingest,
        r#"<message to="pu">"first"</message>"#,
    )
    .await;
    let reply = unix_exchange(&path, poll.clone()).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""first""#),
        "{reply}"
    );

    let second = run_to_exit(
        &[
            ("COMETBOX_PUBLIC__LISTEN", &listen),
            ("COMETBOX_INGEST__LISTEN", "127.0.0.1:0"),
        ],
        &[],
    )
    .await;
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{err}");
    assert!(
        err.contains("public.listen")
            && err.contains("another server listens on")
            && err.contains(path.to_str().unwrap()),
        "{err}"
    );
    post(
        &http,
        &server.ingest,
        r#"<message to="pu">"second"</message>"#,
    )
    .await;
    let reply = unix_exchange(&path, poll).await;
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains(r#""second""#),
        "the first server still serves its socket: {reply}"
    );
    server.stop().await;
    assert!(!path.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every family the Grafana dashboard (`deploy/grafana/cometbox.json`)
/// queries is one the binary serves, with hooks and a bridge configured
/// (their families appear only then): a renamed metric breaks this test,
/// not a panel nobody looks at.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_families_the_server_serves() {
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/cometbox.json"),
    )
    .unwrap();
    let mut queried: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("cometbox_"))
        .collect();
    queried.sort_unstable();
    queried.dedup();
    for family in ["cometbox_hook_decisions_total", "cometbox_bridge_state"] {
        assert!(
            queried.contains(&family),
            "the dashboard has panels for hooks and bridges"
        );
    }
    // Nothing listens on the hook's or the broker's port: the families are
    // there all the same.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port().to_string();
    drop(unused);
    let hook = format!("http://127.0.0.1:{port}/hook");
    let broker = format!("nats://127.0.0.1:{port}");
    let server = start(
        "grafana",
        &[
            ("COMETBOX_HOOKS__URL", hook.as_str()),
            ("COMETBOX_HOOKS__SECRET", "s"),
            ("COMETBOX_BRIDGE__0__URL", broker.as_str()),
            ("COMETBOX_BRIDGE__0__SOURCE", "orders"),
            ("COMETBOX_BRIDGE__0__CHANNEL", "orders"),
        ],
    )
    .await;
    let text = reqwest::get(format!("http://{}/metrics", server.ingest))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served = |family: &str| {
        text.lines().any(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
    };
    let missing: Vec<_> = queried.iter().filter(|f| !served(f)).collect();
    assert!(
        missing.is_empty(),
        "queried but not served: {missing:?}\n{text}"
    );
    server.stop().await;
}
