//! Several hundred concurrent polls, and a channel fan-out to all of them.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{datas, token, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_waiting_polls_all_receive_one_channel_message() {
    const N: usize = 500;
    let server = TestServer::with(|s| s.limits.poll_timeout = Duration::from_secs(20)).await;
    let subscribe: String = (0..N)
        .map(|i| format!(r#"<subscribe client="u{i}" channel="all"/>"#))
        .collect();
    server
        .post_ok(&format!("<batch>{subscribe}</batch>"), N)
        .await;
    let polls: Vec<_> = (0..N)
        .map(|i| server.spawn_poll(format!("/poll?token={}", token(&format!("u{i}"), &[]))))
        .collect();
    server.until_total_open_polls(N as u64).await;
    server
        .post_ok(
            r#"<message channel="all" event="hello">{"to": "everyone"}</message>"#,
            1,
        )
        .await;
    for poll in polls {
        let reply = tokio::time::timeout(Duration::from_secs(10), poll)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(datas(&reply), vec![json!({"to": "everyone"})]);
    }
    let stats = server.stats().await;
    assert_eq!(stats["messages_out"], N);
    assert_eq!(stats["open_polls"], 0);
}
