//! A data directory in the format this version writes, checked in under
//! `tests/fixtures/disk-v1/` (a snapshot and the journal segment after it),
//! must be recovered whole by every later version: a `.deb` upgrade starts
//! the new binary on the old `/var/lib/cometbox`. A change of format that
//! cannot read it fails here (docs/storage.md, "Changing the format").
//!
//! `expected.json` beside the files holds what the writing server delivered
//! to each browser, ids included: after recovery the same ids, data,
//! channels and events, and cursors that still resume without `reset`.
//!
//! The files were made once by `generate`, which is ignored and writes only
//! where `FIXTURE_OUT` says; it is there to make the fixture of a *new*
//! format (`disk-v2`), never to remake this one so that a test passes:
//!
//! ```sh
//! FIXTURE_OUT=/tmp/disk-v1 cargo test --test durability fixture::generate -- --ignored
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{frames, segments, start, token, wait_until, Msg, Scratch, Spec, KIND_UNIT};

/// The checked-in fixture.
fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/disk-v1")
}

/// The browsers whose mailboxes the fixture holds.
const CLIENTS: [&str; 4] = ["ann", "bob", "cy", "dee"];

/// The server that wrote the fixture and the one that reads it: nothing
/// may expire or go idle, however old the files are.
fn spec(store: &Path, run_dir: &Path) -> Spec {
    Spec::disk(store, run_dir)
        .with("COMETBOX_LIMITS__MESSAGE_TTL", "36500days")
        .with("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "36500days")
        .with("COMETBOX_STORE__FSYNC", "always")
        // Small segments, so that a snapshot comes after a few KiB.
        .with("COMETBOX_STORE__SEGMENT_BYTES", "4096")
}

fn grant(client: &str) -> String {
    token(client, &["room:*"])
}

fn as_json(m: &Msg) -> Value {
    json!({ "id": m.id, "channel": m.channel, "event": m.event, "data": m.data })
}

#[tokio::test]
async fn a_store_written_in_format_v1_is_recovered_whole() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("expected.json")).expect("expected.json"),
    )
    .unwrap();
    let scratch = Scratch::new("fixture");
    let store = scratch.0.join("store");
    std::fs::create_dir_all(&store).unwrap();
    let mut copied = 0;
    for entry in std::fs::read_dir(fixture()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        if name != "expected.json" {
            std::fs::copy(&path, store.join(name)).unwrap();
            copied += 1;
        }
    }
    assert_eq!(copied, 2, "a snapshot and a segment");
    let server = start(&spec(&store, &scratch.0)).await;
    let log = server.log();
    assert!(
        log.contains("store recovered") && log.contains("snapshot-"),
        "recovered from the snapshot:\n{log}"
    );
    for word in ["torn", "damaged", "new epoch"] {
        assert!(!log.contains(word), "{word}:\n{log}");
    }
    for client in CLIENTS {
        let want: Vec<Msg> = expected[client]
            .as_array()
            .unwrap_or_else(|| panic!("{client} in expected.json"))
            .iter()
            .map(Msg::from_json)
            .collect();
        let whole = server.read_all(&grant(client), None).await;
        assert_eq!(whole.messages, want, "{client}: the whole mailbox");
        // A cursor handed out by the old version resumes, without reset.
        if let Some(first) = want.first() {
            let after = server.read_all(&grant(client), Some(&first.id)).await;
            assert!(!after.reset, "{client}: reset from {}", first.id);
            assert_eq!(after.messages, want[1..], "{client}: after {}", first.id);
        }
    }
    // Memberships: ann joined room:a by <subscribe>, bob by channels=; cy
    // left room:b.
    server
        .post_ok(
            r#"<message channel="room:a">"after the upgrade"</message>"#,
            1,
        )
        .await;
    server
        .post_ok(r#"<message channel="room:b">"not for cy"</message>"#, 1)
        .await;
    for (client, cursor) in [
        ("ann", "ann_cursor"),
        ("bob", "bob_cursor"),
        ("cy", "cy_cursor"),
    ] {
        let cursor = expected[cursor].as_str().unwrap();
        let read = server.read_all(&grant(client), Some(cursor)).await;
        let datas: Vec<Value> = read.messages.iter().map(|m| m.data.clone()).collect();
        let want = match client {
            "cy" => vec![],
            _ => vec![json!("after the upgrade")],
        };
        assert_eq!(datas, want, "{client} from its last cursor {cursor}");
    }
    server.stop().await;
}

/// Writes a fixture of the current format to `FIXTURE_OUT`. The snapshot
/// holds every kind of state (mailboxes, direct and channel messages, both
/// ways of joining, a leave); the segment after it holds every kind of
/// change again, and a mailbox dropped by `<disconnect>`.
#[tokio::test]
#[ignore = "makes a fixture; run by hand with FIXTURE_OUT"]
async fn generate() {
    let out = PathBuf::from(std::env::var("FIXTURE_OUT").expect("FIXTURE_OUT=<new directory>"));
    assert!(
        !out.exists(),
        "{} exists: never overwrite a fixture",
        out.display()
    );
    let scratch = Scratch::new("fixture-gen");
    let store = scratch.0.join("store");
    let server = start(&spec(&store, &scratch.0)).await;
    for client in ["ann", "cy"] {
        server.poll(&grant(client), "timeout=0").await.unwrap();
    }
    server
        .poll(&grant("bob"), "timeout=0&channels=room:a")
        .await
        .unwrap();
    server
        .post_ok(
            r#"<batch><subscribe client="ann" channel="room:a"/><subscribe client="cy" channel="room:b"/></batch>"#,
            2,
        )
        .await;
    let pad = "p".repeat(200);
    for n in 0..24 {
        let data = json!({ "n": n, "pad": pad });
        server
            .post_ok(&format!(r#"<message to="ann">{data}</message>"#), 1)
            .await;
    }
    server
        .post_ok(
            r#"<message channel="room:a" event="note">{"room":1}</message>"#,
            1,
        )
        .await;
    server
        .post_ok(r#"<message channel="room:b">{"room":"b"}</message>"#, 1)
        .await;
    wait_until("a snapshot", Duration::from_secs(30), || async {
        std::fs::read_dir(&store)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".snap"))
    })
    .await;
    for n in 24..27 {
        server
            .post_ok(&format!(r#"<message to="ann">{{"n":{n}}}</message>"#), 1)
            .await;
    }
    server
        .post_ok(
            r#"<batch><message channel="room:a">{"room":2}</message><unsubscribe client="cy" channel="room:b"/><message to="cy">"hi cy"</message><message to="dee">"gone"</message></batch>"#,
            4,
        )
        .await;
    server.post_ok(r#"<disconnect client="dee"/>"#, 1).await;
    let mut expected = serde_json::Map::new();
    for client in CLIENTS {
        let read = server.read_all(&grant(client), None).await;
        expected.insert(client.into(), read.messages.iter().map(as_json).collect());
        expected.insert(format!("{client}_cursor"), json!(read.cursor));
    }
    server.stop().await;
    assert_fixture_shape(&store);
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(&store).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".snap") {
            std::fs::copy(&path, out.join(&name)).unwrap();
        }
    }
    let text = serde_json::to_string_pretty(&Value::Object(expected)).unwrap();
    std::fs::write(out.join("expected.json"), text + "\n").unwrap();
    eprintln!("fixture written to {}", out.display());
}

/// One snapshot and one segment after it, holding unit records only: the
/// shape the recovery test expects.
fn assert_fixture_shape(store: &Path) {
    let segments = segments(store);
    assert_eq!(segments.len(), 1, "{segments:?}");
    let bytes = std::fs::read(&segments[0].1).unwrap();
    let (records, end) = frames(&bytes);
    assert_eq!(end, bytes.len());
    assert!(records.len() >= 5 && records.iter().all(|f| f.kind == KIND_UNIT && f.crc_ok));
}
