//! Ids and cursors: ids strictly increase within a mailbox (parsed, not
//! merely compared), a cursor resumes with exactly what follows it, from
//! any id, `since=now` skips what was there, and a reply stops at
//! `max_reply_bytes` with the cursor where it stopped.

use crate::harness::{self, token};
use crate::nodes::{ids, numbers, poll_ok};

use super::fixture::Fixture;
use super::looks::{cursor, post, read_since};

/// Ids strictly increase (one epoch, growing sequence numbers), across a
/// checkpoint too; from each id a read gets exactly the messages after it,
/// without `reset`; the reply's cursor is its last id, and with nothing new
/// an empty reply keeps the cursor.
pub async fn ids_increase_and_every_cursor_resumes_exactly(fx: Fixture) {
    let n = fx.node(&[]).await;
    let t = token("ada", &[]);
    post(&n, "ada", 0..4).await;
    let body = poll_ok(&n, &t, "timeout=0").await;
    assert_eq!(numbers(&body), [0, 1, 2, 3], "{body}");
    assert_eq!(cursor(&body), ids(&body)[3], "the cursor is the last id");
    let n = fx.checkpoint(n).await;
    post(&n, "ada", 4..8).await;
    let body = poll_ok(&n, &t, "timeout=0").await;
    assert_eq!(numbers(&body), (0..8).collect::<Vec<_>>(), "{body}");
    let all = ids(&body);
    harness::assert_ids_increase("ada", all.iter().map(String::as_str));
    for (k, id) in all.iter().enumerate() {
        let body = read_since(&n, &t, id).await;
        assert_ne!(body["reset"], true, "from id {k}: {body}");
        assert_eq!(
            ids(&body),
            all[k + 1..],
            "from id {k}: exactly what follows"
        );
        assert_eq!(cursor(&body), all[7], "from id {k}");
    }
}

/// `since=now` answers nothing of what the mailbox held, with a cursor
/// after it; from that cursor the next message comes alone.
pub async fn since_now_carries_only_what_follows(fx: Fixture) {
    let n = fx.node(&[]).await;
    let t = token("now", &[]);
    post(&n, "now", 0..3).await;
    let body = poll_ok(&n, &t, "since=now&timeout=0").await;
    assert_eq!(numbers(&body), Vec::<i64>::new(), "{body}");
    assert_ne!(body["reset"], true, "{body}");
    let now = cursor(&body);
    let n = fx.checkpoint(n).await;
    post(&n, "now", 3..4).await;
    let body = read_since(&n, &t, &now).await;
    assert_eq!(numbers(&body), [3], "{body}");
    assert_ne!(body["reset"], true, "{body}");
}

/// The reply budget in these checks.
const BUDGET: usize = 2048;

/// A reply carries at most `max_reply_bytes` of messages, but always one:
/// a message bigger than the budget comes alone; a page of several stays
/// within it (counted as the message objects' JSON and the commas between
/// them, which the server's own measure bounds from above); each page's
/// cursor is its last id, and the next page starts right after it, so
/// every message comes once, in order.
pub async fn replies_stop_at_the_byte_budget(fx: Fixture) {
    let n = fx
        .node(&[("COMETBOX_LIMITS__MAX_REPLY_BYTES", &BUDGET.to_string())])
        .await;
    let t = token("eve", &[]);
    let pads = [300, 1200, 3000, 600, 600, 1900, 40, 40, 40];
    for (i, pad) in pads.iter().enumerate() {
        let pad = "x".repeat(*pad);
        n.post_ok(
            &format!(r#"<message to="eve">{{"i":{i},"pad":"{pad}"}}</message>"#),
            1,
        )
        .await;
    }
    let n = fx.checkpoint(n).await;
    let (mut got, mut pages) = (Vec::new(), 0);
    let mut body = poll_ok(&n, &t, "timeout=0").await;
    while !numbers(&body).is_empty() {
        let messages = body["messages"].as_array().unwrap();
        let bytes: usize = messages.iter().map(|m| m.to_string().len() + 1).sum();
        assert!(
            messages.len() == 1 || bytes <= BUDGET,
            "{} messages, {bytes} bytes, over the budget of {BUDGET}",
            messages.len()
        );
        assert_eq!(cursor(&body), ids(&body).last().unwrap().as_str());
        assert_ne!(body["reset"], true, "{body}");
        got.extend(numbers(&body));
        pages += 1;
        assert!(pages <= pads.len(), "more pages than messages");
        body = read_since(&n, &t, &cursor(&body)).await;
    }
    assert_eq!(
        got,
        (0..pads.len() as i64).collect::<Vec<_>>(),
        "each once, in order"
    );
    // 300+1200 fit; 3000 alone; 600+600; 1900; the three small ones.
    assert!(pages >= 5, "the budget made pages: {pages}");
    assert!(pages < pads.len(), "small messages share a page: {pages}");
}
