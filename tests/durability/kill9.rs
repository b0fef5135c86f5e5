//! SIGKILL at a random moment under load, restart on the same path, and
//! check the `disk` store's promises against a model of what was posted,
//! what was acknowledged and what each browser saw.
//!
//! Load: `BACKENDS` backends post single messages and `<batch>`es to
//! `CLIENTS` clients and `CHANNELS` channels (members joined by ingest
//! `<subscribe>` and by a poll's `channels=`, a few more each cycle), every
//! payload `{"b": backend, "s": sequence}` unique; one browser per client
//! long-polls from its last cursor. Then SIGKILL, restart (fsync mode
//! rotating always / periodic / never: none of them may lose an
//! acknowledged command to SIGKILL), and for every client:
//!
//! - a poll from the browser's last cursor has no `reset`, and holds exactly
//!   what the full mailbox holds after what the browser saw: so every
//!   message the browser saw kept its id, and nothing after the cursor is
//!   skipped, repeated or reordered;
//! - every acknowledged message addressed to the client (directly, or to a
//!   channel it was a member of) is there, once;
//! - nothing there was never posted to it, nor a message that was missing
//!   after an earlier restart (no resurrection);
//! - per backend, messages keep their posting order;
//! - an unacknowledged batch (in flight at the kill) is there whole or not
//!   at all;
//! - a probe posted to each channel right after the restart reaches every
//!   member: memberships survived.
//!
//! `DURABILITY_CYCLES` (default 20) kill cycles, within
//! `DURABILITY_BUDGET_SECS` (default 75), but never fewer than one kill
//! per fsync mode: cycle `n` kills a server started with mode `n % 3`, so
//! the rotation does not depend on the machine's speed. Two backends post
//! only `<batch>`es, so that a batch is in flight at most kills (not all:
//! a reply the server wrote just before it died still arrives); the run
//! fails if the batches in flight number fewer than a third of the kills
//! (or none), since the all-or-nothing check would then have checked
//! little. `DURABILITY_SEED`
//! replays the random choices. `DURABILITY_STORE=memory` runs the same load and checks
//! without killing (the memory store forgets on restart): a self-check of
//! the harness's bookkeeping.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinSet;

use crate::harness::{self, env_or, start, token, wait_until, Msg, Rng, Scratch, Server, Spec};

const CLIENTS: usize = 50;
const CHANNELS: usize = 3;
const BACKENDS: u64 = 4;
/// The `b` of the probes posted to each channel after a restart.
const PROBE: u64 = 99;
const FSYNC_MODES: [&str; 3] = ["always", "periodic", "never"];

fn client(i: usize) -> String {
    format!("c{i:02}")
}

fn channel(j: usize) -> String {
    format!("room:{j}")
}

/// Where a posted message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Client(usize),
    Channel(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Sent, no `<ok>` (yet, or ever: the server was killed).
    InFlight,
    /// `<ok>` received, or seen after a restart: must be there from now on.
    Acked,
    /// In flight at a kill and missing after the restart: must never appear.
    Lost,
}

#[derive(Debug)]
struct Posted {
    target: Target,
    /// Its mailboxes: the client, or the channel's members when posted.
    recipients: Vec<usize>,
    /// The first sequence number of its request: a batch is all or nothing.
    request: u64,
    state: State,
}

#[derive(Default)]
struct Browser {
    cursor: Option<String>,
    seen: Vec<Msg>,
}

/// Everything the test knows, shared by backends and browsers (a std
/// mutex, never held across an await).
struct Model {
    tokens: Vec<String>,
    members: Vec<BTreeSet<usize>>,
    posted: HashMap<u64, Posted>,
    browsers: Vec<Browser>,
}

type Shared = Arc<Mutex<Model>>;

/// Counters of one run, printed at the end.
#[derive(Default, Debug)]
struct Tally {
    cycles: usize,
    acked: usize,
    in_flight_kept: usize,
    in_flight_lost: usize,
    /// Multi-message requests in flight at a kill, by the killed server's
    /// fsync mode.
    batches_at_kill: [usize; FSYNC_MODES.len()],
    /// Kills, by the killed server's fsync mode.
    kills: [usize; FSYNC_MODES.len()],
    delivered_checked: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_no_acknowledged_message() {
    let seed = harness::seed("kill9");
    let mut rng = Rng::new(seed);
    let cycles: usize = env_or("DURABILITY_CYCLES", 20);
    let budget = Duration::from_secs(env_or("DURABILITY_BUDGET_SECS", 75));
    let memory = std::env::var("DURABILITY_STORE").is_ok_and(|s| s == "memory");
    let scratch = Scratch::new("kill9");
    let store = scratch.0.join("store");
    let base = Spec::disk(&store, &scratch.0)
        .with("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", "100000")
        .with("COMETBOX_LIMITS__MESSAGE_TTL", "1h")
        .with("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "1h")
        .with("COMETBOX_LIMITS__MAX_POLL_TIMEOUT", "60s");
    let spec = |cycle: usize| {
        let mut spec = base.clone();
        if memory {
            spec.store = None;
        } else {
            spec = spec.with("COMETBOX_STORE__FSYNC", mode(cycle));
        }
        spec
    };
    let model: Shared = Arc::new(Mutex::new(Model {
        tokens: (0..CLIENTS)
            .map(|i| token(&client(i), &["room:*"]))
            .collect(),
        members: vec![BTreeSet::new(); CHANNELS],
        posted: HashMap::new(),
        browsers: (0..CLIENTS).map(|_| Browser::default()).collect(),
    }));
    let seq = Arc::new(AtomicU64::new(1));
    let mut tally = Tally::default();
    let started = Instant::now();
    let mut server = Arc::new(start(&spec(0)).await);
    initial_members(&server, &model).await;
    for cycle in 0..cycles {
        if cycle >= FSYNC_MODES.len() && started.elapsed() > budget {
            eprintln!(
                "kill9: time budget {budget:?} spent after {cycle} cycles (of {cycles}); stopping"
            );
            break;
        }
        let t = Instant::now();
        join_one_more_each_way(&server, &model, cycle).await;
        let run_for = Duration::from_millis(rng.range(0, 1000));
        load_until_killed(&server, &model, &seq, cycle, &mut rng, run_for, memory).await;
        if memory {
            eprintln!("kill9 cycle {cycle}: memory store, no kill (harness self-check)");
        } else {
            let owned = Arc::try_unwrap(server)
                .ok()
                .expect("no task holds the server");
            owned.kill9().await;
            tally.kills[cycle % FSYNC_MODES.len()] += 1;
            server = Arc::new(start(&spec(cycle + 1)).await);
        }
        probe_channels(&server, &model, &seq, cycle).await;
        let batches = verify(&server, &model, &mut tally).await;
        tally.batches_at_kill[cycle % FSYNC_MODES.len()] += batches;
        tally.cycles += 1;
        eprintln!(
            "kill9 cycle {cycle}: killed {run_for:?} into the load with {batches} batches in flight (fsync {} → {}), cycle took {:?}; {tally:?}",
            mode(cycle),
            mode(cycle + 1),
            t.elapsed()
        );
    }
    if !memory {
        // A clean restart too: SIGTERM, then the same checks.
        let owned = Arc::try_unwrap(server).ok().expect("no task holds it");
        owned.stop().await;
        server = Arc::new(start(&spec(0)).await);
        probe_channels(&server, &model, &seq, cycles).await;
        let batches = verify(&server, &model, &mut tally).await;
        assert_eq!(batches, 0, "nothing is in flight at a SIGTERM");
        eprintln!("kill9: clean restart verified; {tally:?}");
    }
    assert!(tally.acked > 0, "nothing was acknowledged");
    if !memory {
        let every_mode = cycles.min(FSYNC_MODES.len());
        assert!(
            tally.kills.iter().filter(|&&k| k > 0).count() >= every_mode,
            "not every fsync mode was killed: {tally:?}"
        );
        let batches: usize = tally.batches_at_kill.iter().sum();
        assert!(
            batches > 0 && batches * 3 >= tally.cycles,
            "a batch was in flight at only {batches} of {} kills: the all-or-nothing check checked little; {tally:?}",
            tally.cycles
        );
    }
    eprintln!(
        "kill9: seed {seed}, {} cycles in {:?}: {tally:?}",
        tally.cycles,
        started.elapsed()
    );
    drop(server);
}

/// The fsync mode of the server killed in cycle `cycle` (and started
/// after the kill of `cycle - 1`).
fn mode(cycle: usize) -> &'static str {
    FSYNC_MODES[cycle % FSYNC_MODES.len()]
}

/// Channel `j` gets clients `5j..5j+5` by ingest `<subscribe>` and
/// `20+5j..25+5j` by a poll with `channels=`.
async fn initial_members(server: &Server, model: &Shared) {
    let mut xml = String::from("<batch>");
    for j in 0..CHANNELS {
        for i in 5 * j..5 * j + 5 {
            xml += &format!(
                r#"<subscribe client="{}" channel="{}"/>"#,
                client(i),
                channel(j)
            );
        }
    }
    xml += "</batch>";
    server.post_ok(&xml, 5 * CHANNELS).await;
    for j in 0..CHANNELS {
        model.lock().unwrap().members[j].extend(5 * j..5 * j + 5);
        for i in 20 + 5 * j..25 + 5 * j {
            browser_poll(server, model, i, Some(j)).await;
        }
    }
}

/// Before each cycle's load, one more client joins channel `cycle % 3` by
/// `<subscribe>` and one more by `channels=` (while any is left).
async fn join_one_more_each_way(server: &Server, model: &Shared, cycle: usize) {
    let j = cycle % CHANNELS;
    let outsiders: Vec<usize> = {
        let m = model.lock().unwrap();
        (0..CLIENTS).filter(|i| !m.members[j].contains(i)).collect()
    };
    if let Some(&i) = outsiders.first() {
        let xml = format!(
            r#"<subscribe client="{}" channel="{}"/>"#,
            client(i),
            channel(j)
        );
        server.post_ok(&xml, 1).await;
        model.lock().unwrap().members[j].insert(i);
    }
    if let Some(&i) = outsiders.get(1) {
        browser_poll(server, model, i, Some(j)).await;
    }
}

/// One immediate poll by client `i`'s browser from its cursor, optionally
/// subscribing to channel `join`; records what it saw.
async fn browser_poll(server: &Server, model: &Shared, i: usize, join: Option<usize>) {
    let (token, cursor) = {
        let m = model.lock().unwrap();
        (m.tokens[i].clone(), m.browsers[i].cursor.clone())
    };
    let mut query = String::from("timeout=0");
    if let Some(c) = cursor {
        query += &format!("&since={c}");
    }
    if let Some(j) = join {
        query += &format!("&channels={}", channel(j));
    }
    let (status, body) = server.poll(&token, &query).await.expect("poll answers");
    assert_eq!(status, 200, "{} ?{query}: {body}", client(i));
    let mut m = model.lock().unwrap();
    record(&mut m.browsers[i], i, &body);
    if let Some(j) = join {
        m.members[j].insert(i);
    }
}

/// Adds a poll reply to what a browser saw; a `reset` is never right here.
fn record(browser: &mut Browser, i: usize, body: &serde_json::Value) {
    assert_ne!(
        body["reset"],
        true,
        "{}: reset from cursor {:?}: {body}",
        client(i),
        browser.cursor
    );
    let messages = body["messages"].as_array().expect("messages");
    browser.seen.extend(messages.iter().map(Msg::from_json));
    browser.cursor = Some(body["cursor"].as_str().expect("cursor").to_owned());
}

/// Runs backends and browsers until a few requests were acknowledged and
/// then `run_for` more; then SIGKILLs the server (unless `memory`: then it
/// only stops the load) and returns once every task has ended. The caller
/// reaps the killed server.
async fn load_until_killed(
    server: &Arc<Server>,
    model: &Shared,
    seq: &Arc<AtomicU64>,
    cycle: usize,
    rng: &mut Rng,
    run_for: Duration,
    memory: bool,
) {
    let stopping = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for k in 0..BACKENDS {
        let backend = Backend {
            b: cycle as u64 * 100 + k,
            // Backends 0 and 1 post only batches: one is in flight at the kill.
            batches_only: k < 2,
            server: server.clone(),
            model: model.clone(),
            seq: seq.clone(),
            stopping: stopping.clone(),
            acks: acks.clone(),
            rng: Rng::new(rng.next_u64()),
        };
        tasks.spawn(backend.run());
    }
    for i in 0..CLIENTS {
        tasks.spawn(browse(i, server.clone(), model.clone(), stopping.clone()));
    }
    wait_until(
        "backends got 5 acknowledgements",
        Duration::from_secs(20),
        || {
            let acks = acks.clone();
            async move { acks.load(Ordering::SeqCst) >= 5 }
        },
    )
    .await;
    tokio::time::sleep(run_for).await; // the random moment of the kill, not a wait for a state
    stopping.store(true, Ordering::SeqCst);
    if !memory {
        kill_now(server);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Some(done) = tokio::time::timeout_at(deadline.into(), tasks.join_next())
        .await
        .expect("backends and browsers end within 30 s of the kill")
    {
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

fn kill_now(server: &Server) {
    // SAFETY: kill(2) on the pid of the server this test started and still
    // holds (unreaped): it names our own child. `Server::kill9` reaps it.
    unsafe {
        libc::kill(server.pid() as libc::pid_t, libc::SIGKILL);
    }
}

/// One backend: posts until stopping, recording what was acknowledged.
struct Backend {
    b: u64,
    server: Arc<Server>,
    model: Shared,
    seq: Arc<AtomicU64>,
    stopping: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
    rng: Rng,
    batches_only: bool,
}

impl Backend {
    async fn run(mut self) {
        for _ in 0..1_000_000 {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let targets = self.choose();
            let (xml, keys) = self.register(&targets);
            match self.server.post(&xml).await {
                Ok((200, body)) if body == format!(r#"<ok accepted="{}"/>"#, keys.len()) => {
                    let mut m = self.model.lock().unwrap();
                    for k in &keys {
                        m.posted.get_mut(k).unwrap().state = State::Acked;
                    }
                    self.acks.fetch_add(1, Ordering::SeqCst);
                }
                _ if self.stopping.load(Ordering::SeqCst) => return,
                Ok((status, body)) => panic!("backend {}: {status} {body} for {xml}", self.b),
                Err(e) => panic!("backend {}: {e} for {xml}", self.b),
            }
        }
    }

    /// A single message to a client (50%) or a channel (15%), or a batch
    /// of 2 to 16 (35%; always, for the batches-only backend).
    fn choose(&mut self) -> Vec<Target> {
        let one = |rng: &mut Rng| {
            if rng.chance(80) {
                Target::Client(rng.range(0, CLIENTS as u64) as usize)
            } else {
                Target::Channel(rng.range(0, CHANNELS as u64) as usize)
            }
        };
        let pick = match self.batches_only {
            true => 99,
            false => self.rng.range(0, 100),
        };
        match pick {
            0..50 => vec![Target::Client(self.rng.range(0, CLIENTS as u64) as usize)],
            50..65 => vec![Target::Channel(self.rng.range(0, CHANNELS as u64) as usize)],
            _ => (0..self.rng.range(2, 17))
                .map(|_| one(&mut self.rng))
                .collect(),
        }
    }

    /// Numbers the messages, records them as in flight, writes the XML.
    fn register(&mut self, targets: &[Target]) -> (String, Vec<u64>) {
        let first = self.seq.fetch_add(targets.len() as u64, Ordering::SeqCst);
        let mut m = self.model.lock().unwrap();
        let mut xml = String::new();
        let mut keys = Vec::new();
        for (n, target) in targets.iter().enumerate() {
            let s = first + n as u64;
            let pad = "x".repeat(self.rng.range(0, 4) as usize * 40);
            let data = json!({ "b": self.b, "s": s, "pad": pad });
            let recipients = match *target {
                Target::Client(i) => {
                    xml += &format!(r#"<message to="{}">{data}</message>"#, client(i));
                    vec![i]
                }
                Target::Channel(j) => {
                    xml += &format!(
                        r#"<message channel="{}" event="ch">{data}</message>"#,
                        channel(j)
                    );
                    m.members[j].iter().copied().collect()
                }
            };
            m.posted.insert(
                s,
                Posted {
                    target: *target,
                    recipients,
                    request: first,
                    state: State::InFlight,
                },
            );
            keys.push(s);
        }
        if targets.len() > 1 {
            xml = format!("<batch>{xml}</batch>");
        }
        (xml, keys)
    }
}

/// One browser: long-polls from its cursor until stopping.
async fn browse(i: usize, server: Arc<Server>, model: Shared, stopping: Arc<AtomicBool>) {
    let token = model.lock().unwrap().tokens[i].clone();
    for _ in 0..1_000_000 {
        if stopping.load(Ordering::SeqCst) {
            return;
        }
        let cursor = model.lock().unwrap().browsers[i].cursor.clone();
        let query = match cursor {
            Some(c) => format!("since={c}&timeout=1"),
            None => "timeout=1".to_owned(),
        };
        match server.poll(&token, &query).await {
            Ok((200, body)) => record(&mut model.lock().unwrap().browsers[i], i, &body),
            _ if stopping.load(Ordering::SeqCst) => return,
            Ok((status, body)) => panic!("{} ?{query}: {status} {body}", client(i)),
            Err(e) => panic!("{} ?{query}: {e}", client(i)),
        }
    }
}

/// Right after a (re)start: one acknowledged message to each channel, which
/// every member must then hold.
async fn probe_channels(server: &Server, model: &Shared, seq: &AtomicU64, cycle: usize) {
    for j in 0..CHANNELS {
        let s = seq.fetch_add(1, Ordering::SeqCst);
        let data = json!({ "b": cycle as u64 * 100 + PROBE, "s": s });
        let xml = format!(
            r#"<message channel="{}" event="probe">{data}</message>"#,
            channel(j)
        );
        let recipients = model.lock().unwrap().members[j].iter().copied().collect();
        server.post_ok(&xml, 1).await;
        model.lock().unwrap().posted.insert(
            s,
            Posted {
                target: Target::Channel(j),
                recipients,
                request: s,
                state: State::Acked,
            },
        );
    }
}

/// Reads every mailbox twice (whole, and from the browser's cursor) and
/// checks both against the model; then settles what was in flight.
/// Returns how many multi-message requests were in flight.
async fn verify(server: &Arc<Server>, model: &Shared, tally: &mut Tally) -> usize {
    let mut reads = JoinSet::new();
    for i in 0..CLIENTS {
        let (token, cursor) = {
            let m = model.lock().unwrap();
            (m.tokens[i].clone(), m.browsers[i].cursor.clone())
        };
        let server = server.clone();
        reads.spawn(async move {
            let full = server.read_all(&token, None).await;
            let after = server.read_all(&token, cursor.as_deref()).await;
            (i, full, after)
        });
    }
    let mut done = Vec::new();
    while let Some(read) = reads.join_next().await {
        done.push(read.expect("a read task"));
    }
    let mut present: HashMap<u64, HashSet<usize>> = HashMap::new();
    let mut m = model.lock().unwrap();
    for (i, full, after) in done {
        check_mailbox(&m, i, &full.messages, &after);
        for msg in &full.messages {
            present.entry(key(msg)).or_default().insert(i);
        }
        tally.delivered_checked += full.messages.len();
    }
    settle_in_flight(&mut m, &present, tally)
}

fn key(msg: &Msg) -> u64 {
    msg.data["s"]
        .as_u64()
        .unwrap_or_else(|| panic!("a message nobody posted: {msg:?}"))
}

/// The checks of one mailbox; see the module doc.
fn check_mailbox(m: &Model, i: usize, full: &[Msg], after: &harness::Read) {
    let who = client(i);
    let browser = &m.browsers[i];
    assert!(
        !after.reset,
        "{who}: reset from the cursor {:?} handed out before the restart",
        browser.cursor
    );
    let mut expected_view = browser.seen.clone();
    expected_view.extend(after.messages.iter().cloned());
    if full != expected_view.as_slice() {
        let at = full
            .iter()
            .zip(&expected_view)
            .position(|(a, b)| a != b)
            .unwrap_or(full.len().min(expected_view.len()));
        panic!(
            "{who}: the whole mailbox ({} messages) is not what the browser saw ({}) followed by a poll from its cursor {:?} ({}); first difference at {at}: whole {:?} vs seen+after {:?}",
            full.len(),
            browser.seen.len(),
            browser.cursor,
            after.messages.len(),
            full.get(at),
            expected_view.get(at)
        );
    }
    harness::assert_ids_increase(&who, full.iter().map(|m| m.id.as_str()));
    let mut keys = HashSet::new();
    let mut last_s: HashMap<u64, u64> = HashMap::new();
    for msg in full {
        let s = key(msg);
        assert!(keys.insert(s), "{who}: message s={s} twice: {msg:?}");
        let posted = m
            .posted
            .get(&s)
            .unwrap_or_else(|| panic!("{who}: a message never posted: {msg:?}"));
        assert!(
            posted.recipients.contains(&i),
            "{who}: got {msg:?}, posted to {:?} with recipients {:?}",
            posted.target,
            posted.recipients
        );
        assert_ne!(
            posted.state,
            State::Lost,
            "{who}: {msg:?} was missing after an earlier restart and came back"
        );
        let want_channel = match posted.target {
            Target::Channel(j) => Some(channel(j)),
            Target::Client(_) => None,
        };
        assert_eq!(msg.channel, want_channel, "{who}: channel of {msg:?}");
        let b = msg.data["b"].as_u64().expect("b");
        if let Some(prev) = last_s.insert(b, s) {
            assert!(
                prev < s,
                "{who}: backend {b}'s s={s} after s={prev}: reordered"
            );
        }
    }
    for (s, posted) in &m.posted {
        if posted.state == State::Acked && posted.recipients.contains(&i) {
            assert!(
                keys.contains(s),
                "{who}: acknowledged message s={s} ({:?}) missing after restart",
                posted.target
            );
        }
    }
}

/// Messages in flight at the kill: each request is there for all of its
/// recipients or for none; from now on, acked or lost for good. Returns how
/// many of those requests were batches of more than one message.
fn settle_in_flight(
    m: &mut Model,
    present: &HashMap<u64, HashSet<usize>>,
    tally: &mut Tally,
) -> usize {
    let mut requests: HashMap<u64, Vec<(u64, bool)>> = HashMap::new();
    let mut batches = 0;
    for (s, posted) in &m.posted {
        if posted.state == State::InFlight {
            let holders = present.get(s).map_or(0, HashSet::len);
            let whole = holders == posted.recipients.len();
            assert!(
                whole || holders == 0,
                "in-flight s={s} ({:?}) is in {holders} of its {} mailboxes",
                posted.target,
                posted.recipients.len()
            );
            requests
                .entry(posted.request)
                .or_default()
                .push((*s, whole));
        }
    }
    for (request, parts) in requests {
        batches += usize::from(parts.len() > 1);
        let kept = parts.iter().filter(|(_, whole)| *whole).count();
        assert!(
            kept == 0 || kept == parts.len(),
            "an unacknowledged batch (first s={request}) was applied in part: {kept} of {} messages",
            parts.len()
        );
        for (s, whole) in parts {
            m.posted.get_mut(&s).unwrap().state = if whole {
                tally.in_flight_kept += 1;
                State::Acked
            } else {
                tally.in_flight_lost += 1;
                State::Lost
            };
        }
    }
    tally.acked = m
        .posted
        .values()
        .filter(|p| p.state == State::Acked)
        .count();
    batches
}
