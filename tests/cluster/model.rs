//! The model test: random sequences of operations against the real binary
//! on every store (`memory`, `disk`, one Redis, a Redis Cluster), with
//! faults at random points, each reply checked against a small reference
//! model (`model/reference.rs`, which states the invariants).
//!
//! Operations, drawn from one seeded generator: ingest requests (a single
//! command or a `<batch>` of up to six: `<message>` to clients and to
//! channels, `<subscribe>`, `<unsubscribe>`, now and then `<disconnect>`),
//! through a random node; browsers that poll from the cursor of their last
//! reply (`timeout=0`, or held in the background for a second or two, so
//! that ingest wakes them), that join a channel with `channels=` (a token
//! minted by hand, `tests/shared/jwt.rs`), that open fresh (no cursor) or
//! come back with a cursor remembered from any earlier reply, and that
//! stop polling (a held poll's connection dropped); time passing, short and
//! long, so that the short `message_ttl` and `client_idle_timeout` expire
//! messages and evict clients. Faults, in turn:
//!
//! - `memory`: SIGKILL and SIGTERM, each followed by a restart that forgets
//!   everything (every older cursor must `reset`);
//! - `disk`: SIGKILL and SIGTERM, restarted on the same directory (nothing
//!   acknowledged lost, no `reset` that the model cannot explain);
//! - one Redis and a Cluster: SIGKILL of a redis-server (on a Cluster a
//!   random master; AOF with `appendfsync always`) and of one of the two
//!   cometbox nodes; the victim stays down for a few operations, which go
//!   on against what is left, then restarts on the same data.
//!
//! Up to two requests of messages are in flight at each kill: they may be
//! applied or not, but whole for each mailbox.
//!
//! `MODEL_SEED` replays a run's choices (thread timing still varies);
//! `MODEL_OPS` (default 5000) and `MODEL_SECS` (default 15) bound it, per
//! store. `bash tests/cluster/run-tests.sh model` runs the four;
//! `benches/model-soak.sh` runs them long.

mod deploy;
mod reference;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::{JoinHandle, JoinSet};

use crate::harness::{env_or, token, Rng, Scratch, Server};
use deploy::{Backend, Deployment, Down, Fault};
use reference::{channel, client, Cmd, Limits, Model, Outcome};

const CLIENTS: usize = 6;
const CHANNELS: usize = 3;
/// Browsers polling at once, at most.
const BROWSERS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory() {
    run(Backend::Memory).await
}

// Found the disk store evicting an active client after restarts less
// than a sweep apart (fixed: recovered idle clocks count only up-time, less
// one sweep; docs/storage.md, "The model test").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disk() {
    run(Backend::Disk).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis() {
    run(Backend::Redis).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster() {
    run(Backend::Cluster).await
}

type Shared = Arc<Mutex<Model>>;

fn lock(model: &Shared) -> std::sync::MutexGuard<'_, Model> {
    model
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Short enough that a run sees messages expire and clients evicted.
fn model_limits(backend: Backend) -> Limits {
    Limits {
        ttl: Duration::from_secs(2),
        idle: Duration::from_secs(3),
        ttl_slack: Duration::from_millis(300),
        idle_slack: match backend {
            // Its idle clock resumes up to one sweep (idle / 4) old.
            Backend::Disk => Duration::from_millis(1050),
            _ => Duration::from_millis(300),
        },
    }
}

async fn run(backend: Backend) {
    let seed = std::env::var("MODEL_SEED")
        .ok()
        .map(|s| s.parse().expect("MODEL_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let name = format!("{backend:?}").to_lowercase();
    let label = format!("model {name} seed {seed} (replay: MODEL_SEED={seed} bash tests/cluster/run-tests.sh model::{name})");
    eprintln!("{label}: starting");
    let _report = SeedOnFailure(label.clone());
    let ops: usize = env_or("MODEL_OPS", 5000);
    let secs: u64 = env_or("MODEL_SECS", 15);
    let dir = Scratch::new(&format!("model-{name}"));
    let log_level = std::env::var("MODEL_LOG").unwrap_or_else(|_| "info".into());
    let limits = [
        ("COMETBOX_LIMITS__MESSAGE_TTL", "2s"),
        ("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "3s"),
        // Held polls of a killed Redis node count until their lease lapses.
        ("COMETBOX_LIMITS__MAX_POLLS_PER_CLIENT", "64"),
        ("COMETBOX_LOG__LEVEL", log_level.as_str()),
    ];
    let deploy = Deployment::start(backend, &dir.0, &limits).await;
    let started = Instant::now();
    let model = Model::new(
        label.clone(),
        model_limits(backend),
        backend.forgets(),
        CLIENTS,
        CHANNELS,
        started,
        dir.0.join("model-history.log"),
    );
    let mut runner = Runner {
        deploy,
        model: Arc::new(Mutex::new(model)),
        rng: Rng::new(seed),
        tokens: (0..CLIENTS)
            .map(|i| token(&client(i), &["room:*"]))
            .collect(),
        held: Vec::new(),
        down: None,
        faults: 0,
        next_fault: started + Duration::from_millis(500),
        started,
        paused: Duration::ZERO,
    };
    for c in 0..CLIENTS {
        let l = lock(&runner.model).fresh_lineage(c, Instant::now());
        runner.poll_now(l, None).await;
    }
    let budget = Duration::from_secs(secs);
    let mut done = 0;
    while done < ops && started.elapsed() < budget {
        runner.step().await;
        done += 1;
    }
    runner.finish().await;
    let tally = lock(&runner.model).tally.clone();
    eprintln!(
        "{label}: PASSED {done} operations in {:.1} s; {tally:?}",
        started.elapsed().as_secs_f64()
    );
    let kinds = backend.faults().len();
    assert!(
        tally.acked_batches > 0 && tally.delivered > 0 && tally.required_checked > 0,
        "{label}: the run checked too little: {tally:?}"
    );
    assert!(
        runner.faults >= kinds.min(started.elapsed().as_secs() as usize / 4),
        "{label}: {} faults in {done} operations: {tally:?}",
        runner.faults
    );
}

/// Prints the run's seed again if the test fails (the invariants' own
/// messages carry it too; a harness assertion does not).
struct SeedOnFailure(String);

impl Drop for SeedOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}: FAILED", self.0);
        }
    }
}

struct Runner {
    deploy: Deployment,
    model: Shared,
    rng: Rng,
    tokens: Vec<String>,
    /// Polls held in the background, by lineage.
    held: Vec<(usize, JoinHandle<()>)>,
    /// A victim left down, and for how many more operations.
    down: Option<(Down, usize)>,
    faults: usize,
    /// When the next fault comes.
    next_fault: Instant,
    started: Instant,
    /// Time spent in pauses so far.
    paused: Duration,
}

impl Runner {
    async fn step(&mut self) {
        lock(&self.model).tally.ops += 1;
        self.reap_held().await;
        match self.down {
            Some((down, 0)) => {
                self.down = None;
                self.deploy.bring_back(down).await;
                lock(&self.model).note(format!("{down:?} back"));
            }
            Some((down, left)) => self.down = Some((down, left - 1)),
            None => {}
        }
        if Instant::now() >= self.next_fault {
            self.fault().await;
            let gap = Duration::from_millis(self.rng.range(300, 2500));
            self.next_fault = Instant::now() + gap;
            return;
        }
        match self.rng.range(0, 100) {
            0..34 => self.ingest().await,
            34..60 => self.repoll(None).await,
            60..68 => self.hold(),
            68..74 => {
                let ch = self.rng.range(0, CHANNELS as u64) as usize;
                self.repoll(Some(ch)).await
            }
            74..79 => self.fresh_browser().await,
            79..84 => self.stale_browser().await,
            84..89 => self.abandon(),
            89..99 => self.pause(20, 150).await,
            // Long enough for expiry and eviction, at most a quarter of the
            // run's time.
            _ if self.paused < self.started.elapsed() / 4 => self.pause(1500, 4000).await,
            _ => self.pause(20, 150).await,
        }
    }

    /// A random node that is up.
    fn via(&mut self) -> Arc<Server> {
        let live = self.deploy.live();
        live[self.rng.range(0, live.len() as u64) as usize].clone()
    }

    fn client(&mut self) -> usize {
        self.rng.range(0, CLIENTS as u64) as usize
    }

    /// 1 to 6 commands, mostly messages.
    fn commands(&mut self, messages_only: bool) -> Vec<Cmd> {
        let n = self.rng.range(1, 7);
        (0..n)
            .map(|_| {
                let c = self.client();
                let ch = self.rng.range(0, CHANNELS as u64) as usize;
                let roll = self.rng.range(0, 100);
                match roll {
                    _ if messages_only && roll >= 70 => Cmd::Channel(ch),
                    0..45 => Cmd::To(c),
                    45..70 => Cmd::Channel(ch),
                    70..85 => Cmd::Subscribe(c, ch),
                    85..98 => Cmd::Unsubscribe(c, ch),
                    _ => Cmd::Disconnect(c),
                }
            })
            .collect()
    }

    async fn ingest(&mut self) {
        let cmds = self.commands(false);
        let via = self.via();
        post(self.model.clone(), via, cmds).await;
    }

    /// An idle browser polls on from its cursor at once (joining `join`).
    async fn repoll(&mut self, join: Option<usize>) {
        let idle = lock(&self.model).idle_lineages();
        if idle.is_empty() {
            return self.fresh_browser().await;
        }
        let l = idle[self.rng.range(0, idle.len() as u64) as usize];
        self.poll_now(l, join).await;
    }

    async fn poll_now(&mut self, l: usize, join: Option<usize>) {
        let c = lock(&self.model).lineages[l].client;
        let (via, token) = (self.via(), self.tokens[c].clone());
        poll(self.model.clone(), via, token, l, join, 0).await;
    }

    /// An idle browser holds a poll for 1 or 2 s in the background.
    fn hold(&mut self) {
        let idle = lock(&self.model).idle_lineages();
        if idle.is_empty() {
            return;
        }
        let l = idle[self.rng.range(0, idle.len() as u64) as usize];
        let c = lock(&self.model).lineages[l].client;
        let timeout = self.rng.range(1, 3);
        let task = poll(
            self.model.clone(),
            self.via(),
            self.tokens[c].clone(),
            l,
            None,
            timeout,
        );
        lock(&self.model).lineages[l].busy = true;
        self.held.push((l, tokio::spawn(task)));
    }

    async fn fresh_browser(&mut self) {
        if lock(&self.model).active_lineages() >= BROWSERS {
            return;
        }
        let c = self.client();
        let l = lock(&self.model).fresh_lineage(c, Instant::now());
        self.poll_now(l, None).await;
    }

    /// A browser comes back with a cursor of an earlier reply.
    async fn stale_browser(&mut self) {
        if lock(&self.model).active_lineages() >= BROWSERS {
            return;
        }
        let (c, pick) = (self.client(), self.rng.next_u64());
        let l = lock(&self.model).stale_lineage(c, pick);
        if let Some(l) = l {
            self.poll_now(l, None).await;
        }
    }

    /// A browser stops polling; a held poll's connection is dropped.
    fn abandon(&mut self) {
        let mut m = lock(&self.model);
        let active: Vec<usize> = (0..m.lineages.len())
            .filter(|&l| m.lineages[l].active)
            .collect();
        if active.len() <= 2 {
            return;
        }
        let l = active[self.rng.range(0, active.len() as u64) as usize];
        m.lineages[l].active = false;
        m.note(format!("browser {l} abandoned"));
        if let Some((_, task)) = self.held.iter().find(|(held, _)| *held == l) {
            task.abort();
        }
    }

    async fn pause(&mut self, lo: u64, hi: u64) {
        let ms = self.rng.range(lo, hi);
        lock(&self.model).note(format!("{ms} ms pass"));
        self.paused += Duration::from_millis(ms);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// The next fault in turn, with up to two requests in flight at it.
    async fn fault(&mut self) {
        if let Some((down, _)) = self.down.take() {
            self.deploy.bring_back(down).await;
        }
        let backend = self.deploy.backend;
        let kind = backend.faults()[self.faults % backend.faults().len()];
        self.faults += 1;
        let n = self.rng.range(0, self.deploy.node_count() as u64) as usize;
        let mut in_flight = JoinSet::new();
        for _ in 0..self.rng.range(0, 3) {
            let cmds = self.commands(true);
            let via = match kind {
                Fault::KillNode | Fault::StopNode => self.deploy.node(n).expect("up"),
                Fault::KillRedis => self.via(),
            };
            in_flight.spawn(post(self.model.clone(), via, cmds));
        }
        let count = in_flight.len();
        // Ingest takes about a millisecond on a local store, more on Redis.
        tokio::time::sleep(Duration::from_micros(self.rng.range(0, 5000))).await;
        let at = Instant::now();
        let down = match kind {
            Fault::KillNode => {
                self.deploy.signal_node(n, libc::SIGKILL);
                Down::Node(n)
            }
            Fault::StopNode => {
                self.deploy.signal_node(n, libc::SIGTERM);
                Down::Node(n)
            }
            Fault::KillRedis => {
                let r = self.rng.range(0, self.deploy.redis_count() as u64) as usize;
                self.deploy.kill_redis(r).await;
                Down::Redis(r)
            }
        };
        join_all(&mut in_flight, "requests in flight at a fault").await;
        {
            let mut m = lock(&self.model);
            m.tally.in_flight_at_faults += count;
            m.count_fault(&format!("{kind:?}"));
            if matches!(down, Down::Node(_)) && self.deploy.node_count() == 1 {
                m.restarted(at);
            }
        }
        if self.deploy.node_count() == 1 {
            // One node: nothing serves until it is back; its held polls
            // must have ended before its store is opened again.
            self.end_held().await;
            self.deploy.bring_back(down).await;
        } else {
            self.down = Some((down, self.rng.range(0, 8) as usize));
        }
    }

    /// Forgets the held polls that ended, re-raising a failed check.
    async fn reap_held(&mut self) {
        let (ended, held): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|(_, task)| task.is_finished());
        self.held = held;
        for (_, task) in ended {
            if let Err(e) = task.await {
                if e.is_panic() {
                    std::panic::resume_unwind(e.into_panic());
                }
            }
        }
    }

    /// Waits for every held poll to end (they are 2 s at most).
    async fn end_held(&mut self) {
        for (_, task) in self.held.drain(..) {
            let ended = tokio::time::timeout(Duration::from_secs(60), task).await;
            match ended {
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(_) => {}
                Err(_) => panic!("a held poll did not end within 60 s"),
            }
        }
    }

    /// Everything back up; every browser reads to the end of its mailbox
    /// (each empty reply is a completeness check).
    async fn finish(&mut self) {
        self.end_held().await;
        if let Some((down, _)) = self.down.take() {
            self.deploy.bring_back(down).await;
        }
        let browsers = lock(&self.model).idle_lineages();
        for l in browsers {
            for _ in 0..50 {
                let before = lock(&self.model).tally.empty_checks;
                self.poll_now(l, None).await;
                if lock(&self.model).tally.empty_checks > before {
                    break;
                }
            }
        }
    }
}

/// Awaits every task of `set`, re-raising a panic.
async fn join_all(set: &mut JoinSet<()>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Some(ended) = tokio::time::timeout_at(deadline.into(), set.join_next())
        .await
        .unwrap_or_else(|_| panic!("{what}: not ended within 60 s"))
    {
        if let Err(e) = ended {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

/// Sends one ingest request and records what came of it.
async fn post(model: Shared, via: Arc<Server>, cmds: Vec<Cmd>) {
    let (b, xml) = {
        let mut m = lock(&model);
        let (b, numbers) = m.begin_batch(&cmds, Instant::now());
        (b, xml(&m, &cmds, &numbers))
    };
    let reply = via.post(&xml).await;
    let now = Instant::now();
    let ok = format!(r#"<ok accepted="{}"/>"#, cmds.len());
    let outcome = match &reply {
        Ok((200, body)) if *body == ok => Outcome::Ok,
        Ok((503, body)) => applied_list(body).map_or(Outcome::Unknown, Outcome::Partly),
        Err(_) => Outcome::Unknown,
        Ok(_) => {
            let label = lock(&model).label().to_owned();
            panic!("{label}: ingest answered {reply:?} to {xml}")
        }
    };
    lock(&model).batch_done(b, outcome, now);
}

/// The `applied="1 4 7"` of a `503 partly-applied` reply.
fn applied_list(body: &str) -> Option<Vec<usize>> {
    if !body.contains(r#"code="partly-applied""#) {
        return None;
    }
    let list = body.split(r#"applied=""#).nth(1)?.split('"').next()?;
    Some(
        list.split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect(),
    )
}

/// The XML of one request; message `s` carries `{"s": s}`.
fn xml(model: &Model, cmds: &[Cmd], numbers: &[Option<u64>]) -> String {
    let mut xml = String::new();
    for (cmd, s) in cmds.iter().zip(numbers) {
        let message = |to: String| {
            let s = s.expect("a message's number");
            let event = model
                .event_of(s)
                .map(|e| format!(r#" event="{e}""#))
                .unwrap_or_default();
            format!(r#"<message {to}{event}>{{"s":{s}}}</message>"#)
        };
        xml += &match *cmd {
            Cmd::To(c) => message(format!(r#"to="{}""#, client(c))),
            Cmd::Channel(ch) => message(format!(r#"channel="{}""#, channel(ch))),
            Cmd::Subscribe(c, ch) => format!(
                r#"<subscribe client="{}" channel="{}"/>"#,
                client(c),
                channel(ch)
            ),
            Cmd::Unsubscribe(c, ch) => format!(
                r#"<unsubscribe client="{}" channel="{}"/>"#,
                client(c),
                channel(ch)
            ),
            Cmd::Disconnect(c) => format!(r#"<disconnect client="{}"/>"#, client(c)),
        };
    }
    if cmds.len() > 1 {
        xml = format!("<batch>{xml}</batch>");
    }
    xml
}

/// One poll of lineage `l` from its cursor, recorded in the model.
async fn poll(
    model: Shared,
    via: Arc<Server>,
    token: String,
    l: usize,
    join: Option<usize>,
    timeout: u64,
) {
    let (query, sent) = {
        let mut m = lock(&model);
        let sent = Instant::now();
        m.poll_sent(l, join, sent);
        let mut query = format!("timeout={timeout}");
        if let Some(cursor) = &m.lineages[l].cursor {
            query += &format!("&since={cursor}");
        }
        if let Some(ch) = join {
            query += &format!("&channels={}", channel(ch));
        }
        (query, sent)
    };
    let reply = via.poll(&token, &query).await;
    let answered = Instant::now();
    let mut m = lock(&model);
    match reply {
        Ok((200, body)) => m.poll_answered(l, join, sent, answered, &body),
        // The store is down (503), or polls held on a killed node still
        // count (429), or the node is gone.
        Ok((503 | 429, _)) | Err(_) => m.poll_failed(l),
        Ok((status, body)) => {
            let label = m.label().to_owned();
            panic!("{label}: poll ?{query} answered {status}: {body}")
        }
    }
}
