//! SIGKILL at random moments on the redis store, many times: an `<ok>` is a
//! promise across the death of a node or of a Redis server (AOF with
//! `appendfsync always`), on one Redis and on a 3-master Cluster.
//!
//! Two nodes share the Redis. Backends post single messages and `<batch>`es
//! to clients and to a channel, each through a node picked at random; one
//! browser per client long-polls from its cursor, also through either node.
//! At a random moment one process is SIGKILLed, in turn a node and a Redis
//! server (on a Cluster, a random master), so that both kinds of victim
//! die in every run whatever the machine's speed; the load goes on a
//! little against what is left (`503`s and refused connections are
//! retried, as real clients do), then stops, the victim is restarted on
//! the same port, data and config, and every browser reads on from its
//! cursor. Checked each cycle:
//!
//! - no poll ever answers `reset` (nothing was lost, no epoch changed);
//! - every acknowledged message reached each of its recipients, once;
//! - a message in flight at the kill (no `<ok>`) arrived once or not at all;
//!   nothing arrived that was not posted to that client;
//! - on one Redis, a `<batch>` in flight at the kill arrived whole (every
//!   message, in every recipient's mailbox) or not at all (a Cluster may
//!   cut one across slot groups, as docs/storage.md says);
//! - each browser's ids strictly increase.
//!
//! `CHAOS_CYCLES` (default 6) cycles within `CHAOS_BUDGET_SECS` (default
//! 60) per store, but at least two (one of each victim); `DURABILITY_SEED`
//! replays the random choices. A long run:
//! `CHAOS_CYCLES=200 CHAOS_BUDGET_SECS=1800 bash tests/cluster/run-tests.sh chaos`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::harness::{self, env_or, token, wait_until, Msg, Rng, Scratch, Server};
use crate::nodes::node_spec;
use crate::redis_server::{Kind, Persistence, TestRedis};

const CLIENTS: usize = 12;
/// Clients `0..MEMBERS` are members of [`CHANNEL`].
const MEMBERS: usize = 6;
const CHANNEL: &str = "room";
const BACKENDS: u64 = 2;
const NODES: usize = 2;

fn client(i: usize) -> String {
    format!("x{i:02}")
}

/// Who a posted message is for, whether its `<ok>` came, and the request
/// it went in (the sequence numbers `batch.0..batch.1`).
struct Posted {
    recipients: Vec<usize>,
    acked: bool,
    batch: (u64, u64),
}

#[derive(Default)]
struct Model {
    posted: HashMap<u64, Posted>,
    /// Per client: what its browser saw, and its cursor.
    seen: Vec<Vec<Msg>>,
    cursors: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Model>>;

/// The processes of one run; a killed one is `None` until restarted.
struct Deployment {
    redis: TestRedis,
    nodes: Vec<Arc<Server>>,
    specs: Vec<harness::Spec>,
}

async fn sigkill_at_random_moments_loses_nothing_acknowledged(kind: Kind) {
    let seed = harness::seed("chaos");
    let mut rng = Rng::new(seed);
    let cycles: usize = env_or("CHAOS_CYCLES", 6);
    let budget = Duration::from_secs(env_or("CHAOS_BUDGET_SECS", 60));
    let dir = Scratch::new("chaos");
    let redis = TestRedis::start(kind, &dir.0.join("redis"), Persistence::Aof).await;
    let limits = [
        ("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", "100000"),
        ("COMETBOX_LIMITS__MESSAGE_TTL", "1h"),
        ("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "1h"),
        // A killed node's held polls count until their lease lapses (their
        // timeout plus 30 s); a kill every few seconds leaves many.
        ("COMETBOX_LIMITS__MAX_POLLS_PER_CLIENT", "64"),
    ];
    let specs: Vec<_> = (0..NODES)
        .map(|_| node_spec(&redis, &dir.0, &limits))
        .collect();
    let mut nodes = Vec::new();
    for spec in &specs {
        nodes.push(Arc::new(harness::start(spec).await));
    }
    let mut run = Deployment {
        redis,
        nodes,
        specs,
    };
    let members: String = (0..MEMBERS)
        .map(|i| format!(r#"<subscribe client="{}" channel="{CHANNEL}"/>"#, client(i)))
        .collect();
    run.nodes[0]
        .post_ok(&format!("<batch>{members}</batch>"), MEMBERS)
        .await;
    let model: Shared = Arc::new(Mutex::new(Model {
        seen: vec![Vec::new(); CLIENTS],
        cursors: vec![None; CLIENTS],
        ..Model::default()
    }));
    let tokens: Arc<Vec<String>> = Arc::new((0..CLIENTS).map(|i| token(&client(i), &[])).collect());
    let seq = Arc::new(AtomicU64::new(1));
    let started = Instant::now();
    let (mut done, mut rebuilt) = (0, 0);
    let mut killed_kinds = [0usize; 2]; // nodes, Redis servers
    for cycle in 0..cycles {
        if cycle >= 2 && started.elapsed() > budget {
            eprintln!("chaos: time budget {budget:?} spent after {cycle} cycles (of {cycles})");
            break;
        }
        let victim = victim(cycle);
        killed_kinds[usize::from(victim == 0)] += 1;
        let moment = Duration::from_millis(rng.range(0, 1000));
        let load = Load::start(&run, &model, &tokens, &seq, &mut rng);
        load.wait_for_acks(5).await;
        tokio::time::sleep(moment).await; // the random moment, not a wait for a state
        let killed = kill(&mut run, victim, &mut rng).await;
        // The load goes on against what is left, then stops.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let acked = load.stop().await;
        eprintln!(
            "chaos {kind:?} cycle {cycle}: killed {} {moment:?} into the load; restarting it",
            match killed {
                Some(r) => format!("redis-server {r}"),
                None => format!("node {}", victim - 1),
            }
        );
        rebuilt += restart(&mut run, victim, killed).await;
        let checked = verify(&run, &model, &tokens).await;
        done += 1;
        eprintln!(
            "chaos {kind:?} cycle {cycle}: verified; {acked} acknowledged posts this cycle; {checked} deliveries checked in all"
        );
    }
    assert!(
        killed_kinds[0] > 0 && (killed_kinds[1] > 0 || cycles < 2),
        "not every kind of victim was killed: {} nodes, {} Redis servers",
        killed_kinds[0],
        killed_kinds[1]
    );
    rebuilt += run.nodes.iter().map(|n| rebuilds(&n.log())).sum::<usize>();
    eprintln!(
        "chaos {kind:?}: {done} cycles; the nodes rebuilt their cluster connection {rebuilt} times"
    );
    let model = model.lock().unwrap();
    assert!(
        model.posted.values().filter(|p| p.acked).count() > 0,
        "nothing was acknowledged"
    );
}

crate::on_both!(sigkill_at_random_moments_loses_nothing_acknowledged);

/// The victim of `cycle`: a node (`1..=NODES`, in turn) in even cycles, a
/// Redis server (`0`) in odd ones.
fn victim(cycle: usize) -> usize {
    match cycle % 2 {
        0 => 1 + (cycle / 2) % NODES,
        _ => 0,
    }
}

/// SIGKILLs the victim (`0`: a Redis server, on a Cluster a random master;
/// `n`: node `n - 1`); returns the killed node's process to reap.
async fn kill(run: &mut Deployment, victim: usize, rng: &mut Rng) -> Option<usize> {
    if victim == 0 {
        let r = rng.range(0, run.redis.servers.len() as u64) as usize;
        run.redis.servers[r].kill9().await;
        return Some(r);
    }
    // The load's tasks hold the node: killed here, reaped on restart.
    // SAFETY: kill(2) on the pid of a node this test started and still
    // holds unreaped: our own child.
    unsafe {
        libc::kill(run.nodes[victim - 1].pid() as libc::pid_t, libc::SIGKILL);
    }
    None
}

/// Restarts the victim on the same port, data and config; returns how
/// often a killed node had rebuilt its cluster connection.
async fn restart(run: &mut Deployment, victim: usize, redis_server: Option<usize>) -> usize {
    if let Some(r) = redis_server {
        run.redis.servers[r].restart().await;
        run.redis.wait_ready().await;
        return 0;
    }
    let n = victim - 1;
    let fresh = Arc::new(harness::start(&run.specs[n]).await);
    let old = std::mem::replace(&mut run.nodes[n], fresh);
    let log = Arc::try_unwrap(old)
        .ok()
        .expect("the load's tasks have ended")
        .kill9()
        .await;
    rebuilds(&log)
}

/// How often a node's log says it rebuilt its cluster connection
/// (`src/store/redis/conn.rs`).
fn rebuilds(log: &str) -> usize {
    log.matches("connecting afresh").count()
}

/// The backends and browsers of one cycle.
struct Load {
    stopping: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Load {
    fn start(
        run: &Deployment,
        model: &Shared,
        tokens: &Arc<Vec<String>>,
        seq: &Arc<AtomicU64>,
        rng: &mut Rng,
    ) -> Self {
        let stopping = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for _ in 0..BACKENDS {
            tasks.spawn(backend(
                run.nodes.clone(),
                model.clone(),
                seq.clone(),
                stopping.clone(),
                acks.clone(),
                Rng::new(rng.next_u64()),
            ));
        }
        for i in 0..CLIENTS {
            tasks.spawn(browser(
                i,
                run.nodes.clone(),
                model.clone(),
                tokens.clone(),
                stopping.clone(),
            ));
        }
        Load {
            stopping,
            acks,
            tasks,
        }
    }

    async fn wait_for_acks(&self, n: u64) {
        let acks = self.acks.clone();
        wait_until(
            "the backends got their first acknowledgements",
            Duration::from_secs(20),
            || {
                let acks = acks.clone();
                async move { acks.load(Ordering::SeqCst) >= n }
            },
        )
        .await;
    }

    /// Stops the load; returns how many posts were acknowledged.
    async fn stop(mut self) -> u64 {
        self.stopping.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(ended) = tokio::time::timeout_at(deadline.into(), self.tasks.join_next())
            .await
            .expect("backends and browsers end within 30 s")
        {
            if let Err(e) = ended {
                std::panic::resume_unwind(e.into_panic());
            }
        }
        self.acks.load(Ordering::SeqCst)
    }
}

/// Posts through a random node until stopping: one message to a client
/// (60%) or to the channel (20%), or a batch of 2 to 8 (20%). Every
/// message is recorded before it is sent; only an exact `<ok>` marks it
/// acknowledged (a `503` or a broken connection leaves it in flight: it may
/// or may not have been applied).
async fn backend(
    nodes: Vec<Arc<Server>>,
    model: Shared,
    seq: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    mut rng: Rng,
) {
    while !stopping.load(Ordering::SeqCst) {
        let count = match rng.range(0, 100) {
            0..80 => 1,
            _ => rng.range(2, 9),
        };
        let first = seq.fetch_add(count, Ordering::SeqCst);
        let mut xml = String::new();
        {
            let mut m = model.lock().unwrap();
            for s in first..first + count {
                let (element, recipients) = if rng.chance(75) {
                    let i = rng.range(0, CLIENTS as u64) as usize;
                    (
                        format!(r#"<message to="{}">{{"s":{s}}}</message>"#, client(i)),
                        vec![i],
                    )
                } else {
                    (
                        format!(r#"<message channel="{CHANNEL}">{{"s":{s}}}</message>"#),
                        (0..MEMBERS).collect(),
                    )
                };
                xml += &element;
                m.posted.insert(
                    s,
                    Posted {
                        recipients,
                        acked: false,
                        batch: (first, first + count),
                    },
                );
            }
        }
        if count > 1 {
            xml = format!("<batch>{xml}</batch>");
        }
        let via = &nodes[rng.range(0, nodes.len() as u64) as usize];
        match via.post(&xml).await {
            Ok((200, body)) if body == format!(r#"<ok accepted="{count}"/>"#) => {
                let mut m = model.lock().unwrap();
                for s in first..first + count {
                    m.posted.get_mut(&s).unwrap().acked = true;
                }
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok((503, _)) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok((status, body)) => panic!("{status} {body} for {xml}"),
        }
    }
}

/// Client `i`'s browser: long-polls from its cursor through the nodes in
/// turn until stopping, as client-js does (retrying after a refusal).
async fn browser(
    i: usize,
    nodes: Vec<Arc<Server>>,
    model: Shared,
    tokens: Arc<Vec<String>>,
    stopping: Arc<AtomicBool>,
) {
    for turn in 0usize.. {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        tokio::task::yield_now().await;
        let cursor = model.lock().unwrap().cursors[i].clone();
        let query = match &cursor {
            Some(c) => format!("since={c}&timeout=1"),
            None => "timeout=1".to_owned(),
        };
        match nodes[turn % nodes.len()].poll(&tokens[i], &query).await {
            Ok((200, body)) => {
                let mut m = model.lock().unwrap();
                record(&mut m, i, &body);
            }
            // (429: polls held on a killed node still count, for a while)
            Ok((503 | 429, _)) | Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Ok((status, body)) => panic!("{} ?{query}: {status} {body}", client(i)),
        }
    }
}

/// Adds a poll reply to what client `i`'s browser saw; a `reset` is never
/// right here.
fn record(m: &mut Model, i: usize, body: &serde_json::Value) {
    assert_ne!(
        body["reset"],
        true,
        "{}: reset from cursor {:?}: {body}",
        client(i),
        m.cursors[i]
    );
    let messages = body["messages"].as_array().expect("messages");
    m.seen[i].extend(messages.iter().map(Msg::from_json));
    m.cursors[i] = Some(body["cursor"].as_str().expect("a cursor").to_owned());
}

/// Every browser reads on to the end of its mailbox (through the nodes in
/// turn), then the promises are checked; returns the deliveries checked.
async fn verify(run: &Deployment, model: &Shared, tokens: &[String]) -> usize {
    let whole_batches = run.redis.kind == Kind::Single;
    let mut batches_checked = 0usize;
    // Once every node serves again (a node reconnects to a restarted Redis
    // by itself; its first calls may still answer 503).
    let probe = token("probe", &[]);
    for node in &run.nodes {
        let last = Mutex::new(String::new());
        let serves = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match node.poll(&probe, "timeout=0").await {
                    Ok((200, _)) => return,
                    other => *last.lock().unwrap() = format!("{other:?}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            serves.is_ok(),
            "a node does not serve 30 s after the restart; its last answer: {}\n{}",
            last.lock().unwrap(),
            tail(&node.log(), 80)
        );
    }
    for (i, token) in tokens.iter().enumerate() {
        let node = &run.nodes[i % run.nodes.len()];
        let cursor = model.lock().unwrap().cursors[i].clone();
        let read = node.read_all(token, cursor.as_deref()).await;
        assert!(!read.reset, "{}: reset after the restart", client(i));
        let mut m = model.lock().unwrap();
        m.seen[i].extend(read.messages);
        m.cursors[i] = read.cursor;
    }
    let m = model.lock().unwrap();
    let mut checked = 0;
    // Per client, how many times each message arrived.
    let mut arrived: Vec<HashMap<u64, usize>> = vec![HashMap::new(); CLIENTS];
    for (i, got) in arrived.iter_mut().enumerate() {
        harness::assert_ids_increase(&client(i), m.seen[i].iter().map(|msg| msg.id.as_str()));
        for msg in &m.seen[i] {
            let s = msg.data["s"].as_u64().expect("a posted message");
            *got.entry(s).or_default() += 1;
            let posted = m.posted.get(&s).expect("only what was posted");
            assert!(
                posted.recipients.contains(&i),
                "{}: got {s}, posted to {:?}",
                client(i),
                posted.recipients
            );
        }
        for (s, posted) in &m.posted {
            if !posted.recipients.contains(&i) {
                continue;
            }
            let times = got.get(s).copied().unwrap_or(0);
            if posted.acked {
                assert_eq!(
                    times,
                    1,
                    "{}: acknowledged message {s} arrived {times} times",
                    client(i)
                );
                checked += 1;
            } else {
                assert!(
                    times <= 1,
                    "{}: in-flight message {s} arrived {times} times",
                    client(i)
                );
            }
        }
    }
    // A `<batch>` in flight at a kill was applied whole or not at all, in
    // every recipient's mailbox. (On a Cluster a batch spanning slot groups
    // may be cut by a master's death: docs/storage.md says so, and the
    // reply says which part applied; that is checked elsewhere.)
    if whole_batches {
        for (s, posted) in &m.posted {
            let (first, end) = posted.batch;
            if posted.acked || end - first < 2 || *s != first {
                continue;
            }
            let deliveries: Vec<(u64, usize, usize)> = (first..end)
                .flat_map(|s| {
                    let recipients = &m.posted[&s].recipients;
                    let arrived = &arrived;
                    recipients
                        .iter()
                        .map(move |&i| (s, i, arrived[i].get(&s).copied().unwrap_or(0)))
                })
                .collect();
            let whole = deliveries.iter().all(|d| d.2 == 1);
            let none = deliveries.iter().all(|d| d.2 == 0);
            assert!(
                whole || none,
                "the batch {first}..{end} in flight at a kill was applied in part: (message, client, arrivals) {deliveries:?}"
            );
            batches_checked += 1;
        }
        eprintln!(
            "chaos: {batches_checked} batches in flight at kills so far, each whole or not at all"
        );
    }
    checked
}

/// The last `n` lines of a log.
fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
