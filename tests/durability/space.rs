//! The store stops taking writes: a full disk (a small tmpfs filled by a
//! filler file) and a read-only store. Ingest answers `503` with
//! `storage-unavailable` and applies nothing, polls of existing clients are
//! served, and once the condition is gone writes succeed again by
//! themselves. A restart afterwards holds exactly what was acknowledged.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::damage::post_each;
use crate::harness::{sh, start, token, Mount, Scratch, Server, Spec};

/// How long the store has to notice by itself that it can write again.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

fn assert_unavailable(status: u16, body: &str, what: &str) {
    assert!(
        status == 503 && body.contains(r#"code="storage-unavailable""#),
        "{what}: expected 503 storage-unavailable, got {status} {body}"
    );
}

/// What a failing store must refuse: a message, and a batch that would
/// also subscribe `x1` to `sx` (checked later to be absent). Each carries
/// 16 KiB, more than the slack a page already held by the journal may
/// have left on a full filesystem.
async fn refused_while_broken(server: &Server, client: &str, what: &str) -> Vec<Value> {
    let pad = "z".repeat(16 << 10);
    let one = json!({ "tag": "refused", "what": what, "n": 0, "pad": pad });
    let two = json!({ "tag": "refused", "what": what, "n": 1, "pad": pad });
    let (status, body) = server
        .post(&format!(r#"<message to="{client}">{one}</message>"#))
        .await
        .unwrap();
    assert_unavailable(status, &body, what);
    let batch = format!(
        r#"<batch><subscribe client="x1" channel="sx"/><message to="{client}">{two}</message></batch>"#
    );
    let (status, body) = server.post(&batch).await.unwrap();
    assert_unavailable(status, &body, what);
    vec![one, two]
}

/// Posts a probe every 100 ms until one is accepted; every refusal must be
/// `storage-unavailable`. Returns the accepted probe and how long it took.
async fn until_writable(server: &Server, client: &str) -> (Value, Duration) {
    let started = Instant::now();
    for n in 0.. {
        let probe = json!({ "tag": "probe", "n": n });
        let (status, body) = server
            .post(&format!(r#"<message to="{client}">{probe}</message>"#))
            .await
            .unwrap();
        if status == 200 {
            return (probe, started.elapsed());
        }
        assert_unavailable(status, &body, "while recovering");
        assert!(
            started.elapsed() < RECOVERY_LIMIT,
            "writes did not succeed again within {RECOVERY_LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // retry pacing, bounded above
    }
    unreachable!()
}

fn datas(server_read: &crate::harness::Read) -> Vec<Value> {
    server_read
        .messages
        .iter()
        .map(|m| m.data.clone())
        .collect()
}

/// Grows `dir/filler` until the filesystem of `dir` is full, down to
/// single bytes: then no file there can take another page.
fn fill(dir: &Path) -> u64 {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("filler"))
        .unwrap();
    let chunk = vec![0xa5u8; 64 << 10];
    let mut written = 0u64;
    for _ in 0..4096 {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => return written,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    match file.sync_all() {
        Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => written,
        _ => panic!("{} did not fill up after {written} bytes", dir.display()),
    }
}

/// After recovery and a SIGKILL + restart: the client's mailbox is exactly
/// `expected` with the ids it had, its old cursor is honoured, and the
/// refused batch's subscription was never applied.
async fn check_after_restart(
    spec: &Spec,
    client: &str,
    cursor: Option<&str>,
    before: &crate::harness::Read,
    expected: &[Value],
    refused: &[Value],
) {
    let server = start(spec).await;
    let t = token(client, &[]);
    let whole = server.read_all(&t, None).await;
    assert_eq!(datas(&whole), expected, "after restart");
    assert_eq!(whole.messages, before.messages, "same ids after restart");
    for r in refused {
        assert!(
            !datas(&whole).contains(r),
            "a refused message came back: {r}"
        );
    }
    let after = server.read_all(&t, cursor).await;
    assert!(!after.reset, "old cursor honoured: {after:?}");
    server
        .post_ok(r#"<message channel="sx">"to sx"</message>"#, 1)
        .await;
    let x1 = server.read_all(&token("x1", &[]), None).await;
    assert!(
        x1.messages.is_empty(),
        "the refused <subscribe> was applied: {x1:?}"
    );
    server.kill9().await;
}

#[tokio::test]
async fn a_full_disk_answers_503_serves_polls_and_recovers_by_itself() {
    let scratch = Scratch::new("full");
    let mount = Mount::tmpfs(&scratch.0.join("mnt"), "4m");
    let store = mount.dir.join("store");
    let spec = Spec::disk(&store, &scratch.0);
    let server = start(&spec).await;
    let (t1, t2) = (token("f1", &[]), token("f2", &[]));
    let mut acked = post_each(&server, "f1", "before", 10).await;
    post_each(&server, "f2", "other", 2).await;
    let f1_seen = server.read_all(&t1, None).await;
    let f2_seen = server.read_all(&t2, None).await;

    let filled = fill(&mount.dir);
    // Pages the journal already holds may take a little more: post large
    // messages until the store says it is full.
    let big = "y".repeat(16 << 10);
    let mut first_refusal = None;
    for n in 0..200 {
        let data = json!({ "tag": "big", "n": n, "pad": big });
        let (status, body) = server
            .post(&format!(r#"<message to="f1">{data}</message>"#))
            .await
            .unwrap();
        if status == 200 {
            acked.push(data);
            continue;
        }
        assert_unavailable(status, &body, "disk full");
        first_refusal = Some(n);
        break;
    }
    let n = first_refusal.expect("a full disk was noticed within 200 large messages");
    // A small message may still fit in a page the journal holds (the
    // refused one may have left a partial write there): kept if
    // acknowledged, and the journal must stay readable either way (checked
    // after the restart below).
    let small = json!({ "tag": "small-after-refusal" });
    let (status, body) = server
        .post(&format!(r#"<message to="f1">{small}</message>"#))
        .await
        .unwrap();
    let mut refused = Vec::new();
    if status == 200 {
        acked.push(small);
    } else {
        assert_unavailable(status, &body, "disk full, small message");
        refused.push(small);
    }
    eprintln!("full: a small message after the refusal: {status}");
    // Whatever the failed write gave back goes to the filler too.
    let topped = fill(&mount.dir);
    eprintln!("full: filler {filled} + {topped} bytes; refused after {n} more large messages");
    refused.extend(refused_while_broken(&server, "f1", "disk full").await);

    // Polls of existing clients are served, with nothing refused in them.
    let f1_now = server.read_all(&t1, f1_seen.cursor.as_deref()).await;
    assert!(!f1_now.reset);
    assert_eq!(datas(&f1_now), acked[10..]);
    let f2_now = server.read_all(&t2, f2_seen.cursor.as_deref()).await;
    assert!(!f2_now.reset && f2_now.messages.is_empty(), "{f2_now:?}");

    std::fs::remove_file(mount.dir.join("filler")).unwrap();
    let (probe, took) = until_writable(&server, "f1").await;
    eprintln!("full: writable again {took:?} after the filler was deleted");
    acked.push(probe);
    acked.extend(post_each(&server, "f1", "after", 3).await);
    let whole = server.read_all(&t1, None).await;
    assert_eq!(datas(&whole), acked);
    server.kill9().await;
    check_after_restart(
        &spec,
        "f1",
        f1_seen.cursor.as_deref(),
        &whole,
        &acked,
        &refused,
    )
    .await;
    drop(mount);
}

/// Makes `store` unwritable: `mount -o remount,ro` when the kernel allows
/// it (it refuses while any file there is open for writing, which a
/// journal normally is), else the immutable attribute on the store's
/// directory and files, which ext4 enforces on open files too (EPERM).
fn make_read_only(mount: &Mount, store: &Path) -> &'static str {
    let dir = mount.dir.to_str().unwrap();
    if sh("mount", &["-o", "remount,ro", dir]).0 {
        return "remount,ro";
    }
    set_immutable(store, true);
    "chattr +i"
}

fn make_writable(mode: &str, mount: &Mount, store: &Path) {
    if mode == "remount,ro" {
        let (ok, out) = sh("mount", &["-o", "remount,rw", mount.dir.to_str().unwrap()]);
        assert!(ok, "remount,rw: {out}");
    } else {
        set_immutable(store, false);
    }
}

fn set_immutable(store: &Path, on: bool) {
    let flag = if on { "+i" } else { "-i" };
    let mut paths = vec![store.to_owned()];
    paths.extend(
        std::fs::read_dir(store)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file()),
    );
    for path in paths {
        let (ok, out) = sh("chattr", &[flag, path.to_str().unwrap()]);
        assert!(ok, "chattr {flag} {}: {out}", path.display());
    }
}

/// Clears the immutable flags even when the test fails, so the image can be
/// unmounted and removed.
struct Writable<'a>(&'a Path);

impl Drop for Writable<'_> {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = sh("chattr", &["-R", "-i", self.0.to_str().unwrap()]);
        }
    }
}

#[tokio::test]
async fn a_read_only_store_answers_503_serves_polls_and_recovers_by_itself() {
    let scratch = Scratch::new("readonly");
    let mount = Mount::ext4(&scratch.0.join("mnt"), &scratch.0.join("ext4.img"), 32);
    let store = mount.dir.join("store");
    let _writable = Writable(&store);
    let spec = Spec::disk(&store, &scratch.0);
    let server = start(&spec).await;
    let (t1, t2) = (token("r1", &[]), token("r2", &[]));
    let mut acked = post_each(&server, "r1", "before", 5).await;
    post_each(&server, "r2", "other", 2).await;
    let r1_seen = server.read_all(&t1, None).await;
    let r2_seen = server.read_all(&t2, None).await;

    let mode = make_read_only(&mount, &store);
    eprintln!("readonly: store made unwritable by {mode}");
    // Nothing can be written now, so nothing may be acknowledged.
    let refused = refused_while_broken(&server, "r1", "read-only").await;
    let r1_now = server.read_all(&t1, r1_seen.cursor.as_deref()).await;
    assert!(!r1_now.reset && r1_now.messages.is_empty(), "{r1_now:?}");
    let r2_now = server.read_all(&t2, None).await;
    assert_eq!(r2_now.messages, r2_seen.messages);

    make_writable(mode, &mount, &store);
    let (probe, took) = until_writable(&server, "r1").await;
    eprintln!("readonly: writable again {took:?} after {mode} was undone");
    acked.push(probe);
    acked.extend(post_each(&server, "r1", "after", 3).await);
    let whole = server.read_all(&t1, None).await;
    assert_eq!(datas(&whole), acked);
    server.kill9().await;
    check_after_restart(
        &spec,
        "r1",
        r1_seen.cursor.as_deref(),
        &whole,
        &acked,
        &refused,
    )
    .await;
}
