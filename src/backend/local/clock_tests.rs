//! Idle clocks across restarts of the disk store: a client that polls in
//! every life of a server killed again and again, each time before its
//! first sweep recorded anything, keeps its mailbox (found by the model
//! test, `tests/cluster/model`, seed 1796686191268764990).

use std::time::{Duration, Instant};

use crate::backend::outcomes::PollRequest;
use crate::hub::{Hub, HubLimits};
use crate::protocol::ingest::{parse, ParseLimits};
use crate::protocol::ClientId;
use crate::store::{disk::FsyncPolicy, Retention, StoreConfig, StoreKind};

/// Sweeps every 100 ms (a quarter of the idle limit).
const IDLE: Duration = Duration::from_millis(400);

fn limits() -> HubLimits {
    HubLimits {
        poll_timeout: Duration::from_secs(1),
        max_poll_timeout: Duration::from_secs(1),
        client_idle_timeout: IDLE,
        message_ttl: Duration::from_secs(3600),
        max_polls_per_client: 2,
        max_clients: 1_000_000,
        max_channels_per_client: 4,
        max_reply_bytes: 1 << 20,
    }
}

/// Opens the store in `dir`, waiting for the previous life's writer to
/// let go of it, and the hub on it, settled.
async fn start(dir: &std::path::Path) -> Hub {
    let config = StoreConfig {
        kind: StoreKind::Disk,
        path: dir.to_owned(),
        fsync: FsyncPolicy::Never,
        ..StoreConfig::default()
    };
    let opened = loop {
        match config.open(Retention { max_messages: 10 }, 4) {
            Ok(opened) => break opened,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let hub = Hub::open(opened, limits());
    hub.settled().await;
    hub
}

async fn post(hub: &Hub, to: &str) {
    let xml = format!(r#"<message to="{to}">{{"n":1}}</message>"#);
    let limits = ParseLimits {
        max_payload_bytes: 1000,
        max_commands: 10,
    };
    hub.apply(parse(xml.as_bytes(), limits).unwrap())
        .await
        .expect("acknowledged");
}

/// How many messages an immediate poll of `client` from the start gets.
async fn poll_count(hub: &Hub, client: &str) -> usize {
    let reply = hub
        .poll(PollRequest {
            client: ClientId::parse(client).unwrap(),
            issued_at: None,
            since: None,
            subscribe: vec![],
            timeout: Some(Duration::ZERO),
            connect_ext: None,
            open_only: false,
            from_now: false,
        })
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    body["messages"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_polling_in_every_short_life_is_kept() {
    let dir = std::env::temp_dir().join(format!("cometbox-clocks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hub = start(&dir).await;
    post(&hub, "kept").await;
    assert_eq!(poll_count(&hub, "kept").await, 1);
    hub.local().reap(Instant::now());
    drop(hub);
    // Lives of 60 ms, each shorter than a sweep interval: no sweep runs,
    // but the client polls, and another client is created (which tells
    // the next start that the server was running until then). Twelve of
    // them are longer than the idle limit together.
    for life in 0..12 {
        let hub = start(&dir).await;
        assert_eq!(poll_count(&hub, "kept").await, 1, "life {life}");
        tokio::time::sleep(Duration::from_millis(60)).await;
        post(&hub, &format!("other{life}")).await;
        drop(hub);
    }
    let hub = start(&dir).await;
    let forgotten = hub.local().reap(Instant::now());
    let kept = poll_count(&hub, "kept").await;
    drop(hub);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        forgotten, 0,
        "a client that polled in every life was forgotten"
    );
    assert_eq!(kept, 1, "its acknowledged message is gone");
}
