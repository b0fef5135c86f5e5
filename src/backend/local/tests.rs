//! The hub without HTTP: delivery, channels, tabs, disconnect, eviction,
//! paging, and the races between them. Time is paused: timeouts pass the
//! moment nothing else can run, and no test waits on the wall clock.

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use std::sync::atomic::Ordering;

use crate::hub::{ApplyError, Hub, HubLimits, PollError, PollRequest};
use crate::protocol::ingest::{parse, ParseLimits};
use crate::protocol::ClientId;
use crate::protocol::{ChannelName, Command, Cursor};
use crate::store::{memory::MemoryStore, Retention};

fn limits() -> HubLimits {
    HubLimits {
        poll_timeout: Duration::from_millis(200),
        max_poll_timeout: Duration::from_secs(1),
        client_idle_timeout: Duration::from_millis(100),
        message_ttl: Duration::from_secs(60),
        max_polls_per_client: 2,
        max_clients: 3,
        max_channels_per_client: 2,
        max_reply_bytes: 1 << 20,
    }
}

fn hub_with(limits: HubLimits) -> Hub {
    Hub::new(
        Arc::new(MemoryStore::new(Retention { max_messages: 100 })),
        limits,
    )
}

fn hub() -> Hub {
    hub_with(limits())
}

/// Applies a batch to the in-memory hub, from sync code too (the memory
/// path never awaits: there is no journal to wait for).
fn apply(hub: &Hub, xml: &str) -> Result<usize, ApplyError> {
    let commands = parse(
        xml.as_bytes(),
        ParseLimits {
            max_payload_bytes: 100_000,
            max_commands: 100,
        },
    )
    .unwrap();
    let waker = Waker::from(Arc::new(WakeCount::default()));
    match pin!(hub.apply(commands)).poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(applied) => applied,
        Poll::Pending => panic!("a memory hub applies without waiting"),
    }
}

fn id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

fn channel(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}

fn request(client: &str) -> PollRequest {
    PollRequest {
        client: id(client),
        issued_at: None,
        since: None,
        subscribe: vec![],
        timeout: None,
        connect_ext: None,
        open_only: false,
        from_now: false,
    }
}

async fn poll_with(hub: &Hub, request: PollRequest) -> Value {
    let reply = hub.poll(request).await.unwrap();
    serde_json::from_str(&reply.body).unwrap()
}

async fn poll(hub: &Hub, client: &str, since: Option<&str>) -> Value {
    let since = since.map(|s| Cursor::parse(s).unwrap());
    poll_with(
        hub,
        PollRequest {
            since,
            ..request(client)
        },
    )
    .await
}

fn datas(reply: &Value) -> Vec<Value> {
    reply["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

/// Yields until `client` has `n` open polls (spawned polls registered).
async fn until_open_polls(hub: &Hub, client: &str, n: u32) {
    for _ in 0..10_000 {
        if hub
            .local()
            .presence_now(&id(client))
            .is_some_and(|p| p.open_polls == n)
        {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{client} never had {n} open polls");
}

/// Counts how often a future's waker is called.
#[derive(Default)]
struct WakeCount(AtomicUsize);

impl Wake for WakeCount {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
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

#[tokio::test(start_paused = true)]
async fn a_waiting_poll_is_woken_by_its_own_message_only() {
    let hub = hub();
    let wakes = Arc::new(WakeCount::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);
    let mut waiting = pin!(hub.poll(request("a")));
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    apply(&hub, r#"<message to="b">"other"</message>"#).unwrap();
    apply(&hub, r#"<subscribe client="b" channel="room"/>"#).unwrap();
    apply(&hub, r#"<message channel="room">"room"</message>"#).unwrap();
    assert_eq!(
        wakes.0.load(Ordering::SeqCst),
        0,
        "messages to another client, directly or by channel, do not wake it"
    );
    apply(&hub, r#"<message to="a">"mine"</message>"#).unwrap();
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    let Poll::Ready(reply) = waiting.as_mut().poll(&mut cx) else {
        panic!("woken with a message, it answers");
    };
    let reply: Value = serde_json::from_str(&reply.unwrap().body).unwrap();
    assert_eq!(datas(&reply), vec![Value::from("mine")]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_poll_times_out_after_the_default_timeout() {
    let hub = hub();
    let started = tokio::time::Instant::now();
    let reply = poll(&hub, "a", None).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_millis(200),
        "poll_timeout"
    );
    assert_eq!(reply["messages"], Value::Array(vec![]));
    assert!(reply["cursor"].is_string());
    let started = tokio::time::Instant::now();
    let capped = PollRequest {
        timeout: Some(Duration::from_secs(30)),
        ..request("a")
    };
    poll_with(&hub, capped).await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(1),
        "max_poll_timeout"
    );
}

#[tokio::test(start_paused = true)]
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
    assert_eq!(
        hub.local().presence_now(&id("a")).unwrap().channels,
        vec!["room"]
    );
}

#[tokio::test(start_paused = true)]
async fn membership_changes_apply_in_batch_order() {
    let hub = hub();
    apply(
        &hub,
        r#"<batch>
            <message channel="room">"before"</message>
            <subscribe client="a" channel="room"/>
            <message channel="room">"member"</message>
            <unsubscribe client="a" channel="room"/>
            <message channel="room">"after"</message>
            <message to="a">"direct"</message>
        </batch>"#,
    )
    .unwrap();
    assert_eq!(
        datas(&poll(&hub, "a", None).await),
        vec![Value::from("member"), Value::from("direct")]
    );
    apply(
        &hub,
        r#"<batch><message to="b">"gone with the mailbox"</message><disconnect client="b"/><message to="b">"new mailbox"</message></batch>"#,
    )
    .unwrap();
    assert_eq!(
        datas(&poll(&hub, "b", None).await),
        vec![Value::from("new mailbox")]
    );
}

#[tokio::test(start_paused = true)]
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
    until_open_polls(&hub, "a", 1).await;
    apply(&hub, r#"<disconnect client="a"/>"#).unwrap();
    let reply = waiting.await.unwrap();
    assert_eq!(reply["disconnected"], Value::Bool(true));
    assert!(hub.local().presence_now(&id("a")).is_none());
    assert_eq!(hub.local().figures_now().channels, 0);
}

#[tokio::test(start_paused = true)]
async fn too_many_polls_and_clients_are_refused() {
    let hub = hub();
    let open: Vec<_> = (0..2)
        .map(|_| {
            let hub = hub.clone();
            let held = PollRequest {
                timeout: Some(Duration::from_secs(1)),
                ..request("a")
            };
            tokio::spawn(async move { poll_with(&hub, held).await })
        })
        .collect();
    until_open_polls(&hub, "a", 2).await;
    assert!(matches!(
        hub.poll(request("a")).await,
        Err(PollError::TooManyPolls(2))
    ));
    assert!(matches!(
        apply(
            &hub,
            r#"<batch><message to="b">1</message><message to="c">1</message><message to="d">1</message></batch>"#
        ),
        Err(ApplyError::TooManyClients { .. })
    ));
    assert!(
        hub.local().presence_now(&id("b")).is_none(),
        "a refused batch applies nothing"
    );
    let started = tokio::time::Instant::now();
    hub.begin_shutdown();
    for poll in open {
        let reply = poll.await.unwrap();
        assert_eq!(reply["messages"], Value::Array(vec![]), "answered empty");
    }
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "at once, not at the 1 s timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reply_counts_as_an_open_poll_until_it_is_dropped() {
    let hub = hub();
    apply(&hub, r#"<message to="a">1</message>"#).unwrap();
    let first = hub.poll(request("a")).await.unwrap();
    let second = hub.poll(request("a")).await.unwrap();
    assert!(matches!(
        hub.poll(request("a")).await,
        Err(PollError::TooManyPolls(2))
    ));
    drop((first, second));
    assert!(hub.poll(request("a")).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn idle_clients_are_forgotten_but_not_while_polling() {
    let hub = hub();
    apply(
        &hub,
        r#"<batch><message to="idle">1</message><subscribe client="idle" channel="c"/></batch>"#,
    )
    .unwrap();
    let held = tokio::spawn({
        let hub = hub.clone();
        async move { poll_with(&hub, request("busy")).await }
    });
    until_open_polls(&hub, "busy", 1).await;
    let later = Instant::now() + Duration::from_millis(150);
    assert_eq!(hub.local().reap(later), 1);
    assert!(hub.local().presence_now(&id("idle")).is_none());
    assert!(hub.local().presence_now(&id("busy")).unwrap().online);
    assert_eq!(hub.local().figures_now().subscriptions, 0);
    held.await.unwrap();
    apply(&hub, r#"<message to="idle">2</message>"#).unwrap();
    assert_eq!(
        datas(&poll(&hub, "idle", None).await),
        vec![Value::from(2)],
        "a message to a forgotten client opens a new mailbox"
    );
}

#[tokio::test(start_paused = true)]
async fn one_channel_payload_is_shared_by_every_member() {
    let hub = hub();
    apply(&hub, r#"<batch><subscribe client="a" channel="room"/><subscribe client="b" channel="room"/></batch>"#).unwrap();
    apply(
        &hub,
        r#"<message channel="room">{"big": "payload"}</message>"#,
    )
    .unwrap();
    let tail_of = |c: &str| {
        let client = hub.local().0.clients.get(&id(c)).unwrap().clone();
        let mut state = client.lock();
        state
            .log
            .read_after(None, Instant::now(), usize::MAX)
            .messages[0]
            .1
            .clone()
    };
    assert!(Arc::ptr_eq(&tail_of("a"), &tail_of("b")));
}

#[tokio::test(start_paused = true)]
async fn subscriptions_per_client_are_capped_before_anything_applies() {
    let hub = hub();
    apply(&hub, r#"<batch><subscribe client="a" channel="one"/><subscribe client="a" channel="one"/></batch>"#).unwrap();
    let over = r#"<batch><message to="a">1</message><subscribe client="a" channel="two"/><subscribe client="a" channel="three"/></batch>"#;
    assert!(matches!(
        apply(&hub, over),
        Err(ApplyError::TooManyChannels { max: 2, .. })
    ));
    assert_eq!(
        hub.local().presence_now(&id("a")).unwrap().pending_messages,
        0,
        "nothing applied"
    );
    apply(&hub, r#"<subscribe client="a" channel="two"/>"#).unwrap();
    let asking = |name: &str| PollRequest {
        subscribe: vec![channel(name)],
        timeout: Some(Duration::ZERO),
        ..request("a")
    };
    assert!(matches!(
        hub.poll(asking("three")).await,
        Err(PollError::TooManyChannels(2))
    ));
    assert!(
        hub.poll(asking("one")).await.is_ok(),
        "re-subscribing to a channel it has is fine"
    );
}

#[tokio::test(start_paused = true)]
async fn wildcard_members_get_each_matching_message_once() {
    let mut limits = limits();
    limits.max_channels_per_client = 4;
    let hub = hub_with(limits);
    apply(
        &hub,
        r#"<batch><subscribe client="a" channel="/chat/*"/><subscribe client="a" channel="/chat/**"/>
        <subscribe client="a" channel="/chat/demo"/><subscribe client="b" channel="/chat/**"/>
        <subscribe client="c" channel="/chat/demo"/></batch>"#,
    )
    .unwrap();
    apply(&hub, r#"<message channel="/chat/demo">1</message>"#).unwrap();
    apply(&hub, r#"<message channel="/chat/room/9">2</message>"#).unwrap();
    apply(&hub, r#"<message channel="/news">3</message>"#).unwrap();
    let a = datas(&poll(&hub, "a", None).await);
    assert_eq!(
        a,
        vec![Value::from(1), Value::from(2)],
        "once each, /chat/* is one level"
    );
    let b = datas(&poll(&hub, "b", None).await);
    assert_eq!(b, vec![Value::from(1), Value::from(2)]);
    let c = datas(&poll(&hub, "c", None).await);
    assert_eq!(c, vec![Value::from(1)]);
    let to_a_pattern = parse(
        br#"<message channel="/chat/*">4</message>"#,
        ParseLimits {
            max_payload_bytes: 100,
            max_commands: 1,
        },
    );
    assert!(to_a_pattern.is_err(), "a message never goes to a pattern");
}

#[tokio::test(start_paused = true)]
async fn a_browser_leave_can_be_undone_by_the_browser() {
    let hub = hub();
    let asking = PollRequest {
        subscribe: vec![channel("room")],
        issued_at: Some(1),
        timeout: Some(Duration::ZERO),
        ..request("a")
    };
    poll_with(&hub, asking).await;
    let leave = Command::Leave {
        client: id("a"),
        channel: channel("room"),
    };
    hub.apply(vec![leave]).await.unwrap();
    assert!(hub
        .local()
        .presence_now(&id("a"))
        .unwrap()
        .channels
        .is_empty());
    poll_with(
        &hub,
        PollRequest {
            subscribe: vec![channel("room")],
            issued_at: Some(1),
            timeout: Some(Duration::ZERO),
            ..request("a")
        },
    )
    .await;
    assert_eq!(
        hub.local().presence_now(&id("a")).unwrap().channels,
        vec!["room"],
        "no kick is remembered for a leave"
    );
}

#[tokio::test(start_paused = true)]
async fn a_backend_unsubscribe_outlasts_the_browsers_re_polls() {
    let hub = hub();
    let asking = |issued_at| PollRequest {
        subscribe: vec![channel("room")],
        issued_at,
        timeout: Some(Duration::ZERO),
        ..request("a")
    };
    poll_with(&hub, asking(Some(1))).await;
    assert_eq!(
        hub.local().presence_now(&id("a")).unwrap().channels,
        vec!["room"]
    );
    apply(&hub, r#"<unsubscribe client="a" channel="room"/>"#).unwrap();
    poll_with(&hub, asking(Some(1))).await;
    poll_with(&hub, asking(None)).await;
    assert!(
        hub.local()
            .presence_now(&id("a"))
            .unwrap()
            .channels
            .is_empty(),
        "an old token's channels= does not undo the kick"
    );
    apply(&hub, r#"<message channel="room">"kicked"</message>"#).unwrap();
    assert!(datas(&poll(&hub, "a", None).await).is_empty());

    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let after_the_kick = now_s + 1;
    poll_with(&hub, asking(Some(after_the_kick))).await;
    assert_eq!(
        hub.local().presence_now(&id("a")).unwrap().channels,
        vec!["room"],
        "a token issued after the unsubscribe may rejoin"
    );

    apply(&hub, r#"<unsubscribe client="a" channel="room"/>"#).unwrap();
    apply(&hub, r#"<subscribe client="a" channel="room"/>"#).unwrap();
    apply(&hub, r#"<unsubscribe client="a" channel="other"/>"#).unwrap();
    poll_with(&hub, asking(Some(1))).await;
    assert_eq!(
        hub.local().presence_now(&id("a")).unwrap().channels,
        vec!["room"],
        "a backend subscribe lifts its own unsubscribe"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reply_is_paged_at_max_reply_bytes() {
    let hub = hub_with(HubLimits {
        max_reply_bytes: 3_000,
        ..limits()
    });
    let big = format!(r#""{}""#, "x".repeat(1_000));
    let batch: String = (0..7)
        .map(|_| format!(r#"<message to="a">{big}</message>"#))
        .collect();
    apply(&hub, &format!("<batch>{batch}</batch>")).unwrap();
    let mut since: Option<String> = None;
    let mut pages = vec![];
    loop {
        let reply = poll_with(
            &hub,
            PollRequest {
                since: since.as_deref().map(|s| Cursor::parse(s).unwrap()),
                timeout: Some(Duration::ZERO),
                ..request("a")
            },
        )
        .await;
        let n = datas(&reply).len();
        if n == 0 {
            break;
        }
        assert!(
            reply.to_string().len() < 3_000 + 100,
            "{}",
            reply.to_string().len()
        );
        let last_id = reply["messages"][n - 1]["id"].clone();
        assert_eq!(
            reply["cursor"], last_id,
            "the cursor is after the last one carried"
        );
        since = reply["cursor"].as_str().map(str::to_owned);
        pages.push(n);
    }
    assert_eq!(pages, vec![2, 2, 2, 1]);

    let huge = format!(r#""{}""#, "y".repeat(5_000));
    apply(&hub, &format!(r#"<message to="b">{huge}</message>"#)).unwrap();
    let reply = poll(&hub, "b", None).await;
    assert_eq!(datas(&reply).len(), 1, "always at least one message");
}

/// Reads every mailbox of a batch while it is applied: each read sees all of
/// the batch's messages to that mailbox, or none.
#[test]
fn a_poll_sees_all_of_a_batch_to_its_mailbox_or_none() {
    let hub = Hub::new(
        Arc::new(MemoryStore::new(Retention {
            max_messages: 10_000,
        })),
        limits(),
    );
    let batch = r#"<batch><message to="a">1</message><message to="b">1</message><message to="a">2</message><message to="b">2</message><message to="a">3</message></batch>"#;
    let rounds = 2_000;
    let writer = std::thread::spawn({
        let hub = hub.clone();
        move || {
            for _ in 0..rounds {
                apply(&hub, batch).unwrap();
            }
        }
    });
    let mut torn = 0;
    let mut reads = 0;
    while !writer.is_finished() || reads == 0 {
        for (client, per_batch) in [("a", 3), ("b", 2)] {
            if let Some(p) = hub.local().presence_now(&id(client)) {
                reads += 1;
                if p.pending_messages % per_batch != 0 {
                    torn += 1;
                }
            }
        }
    }
    writer.join().unwrap();
    assert!(reads > 0);
    assert_eq!(torn, 0, "reads that saw part of a batch");
}

/// Subscribe and unsubscribe of one client and channel from two threads:
/// the client's set and the channel's members never disagree.
#[test]
fn concurrent_subscribe_and_unsubscribe_leave_membership_consistent() {
    let hub = hub();
    let rounds = 20_000;
    let run = |xml: &'static str| {
        let hub = hub.clone();
        std::thread::spawn(move || {
            for _ in 0..rounds {
                apply(&hub, xml).unwrap();
            }
        })
    };
    let sub = run(r#"<subscribe client="a" channel="room"/>"#);
    let unsub = run(r#"<unsubscribe client="a" channel="room"/>"#);
    let mut checks = 0;
    while !(sub.is_finished() && unsub.is_finished()) {
        checks += 1;
        let client = hub.local().0.clients.get(&id("a")).map(|c| c.clone());
        if let Some(client) = client {
            let state = client.lock();
            let in_set = state.channels.contains(&channel("room"));
            let in_map = hub
                .local()
                .0
                .channels
                .members(&channel("room"))
                .iter()
                .any(|m| Arc::ptr_eq(m, &client));
            assert_eq!(in_set, in_map, "after {checks} checks");
        }
    }
    sub.join().unwrap();
    unsub.join().unwrap();
    let client = hub.local().0.clients.get(&id("a")).unwrap().clone();
    let in_set = client.lock().channels.contains(&channel("room"));
    let in_map = !hub.local().0.channels.members(&channel("room")).is_empty();
    assert_eq!(in_set, in_map);
}

/// A held poll's task holds this future for the whole wait: whatever it
/// can ever await (a hook request, a journal commit) is part of its size
/// unless boxed, and costs every held poll that memory.
#[test]
fn a_waiting_poll_future_stays_small() {
    let hub = hub();
    let poll = hub.poll(request("small"));
    let size = std::mem::size_of_val(&poll);
    println!("Hub::poll future: {size} bytes");
    assert!(size <= 768, "Hub::poll's future is {size} bytes");
}

/// A reply with nothing names the head seen by the look that found nothing,
/// never a head read later: a message appended between that look and the
/// reply would otherwise be skipped by the next poll (it happened to Bayeux
/// sessions under load: `timeout=0` connects, the timer and the wake-up
/// ready at once). Messages race immediate and short polls; every one must
/// arrive, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_reply_never_names_a_message_it_did_not_carry() {
    const MESSAGES: usize = 30_000;
    let hub = hub();
    // The writer stays within the mailbox's retention (100) of the reader.
    let received = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (hub, received) = (hub.clone(), received.clone());
        tokio::spawn(async move {
            for i in 0..MESSAGES {
                while i >= received.load(std::sync::atomic::Ordering::SeqCst) + 50 {
                    tokio::task::yield_now().await;
                }
                apply(&hub, &format!(r#"<message to="racer">{i}</message>"#)).unwrap();
                if i % 4 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut got = Vec::new();
    let mut since: Option<Cursor> = None;
    // A skip shows as a wrong number when the next message arrives; a skip
    // of the last ones shows as replies that stay empty once the writer is
    // done (no wall clock: a slow machine only makes this take longer).
    let mut empty_since_writer_done = 0;
    while got.len() < MESSAGES {
        assert!(
            empty_since_writer_done < 1_000,
            "only {} of {MESSAGES} arrived and the writer is done: the cursor went past the last ones",
            got.len()
        );
        let timeout = if got.len() % 3 == 0 {
            Duration::ZERO
        } else {
            Duration::from_micros(200)
        };
        let reply = poll_with(
            &hub,
            PollRequest {
                since,
                timeout: Some(timeout),
                ..request("racer")
            },
        )
        .await;
        assert_ne!(reply["reset"], json!(true), "{reply}");
        let datas = datas(&reply);
        if datas.is_empty() && writer.is_finished() {
            empty_since_writer_done += 1;
        }
        for data in datas {
            assert_eq!(data, json!(got.len()), "skipped a message: {reply}");
            got.push(data);
        }
        received.store(got.len(), std::sync::atomic::Ordering::SeqCst);
        since = Some(Cursor::parse(reply["cursor"].as_str().unwrap()).unwrap());
    }
    writer.await.unwrap();
}
