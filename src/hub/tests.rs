//! The hub without HTTP: delivery, channels, tabs, disconnect, eviction.

use std::time::Duration;

use serde_json::Value;

use super::*;
use crate::protocol::ingest::{parse, ParseLimits};
use crate::protocol::Cursor;
use crate::store::{memory::MemoryStore, Retention};

fn hub() -> Hub {
    Hub::new(
        Arc::new(MemoryStore::new(Retention { max_messages: 100 })),
        HubLimits {
            poll_timeout: Duration::from_millis(200),
            max_poll_timeout: Duration::from_secs(1),
            client_idle_timeout: Duration::from_millis(100),
            message_ttl: Duration::from_secs(60),
            max_polls_per_client: 2,
            max_clients: 3,
            max_channels_per_client: 2,
        },
    )
}

fn apply(hub: &Hub, xml: &str) -> Result<usize, ApplyError> {
    hub.apply(
        parse(
            xml.as_bytes(),
            ParseLimits {
                max_payload_bytes: 1000,
                max_commands: 100,
            },
        )
        .unwrap(),
    )
}

fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

async fn poll(hub: &Hub, client: &str, since: Option<&str>) -> Value {
    let request = PollRequest {
        client: id(client),
        since: since.map(|s| Cursor::parse(s).unwrap()),
        subscribe: vec![],
        timeout: None,
    };
    let reply = hub.poll(request).await.unwrap();
    serde_json::from_str(&reply.body).unwrap()
}

fn datas(reply: &Value) -> Vec<Value> {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

#[tokio::test]
async fn queued_messages_wait_for_the_first_poll_and_resume_by_cursor() {
    let hub = hub();
    apply(
        &hub,
        r#"<batch><message to="a">1</message><message to="a">2</message></batch>"#,
    )
    .unwrap();
    let first = poll(&hub, "a", None).await;
    assert_eq!(datas(&first), vec![Value::from(1), Value::from(2)]);
    apply(&hub, r#"<message to="a">3</message>"#).unwrap();
    let next = poll(&hub, "a", first["cursor"].as_str()).await;
    assert_eq!(datas(&next), vec![Value::from(3)]);
    let ids: Vec<_> = first["messages"]
        .as_array()
        .unwrap()
        .iter()
        .chain(next["messages"].as_array().unwrap())
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    let seqs: Vec<u64> = ids.iter().map(|i| Cursor::parse(i).unwrap().seq).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn a_waiting_poll_wakes_on_its_own_message_only() {
    let hub = hub();
    let waiting = tokio::spawn({
        let hub = hub.clone();
        async move { poll(&hub, "a", None).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    apply(&hub, r#"<message to="b">"other"</message>"#).unwrap();
    apply(&hub, r#"<message to="a">"mine"</message>"#).unwrap();
    let reply = waiting.await.unwrap();
    assert_eq!(datas(&reply), vec![Value::from("mine")]);
}

#[tokio::test]
async fn an_empty_poll_times_out_with_an_empty_array() {
    let hub = hub();
    let started = std::time::Instant::now();
    let reply = poll(&hub, "a", None).await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(reply["messages"], Value::Array(vec![]));
    assert!(reply["cursor"].is_string());
}

#[tokio::test]
async fn channels_reach_members_at_that_moment() {
    let hub = hub();
    apply(&hub, r#"<batch><subscribe client="a" channel="room"/><subscribe client="b" channel="room"/></batch>"#).unwrap();
    apply(&hub, r#"<message channel="room">1</message>"#).unwrap();
    apply(&hub, r#"<unsubscribe client="b" channel="room"/>"#).unwrap();
    apply(&hub, r#"<message channel="room">2</message>"#).unwrap();
    assert_eq!(
        datas(&poll(&hub, "a", None).await),
        vec![Value::from(1), Value::from(2)]
    );
    assert_eq!(datas(&poll(&hub, "b", None).await), vec![Value::from(1)]);
    assert_eq!(hub.presence(&id("a")).unwrap().channels, vec!["room"]);
}

#[tokio::test]
async fn disconnect_ends_open_polls_and_forgets_the_mailbox() {
    let hub = hub();
    apply(
        &hub,
        r#"<batch><message to="a">1</message><subscribe client="a" channel="room"/></batch>"#,
    )
    .unwrap();
    let first = poll(&hub, "a", None).await;
    let waiting = tokio::spawn({
        let hub = hub.clone();
        let cursor = first["cursor"].as_str().unwrap().to_owned();
        async move { poll(&hub, "a", Some(&cursor)).await }
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    apply(&hub, r#"<disconnect client="a"/>"#).unwrap();
    let reply = waiting.await.unwrap();
    assert_eq!(reply["disconnected"], Value::Bool(true));
    assert!(hub.presence(&id("a")).is_none());
    assert_eq!(hub.stats().channels, 0);
}

#[tokio::test]
async fn too_many_polls_and_clients_are_refused() {
    let hub = hub();
    let open: Vec<_> = (0..2)
        .map(|_| {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.poll(PollRequest {
                    client: id("a"),
                    since: None,
                    subscribe: vec![],
                    timeout: Some(Duration::from_secs(1)),
                })
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let third = hub
        .poll(PollRequest {
            client: id("a"),
            since: None,
            subscribe: vec![],
            timeout: None,
        })
        .await;
    assert!(matches!(third, Err(PollError::TooManyPolls(2))));
    assert!(matches!(
        apply(
            &hub,
            r#"<batch><message to="b">1</message><message to="c">1</message><message to="d">1</message></batch>"#
        ),
        Err(ApplyError::TooManyClients { .. })
    ));
    assert!(
        hub.presence(&id("b")).is_none(),
        "a refused batch applies nothing"
    );
    let started = std::time::Instant::now();
    hub.begin_shutdown();
    for poll in open {
        let reply = poll.await.unwrap().unwrap();
        assert_eq!(reply.delivered, 0, "shutdown answers open polls empty");
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "at once, not at the 1 s timeout"
    );
}

#[tokio::test]
async fn idle_clients_are_forgotten_but_not_while_polling() {
    let hub = hub();
    apply(
        &hub,
        r#"<batch><message to="idle">1</message><subscribe client="idle" channel="c"/></batch>"#,
    )
    .unwrap();
    let held = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.poll(PollRequest {
                client: id("busy"),
                since: None,
                subscribe: vec![],
                timeout: Some(Duration::from_millis(400)),
            })
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(hub.reap(std::time::Instant::now()), 1);
    assert!(hub.presence(&id("idle")).is_none());
    assert!(hub.presence(&id("busy")).unwrap().online);
    assert_eq!(hub.stats().subscriptions, 0);
    held.await.unwrap().unwrap();
}

#[tokio::test]
async fn one_channel_payload_is_shared_by_every_member() {
    let hub = hub();
    apply(&hub, r#"<batch><subscribe client="a" channel="room"/><subscribe client="b" channel="room"/></batch>"#).unwrap();
    apply(
        &hub,
        r#"<message channel="room">{"big": "payload"}</message>"#,
    )
    .unwrap();
    let tail_of = |c: &str| {
        let client = hub.0.clients.get(&id(c)).unwrap().clone();
        let mut state = client.lock();
        state
            .log
            .read_after(None, std::time::Instant::now())
            .messages[0]
            .1
            .clone()
    };
    assert!(Arc::ptr_eq(&tail_of("a"), &tail_of("b")));
}

#[tokio::test]
async fn subscriptions_per_client_are_capped_before_anything_applies() {
    let hub = hub();
    apply(&hub, r#"<batch><subscribe client="a" channel="one"/><subscribe client="a" channel="one"/></batch>"#).unwrap();
    let over = r#"<batch><message to="a">1</message><subscribe client="a" channel="two"/><subscribe client="a" channel="three"/></batch>"#;
    assert!(matches!(
        apply(&hub, over),
        Err(ApplyError::TooManyChannels { max: 2, .. })
    ));
    assert_eq!(
        hub.presence(&id("a")).unwrap().pending_messages,
        0,
        "nothing applied"
    );
    apply(&hub, r#"<subscribe client="a" channel="two"/>"#).unwrap();
    let poll = PollRequest {
        client: id("a"),
        since: None,
        subscribe: vec![ChannelName::parse("three").unwrap()],
        timeout: Some(Duration::ZERO),
    };
    assert!(matches!(
        hub.poll(poll).await,
        Err(PollError::TooManyChannels(2))
    ));
    let again = PollRequest {
        client: id("a"),
        since: None,
        subscribe: vec![ChannelName::parse("one").unwrap()],
        timeout: Some(Duration::ZERO),
    };
    assert!(
        hub.poll(again).await.is_ok(),
        "re-subscribing to a channel it has is fine"
    );
}
