//! Damaged journals: a torn tail (the newest segment cut short by a few
//! bytes) and a corrupt record in an older part of the newest segment. The
//! server must start, say what it did, keep everything before the damage
//! with the same ids, and answer `reset` rather than skip silently.

use serde_json::{json, Value};

use crate::harness::{
    find, frames, newest_segment, segments, start, token, Frame, Msg, Read, Scratch, Server, Spec,
    KIND_UNIT,
};

/// Posts `n` single messages `{"tag": tag, "n": k}` to `client`, each
/// acknowledged; returns their data in order.
pub async fn post_each(server: &Server, client: &str, tag: &str, n: usize) -> Vec<Value> {
    let mut sent = Vec::new();
    for k in 0..n {
        let data = json!({ "tag": tag, "n": k });
        server
            .post_ok(&format!(r#"<message to="{client}">{data}</message>"#), 1)
            .await;
        sent.push(data);
    }
    sent
}

fn datas(messages: &[Msg]) -> Vec<Value> {
    messages.iter().map(|m| m.data.clone()).collect()
}

/// Whether the log mentions any of `words` (case-insensitive).
fn log_mentions(log: &str, words: &[&str]) -> bool {
    let log = log.to_lowercase();
    words.iter().any(|w| log.contains(w))
}

/// The records of a segment no damage touched: every byte belongs to a
/// whole unit record whose crc is the IEEE crc32 of its payload. Walked
/// with the harness's own reading of the format, so the damage below is
/// aimed at records as the test understands them, not as the server does.
fn intact_frames(what: &str, bytes: &[u8]) -> Vec<Frame> {
    let (frames, end) = frames(bytes);
    assert_eq!(
        end,
        bytes.len(),
        "{what}: {} whole records end at byte {end} of {}",
        frames.len(),
        bytes.len()
    );
    for f in &frames {
        assert!(f.crc_ok && f.kind == KIND_UNIT, "{what}: {f:?}");
    }
    frames
}

/// After a restart and more writes: every segment of `store` holds whole
/// records only, so nothing was appended after garbage.
fn every_segment_intact(what: &str, store: &std::path::Path) {
    for (_, path) in segments(store) {
        intact_frames(
            &format!("{what}: {}", path.display()),
            &std::fs::read(&path).unwrap(),
        );
    }
}

#[tokio::test]
async fn a_torn_tail_is_cut_with_a_warning_and_everything_before_it_is_intact() {
    let scratch = Scratch::new("torn");
    let store = scratch.0.join("store");
    let spec = Spec::disk(&store, &scratch.0);
    let server = start(&spec).await;
    let t1 = token("t1", &[]);
    let t2 = token("t2", &["room:t"]);
    let (_, joined) = server.poll(&t2, "timeout=0&channels=room:t").await.unwrap();
    let before = post_each(&server, "t1", "before", 20).await;
    server
        .post_ok(r#"<message channel="room:t">"to the room"</message>"#, 1)
        .await;
    let seen = server.read_all(&t1, None).await;
    assert_eq!(datas(&seen.messages), before);
    let last = json!({ "tag": "last" });
    server
        .post_ok(&format!(r#"<message to="t1">{last}</message>"#), 1)
        .await;
    server.kill9().await;

    let segment = newest_segment(&store);
    let mut bytes = std::fs::read(&segment).unwrap();
    let records = intact_frames("torn: before the cut", &bytes);
    // One record per acknowledged command: 20 + the room message + the
    // last, and the membership.
    assert!(records.len() >= 23, "torn: only {} records", records.len());
    let cut = bytes.len() - 5;
    bytes.truncate(cut);
    std::fs::write(&segment, &bytes).unwrap();
    let (left, end) = frames(&bytes);
    let torn = records.last().unwrap();
    assert_eq!(
        (left.as_slice(), end),
        (&records[..records.len() - 1], torn.start),
        "torn: the cut leaves every record but the last whole"
    );

    let server = start(&spec).await;
    let log = server.log();
    assert!(
        log_mentions(&log, &["torn", "truncat"]),
        "no warning about the torn tail of {}:\n{log}",
        segment.display()
    );
    let whole = server.read_all(&t1, None).await;
    // Everything before the torn record, with the same ids.
    let (_, tail) = split_prefix("t1", &whole.messages, &seen.messages);
    let tail = datas(tail);
    assert!(tail.is_empty() || tail == [last.clone()], "{tail:?}");
    let after = server.read_all(&t1, seen.cursor.as_deref()).await;
    assert!(
        !after.reset,
        "the cursor from before the damage is honoured"
    );
    assert_eq!(datas(&after.messages), tail);
    // The membership from channels= survived, and so did the room message.
    let room = server.read_all(&t2, joined["cursor"].as_str()).await;
    assert!(!room.reset);
    assert_eq!(datas(&room.messages), [json!("to the room")]);

    // Writing goes on after the cut: what is acknowledged now survives the
    // next kill (a journal appended after garbage would lose it).
    let more = post_each(&server, "t1", "after", 5).await;
    server
        .post_ok(r#"<message channel="room:t">"again"</message>"#, 1)
        .await;
    server.kill9().await;
    let server = start(&spec).await;
    let again = server.read_all(&t1, None).await;
    let (kept, new) = split_prefix("t1", &again.messages, &whole.messages);
    assert_eq!(
        datas(new),
        more,
        "{kept} kept, then what came after the cut"
    );
    let room = server.read_all(&t2, room.cursor.as_deref()).await;
    assert!(!room.reset);
    assert_eq!(datas(&room.messages), [json!("again")]);
    server.kill9().await;
    every_segment_intact("torn: after the cut and more writes", &store);
    let kept = std::fs::read(&segment).unwrap();
    assert_eq!(
        kept[..torn.start],
        bytes[..torn.start],
        "torn: the records before the torn one are untouched"
    );
}

/// Asserts `messages` starts with `prefix` (same ids, same data); returns
/// the prefix length and the rest.
fn split_prefix<'a>(who: &str, messages: &'a [Msg], prefix: &[Msg]) -> (usize, &'a [Msg]) {
    assert!(
        messages.len() >= prefix.len() && messages[..prefix.len()] == *prefix,
        "{who}: expected to start with {prefix:?}, got {messages:?}"
    );
    (prefix.len(), &messages[prefix.len()..])
}

/// From `cursor`, a mailbox either answers `reset` or holds exactly
/// `expected` (nothing silently skipped).
fn reset_or_exact(who: &str, read: &Read, expected: &[Value]) {
    if !read.reset {
        assert_eq!(
            datas(&read.messages),
            expected,
            "{who}: no reset, so nothing may be missing"
        );
    }
}

#[tokio::test]
async fn a_corrupt_record_is_reported_and_its_mailbox_resets_instead_of_skipping() {
    let scratch = Scratch::new("corrupt");
    let store = scratch.0.join("store");
    let spec = Spec::disk(&store, &scratch.0);
    let server = start(&spec).await;
    let [te, tv, to, tl] = ["e1", "v1", "o1", "l1"].map(|c| token(c, &[]));
    // e1: all of its records come before the damage.
    let early = post_each(&server, "e1", "early", 5).await;
    let e_seen = server.read_all(&te, None).await;
    // v1: two messages seen, then the one whose record is damaged, then one.
    let v_first = post_each(&server, "v1", "victim", 2).await;
    let v_seen = server.read_all(&tv, None).await;
    assert_eq!(datas(&v_seen.messages), v_first);
    let marker = format!("corrupt-me-{}", std::process::id());
    let damaged = json!({ "marker": marker });
    server
        .post_ok(&format!(r#"<message to="v1">{damaged}</message>"#), 1)
        .await;
    let v_after = json!({ "tag": "victim-after" });
    server
        .post_ok(&format!(r#"<message to="v1">{v_after}</message>"#), 1)
        .await;
    // o1 and l1: cursors taken before their messages, which all come after
    // the damaged record.
    let o_cursor = server.read_all(&to, None).await.cursor;
    let l_cursor = server.read_all(&tl, None).await.cursor;
    let other = post_each(&server, "o1", "other", 3).await;
    let late = post_each(&server, "l1", "late", 30).await;
    server.kill9().await;

    let segment = newest_segment(&store);
    let mut bytes = std::fs::read(&segment).unwrap();
    let walked = intact_frames("corrupt: before the damage", &bytes);
    let at = find(&bytes, marker.as_bytes()).unwrap_or_else(|| {
        panic!(
            "the payload {marker:?} is not in {} as plain bytes: cannot aim at its record",
            segment.display()
        )
    });
    assert!(
        at + 1000 < bytes.len(),
        "the damaged record should be in an older part, not the tail"
    );
    let k = walked
        .iter()
        .position(|f| (f.payload..f.payload + f.len).contains(&(at + 6)))
        .unwrap_or_else(|| panic!("corrupt: the marker at byte {at} is in no record"));
    assert!(k > 0, "corrupt: the damaged record is not the first");
    for b in &mut bytes[at + 2..at + 6] {
        *b ^= 0x5a;
    }
    std::fs::write(&segment, &bytes).unwrap();
    // Exactly the marker's record is damaged; its header, and so every
    // record after it, still reads.
    let (after, end) = frames(&bytes);
    assert_eq!(end, bytes.len(), "corrupt: the walk crosses the damage");
    let bad: Vec<usize> = (0..after.len()).filter(|&i| !after[i].crc_ok).collect();
    assert_eq!(bad, [k], "corrupt: damaged records");
    assert_eq!(after.len(), walked.len());

    let server = start(&spec).await;
    let log = server.log();
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        log_mentions(&log, &["corrupt", "skip"]) && log_mentions(&log, &[name, "journal"]),
        "no log line saying what was skipped in {name}:\n{log}"
    );
    // Before the damage: every message still there. An unreadable record
    // could have held a message for any mailbox, so the server may reset
    // every older cursor; if it does not reset e1, its ids are unchanged.
    let e_whole = server.read_all(&te, None).await;
    assert_eq!(datas(&e_whole.messages), early, "e1 before the damage");
    let e_after = server.read_all(&te, e_seen.cursor.as_deref()).await;
    if !e_after.reset {
        assert_eq!(e_whole.messages, e_seen.messages, "e1: no reset, same ids");
        assert!(e_after.messages.is_empty(), "{e_after:?}");
    }
    // The damaged mailbox: reset, or (if it could recover it) everything.
    let v_read = server.read_all(&tv, v_seen.cursor.as_deref()).await;
    assert!(
        v_read.reset || datas(&v_read.messages) == [damaged.clone(), v_after.clone()],
        "v1 lost its damaged message without a reset: {v_read:?}"
    );
    let v_whole = server.read_all(&tv, None).await;
    eprintln!(
        "corrupt: v1 after the recovery holds {:?}",
        datas(&v_whole.messages)
    );
    let posted_v = [v_first.clone(), vec![damaged.clone(), v_after.clone()]].concat();
    for m in &v_whole.messages {
        assert!(
            posted_v.contains(&m.data),
            "v1 got what nobody posted: {m:?}"
        );
    }
    // After the damage: intact, or reset.
    let o_read = server.read_all(&to, o_cursor.as_deref()).await;
    reset_or_exact("o1", &o_read, &other);
    let l_read = server.read_all(&tl, l_cursor.as_deref()).await;
    reset_or_exact("l1", &l_read, &late);
    eprintln!(
        "corrupt: reset e1={} v1={} o1={} l1={}",
        e_after.reset, v_read.reset, o_read.reset, l_read.reset
    );

    // It keeps going: new messages arrive after the reset's cursor and
    // survive another kill.
    let fresh = post_each(&server, "v1", "fresh", 3).await;
    let v_next = server.read_all(&tv, v_read.cursor.as_deref()).await;
    assert!(!v_next.reset);
    assert_eq!(datas(&v_next.messages), fresh);
    server.kill9().await;
    let server = start(&spec).await;
    let v_whole_again = server.read_all(&tv, None).await;
    for f in &fresh {
        assert!(
            datas(&v_whole_again.messages).contains(f),
            "v1: {f} was acknowledged after the recovery and is gone after the next restart; v1 holds {v_whole_again:?}"
        );
    }
    let v_again = server.read_all(&tv, v_read.cursor.as_deref()).await;
    assert!(
        !v_again.reset,
        "a cursor handed out after the damage was dealt with is reset again at the next start: {v_again:?}"
    );
    assert_eq!(
        v_again.messages, v_next.messages,
        "same ids after a restart"
    );
    let e_again = server.read_all(&te, None).await;
    assert_eq!(
        e_again.messages, e_whole.messages,
        "e1: same ids as after the damage"
    );
    server.kill9().await;
}
