//! The scenarios, each one run against one freshly started server:
//!
//! - `hold N`: N clients each hold one waiting poll; server memory per poll
//!   and the time until the server holds them all.
//! - `fanout N K`: N subscribers of one channel; K messages, each published
//!   once every subscriber got the previous one and polls again; delivery
//!   latency from the publish request's send time.
//! - `throughput N SECONDS`: N clients polling their own mailbox (resuming
//!   from their cursor); publishers send to random clients as fast as they
//!   are accepted, one message or a `<batch>` per request; delivered rate,
//!   end-to-end latency, server CPU per message, and every message lost or
//!   duplicated, by per-client sequence number.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::client::Client;
use crate::report::{median, quantile, Better, Histogram, Outcome};
use crate::servers::{Server, ServerOptions};
use crate::wire::{self, now_us, Endpoint, Kind, Payload, Published, FAN_CHANNEL};
use crate::worker::Workers;

/// Knobs shared by every scenario.
#[derive(Clone, Debug)]
pub struct Settings {
    pub servers: ServerOptions,
    /// Subscribers per worker process (each holds one socket per client).
    pub per_worker: u32,
    /// Connections being opened at once, over all workers.
    pub connect_concurrency: usize,
    /// Concurrent publisher connections (throughput).
    pub publishers: usize,
    /// Messages per request in batch mode (throughput).
    pub batch: usize,
    /// Throughput: requests per second over all publishers, each paced on
    /// a fixed schedule (open loop), so two servers can be compared at the
    /// same load; `None`: as fast as accepted.
    pub rate: Option<f64>,
    /// How subscribers of `hold` and `fanout` listen.
    pub transport: crate::wire::Transport,
}

/// What to run.
#[derive(Clone, Debug)]
pub enum Scenario {
    Hold { n: u32 },
    Fanout { n: u32, k: u32 },
    Throughput { n: u32, seconds: u64, batch: bool },
}

/// Worker processes exit by themselves after this long.
const WORKER_LIFETIME_S: u64 = 1200;

impl Scenario {
    /// The name in reports.
    pub fn title(&self, settings: &Settings) -> String {
        match self {
            Scenario::Hold { n } => format!("hold {n}"),
            Scenario::Fanout { n, k } => format!("fanout {n} {k}"),
            Scenario::Throughput { n, seconds, batch } => {
                if *batch {
                    format!("throughput {n} {seconds} (batch of {})", settings.batch)
                } else {
                    format!("throughput {n} {seconds} (one message per request)")
                }
            }
        }
    }

    /// Why `kind` cannot run this, if it cannot.
    pub fn unsupported(&self, kind: Kind, transport: crate::wire::Transport) -> Option<String> {
        match (self, kind) {
            (Scenario::Throughput { batch: true, .. }, Kind::Nchan) => {
                Some("Nchan has no batch publish (one message per POST)".into())
            }
            (Scenario::Hold { .. } | Scenario::Fanout { .. }, Kind::Nchan)
                if transport == crate::wire::Transport::Bayeux =>
            {
                Some("Nchan speaks no Bayeux".into())
            }
            _ => None,
        }
    }

    /// Starts a server, runs, stops it. Failures become problems.
    pub async fn run(&self, kind: Kind, settings: &Settings) -> Outcome {
        let mut outcome = Outcome::default();
        let server = match Server::start(kind, &settings.servers).await {
            Ok(server) => server,
            Err(e) => {
                outcome.problem(format!("{} did not start: {e:#}", kind.name()));
                return outcome;
            }
        };
        let result = match self {
            Scenario::Hold { n } => hold(&server, *n, settings, &mut outcome).await,
            Scenario::Fanout { n, k } => fanout(&server, *n, *k, settings, &mut outcome).await,
            Scenario::Throughput { n, seconds, batch } => {
                let batch = if *batch { settings.batch.max(1) } else { 1 };
                throughput(&server, *n, *seconds, batch, settings, &mut outcome).await
            }
        };
        if let Err(e) = result {
            outcome.problem(format!("{e:#}"));
        }
        if let Err(e) = server.stop().await {
            outcome.problem(format!("stopping {}: {e:#}", kind.name()));
        }
        outcome
    }
}

const MB: f64 = 1024.0 * 1024.0;

async fn start_workers(
    server: &Server,
    n: u32,
    channel: Option<&str>,
    settings: &Settings,
) -> Result<Workers> {
    Workers::spawn(
        &server.endpoint,
        n,
        channel,
        settings.per_worker,
        settings.connect_concurrency,
        WORKER_LIFETIME_S,
        settings.transport,
    )
    .await
}

/// Waits until every worker has sent its polls and the server holds all `n`.
async fn wait_all_held(
    workers: &mut Workers,
    endpoint: &Endpoint,
    n: u32,
    within: Duration,
    outcome: &mut Outcome,
) -> Result<()> {
    let (_, failed) = workers.wait_sent(Duration::from_secs(120)).await?;
    if failed > 0 {
        outcome.problem(format!("{failed} of {n} polls could not be sent"));
    }
    endpoint
        .wait_held(u64::from(n), within)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// Adds the workers' subscriber errors to the outcome.
fn worker_errors(outcome: &mut Outcome, reports: &[crate::worker::WorkerReport]) -> u64 {
    let reconnects: u64 = reports.iter().map(|r| r.reconnects).sum();
    if reconnects > 0 {
        eprintln!(
            "  subscribers reconnected {reconnects} times (server closed kept-alive connections)"
        );
    }
    let errors: u64 = reports.iter().map(|r| r.errors).sum();
    if errors > 0 {
        let samples: Vec<&String> = reports
            .iter()
            .flat_map(|r| &r.error_samples)
            .take(3)
            .collect();
        outcome.problem(format!("{errors} subscriber errors, e.g. {samples:?}"));
    }
    errors
}

// ---- hold ----------------------------------------------------------------

async fn hold(server: &Server, n: u32, settings: &Settings, outcome: &mut Outcome) -> Result<()> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss();
    let mut workers = start_workers(server, n, None, settings).await?;
    let start = Instant::now();
    workers.go().await?;
    let result = async {
        wait_all_held(
            &mut workers,
            &server.endpoint,
            n,
            Duration::from_secs(40),
            outcome,
        )
        .await?;
        let established = start.elapsed();
        // Let allocations settle before reading memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_held = server.rss();
        let tool_rss = workers.rss();
        let reports = workers.reports().await?;
        let errors = worker_errors(outcome, &reports);
        let per_poll = (rss_held as f64 - rss_before as f64) / f64::from(n.max(1));
        outcome.push("held polls", "count", f64::from(n), Better::Neither);
        outcome.push(
            "server RSS before",
            "MB",
            rss_before as f64 / MB,
            Better::Lower,
        );
        outcome.push(
            "server RSS holding",
            "MB",
            rss_held as f64 / MB,
            Better::Lower,
        );
        outcome.push("RSS per held poll", "KB", per_poll / 1024.0, Better::Lower);
        outcome.push(
            "time to hold all",
            "s",
            established.as_secs_f64(),
            Better::Lower,
        );
        outcome.push("subscriber errors", "count", errors as f64, Better::Lower);
        // The tool's own side, to see that it is not the bottleneck.
        outcome.push(
            "load tool RSS (workers)",
            "MB",
            tool_rss as f64 / MB,
            Better::Neither,
        );
        Ok(())
    }
    .await;
    workers.stop().await;
    result
}

// ---- fan-out -------------------------------------------------------------

async fn fanout(
    server: &Server,
    n: u32,
    k: u32,
    settings: &Settings,
    outcome: &mut Outcome,
) -> Result<()> {
    let endpoint = &server.endpoint;
    let mut publisher = Client::new(endpoint.publish_addr());
    // No subscribing step: every subscriber names the channel on each of its
    // polls (cometbox `channels=`, as client-js does; Nchan `/sub/fan`), so
    // once all n polls are held, all n are subscribed.
    let mut workers = start_workers(server, n, Some(FAN_CHANNEL), settings).await?;
    workers.go().await?;
    let result = async {
        wait_all_held(&mut workers, endpoint, n, Duration::from_secs(60), outcome).await?;
        publisher.connect().await?;
        let cpu_start = server.cpu();
        let mut per_message = Vec::new();
        let (mut firsts, mut medians, mut p99s, mut lasts, mut publish_ms) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut missing_total = 0;
        for m in 1..=k {
            let t = now_us();
            let payload = Payload { k: m, t, ..Payload::default() };
            let sent = Instant::now();
            let reply = publisher
                .request(&wire::publish_to_channel(endpoint.kind, FAN_CHANNEL, &payload))
                .await?;
            publish_ms.push(sent.elapsed().as_secs_f64() * 1000.0);
            if let Published::Failed(e) | Published::Retry(e) = wire::published(endpoint.kind, &reply) {
                bail!("message {m}: {e}");
            }
            let (mut lats, missing) = workers.wait_fan(m, Duration::from_secs(30)).await?;
            missing_total += missing;
            lats.sort_unstable();
            let ms = |us: u64| us as f64 / 1000.0;
            let stats = (
                ms(quantile(&lats, 0.0)),
                ms(quantile(&lats, 0.5)),
                ms(quantile(&lats, 0.99)),
                ms(quantile(&lats, 1.0)),
            );
            eprintln!(
                "  message {m}: {} delivered, first {:.1} ms, median {:.1} ms, p99 {:.1} ms, last {:.1} ms",
                lats.len(),
                stats.0,
                stats.1,
                stats.2,
                stats.3
            );
            per_message.push(serde_json::json!({
                "k": m, "delivered": lats.len(), "missing": missing,
                "first_ms": stats.0, "median_ms": stats.1, "p99_ms": stats.2, "last_ms": stats.3,
            }));
            firsts.push(stats.0);
            medians.push(stats.1);
            p99s.push(stats.2);
            lasts.push(stats.3);
            if missing > 0 {
                outcome.problem(format!("message {m} did not reach {missing} of {n} subscribers"));
                break;
            }
            // Every subscriber polls again before the next message.
            endpoint
                .wait_held(u64::from(n), Duration::from_secs(30))
                .await
                .map_err(anyhow::Error::msg)?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let cpu = server.cpu() - cpu_start;
        let reports = workers.reports().await?;
        let errors = worker_errors(outcome, &reports);
        let duplicates: u64 = reports.iter().map(|r| r.duplicates).sum();
        outcome.push("subscribers", "count", f64::from(n), Better::Neither);
        outcome.push("delivery first", "ms", median(&mut firsts), Better::Lower);
        outcome.push("delivery median", "ms", median(&mut medians), Better::Lower);
        outcome.push("delivery p99", "ms", median(&mut p99s), Better::Lower);
        outcome.push("delivery last", "ms", median(&mut lasts), Better::Lower);
        outcome.push("publish request", "ms", median(&mut publish_ms), Better::Lower);
        outcome.push(
            "server CPU per message+repolls",
            "ms",
            cpu * 1000.0 / f64::from(k.max(1)),
            Better::Lower,
        );
        outcome.push("server RSS", "MB", server.rss() as f64 / MB, Better::Lower);
        outcome.push("missing deliveries", "count", f64::from(missing_total), Better::Lower);
        outcome.push("duplicates", "count", duplicates as f64, Better::Lower);
        outcome.push("subscriber errors", "count", errors as f64, Better::Lower);
        outcome.detail = serde_json::json!({ "messages": per_message });
        Ok(())
    }
    .await;
    workers.stop().await;
    result
}

// ---- throughput ----------------------------------------------------------

/// What one publisher connection did.
#[derive(Default)]
struct PublisherTally {
    /// (client, messages accepted for it: sequence numbers 1..=count).
    sent: Vec<(u32, u64)>,
    requests: u64,
    retries: u64,
    error: Option<String>,
}

/// A small deterministic generator (xorshift64*): publishers need cheap
/// uniform picks, not cryptography.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Publisher `p` of `count`: owns clients `p, p + count, ...`, so each
/// client's sequence numbers come from one connection, in order; sends
/// `batch` messages to random owned clients per request until `until`;
/// with `every`, one request per `every` on a fixed schedule (a late one
/// goes at once, and the schedule does not slip).
async fn publisher(
    p: usize,
    count: usize,
    n: u32,
    endpoint: wire::Endpoint,
    batch: usize,
    until: Instant,
    every: Option<Duration>,
) -> PublisherTally {
    let owned: Vec<u32> = (p as u32..n).step_by(count).collect();
    let mut tally = PublisherTally::default();
    if owned.is_empty() {
        return tally;
    }
    let mut seq = vec![0u64; owned.len()];
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (p as u64 + 1));
    let mut client = Client::new(endpoint.publish_addr_for(p));
    let mut picks = Vec::with_capacity(batch);
    let mut payloads = Vec::with_capacity(batch);
    // When the next request is due, and the interval; publishers start
    // staggered over one interval, not all at once.
    let mut pace = every.map(|e| (Instant::now() + e.mul_f64(p as f64 / count as f64), e));
    'requests: while Instant::now() < until {
        if let Some((due, e)) = &mut pace {
            tokio::time::sleep_until((*due).into()).await;
            *due += *e;
        }
        picks.clear();
        payloads.clear();
        let t = now_us();
        for _ in 0..batch {
            let j = rng.below(owned.len());
            seq[j] += 1;
            picks.push(j);
            payloads.push(Payload {
                c: owned[j],
                s: seq[j],
                k: 0,
                t,
            });
        }
        let request = wire::publish_to_clients(endpoint.kind, &payloads);
        for attempt in 0.. {
            let reply =
                tokio::time::timeout(Duration::from_secs(10), client.request(&request)).await;
            let outcome = match reply {
                Ok(Ok(reply)) => wire::published(endpoint.kind, &reply),
                Ok(Err(e)) => Published::Failed(format!("publish: {e}")),
                Err(_) => Published::Failed("publish: no reply within 10 s".into()),
            };
            match outcome {
                Published::Ok => break,
                Published::Retry(e) => {
                    if Instant::now() >= until || attempt >= 1000 {
                        // Not accepted: take the numbers back. Running out
                        // of window while the server is busy is no error.
                        for &j in &picks {
                            seq[j] -= 1;
                        }
                        if attempt >= 1000 {
                            tally.error = Some(format!("{e} (after 1000 retries)"));
                        }
                        break 'requests;
                    }
                    tally.retries += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Published::Failed(e) => {
                    // Not accepted as far as we know: take the numbers back.
                    for &j in &picks {
                        seq[j] -= 1;
                    }
                    tally.error = Some(e);
                    break 'requests;
                }
            }
        }
        tally.requests += 1;
    }
    tally.sent = owned.into_iter().zip(seq).collect();
    tally
}

async fn throughput(
    server: &Server,
    n: u32,
    seconds: u64,
    batch: usize,
    settings: &Settings,
    outcome: &mut Outcome,
) -> Result<()> {
    let endpoint = server.endpoint.clone();
    let mut workers = start_workers(server, n, None, settings).await?;
    workers.go().await?;
    let result = async {
        wait_all_held(&mut workers, &endpoint, n, Duration::from_secs(60), outcome).await?;

        let cpu_start = server.cpu();
        let t0_us = now_us();
        let start = Instant::now();
        let until = start + Duration::from_secs(seconds);
        let count = settings.publishers.max(1);
        let every = settings.rate.map(|r| Duration::from_secs_f64(count as f64 / r));
        let tasks: Vec<_> = (0..count)
            .map(|p| tokio::spawn(publisher(p, count, n, endpoint.clone(), batch, until, every)))
            .collect();
        let mut sent = vec![0u64; n as usize];
        let (mut requests, mut retries) = (0, 0);
        for task in tasks {
            let tally = task.await.context("a publisher panicked")?;
            for (c, s) in tally.sent {
                sent[c as usize] = s;
            }
            requests += tally.requests;
            retries += tally.retries;
            if let Some(e) = tally.error {
                outcome.problem(format!("publisher: {e}"));
            }
        }
        let publish_secs = start.elapsed().as_secs_f64();
        let total_sent: u64 = sent.iter().sum();

        // Drain: wait until everything accepted has arrived (or 20 s).
        let drain_start = Instant::now();
        let mut received = 0;
        while drain_start.elapsed() < Duration::from_secs(20) {
            received = workers.progress().await?;
            if received >= total_sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cpu = server.cpu() - cpu_start;
        let reports = workers.reports().await?;
        let errors = worker_errors(outcome, &reports);

        let mut latency = Histogram::default();
        let (mut duplicates, mut resets, mut misrouted, mut lost, mut last_us) = (0, 0, 0, 0, t0_us);
        let mut delivered = 0u64;
        for r in &reports {
            latency.merge(&r.latency);
            duplicates += r.duplicates;
            resets += r.resets;
            misrouted += r.misrouted;
            last_us = last_us.max(r.last_recv_us);
            for (i, &got) in r.distinct.iter().enumerate() {
                let c = r.first as usize + i;
                delivered += got;
                lost += sent[c].saturating_sub(got);
            }
        }
        let delivery_secs = ((last_us - t0_us) as f64 / 1e6).max(publish_secs.min(1e-3));
        eprintln!(
            "  sent {total_sent} in {requests} requests ({retries} retried) over {publish_secs:.1} s; \
             delivered {delivered} (drained in {:.2} s, {received} by then); lost {lost}, duplicates {duplicates}",
            drain_start.elapsed().as_secs_f64()
        );
        if lost > 0 {
            outcome.problem(format!("{lost} of {total_sent} messages lost"));
        }
        if misrouted > 0 {
            outcome.problem(format!("{misrouted} messages reached the wrong client"));
        }
        if resets > 0 {
            outcome.problem(format!("{resets} poll replies said reset"));
        }
        let ms = |us: u64| us as f64 / 1000.0;
        outcome.push("clients", "count", f64::from(n), Better::Neither);
        outcome.push("messages per request", "count", batch as f64, Better::Neither);
        outcome.push("published", "msgs/s", total_sent as f64 / publish_secs, Better::Higher);
        outcome.push("delivered", "msgs/s", delivered as f64 / delivery_secs, Better::Higher);
        outcome.push("latency p50", "ms", ms(latency.quantile(0.5)), Better::Lower);
        outcome.push("latency p99", "ms", ms(latency.quantile(0.99)), Better::Lower);
        outcome.push("latency max", "ms", ms(latency.max), Better::Lower);
        outcome.push(
            "server CPU per 1000 delivered",
            "CPU-s",
            if delivered > 0 { cpu * 1000.0 / delivered as f64 } else { f64::NAN },
            Better::Lower,
        );
        outcome.push("server RSS at end", "MB", server.rss() as f64 / MB, Better::Lower);
        outcome.push("lost", "count", lost as f64, Better::Lower);
        outcome.push("duplicates", "count", duplicates as f64, Better::Lower);
        outcome.push("subscriber errors", "count", errors as f64, Better::Lower);
        outcome.detail = serde_json::json!({
            "sent": total_sent, "delivered": delivered, "requests": requests,
            "retries": retries, "publish_s": publish_secs, "delivery_s": delivery_secs,
            "server_cpu_s": cpu, "resets": resets, "misrouted": misrouted,
        });
        Ok(())
    }
    .await;
    workers.stop().await;
    result
}
