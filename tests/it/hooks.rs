//! Backend hooks against a real receiver: PHP's built-in server running
//! tests/it/hooks/receiver.php, which answers with the PHP class
//! (`CometBox\Hooks`: signature check, allow/deny) and logs what it got.
//! Needs `php` (tests/run-all.sh installs php-cli); fails loudly without it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::bayeux_client::{deliveries, BayeuxClient};
use crate::helpers::{now, scratch_dir, token, wait_until, TestServer};
use crate::ports::free_port;

const HOOK_SECRET: &str = "hook-secret-for-tests";

/// `php -S` serving the receiver script, in a process group of its own and
/// killed with that whole group when dropped: with `PHP_CLI_SERVER_WORKERS`
/// its workers are processes of their own, which outlived a kill of the
/// parent's pid alone (a CI run left 112 of them holding ports).
struct Receiver {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Whether one event id may get more than one `200`: only where the
    /// server is killed (a kill can land between the backend's `200` and
    /// the outbox file's record of it, so that event is sent again, under
    /// the same id: at least once). Everywhere else, once.
    repeats_allowed: std::sync::atomic::AtomicBool,
}

impl Receiver {
    fn start() -> Self {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = scratch_dir("hooks-receiver");
        let script = repo.join("tests/it/hooks/receiver.php");
        let env = [
            ("HOOK_SECRET", HOOK_SECRET.to_owned()),
            ("HOOK_DIR", dir.display().to_string()),
            (
                "COMETBOX_PHP_CLIENT",
                repo.join("php-client").display().to_string(),
            ),
        ];
        Self::serve(free_port(), &[script.as_os_str()], &env, dir)
    }

    /// `php -S 127.0.0.1:<port> <args>` with `env`, once it accepts.
    fn serve(port: u16, args: &[&std::ffi::OsStr], env: &[(&str, String)], dir: PathBuf) -> Self {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new("php")
            .process_group(0)
            .args(["-S", &format!("127.0.0.1:{port}")])
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            // Several requests at once: a slow answer must not hold up others.
            .env("PHP_CLI_SERVER_WORKERS", "8")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("php-server.log")).unwrap())
            .spawn()
            .expect("php is needed for the hooks tests: apt-get install php-cli (tests/run-all.sh does)");
        // Ours must be the one that answers, not whatever took the port
        // between `free_port` and php's bind: php says on stderr that it
        // listens (or that it could not, and exits).
        let started = format!("Development Server (http://127.0.0.1:{port}) started");
        let ours = || {
            std::fs::read_to_string(dir.join("php-server.log"))
                .is_ok_and(|log| log.contains(&started))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ours() || std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join("php-server.log")).unwrap_or_default();
                panic!("php -S on {port} exited ({status}): {log}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "php -S did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Receiver {
            child,
            port,
            dir,
            repeats_allowed: Default::default(),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook.php", self.port)
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(self.dir.join("mode"), mode).unwrap();
    }

    /// Every verified request: (status it got, event).
    fn log(&self) -> Vec<(u16, Value)> {
        std::fs::read_to_string(self.dir.join("events.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let line: Value = serde_json::from_str(l).unwrap();
                (
                    line["status"].as_u64().unwrap() as u16,
                    line["event"].clone(),
                )
            })
            .collect()
    }

    /// Lets an event id get several `200`s (see `repeats_allowed`).
    fn allow_repeats(&self) {
        self.repeats_allowed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// `(type, channel)` of the events about `client` that got a 200, in
    /// order. An id answered `200` twice fails the test (a notification
    /// sent again after the backend took it), unless repeats are allowed,
    /// when they are folded.
    fn delivered(&self, client: &str) -> Vec<(String, Option<String>)> {
        let mut seen = std::collections::HashSet::new();
        let repeats_allowed = self
            .repeats_allowed
            .load(std::sync::atomic::Ordering::Relaxed);
        self.log()
            .into_iter()
            .filter(|(status, e)| *status == 200 && e["client"] == client)
            .filter(|(_, e)| {
                let first = seen.insert(e["id"].as_str().unwrap().to_owned());
                assert!(
                    first || repeats_allowed,
                    "{client}'s event {} was answered 200 twice: sent again after the backend took it",
                    e["id"]
                );
                first
            })
            .map(|(_, e)| {
                (
                    e["type"].as_str().unwrap().to_owned(),
                    e["channel"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    fn rejected(&self) -> usize {
        std::fs::read_to_string(self.dir.join("rejected.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        // The group's id is the leader's pid (process_group(0)).
        // SAFETY: kill(2) with a negative pid signals that process group;
        // it touches no memory of ours.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ev(kind: &str, channel: Option<&str>) -> (String, Option<String>) {
    (kind.to_owned(), channel.map(str::to_owned))
}

async fn hooked_server(
    receiver: &Receiver,
    tweak: impl FnOnce(&mut cometbox::config::Settings),
) -> TestServer {
    let url = receiver.url();
    TestServer::with(move |s| {
        s.hooks.url = url;
        s.hooks.secret = HOOK_SECRET.into();
        s.hooks.timeout = Duration::from_secs(1);
        s.hooks.offline_after = Duration::from_millis(800);
        s.hooks.retry_max = Duration::from_millis(200);
        tweak(s);
    })
    .await
}

/// A poll that answers at once; the status and body.
async fn poll_now(server: &TestServer, client: &str, channels: &str) -> (StatusCode, Value) {
    let grants = ["room", "forbidden", "news"];
    let query = format!(
        "token={}&timeout=0&channels={channels}",
        token(client, &grants)
    );
    let (status, body, _) = server.poll_raw(&query).await;
    (status, body)
}

/// Waits until the receiver holds exactly `expected` for `client`.
async fn until_delivered(receiver: &Receiver, client: &str, expected: &[(String, Option<String>)]) {
    let what = format!("{client}'s hooks are {expected:?}");
    wait_until(&what, Duration::from_secs(15), || async {
        receiver.delivered(client) == expected
    })
    .await;
}

#[tokio::test]
async fn connect_and_subscribe_are_asked_and_denials_apply_nothing() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.offline_after = Duration::from_secs(30)
    })
    .await;
    let asks = |client: &str| -> Vec<(String, Option<String>)> {
        let mut asks: Vec<_> = receiver
            .delivered(client)
            .into_iter()
            .filter(|(kind, _)| kind == "connect" || kind == "subscribe")
            .collect();
        asks.sort(); // asked concurrently: in no set order
        asks
    };

    let (status, _) = poll_now(&server, "alice", "room").await;
    assert_eq!(status, StatusCode::OK);
    until_delivered(
        &receiver,
        "alice",
        &[
            ev("connect", None),
            ev("subscribe", Some("room")),
            ev("online", None),
            ev("subscribed", Some("room")),
        ],
    )
    .await;

    // Re-polls repeating a held subscription ask nothing.
    for _ in 0..3 {
        assert_eq!(poll_now(&server, "alice", "room").await.0, StatusCode::OK);
    }
    assert_eq!(asks("alice").len(), 2);
    // A denied channel: 403 denied with the reason; nothing applied, not
    // even the allowed channel asked for alongside.
    let (status, body) = poll_now(&server, "alice", "news,forbidden").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], "denied");
    assert_eq!(body["message"], "forbidden room");
    assert_eq!(
        server.presence("alice").await.1["channels"],
        serde_json::json!(["room"])
    );
    assert_eq!(
        asks("alice"),
        vec![
            ev("connect", None),
            ev("subscribe", Some("forbidden")),
            ev("subscribe", Some("news")),
            ev("subscribe", Some("room")),
        ]
    );

    // A denied connect: no mailbox is created.
    let (status, body) = poll_now(&server, "banned-bob", "room").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("denied"))
    );
    assert_eq!(body["message"], "banned user");
    assert_eq!(server.presence("banned-bob").await.0, StatusCode::NOT_FOUND);
    assert_eq!(receiver.delivered("banned-bob"), vec![ev("connect", None)]);

    // A backend <subscribe> is not asked about, only announced.
    server
        .post_ok(r#"<subscribe client="alice" channel="news"/>"#, 1)
        .await;
    wait_until(
        "alice's subscribed news",
        Duration::from_secs(15),
        || async { receiver.delivered("alice").last() == Some(&ev("subscribed", Some("news"))) },
    )
    .await;
    let notified: Vec<_> = receiver
        .delivered("alice")
        .into_iter()
        .filter(|(kind, _)| kind != "connect" && kind != "subscribe")
        .collect();
    assert_eq!(
        notified,
        vec![
            ev("online", None),
            ev("subscribed", Some("room")),
            ev("subscribed", Some("news")),
        ]
    );
    assert_eq!(
        asks("alice").len(),
        4,
        "the backend's subscribe asked nothing"
    );
    assert_eq!(
        receiver.rejected(),
        0,
        "every request's signature checked out"
    );
    let stats = server.stats().await;
    assert!(stats["hooks"]["denied"].as_u64().unwrap() >= 2, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn a_failing_or_slow_backend_follows_on_error() {
    let receiver = Receiver::start();
    let long = |s: &mut cometbox::config::Settings| s.hooks.offline_after = Duration::from_secs(60);
    let deny = hooked_server(&receiver, long).await;
    let allow = hooked_server(&receiver, |s| {
        long(s);
        s.hooks.on_error = cometbox::hooks::OnError::Allow;
    })
    .await;

    // Online before the backend fails: its re-polls ask nothing, so a
    // failing or slow backend never holds them up.
    assert_eq!(poll_now(&deny, "early", "room").await.0, StatusCode::OK);

    for (mode, client) in [("fail", "f"), ("garbage", "g"), ("slow", "s")] {
        receiver.set_mode(mode);
        let started = std::time::Instant::now();
        let (status, body) = poll_now(&deny, &format!("{client}-denied"), "").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::FORBIDDEN, Some("denied")),
            "{mode}: {body}"
        );
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .starts_with("the backend could not be asked"),
            "{body}"
        );
        let (status, _) = poll_now(&allow, &format!("{client}-allowed"), "room").await;
        assert_eq!(status, StatusCode::OK, "{mode}, on_error = allow");
        assert_eq!(
            allow.presence(&format!("{client}-allowed")).await.1["channels"],
            serde_json::json!(["room"])
        );
        // Bounded by hooks.timeout (1 s) per ask, not by the backend.
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{mode}: {:?}",
            started.elapsed()
        );

        // Had the re-poll asked, `on_error = "deny"` would have refused
        // it; and no request failed for it (the state, not a stopwatch).
        let errors = deny.stats().await["hooks"]["errors"].clone();
        assert_eq!(poll_now(&deny, "early", "room").await.0, StatusCode::OK);
        assert_eq!(
            deny.stats().await["hooks"]["errors"],
            errors,
            "{mode}: an online client's re-poll asked the backend"
        );
    }
    receiver.set_mode("ok");
    let stats = deny.stats().await;
    assert!(stats["hooks"]["errors"].as_u64().unwrap() >= 3, "{stats}");
    let metrics = deny.metrics().await;
    assert!(
        metrics.contains("cometbox_hook_requests_failed_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("cometbox_hook_notifications_pending"),
        "{metrics}"
    );
    deny.stop().await;
    allow.stop().await;
}

#[tokio::test]
async fn the_receiver_refuses_bad_and_stale_signatures() {
    let receiver = Receiver::start();
    let body = r#"{"id":"evt-x","type":"online","client":"c","ts":1,"node":"n"}"#;
    let sign = |t: u64, secret: &str| {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.{body}").as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("t={t},v1={hex}")
    };
    let http = reqwest::Client::new();
    let send = |header: String| {
        let request = http
            .post(receiver.url())
            .body(body)
            .header("cometbox-signature", header);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(send(sign(now(), HOOK_SECRET)).await, StatusCode::OK);
    assert_eq!(send(sign(now(), "wrong")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(sign(now() - 3600, HOOK_SECRET)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(send("garbage".into()).await, StatusCode::UNAUTHORIZED);
    assert_eq!(receiver.rejected(), 3);
}

#[tokio::test]
async fn presence_survives_re_polls_tabs_and_ends_once_after_a_cut() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        // Well above the gaps between re-polls, even on a loaded machine.
        s.hooks.offline_after = Duration::from_secs(2);
    })
    .await;
    let t = token("carol", &[]);

    // Two tabs at once: one connect, one online.
    let tab1 = server.spawn_poll(format!("/poll?token={t}&timeout=1"));
    let tab2 = server.spawn_poll(format!("/poll?token={t}&timeout=1"));
    tab1.await.unwrap();
    tab2.await.unwrap();
    // Re-polls with gaps well under offline_after: no flapping.
    for _ in 0..8 {
        server.poll("carol", "timeout=0.1").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        receiver.delivered("carol"),
        vec![ev("connect", None), ev("online", None)]
    );

    // The network cuts a held poll: offline once offline_after passed.
    let held = server.spawn_poll(format!("/poll?token={t}&timeout=30"));
    server.until_open_polls("carol", 1).await;
    held.abort();
    until_delivered(
        &receiver,
        "carol",
        &[ev("connect", None), ev("online", None), ev("offline", None)],
    )
    .await;
    // Back again: a new connect and online, then a clean stop ends it.
    server.poll("carol", "timeout=0").await;
    until_delivered(
        &receiver,
        "carol",
        &[
            ev("connect", None),
            ev("online", None),
            ev("offline", None),
            ev("connect", None),
            ev("online", None),
        ],
    )
    .await;
    server.stop().await;
    assert_eq!(
        receiver.delivered("carol").last(),
        Some(&ev("offline", None)),
        "shutdown delivers the offline before it returns"
    );
}

#[tokio::test]
async fn disconnect_and_idle_eviction_end_presence_and_memberships() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.offline_after = Duration::from_secs(30);
        s.limits.client_idle_timeout = Duration::from_millis(800);
    })
    .await;
    assert_eq!(poll_now(&server, "dora", "room").await.0, StatusCode::OK);
    assert_eq!(poll_now(&server, "eve", "room").await.0, StatusCode::OK);
    server.post_ok(r#"<disconnect client="dora"/>"#, 1).await;
    let lifetime = [
        ev("connect", None),
        ev("subscribe", Some("room")),
        ev("online", None),
        ev("subscribed", Some("room")),
        ev("unsubscribed", Some("room")),
        ev("offline", None),
    ];
    until_delivered(&receiver, "dora", &lifetime).await;
    // eve just stops polling: evicted (before offline_after), announced.
    until_delivered(&receiver, "eve", &lifetime).await;
    assert_eq!(server.presence("eve").await.0, StatusCode::NOT_FOUND);
    server.stop().await;
    assert_eq!(receiver.delivered("dora"), lifetime);
    assert_eq!(receiver.delivered("eve"), lifetime);
}

#[tokio::test]
async fn a_failing_receiver_gets_everything_in_order_with_repeats_under_one_id() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.on_error = cometbox::hooks::OnError::Allow;
        s.hooks.events = ["online", "offline", "subscribed", "unsubscribed"]
            .map(|e| serde_json::from_value(Value::from(e)).unwrap())
            .to_vec();
    })
    .await;
    receiver.set_mode("fail");
    let clients = ["p1", "p2", "p3"];
    for client in clients {
        assert_eq!(
            poll_now(&server, client, "room,news").await.0,
            StatusCode::OK
        );
        server
            .post_ok(
                &format!(r#"<unsubscribe client="{client}" channel="news"/>"#),
                1,
            )
            .await;
        server
            .post_ok(&format!(r#"<disconnect client="{client}"/>"#), 1)
            .await;
    }
    wait_until(
        "the receiver refused some attempts",
        Duration::from_secs(10),
        || async { receiver.log().iter().filter(|(s, _)| *s == 500).count() >= 6 },
    )
    .await;
    receiver.set_mode("ok");
    let expected = [
        ev("online", None),
        ev("subscribed", Some("news")),
        ev("subscribed", Some("room")),
        ev("unsubscribed", Some("news")),
        ev("unsubscribed", Some("room")),
        ev("offline", None),
    ];
    for client in clients {
        until_delivered(&receiver, client, &expected).await;
    }
    // Repeats carry the id of the attempt they repeat: per client, the ids
    // attempted (500 or 200) in order, folded, are the delivered ones.
    let log = receiver.log();
    for client in clients {
        let mut attempted: Vec<&str> = log
            .iter()
            .filter(|(_, e)| e["client"] == client)
            .map(|(_, e)| e["id"].as_str().unwrap())
            .collect();
        attempted.dedup();
        assert_eq!(attempted.len(), expected.len(), "{client}: {attempted:?}");
    }
    let stats = server.stats().await;
    assert_eq!(stats["hooks"]["pending"], 0, "{stats}");
    assert!(stats["hooks"]["retries"].as_u64().unwrap() >= 6, "{stats}");
    server.stop().await;
}

#[tokio::test]
async fn pending_notifications_survive_a_restart_of_the_disk_store() {
    let receiver = Receiver::start();
    let path = scratch_dir("hooks-disk");
    let disk = |path: PathBuf| {
        move |s: &mut cometbox::config::Settings| {
            s.store.kind = cometbox::store::StoreKind::Disk;
            s.store.path = path;
            s.hooks.on_error = cometbox::hooks::OnError::Allow;
        }
    };
    let server = hooked_server(&receiver, disk(path.clone())).await;
    receiver.set_mode("fail");
    assert_eq!(poll_now(&server, "rita", "room").await.0, StatusCode::OK);
    wait_until(
        "the receiver refused rita's online",
        Duration::from_secs(10),
        || async {
            receiver
                .log()
                .iter()
                .any(|(s, e)| *s == 500 && e["type"] == "online")
        },
    )
    .await;
    // Stopping gives up on the backend after a few seconds; the outbox file
    // keeps what is pending (online, subscribed, and the shutdown's offline).
    server.stop().await;
    let attempted_online = receiver
        .log()
        .iter()
        .find(|(_, e)| e["type"] == "online")
        .map(|(_, e)| e["id"].clone())
        .unwrap();
    receiver.set_mode("ok");
    wait_until("the store is released", Duration::from_secs(5), || {
        let lock = std::fs::File::open(path.join("LOCK")).unwrap();
        let free = lock.try_lock().is_ok();
        async move { free }
    })
    .await;
    let server = hooked_server(&receiver, disk(path.clone())).await;
    until_delivered(
        &receiver,
        "rita",
        &[
            ev("online", None),
            ev("subscribed", Some("room")),
            ev("offline", None),
        ],
    )
    .await;
    let delivered_online = receiver
        .log()
        .iter()
        .find(|(s, e)| *s == 200 && e["type"] == "online")
        .map(|(_, e)| e["id"].clone())
        .unwrap();
    assert_eq!(
        delivered_online, attempted_online,
        "the same event, the same id"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&path);
}

/// `publish` is asked by a Bayeux publish: its call path against the
/// real receiver, which denies a bad word and may replace the payload.
#[tokio::test]
async fn publish_is_asked_and_may_be_denied_or_rewritten() {
    use cometbox::hooks::{Denied, Hooks, HooksConfig, OnError};
    let receiver = Receiver::start();
    let config = |on_error| HooksConfig {
        url: receiver.url(),
        secret: HOOK_SECRET.into(),
        timeout: Duration::from_secs(1),
        on_error,
        ..HooksConfig::default()
    };
    let hooks = Hooks::new(&config(OnError::Deny), None).unwrap();
    let data = serde_json::json!({"text": "hello"});
    assert_eq!(
        hooks.publish("pia", "/chat/x", data.clone()).await,
        Ok(None)
    );
    assert_eq!(
        hooks
            .publish("pia", "/chat/x", serde_json::json!({"text": "a badword"}))
            .await,
        Err(Denied("watch your language".into()))
    );
    assert_eq!(
        hooks
            .publish("pia", "/chat/x", Value::from("replace-me"))
            .await,
        Ok(Some(Value::from("replaced")))
    );
    // A Bayeux handshake's connect carries its ext.
    let mut connect = hooks.event(cometbox::hooks::EventType::Connect, "pia", None);
    connect.ext = Some(serde_json::json!({"auth": "t0k"}));
    assert!(hooks.ask_event(connect).await.is_ok());
    let sent = receiver.log();
    assert_eq!(sent.len(), 4);
    assert_eq!(sent[3].1["ext"], serde_json::json!({"auth": "t0k"}));
    assert_eq!(sent[0].1["type"], "publish");
    assert_eq!(sent[0].1["channel"], "/chat/x");
    assert_eq!(sent[0].1["data"], data);

    receiver.set_mode("fail");
    assert!(hooks.publish("pia", "/chat/x", data.clone()).await.is_err());
    let lenient = Hooks::new(&config(OnError::Allow), None).unwrap();
    assert_eq!(
        lenient.publish("pia", "/chat/x", data.clone()).await,
        Ok(None)
    );
    // Not in `events`: allowed without asking.
    let mut quiet = config(OnError::Deny);
    quiet
        .events
        .retain(|e| *e != cometbox::hooks::EventType::Publish);
    let before = receiver.log().len();
    assert_eq!(
        Hooks::new(&quiet, None)
            .unwrap()
            .publish("pia", "/c", data)
            .await,
        Ok(None)
    );
    assert_eq!(receiver.log().len(), before);
}

/// A backend down for long: the queue stays bounded, what did not fit is
/// counted and dropped as whole pairs (no `offline` without its `online`).
#[tokio::test]
async fn the_queue_is_bounded_and_overflow_drops_whole_pairs() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.on_error = cometbox::hooks::OnError::Allow;
        s.hooks.max_pending = 2;
        s.hooks.events = ["online", "offline"]
            .map(|e| serde_json::from_value(Value::from(e)).unwrap())
            .to_vec();
    })
    .await;
    receiver.set_mode("fail");
    let clients = ["q1", "q2", "q3", "q4"];
    for client in clients {
        assert_eq!(poll_now(&server, client, "").await.0, StatusCode::OK);
    }
    let stats = server.stats().await;
    assert_eq!(stats["hooks"]["dropped"], 2, "{stats}");
    assert_eq!(stats["hooks"]["pending"], 2, "{stats}");
    for client in clients {
        server
            .post_ok(&format!(r#"<disconnect client="{client}"/>"#), 1)
            .await;
    }
    receiver.set_mode("ok");
    wait_until("the queue drains", Duration::from_secs(15), || async {
        server.stats().await["hooks"]["pending"] == 0
    })
    .await;
    let announced: Vec<_> = clients
        .iter()
        .filter(|c| !receiver.delivered(c).is_empty())
        .collect();
    assert_eq!(announced.len(), 2, "the two that fitted");
    for client in clients {
        let got = receiver.delivered(client);
        assert!(
            got.is_empty() || got == vec![ev("online", None), ev("offline", None)],
            "{client}: {got:?}"
        );
    }
    server.stop().await;
}

/// The real binary killed with SIGKILL (disk store): what was pending is
/// sent after the restart with its ids, and the client that was online
/// gets the `offline` the dead process owed it.
#[tokio::test]
async fn after_a_kill_9_pending_notifications_and_the_owed_offline_arrive() {
    let receiver = Receiver::start();
    // The kill may land between a 200 and its record in the outbox file.
    receiver.allow_repeats();
    let path = scratch_dir("hooks-kill9");
    let url = receiver.url();
    let env = [
        ("COMETBOX_STORE__KIND", "disk"),
        ("COMETBOX_STORE__PATH", path.to_str().unwrap()),
        ("COMETBOX_HOOKS__URL", url.as_str()),
        ("COMETBOX_HOOKS__SECRET", HOOK_SECRET),
        ("COMETBOX_HOOKS__ON_ERROR", "allow"),
        ("COMETBOX_HOOKS__RETRY_MAX", "200ms"),
        ("COMETBOX_HOOKS__OFFLINE_AFTER", "60s"),
    ];
    let http = reqwest::Client::new();
    let poll = |public: String, client: &str| {
        let url = format!(
            "http://{public}/poll?timeout=0&channels=room&token={}",
            token(client, &["room"])
        );
        let http = http.clone();
        async move { http.get(url).send().await.unwrap().status() }
    };
    let server = crate::binary::start("hooks-kill9-a", &env).await;
    assert_eq!(poll(server.public.clone(), "kim").await, StatusCode::OK);
    until_delivered(
        &receiver,
        "kim",
        &[
            ev("connect", None),
            ev("subscribe", Some("room")),
            ev("online", None),
            ev("subscribed", Some("room")),
        ],
    )
    .await;
    receiver.set_mode("fail");
    assert_eq!(poll(server.public.clone(), "lou").await, StatusCode::OK);
    wait_until(
        "lou's online was refused",
        Duration::from_secs(10),
        || async {
            receiver
                .log()
                .iter()
                .any(|(s, e)| *s == 500 && e["type"] == "online" && e["client"] == "lou")
        },
    )
    .await;
    server.kill9().await;

    receiver.set_mode("ok");
    let server = crate::binary::start("hooks-kill9-b", &env).await;
    for client in ["kim", "lou"] {
        wait_until(
            &format!("{client}'s owed offline"),
            Duration::from_secs(15),
            || async { receiver.delivered(client).last() == Some(&ev("offline", None)) },
        )
        .await;
    }
    assert_eq!(
        receiver.delivered("lou"),
        // (its connect and subscribe got 500s: allowed by on_error)
        vec![
            ev("online", None),
            ev("subscribed", Some("room")),
            ev("offline", None),
        ]
    );
    let online_ids: Vec<Value> = receiver
        .log()
        .iter()
        .filter(|(_, e)| e["type"] == "online" && e["client"] == "lou")
        .map(|(_, e)| e["id"].clone())
        .collect();
    assert!(
        online_ids.len() >= 2 && online_ids.iter().all(|id| *id == online_ids[0]),
        "{online_ids:?}"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&path);
}

/// `url = "unix:/path"`: requests go to `POST /` on the socket. The
/// receiver here is hyper's HTTP/1 server on a Unix listener, checking the
/// signature with this test's own HMAC.
#[tokio::test]
async fn a_unix_socket_url_reaches_the_backend() {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    let dir = scratch_dir("hooks-unix");
    let socket = dir.join("hooks.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, Value)>::new()));
    let recorder = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                    let recorder = recorder.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let header = request.headers()["cometbox-signature"]
                            .to_str()
                            .unwrap()
                            .to_owned();
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let t = header
                            .split(',')
                            .next()
                            .unwrap()
                            .strip_prefix("t=")
                            .unwrap();
                        use hmac::Mac;
                        let mut mac =
                            hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes())
                                .unwrap();
                        mac.update(format!("{t}.").as_bytes());
                        mac.update(&body);
                        let hex: String = mac
                            .finalize()
                            .into_bytes()
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        assert!(header.ends_with(&format!(",v1={hex}")), "{header}");
                        let event: Value = serde_json::from_slice(&body).unwrap();
                        recorder.lock().unwrap().push((path, event));
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from_static(br#"{"allow":false,"reason":"via unix"}"#),
                        )))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    let url = format!("unix:{}", socket.display());
    let server = TestServer::with(move |s| {
        s.hooks.url = url;
        s.hooks.secret = HOOK_SECRET.into();
    })
    .await;
    let (status, body) = poll_now(&server, "uma", "").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::FORBIDDEN, Some("via unix"))
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "/");
    assert_eq!(
        (seen[0].1["type"].as_str(), seen[0].1["client"].as_str()),
        (Some("connect"), Some("uma"))
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The chat demo's hook.php (client-js/examples/chat) behind the real
/// server: joins and leaves are announced from online/offline, and a
/// subscribe to chat:staff is refused unless the name says staff.
#[tokio::test]
async fn the_chat_demo_announces_presence_and_refuses_the_staff_room() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let port = free_port();
    let server = TestServer::with(move |s| {
        s.hooks.url = format!("http://127.0.0.1:{port}/hook.php");
        s.hooks.secret = "chat-hook-secret".into();
        // Well above the gaps between ann's polls, even on a loaded machine.
        s.hooks.offline_after = Duration::from_secs(2);
    })
    .await;
    let docroot = repo.join("client-js/examples/chat");
    let demo = Receiver::serve(
        port,
        &["-t".as_ref(), docroot.as_os_str()],
        &[
            ("CHAT_HOOK_SECRET", "chat-hook-secret".to_owned()),
            ("CHAT_INGEST_URL", server.ingest_url("")),
            ("CHAT_TOKEN_SECRET", crate::helpers::SECRET.to_owned()),
        ],
        scratch_dir("chat-demo"),
    );
    let api = |action: &str, body: Value| {
        let request = server
            .http
            .post(format!(
                "http://127.0.0.1:{}/api.php?action={action}",
                demo.port
            ))
            .json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let ann = api("login", serde_json::json!({"name": "ann"})).await;
    let staff = api("login", serde_json::json!({"name": "staff-sue"})).await;
    let browser = &server;
    let poll = |token: &Value, channels: &str| {
        let query = format!(
            "token={}&timeout=0&channels={channels}",
            token.as_str().unwrap()
        );
        async move { browser.poll_raw(&query).await }
    };
    assert_eq!(poll(&ann["token"], "chat").await.0, StatusCode::OK);
    let (status, body, _) = poll(&ann["token"], "chat,chat:staff").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("denied"))
    );
    assert_eq!(body["message"], "chat:staff is for staff only");
    assert_eq!(
        poll(&staff["token"], "chat,chat:staff").await.0,
        StatusCode::OK
    );

    // ann keeps polling; staff-sue stops and is announced as gone.
    let mut presence = Vec::new();
    let mut cursor = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while !presence.contains(&(Value::from("staff-sue"), Value::from("left"))) {
        assert!(
            std::time::Instant::now() < deadline,
            "staff-sue not announced leaving: {presence:?}"
        );
        let (status, reply, _) = poll(&ann["token"], &format!("chat&since={cursor}")).await;
        assert_eq!(status, StatusCode::OK, "{reply}");
        cursor = reply["cursor"].as_str().unwrap().to_owned();
        for m in reply["messages"].as_array().unwrap() {
            presence.push((m["data"]["name"].clone(), m["data"]["what"].clone()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let joined: Vec<_> = presence
        .iter()
        .filter(|(_, w)| w == "joined")
        .map(|(n, _)| n.clone())
        .collect();
    assert!(
        joined.contains(&Value::from("ann")) && joined.contains(&Value::from("staff-sue")),
        "{presence:?}"
    );
    assert!(
        !presence.contains(&(Value::from("ann"), Value::from("left"))),
        "ann kept polling: {presence:?}"
    );
    server.stop().await;
    drop(demo);
}

/// `/events` opens like a poll (`Hub::open_for`): `connect` and `subscribe`
/// are asked first, a denial is `403 denied` before the stream starts, and
/// an open stream keeps its client online until it closes.
#[tokio::test]
async fn an_event_stream_is_asked_and_counts_for_presence() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |_| {}).await;
    let open = |client: &str, channels: &str| {
        let url = server.public_url(&format!(
            "/events?token={}&channels={channels}",
            token(client, &["room", "forbidden"])
        ));
        server.http.get(url).send()
    };
    let denied = open("sse-sam", "room,forbidden").await.unwrap();
    assert_eq!(denied.status(), StatusCode::FORBIDDEN);
    let body: Value = denied.json().await.unwrap();
    assert_eq!(
        (body["error"].as_str(), body["message"].as_str()),
        (Some("denied"), Some("forbidden room"))
    );
    assert_eq!(server.presence("sse-sam").await.1["channels"], Value::Null);

    let stream = open("sse-sam", "room").await.unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    // Held open past offline_after: still online.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let notified = |client: &str| -> Vec<(String, Option<String>)> {
        receiver
            .delivered(client)
            .into_iter()
            .filter(|(kind, _)| kind != "connect" && kind != "subscribe")
            .collect()
    };
    assert_eq!(
        notified("sse-sam"),
        vec![ev("online", None), ev("subscribed", Some("room"))]
    );
    drop(stream);
    wait_until("sse-sam goes offline", Duration::from_secs(15), || async {
        notified("sse-sam").last() == Some(&ev("offline", None))
    })
    .await;
    server.stop().await;
}

/// Sends one frame on a `/ws` socket and reads the answer carrying `ref`.
async fn ws_ask(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    frame: Value,
) -> Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    socket.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an answer within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = next {
            let answer: Value = serde_json::from_str(text.as_str()).unwrap();
            if answer.get("ref").is_some() {
                return answer;
            }
        }
    }
}

/// A WebSocket (`/ws`) through the hooks: a subscribe frame to a channel
/// the `subscribe` hook denies is answered `denied` with its reason and
/// joins nothing; one it allows joins; a publish frame without a token
/// claim is the `publish` hook's, which may deny or rewrite it; the socket
/// counts for presence (online, then offline when it closes).
#[tokio::test]
async fn a_websocket_is_asked_as_a_poll_is_and_counts_for_presence() {
    use futures_util::StreamExt;
    use serde_json::json;
    use tokio_tungstenite::tungstenite::Message;
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |_| {}).await;
    let url = format!(
        "ws://{}/ws?token={}",
        server.public,
        token("ws-wes", &["room", "forbidden"])
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let denied = ws_ask(
        &mut socket,
        json!({"type": "subscribe", "channels": ["forbidden"], "ref": 1}),
    )
    .await;
    assert_eq!(
        (denied["code"].as_str(), denied["message"].as_str()),
        (Some("denied"), Some("forbidden room")),
        "{denied}"
    );
    let channels = server.presence("ws-wes").await.1["channels"].clone();
    assert!(!channels.to_string().contains("forbidden"), "{channels}");
    let joined = ws_ask(
        &mut socket,
        json!({"type": "subscribe", "channels": ["room"], "ref": 2}),
    )
    .await;
    assert_eq!(joined, json!({"type": "ok", "ref": 2}));
    assert_eq!(
        server.presence("ws-wes").await.1["channels"],
        json!(["room"])
    );
    let rude = ws_ask(
        &mut socket,
        json!({"type": "publish", "channel": "room", "data": "a badword", "ref": 3}),
    )
    .await;
    assert_eq!(rude["code"], "denied", "{rude}");
    let rewritten = ws_ask(
        &mut socket,
        json!({"type": "publish", "channel": "room", "data": "replace-me", "ref": 4}),
    )
    .await;
    assert_eq!(rewritten, json!({"type": "ok", "ref": 4}));
    let frame = loop {
        let next = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("the published message within 10 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = next {
            break serde_json::from_str::<Value>(text.as_str()).unwrap();
        }
    };
    assert_eq!(frame["messages"][0]["data"], "replaced", "{frame}");

    let notified = |client: &str| -> Vec<(String, Option<String>)> {
        receiver
            .delivered(client)
            .into_iter()
            .filter(|(kind, _)| kind == "online" || kind == "offline")
            .collect()
    };
    tokio::time::sleep(Duration::from_millis(1500)).await; // past offline_after
    assert_eq!(notified("ws-wes"), vec![ev("online", None)]);
    socket.close(None).await.unwrap();
    wait_until("ws-wes goes offline", Duration::from_secs(15), || async {
        notified("ws-wes").last() == Some(&ev("offline", None))
    })
    .await;
    server.stop().await;
}

/// Bayeux through the hooks: a handshake without a token is the `connect`
/// hook's to decide (with the handshake's `ext`), subscribes are asked, a
/// publish is asked and may be denied or rewritten, and a service channel's
/// publish reaches the hook only.
#[tokio::test]
async fn bayeux_handshakes_subscribes_and_publishes_are_asked() {
    use serde_json::json;
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| s.bayeux.enabled = true).await;
    let banned = BayeuxClient::handshake_reply(&server, json!({"user": "banned"})).await;
    assert_eq!(banned["successful"], false);
    assert_eq!(banned["error"], "403::banned user");
    assert_eq!(banned["advice"]["reconnect"], "none");

    let mut page = BayeuxClient::handshake(&server, json!({"user": "kim"})).await;
    let mut peer = BayeuxClient::handshake(&server, json!({"user": "lee"})).await;
    let connects: Vec<Value> = receiver
        .log()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "connect")
        .collect();
    assert_eq!(connects.len(), 3, "each tokenless handshake asked connect");
    assert_eq!(connects[1]["ext"], json!({"user": "kim"}));
    let kim = connects[1]["client"].as_str().unwrap().to_owned();
    assert!(kim.starts_with("bayeux-"), "a client of its own: {kim}");

    let forbidden = page.subscribe(json!("forbidden")).await;
    assert_eq!(forbidden["error"], "403::forbidden room");
    assert_eq!(page.subscribe(json!("/chat/**")).await["successful"], true);
    assert_eq!(
        peer.subscribe(json!("/chat/demo")).await["successful"],
        true
    );

    let denied = peer
        .publish("/chat/demo", json!({"text": "a badword"}))
        .await;
    assert_eq!(denied["error"], "403::watch your language");
    let rewritten = peer.publish("/chat/demo", json!("replace-me")).await;
    assert_eq!(rewritten["successful"], true, "{rewritten}");
    let service = peer.publish("/service/echo", json!({"ask": 1})).await;
    assert_eq!(service["successful"], true, "{service}");
    let (messages, _) = page.connect(0).await;
    assert_eq!(
        deliveries(&messages),
        vec![("/chat/demo".into(), json!("replaced"))],
        "the denied publish and the service one reach nobody"
    );
    let published: Vec<Value> = receiver
        .log()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["type"] == "publish")
        .collect();
    assert_eq!(published.len(), 3);
    assert_eq!(published[2]["channel"], "/service/echo");
    assert_eq!(published[2]["data"], json!({"ask": 1}));
    let subscribed = format!("{kim}'s subscribed notification");
    wait_until(&subscribed, Duration::from_secs(15), || async {
        receiver
            .delivered(&kim)
            .contains(&ev("subscribed", Some("/chat/**")))
    })
    .await;
}

/// A tokenless Bayeux session has no grant: with only the `connect` hook
/// asked, its subscriptions are refused (it used to read any channel, a
/// per-user one included), and so is a publish without the `publish` hook.
#[tokio::test]
async fn a_tokenless_bayeux_session_gets_nothing_the_hooks_do_not_allow() {
    use serde_json::json;
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.bayeux.enabled = true;
        s.hooks.events = vec![serde_json::from_value(Value::from("connect")).unwrap()];
    })
    .await;
    let mut page = BayeuxClient::handshake(&server, json!({"user": "kim"})).await;
    let refused = page.subscribe(json!("/user/42")).await;
    assert_eq!(refused["successful"], false, "{refused}");
    assert!(
        refused["error"].as_str().unwrap().starts_with("403::"),
        "{refused}"
    );
    let refused = page.subscribe(json!("/**")).await;
    assert_eq!(refused["successful"], false, "{refused}");
    server
        .post_ok(r#"<message channel="/user/42">"secret"</message>"#, 1)
        .await;
    let (messages, _) = page.connect(0).await;
    assert!(deliveries(&messages).is_empty(), "{messages:?}");
    let publish = page.publish("/chat/demo", json!("hi")).await;
    assert_eq!(publish["successful"], false, "{publish}");
    assert!(
        publish["error"].as_str().unwrap().starts_with("403::"),
        "{publish}"
    );
}

/// `events = [...]` from names.
fn only(events: &[&str]) -> Vec<cometbox::hooks::EventType> {
    events
        .iter()
        .map(|e| serde_json::from_value(Value::from(*e)).unwrap())
        .collect()
}

/// The value of the `/metrics` sample `name` (no labels).
async fn metric(server: &TestServer, name: &str) -> Option<f64> {
    let text = server.metrics().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// How many requests the receiver got for each event id about clients
/// starting with `prefix`.
fn hits_per_id(receiver: &Receiver, prefix: &str) -> std::collections::HashMap<String, usize> {
    let mut hits = std::collections::HashMap::new();
    for (_, e) in receiver.log() {
        if e["client"].as_str().unwrap().starts_with(prefix) {
            *hits
                .entry(e["id"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    hits
}

/// A backend that refuses some clients' events for good (`400`): those are
/// dropped after one attempt and counted, and they never hold up the other
/// clients' events, even when there are more of them than workers.
#[tokio::test]
async fn refused_events_are_dropped_once_and_hold_up_nobody() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.on_error = cometbox::hooks::OnError::Allow;
        s.hooks.events = only(&["online", "offline"]);
    })
    .await;
    receiver.set_mode("reject:bad-");
    // More refused clients than workers (concurrency, 8 by default).
    let bad: Vec<String> = (0..10).map(|i| format!("bad-{i}")).collect();
    for client in &bad {
        assert_eq!(poll_now(&server, client, "").await.0, StatusCode::OK);
    }
    let good: Vec<String> = (0..20).map(|i| format!("good-{i}")).collect();
    for client in &good {
        assert_eq!(poll_now(&server, client, "").await.0, StatusCode::OK);
    }
    // Each comes online and, offline_after later, goes offline.
    wait_until(
        "every good client's online and offline",
        Duration::from_secs(30),
        || async {
            good.iter()
                .all(|c| receiver.delivered(c) == [ev("online", None), ev("offline", None)])
        },
    )
    .await;
    wait_until(
        "the refused events counted",
        Duration::from_secs(30),
        || async { server.stats().await["hooks"]["rejected"] == 2 * bad.len() },
    )
    .await;
    // Not retried: one request per refused event.
    let hits = hits_per_id(&receiver, "bad-");
    assert_eq!(hits.len(), 2 * bad.len(), "{hits:?}");
    assert!(hits.values().all(|n| *n == 1), "{hits:?}");
    let stats = server.stats().await;
    assert_eq!(stats["hooks"]["pending"], 0, "{stats}");
    assert_eq!(stats["hooks"]["retries"], 0, "{stats}");
    assert_eq!(
        metric(&server, "cometbox_hook_notifications_rejected_total").await,
        Some(2.0 * bad.len() as f64)
    );
    server.stop().await;
}

/// A backend unavailable (`503`) for one client's events for a while: that
/// client's event is retried and delivered once the backend recovers,
/// exactly once, while other clients' events flow, even through a single
/// worker.
#[tokio::test]
async fn a_retried_event_is_delivered_once_and_others_flow_meanwhile() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.on_error = cometbox::hooks::OnError::Allow;
        s.hooks.events = only(&["online", "offline"]);
        s.hooks.offline_after = Duration::from_secs(60);
        s.hooks.concurrency = 1;
    })
    .await;
    receiver.set_mode("unavailable:slow-");
    assert_eq!(poll_now(&server, "slow-1", "").await.0, StatusCode::OK);
    wait_until("slow-1 refused twice", Duration::from_secs(15), || async {
        receiver.log().iter().filter(|(s, _)| *s == 503).count() >= 2
    })
    .await;
    let others: Vec<String> = (0..12).map(|i| format!("other-{i}")).collect();
    for client in &others {
        assert_eq!(poll_now(&server, client, "").await.0, StatusCode::OK);
    }
    wait_until(
        "the other clients' online while slow-1's is retried",
        Duration::from_secs(15),
        || async {
            others
                .iter()
                .all(|c| receiver.delivered(c) == [ev("online", None)])
        },
    )
    .await;
    assert!(receiver.delivered("slow-1").is_empty());
    receiver.set_mode("ok");
    until_delivered(&receiver, "slow-1", &[ev("online", None)]).await;
    let log = receiver.log();
    let slow: Vec<&(u16, Value)> = log
        .iter()
        .filter(|(_, e)| e["client"] == "slow-1")
        .collect();
    assert!(
        slow.iter().all(|(_, e)| e["id"] == slow[0].1["id"]),
        "one event, one id"
    );
    assert_eq!(
        slow.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "delivered once"
    );
    let stats = server.stats().await;
    assert_eq!(stats["hooks"]["rejected"], 0, "{stats}");
    assert!(stats["hooks"]["retries"].as_u64().unwrap() >= 2, "{stats}");
    server.stop().await;
}
/// The queue holds at most twice `max_pending` events, closing ones
/// included (an `offline` for every client at once cannot grow it past
/// that): what does not fit is dropped and counted.
#[tokio::test]
async fn closing_events_are_bounded_too() {
    let receiver = Receiver::start();
    let server = hooked_server(&receiver, |s| {
        s.hooks.on_error = cometbox::hooks::OnError::Allow;
        s.hooks.max_pending = 2;
        s.hooks.offline_after = Duration::from_secs(60);
        s.hooks.events = only(&["online", "offline"]);
    })
    .await;
    let clients: Vec<String> = (0..6).map(|i| format!("cap-{i}")).collect();
    for client in &clients {
        assert_eq!(poll_now(&server, client, "").await.0, StatusCode::OK);
        until_delivered(&receiver, client, &[ev("online", None)]).await;
    }
    receiver.set_mode("fail");
    for client in &clients {
        server
            .post_ok(&format!(r#"<disconnect client="{client}"/>"#), 1)
            .await;
    }
    let stats = server.stats().await;
    assert_eq!(stats["hooks"]["pending"], 4, "{stats}");
    assert_eq!(stats["hooks"]["dropped"], 2, "{stats}");
    assert_eq!(
        metric(&server, "cometbox_hook_notifications_dropped_total").await,
        Some(2.0)
    );
    receiver.set_mode("ok");
    wait_until("the queue drains", Duration::from_secs(15), || async {
        server.stats().await["hooks"]["pending"] == 0
    })
    .await;
    let ended = clients
        .iter()
        .filter(|c| receiver.delivered(c).last() == Some(&ev("offline", None)))
        .count();
    assert_eq!(ended, 4);
    server.stop().await;
}
