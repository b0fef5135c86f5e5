//! A snapshot taken while clients are being created: every client whose
//! batch was acknowledged is in the recovered state, whichever side of the
//! snapshot's start its creation fell on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::hub::{Hub, HubLimits};
use crate::protocol::ingest::{parse, ParseLimits};
use crate::store::{disk::FsyncPolicy, Retention, StoreConfig, StoreKind};

fn limits() -> HubLimits {
    HubLimits {
        poll_timeout: Duration::from_secs(1),
        max_poll_timeout: Duration::from_secs(1),
        client_idle_timeout: Duration::from_secs(3600),
        message_ttl: Duration::from_secs(3600),
        max_polls_per_client: 2,
        max_clients: 1_000_000,
        max_channels_per_client: 4,
        max_reply_bytes: 1 << 20,
    }
}

fn store_config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        kind: StoreKind::Disk,
        path: dir.to_owned(),
        fsync: FsyncPolicy::Never,
        segment_bytes: 4096,
        ..StoreConfig::default()
    }
}

fn open(dir: &std::path::Path) -> crate::store::Opened {
    store_config(dir)
        .open(Retention { max_messages: 10 }, 4)
        .expect("the store opens")
}

async fn post(hub: &Hub, xml: &str) {
    let commands = parse(
        xml.as_bytes(),
        ParseLimits {
            max_payload_bytes: 1000,
            max_commands: 10_000,
        },
    )
    .unwrap();
    hub.apply(commands).await.expect("acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_created_during_a_snapshot_survive_a_restart() {
    let dir = std::env::temp_dir().join(format!("cometbox-snaprace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let hub = Hub::open(open(&dir), limits());
    // Many clients, so that a snapshot's pass over them takes a while.
    for chunk in 0..40 {
        let batch: String = (0..2_000)
            .map(|i| format!(r#"<message to="old{chunk}-{i}">{{"n":{i}}}</message>"#))
            .collect();
        post(&hub, &format!("<batch>{batch}</batch>")).await;
    }
    let done = Arc::new(AtomicBool::new(false));
    let snapshots = {
        let (hub, done) = (hub.clone(), done.clone());
        std::thread::spawn(move || {
            for _ in 0..12 {
                hub.local().snapshot_now();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut creators = Vec::new();
    for task in 0..4 {
        let (hub, done) = (hub.clone(), done.clone());
        creators.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut n = 0;
            while !done.load(Ordering::SeqCst) {
                let id = format!("new{task}-{n}");
                post(
                    &hub,
                    &format!(r#"<message to="{id}">{{"n":{n}}}</message>"#),
                )
                .await;
                acked.push(id);
                n += 1;
            }
            acked
        }));
    }
    snapshots.join().unwrap();
    let mut acked = Vec::new();
    for creator in creators {
        acked.extend(creator.await.unwrap());
    }
    drop(hub);
    // The journal's writer has stopped once the store's lock is free again.
    let recovered = loop {
        match store_config(&dir).open(Retention { max_messages: 10 }, 4) {
            Ok(crate::store::Opened::Local { recovered, .. }) => break recovered,
            Ok(crate::store::Opened::Redis(_)) => unreachable!("a disk store was opened"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let have: std::collections::HashMap<String, usize> = recovered
        .iter()
        .map(|c| (c.id.to_string(), c.messages.len()))
        .collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|id| have.get(id.as_str()) != Some(&1))
        .collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        acked.len() > 100,
        "too few clients created: {}",
        acked.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {} clients created during snapshots lost their acknowledged message: {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(10)]
    );
}
