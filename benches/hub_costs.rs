//! Micro-benchmarks of the hub's CPU-bound steps, in-process (no HTTP):
//!
//! - `parse`: the ingest reader on a 10,000-command batch (1.2 MB);
//!   target: under 20 ms.
//! - `sweep`: the idle reaper and `/stats` over 1,000,000 clients, and the
//!   longest a delivery to an existing client waits while a sweep runs (the
//!   sweep must not hold a shard's write lock for its whole scan).
//!
//! - `fanout`: one channel message to 10,000 members, with no wildcard
//!   subscription anywhere, with 1,000 clients holding patterns that do not
//!   match, and with the 10,000 members subscribed through `/chat/*`: the
//!   exact path must cost what it did before wildcards existed.
//!
//! `cargo bench --bench hub_costs` runs all; `-- parse`, `-- sweep` or
//! `-- fanout` one.
//! Figures are printed, not asserted: timing targets live here, not in tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cometbox::hub::{Hub, HubLimits};
use cometbox::protocol::ingest::{parse, ParseLimits};
use cometbox::store::memory::MemoryStore;
use cometbox::store::Retention;

/// The server's allocator, so allocation costs are the server's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

const PARSE_LIMITS: ParseLimits = ParseLimits {
    max_payload_bytes: 65_536,
    max_commands: 100_000,
};

fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    if wants("parse") {
        bench_parse();
    }
    if wants("sweep") {
        bench_sweep(1_000_000);
    }
    if wants("fanout") {
        bench_fanout(10_000);
    }
}

/// A channel message to `members` clients, under three membership layouts.
fn bench_fanout(members: usize) {
    let subscribe = |hub: &Hub, prefix: &str, n: usize, channel: &str| {
        for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
            let body: String = chunk
                .iter()
                .map(|i| format!("<subscribe client=\"{prefix}{i}\" channel=\"{channel}\"/>"))
                .collect();
            apply(
                hub,
                parse(format!("<batch>{body}</batch>").as_bytes(), PARSE_LIMITS).unwrap(),
            );
        }
    };
    type Layout<'a> = (&'a str, &'a dyn Fn(&Hub));
    let layouts: [Layout; 3] = [
        ("exact members, no pattern anywhere", &|hub| {
            subscribe(hub, "m", members, "/chat/demo")
        }),
        ("exact members, 1,000 unrelated patterns", &|hub| {
            subscribe(hub, "m", members, "/chat/demo");
            subscribe(hub, "p", 1_000, "/news/**");
        }),
        ("members through /chat/*", &|hub| {
            subscribe(hub, "m", members, "/chat/*")
        }),
    ];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for (name, layout) in layouts {
        let hub = hub(Duration::from_secs(3600));
        layout(&hub);
        let message = parse(
            br#"<message channel="/chat/demo">{"n":1}</message>"#,
            PARSE_LIMITS,
        )
        .unwrap();
        // Warm up: the first messages allocate every mailbox's log.
        for _ in 0..20 {
            runtime.block_on(hub.apply(message.clone())).unwrap();
        }
        let samples: Vec<Duration> = (0..201)
            .map(|_| {
                let started = Instant::now();
                runtime.block_on(hub.apply(message.clone())).unwrap();
                started.elapsed()
            })
            .collect();
        println!(
            "fanout: {members} members, {name}: median {:.2} ms per message over {} runs",
            median(samples.clone()).as_secs_f64() * 1e3,
            samples.len()
        );
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn bench_parse() {
    let commands = 10_000;
    let mut body = String::from("<batch>\n");
    for i in 0..commands {
        body.push_str(&format!(
            "<message to=\"user:{i}\" event=\"notice\">{{\"text\": \"hello number {i}\", \"n\": {i}}}</message>\n"
        ));
    }
    body.push_str("</batch>\n");
    let samples: Vec<Duration> = (0..21)
        .map(|_| {
            let started = Instant::now();
            let parsed = parse(body.as_bytes(), PARSE_LIMITS).expect("the batch is valid");
            assert_eq!(parsed.len(), commands);
            started.elapsed()
        })
        .collect();
    println!(
        "parse: {commands} commands, {:.2} MB: median {:.2} ms over {} runs (target < 20 ms)",
        body.len() as f64 / 1e6,
        median(samples.clone()).as_secs_f64() * 1e3,
        samples.len()
    );
}

fn hub(idle: Duration) -> Hub {
    Hub::new(
        Arc::new(MemoryStore::new(Retention { max_messages: 100 })),
        HubLimits {
            poll_timeout: Duration::from_secs(25),
            max_poll_timeout: Duration::from_secs(60),
            client_idle_timeout: idle,
            message_ttl: Duration::from_secs(300),
            max_polls_per_client: 16,
            max_clients: 2_000_000,
            max_channels_per_client: 256,
            max_reply_bytes: 1 << 20,
        },
    )
}

/// Applies a batch (the memory hub never waits, but `apply` is async).
fn apply(hub: &Hub, commands: Vec<cometbox::protocol::Command>) {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(hub.apply(commands))
        .unwrap();
}

/// Gives `hub` `n` clients, each with one queued message.
fn fill(hub: &Hub, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let body: String = chunk
            .iter()
            .map(|i| format!("<message to=\"c{i}\">1</message>"))
            .collect();
        let commands = parse(format!("<batch>{body}</batch>").as_bytes(), PARSE_LIMITS).unwrap();
        apply(hub, commands);
    }
}

/// Runs `sweep` on this thread while another delivers to existing clients
/// in a loop; returns the sweep's duration and the longest delivery.
fn while_delivering(hub: &Hub, n: usize, sweep: impl FnOnce()) -> (Duration, Duration, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let deliverer = std::thread::spawn({
        let (hub, stop) = (hub.clone(), stop.clone());
        move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let mut worst = Duration::ZERO;
            let mut count = 0;
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let xml = format!("<message to=\"c{}\">2</message>", i % n);
                let commands = parse(xml.as_bytes(), PARSE_LIMITS).unwrap();
                let started = Instant::now();
                runtime.block_on(hub.apply(commands)).unwrap();
                worst = worst.max(started.elapsed());
                count += 1;
                i = i.wrapping_add(7919);
            }
            (worst, count)
        }
    });
    std::thread::sleep(Duration::from_millis(50)); // let it get going
    let started = Instant::now();
    sweep();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(20));
    stop.store(true, Ordering::Relaxed);
    let (worst, count) = deliverer.join().unwrap();
    (took, worst, count)
}

/// The hub's local backend (the benches run on the memory store).
fn local(hub: &Hub) -> &cometbox::backend::local::LocalBackend {
    hub.local_backend().expect("the memory store's backend")
}

fn bench_sweep(n: usize) {
    let hub = hub(Duration::from_secs(3600));
    let started = Instant::now();
    fill(&hub, n);
    println!(
        "sweep: {n} clients created in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    for round in 1..=3 {
        let (took, worst, count) = while_delivering(&hub, n, || {
            assert_eq!(local(&hub).reap(Instant::now()), 0);
        });
        println!(
            "sweep {round}: nothing idle: {:.1} ms; {count} deliveries meanwhile, longest {:.2} ms",
            took.as_secs_f64() * 1e3,
            worst.as_secs_f64() * 1e3
        );
    }
    let (took, worst, count) = while_delivering(&hub, n, || {
        let stats = local(&hub).figures_now();
        assert_eq!(stats.clients, n);
    });
    println!(
        "stats: {:.1} ms; {count} deliveries meanwhile, longest {:.2} ms",
        took.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    let later = Instant::now() + Duration::from_secs(7200);
    let started = Instant::now();
    let evicted = local(&hub).reap(later);
    println!(
        "sweep: all {evicted} idle and forgotten in {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
}
