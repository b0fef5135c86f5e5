//! The `disk` store in-process: what was acknowledged comes back after a
//! restart with the same ids, cursors honoured, memberships intact; a
//! second server cannot open the same path. (Killing the real binary at
//! random moments is the durability suite's job.)

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{cursor, datas, token, wait_until, TestServer};

async fn disk_server(path: &Path) -> TestServer {
    let path = path.to_owned();
    TestServer::with(move |s| {
        s.store.kind = cometbox::store::StoreKind::Disk;
        s.store.path = path;
        s.limits.poll_timeout = Duration::from_millis(500);
    })
    .await
}

/// Waits until the previous server let go of the directory.
async fn restart(server: TestServer, path: &Path) -> TestServer {
    server.stop().await;
    let mut settings = cometbox::config::Settings::default();
    settings.store.kind = cometbox::store::StoreKind::Disk;
    settings.store.path = path.to_owned();
    wait_until(
        "the store's lock is released",
        Duration::from_secs(5),
        || {
            let settings = settings.clone();
            async move { cometbox::open_store(&settings).is_ok() }
        },
    )
    .await;
    disk_server(path).await
}

fn ids(reply: &Value) -> Vec<String> {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn acknowledged_messages_come_back_with_their_ids_and_cursors_hold() {
    let dir = tempdir("restart");
    let server = disk_server(&dir).await;
    server
        .post_ok(
            r#"<batch><subscribe client="bob" channel="room"/><message to="alice">1</message><message to="alice">2</message></batch>"#,
            3,
        )
        .await;
    let (_, first, _) = server
        .poll_raw(&format!(
            "token={}&channels=room&timeout=0",
            token("carol", &["room"])
        ))
        .await;
    let carol_cursor = cursor(&first);
    let alice_first = server.poll("alice", "timeout=0").await;
    assert_eq!(datas(&alice_first), vec![json!(1), json!(2)]);
    let alice_cursor = cursor(&alice_first);
    server
        .post_ok(
            r#"<batch><message to="alice">3</message><message channel="room" event="chat">"hi"</message></batch>"#,
            2,
        )
        .await;
    let before = server
        .poll("alice", &format!("since={alice_cursor}&timeout=0"))
        .await;
    let bob_before = server.poll("bob", "timeout=0").await;

    let server = restart(server, &dir).await;
    let after = server
        .poll("alice", &format!("since={alice_cursor}&timeout=0"))
        .await;
    assert!(after.get("reset").is_none(), "{after}");
    assert_eq!(datas(&after), vec![json!(3)]);
    assert_eq!(ids(&after), ids(&before), "the same ids after the restart");
    let bob_after = server.poll("bob", "timeout=0").await;
    assert_eq!(ids(&bob_after), ids(&bob_before));
    let carol = server
        .poll("carol", &format!("since={carol_cursor}&timeout=0"))
        .await;
    assert_eq!(
        datas(&carol),
        vec![json!("hi")],
        "a channels= membership too"
    );
    let (_, presence) = server.presence("bob").await;
    assert_eq!(presence["channels"], json!(["room"]));

    // New messages continue the numbering, and survive another restart.
    server
        .post_ok(r#"<message channel="room">"again"</message>"#, 1)
        .await;
    let server = restart(server, &dir).await;
    let carol = server
        .poll("carol", &format!("since={}&timeout=0", cursor(&carol)))
        .await;
    assert_eq!(datas(&carol), vec![json!("again")]);
    assert!(carol.get("reset").is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_second_server_on_the_same_path_is_refused_naming_it() {
    let dir = tempdir("locked");
    let server = disk_server(&dir).await;
    let mut settings = cometbox::config::Settings::default();
    settings.store.kind = cometbox::store::StoreKind::Disk;
    settings.store.path = dir.clone();
    let err = cometbox::open_store(&settings).err().expect("refused");
    let text = err.to_string();
    assert!(
        text.contains(dir.to_str().unwrap()) && text.contains("in use"),
        "{text}"
    );
    server.stop().await;
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cometbox-it-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
