//! Pusher's webhooks (`pusher.webhook_url`) against a receiver in the test:
//! what pages do on `/app/<key>` arrives as `channel_occupied`,
//! `member_added`, `client_event`, `member_removed` and `channel_vacated`,
//! in Pusher's body, signed as Pusher signs (checked here with the tests'
//! own HMAC; tests/pusher/ checks them with the official SDKs' helpers),
//! at least once (a refused attempt is retried), and kept across a restart
//! of the disk store.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{scratch_dir, wait_until, TestServer};

const KEY: &str = "hook-key";
const SECRET: &str = "hook-secret";

use crate::pusher_ws::pusher_page::Page;
#[path = "../shared/webhook_receiver.rs"]
mod webhook_receiver;
use webhook_receiver::Receiver;

fn webhooked(
    url: String,
    tweak: impl FnOnce(&mut cometbox::config::Settings),
) -> impl FnOnce(&mut cometbox::config::Settings) {
    move |s| {
        s.pusher.enabled = true;
        s.pusher.key = KEY.into();
        s.pusher.secret = SECRET.into();
        s.pusher.client_events = true;
        s.pusher.webhook_url = url;
        tweak(s);
    }
}

fn hex_hmac(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn pages_make_pushers_webhooks_signed_as_pusher_signs_them() {
    let receiver = Receiver::start().await;
    let server = TestServer::with(webhooked(receiver.url(), |_| {})).await;
    let mut ann = Page::connect(server.public, KEY, SECRET).await;
    let mut bob = Page::connect(server.public, KEY, SECRET).await;
    let room = "presence-room";
    let ok = ann
        .subscribe(room, Some(json!({"user_id": "ann", "user_info": {"n": 1}})))
        .await;
    assert_eq!(
        ok["event"], "pusher_internal:subscription_succeeded",
        "{ok}"
    );
    let occupied = receiver.until("channel_occupied", 1).await;
    assert_eq!(
        occupied,
        [json!({"name": "channel_occupied", "channel": room})]
    );
    receiver.until("member_added", 1).await;

    bob.subscribe(room, Some(json!({"user_id": 2}))).await;
    let added = receiver.until("member_added", 2).await;
    assert_eq!(
        added,
        [
            json!({"name": "member_added", "channel": room, "user_id": "ann"}),
            json!({"name": "member_added", "channel": room, "user_id": "2"}),
        ]
    );
    bob.send(json!({"event": "client-typing", "channel": room, "data": {"on": true}}))
        .await;
    let typed = receiver.until("client_event", 1).await;
    assert_eq!(
        typed,
        [json!({
            "name": "client_event", "channel": room, "event": "client-typing",
            "data": "{\"on\":true}", "socket_id": bob.socket_id, "user_id": "2",
        })]
    );

    drop(bob); // the socket closes: bob's last socket in the room
    let removed = receiver.until("member_removed", 1).await;
    assert_eq!(removed[0]["user_id"], "2");
    ann.send(json!({"event": "pusher:unsubscribe", "data": {"channel": room}}))
        .await;
    receiver.until("channel_vacated", 1).await;
    receiver.until("member_removed", 2).await;

    // In order per channel, each change once, no second occupied for bob.
    let names: Vec<String> = (receiver.delivered().iter())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "channel_occupied",
            "member_added",
            "member_added",
            "client_event",
            "member_removed",
            "member_removed",
            "channel_vacated"
        ]
    );
    for got in receiver.got.lock().unwrap().iter() {
        assert_eq!(got.key, KEY);
        assert_eq!(got.signature, hex_hmac(&got.body), "{}", got.body);
        let body: Value = serde_json::from_str(&got.body).unwrap();
        assert!(body["time_ms"].as_u64().unwrap() > 1_700_000_000_000);
    }
    server.stop().await;
}

/// A public channel: occupied with its first socket, vacated with its
/// last, whichever way the sockets leave; refused attempts are retried.
#[tokio::test]
async fn occupancy_counts_sockets_and_a_refused_webhook_comes_again() {
    let receiver = Receiver::start().await;
    receiver.status.store(503, SeqCst);
    let server = TestServer::with(webhooked(receiver.url(), |_| {})).await;
    let mut pages = Vec::new();
    for _ in 0..3 {
        let mut page = Page::connect(server.public, KEY, SECRET).await;
        page.subscribe("news", None).await;
        pages.push(page);
    }
    wait_until("a refused attempt", Duration::from_secs(10), || {
        let refused = receiver.got.lock().unwrap().iter().any(|g| g.status == 503);
        async move { refused }
    })
    .await;
    receiver.status.store(200, SeqCst);
    receiver.until("channel_occupied", 1).await;
    pages.truncate(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        receiver.named("channel_vacated").is_empty(),
        "one socket is left"
    );
    pages.clear();
    receiver.until("channel_vacated", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.named("channel_occupied").len(), 1);
    assert_eq!(receiver.named("channel_vacated").len(), 1);
    server.stop().await;
}

/// With the disk store, webhooks the receiver has not taken yet are kept
/// in the store's directory and sent after a restart.
#[tokio::test]
async fn pending_webhooks_survive_a_restart_of_the_disk_store() {
    let receiver = Receiver::start().await;
    receiver.status.store(500, SeqCst);
    let path = scratch_dir("pusher-webhooks-disk");
    let disk = |path: std::path::PathBuf| {
        move |s: &mut cometbox::config::Settings| {
            s.store.kind = cometbox::store::StoreKind::Disk;
            s.store.path = path;
        }
    };
    let server = TestServer::with(webhooked(receiver.url(), disk(path.clone()))).await;
    let mut page = Page::connect(server.public, KEY, SECRET).await;
    page.subscribe("orders", None).await;
    drop(page);
    wait_until(
        "occupied and vacated pending",
        Duration::from_secs(10),
        || async { server.stats().await["pusher_webhooks"]["pending"] == 2 },
    )
    .await;
    assert!(receiver.named("channel_occupied").is_empty());
    server.stop().await;
    assert!(path.join("pusher-webhooks.log").exists());
    receiver.status.store(200, SeqCst);
    wait_until("the store is released", Duration::from_secs(5), || {
        let lock = std::fs::File::open(path.join("LOCK")).unwrap();
        let free = lock.try_lock().is_ok();
        async move { free }
    })
    .await;
    let server = TestServer::with(webhooked(receiver.url(), disk(path.clone()))).await;
    receiver.until("channel_vacated", 1).await;
    let names: Vec<String> = (receiver.delivered().iter())
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["channel_occupied", "channel_vacated"]);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&path);
}

/// `webhook_url` takes what `hooks.url` takes, and names the key when not.
#[tokio::test]
async fn a_bad_webhook_url_is_refused_naming_the_key() {
    let mut settings = cometbox::config::Settings::default();
    settings.pusher.enabled = true;
    settings.pusher.webhook_url = "https://example.test/hooks".into();
    let (key, message) = settings.pusher.validate(false).unwrap_err();
    assert_eq!(key, "pusher.webhook_url");
    assert!(message.contains("http://"), "{message}");
}
