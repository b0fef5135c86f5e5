//! Subscribers run in worker processes: the bench binary re-executed with
//! the hidden `__worker` subcommand, one per ~9,000 clients, so no process
//! of the tool needs more sockets than its open-file limit allows. The
//! parent and a worker talk in JSON lines: a [`WorkerSpec`] then
//! [`Command`]s on the worker's stdin, [`Event`]s on its stdout.
//!
//! Each subscriber is one task with one keep-alive connection, polling as a
//! browser would and resuming from its cursor. The worker's main loop
//! collects what they receive: per fan-out message the latencies, per
//! client the distinct sequence numbers (a bitset, so duplicates and gaps
//! are exact), a latency histogram.

use std::collections::HashMap;
use std::io::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, Semaphore};

use crate::client::Client;
use crate::report::Histogram;
use crate::wire::{client_id, now_us, Endpoint, Kind, Payload, Subscriber, POLL_TIMEOUT};

/// What one worker runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub endpoint: Endpoint,
    /// Its clients are `first .. first + count`.
    pub first: u32,
    pub count: u32,
    /// The channel all its subscribers share (fan-out): Nchan subscribers
    /// poll it; cometbox clients poll their own mailbox and name it in
    /// `channels=` on every poll, with a token that grants it.
    pub channel: Option<String>,
    /// Connections being opened at once.
    pub connect_concurrency: usize,
    /// The worker exits by itself after this long, whatever happens.
    pub max_seconds: u64,
    /// How the subscribers listen.
    #[serde(default)]
    pub transport: crate::wire::Transport,
}

/// Parent to worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Command {
    /// Open every subscriber's connection and send its first poll.
    Go,
    /// Report fan-out message `k` now, with whatever arrived.
    Flush { k: u32 },
    /// How many distinct throughput messages have arrived.
    Progress,
    /// The final [`WorkerReport`].
    Report,
    /// Exit.
    Stop,
}

/// Worker to parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "lowercase")]
pub enum Event {
    /// Subscribers prepared (tokens minted); waiting for `go`.
    Ready,
    /// Every subscriber has sent its first poll (or failed to).
    Sent {
        ok: u32,
        failed: u32,
        ms: f64,
    },
    /// Fan-out message `k` reached every subscriber of this worker (or a
    /// `flush` asked): delivery latencies in µs, and how many never got it.
    Fan {
        k: u32,
        lat_us: Vec<u64>,
        missing: u32,
    },
    Progress {
        received: u64,
    },
    Report(WorkerReport),
}

/// What a worker saw, at the end.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub first: u32,
    /// Per client, distinct throughput sequence numbers received.
    pub distinct: Vec<u64>,
    pub duplicates: u64,
    /// Replies with `"reset": true`.
    pub resets: u64,
    /// Messages addressed to another client than the one that got them.
    pub misrouted: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Connections opened after a subscriber's first (the server closed a
    /// kept-alive one, or an error).
    pub reconnects: u64,
    /// End-to-end latency of throughput messages, µs.
    pub latency: Histogram,
    /// When the last throughput message arrived (µs since the epoch).
    pub last_recv_us: u64,
}

/// What subscriber tasks tell the worker's main loop.
pub enum Note {
    Sent {
        ok: bool,
    },
    Got {
        idx: u32,
        payloads: Vec<Payload>,
        reset: bool,
        at_us: u64,
    },
    Error(String),
    Reconnected,
}

// ---- the worker process --------------------------------------------------

fn emit(event: &Event) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer(&mut out, event);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// The `__worker` subcommand: runs until `stop`, stdin closing, or
/// `max_seconds`.
pub async fn run_worker() -> Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let spec: WorkerSpec = serde_json::from_str(
        &stdin
            .next_line()
            .await?
            .ok_or_else(|| anyhow!("worker: no spec on stdin"))?,
    )?;
    let hard_stop = Instant::now() + Duration::from_secs(spec.max_seconds);
    let endpoint = Arc::new(spec.endpoint.clone());
    let tokens = cometbox::auth::Tokens::new(endpoint.secret.as_bytes());
    let mut stream_paths = Vec::new();
    let mut bayeux_tokens = Vec::new();
    let mut ws_paths = Vec::new();
    let subscribers: Vec<Subscriber> = (spec.first..spec.first + spec.count)
        .map(|i| {
            let token = (endpoint.kind == Kind::Cometbox).then(|| {
                let id = cometbox::protocol::ClientId::parse(&client_id(i)).expect("valid id");
                // As a backend would: the token grants the channel the page
                // names on its polls.
                let grants = spec.channel.iter().cloned().collect();
                tokens.mint(&id, Duration::from_secs(3600), grants).0
            });
            match spec.transport {
                // `hold` (no channel): the stream of the client's own
                // mailbox, as its held poll would be (a channel its token
                // does not grant would be refused).
                crate::wire::Transport::Sse => stream_paths.push(crate::sse::path(
                    endpoint.kind,
                    token.as_deref(),
                    i,
                    spec.channel.as_deref(),
                )),
                crate::wire::Transport::Bayeux => bayeux_tokens.push(token.clone()),
                crate::wire::Transport::Ws => ws_paths.push(crate::ws::path(
                    endpoint.kind,
                    token.as_deref(),
                    i,
                    spec.channel.as_deref(),
                )),
                crate::wire::Transport::Poll => {}
            }
            Subscriber::new(&endpoint, token.as_deref(), i, spec.channel.as_deref())
        })
        .collect();
    emit(&Event::Ready);

    // Wait for `go`.
    loop {
        let line = tokio::time::timeout_at(hard_stop.into(), stdin.next_line())
            .await
            .map_err(|_| anyhow!("worker: no go before the deadline"))??
            .ok_or_else(|| anyhow!("worker: stdin closed before go"))?;
        match serde_json::from_str::<Command>(&line)? {
            Command::Go => break,
            Command::Stop => return Ok(()),
            _ => {}
        }
    }

    let go = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let connecting = Arc::new(Semaphore::new(spec.connect_concurrency.max(1)));
    for (idx, sub) in subscribers.into_iter().enumerate() {
        if let Some(Some(token)) = bayeux_tokens.get(idx) {
            tokio::spawn(crate::bayeux::subscribe(
                idx as u32,
                endpoint.public_for(idx as u32),
                token.clone(),
                spec.channel.clone(),
                connecting.clone(),
                tx.clone(),
            ));
            continue;
        }
        if let Some(path) = ws_paths.get(idx) {
            tokio::spawn(crate::ws::subscribe(
                idx as u32,
                endpoint.public_for(idx as u32),
                endpoint.kind,
                path.clone(),
                connecting.clone(),
                tx.clone(),
            ));
            continue;
        }
        match stream_paths.get(idx) {
            Some(path) => tokio::spawn(crate::sse::subscribe(
                idx as u32,
                endpoint.public,
                endpoint.kind,
                path.clone(),
                connecting.clone(),
                tx.clone(),
            )),
            None => tokio::spawn(subscribe(
                idx as u32,
                endpoint.clone(),
                sub,
                connecting.clone(),
                tx.clone(),
            )),
        };
    }
    drop(tx);

    let mut state = Collector::new(&spec);
    let (mut sent_ok, mut sent_failed) = (0u32, 0u32);
    loop {
        tokio::select! {
            line = stdin.next_line() => {
                let Some(line) = line? else { return Ok(()) };
                match serde_json::from_str::<Command>(&line)? {
                    Command::Go => {}
                    Command::Flush { k } => state.flush(k),
                    Command::Progress => emit(&Event::Progress { received: state.received }),
                    Command::Report => emit(&Event::Report(state.report())),
                    Command::Stop => return Ok(()),
                }
            }
            note = rx.recv() => match note {
                Some(Note::Sent { ok }) => {
                    if ok { sent_ok += 1 } else { sent_failed += 1 }
                    if sent_ok + sent_failed == spec.count {
                        emit(&Event::Sent {
                            ok: sent_ok,
                            failed: sent_failed,
                            ms: go.elapsed().as_secs_f64() * 1000.0,
                        });
                    }
                }
                Some(Note::Got { idx, payloads, reset, at_us }) => state.got(idx, payloads, reset, at_us),
                Some(Note::Error(e)) => state.error(e),
                Some(Note::Reconnected) => state.report.reconnects += 1,
                None => bail!("worker: every subscriber ended"),
            },
            _ = tokio::time::sleep_until(hard_stop.into()) => {
                eprintln!("worker: {} s deadline reached; exiting", spec.max_seconds);
                return Ok(());
            }
        }
    }
}

/// One subscriber: the first poll (under the connect permit), then a poll
/// after every reply, resuming from the reply's cursor. Errors are
/// reported and retried after a pause; the worker's deadline bounds it.
async fn subscribe(
    idx: u32,
    endpoint: Arc<Endpoint>,
    mut sub: Subscriber,
    connecting: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Note>,
) {
    let mut client = Client::new(endpoint.public_for(idx));
    let read_limit = POLL_TIMEOUT * 2 + Duration::from_secs(10);
    let pause = Duration::from_millis(100);
    let mut first = true;
    loop {
        let request = sub.request();
        let reused = client.reused();
        let sent = if first {
            let _permit = connecting.acquire().await.expect("never closed");
            let sent =
                tokio::time::timeout(Duration::from_secs(30), client.send_only(&request)).await;
            let ok = matches!(sent, Ok(Ok(())));
            let _ = tx.send(Note::Sent { ok });
            first = false;
            sent
        } else {
            tokio::time::timeout(Duration::from_secs(30), client.send_only(&request)).await
        };
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = tx.send(Note::Error(format!("send: {e}")));
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(_) => {
                client.disconnect();
                let _ = tx.send(Note::Error("send: timed out".into()));
                continue;
            }
        }
        let response = match tokio::time::timeout(read_limit, client.read()).await {
            Ok(Ok(response)) => response,
            // A kept-alive connection the server had closed: poll again on
            // a new one (not an error; a browser does the same).
            Ok(Err(e)) if reused && crate::client::is_stale(&e) => continue,
            Ok(Err(e)) => {
                let _ = tx.send(Note::Error(format!("read: {e}")));
                tokio::time::sleep(pause).await;
                continue;
            }
            Err(_) => {
                client.disconnect();
                let _ = tx.send(Note::Error(format!("no reply within {read_limit:?}")));
                continue;
            }
        };
        let at_us = now_us();
        if client.connects > 1 {
            client.connects = 1;
            let _ = tx.send(Note::Reconnected);
        }
        match sub.on_response(&response) {
            Ok(polled) => {
                if !polled.payloads.is_empty() || polled.reset {
                    let note = Note::Got {
                        idx,
                        payloads: polled.payloads,
                        reset: polled.reset,
                        at_us,
                    };
                    if tx.send(note).is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Note::Error(e));
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// The worker's tally.
struct Collector {
    first: u32,
    count: u32,
    /// Fan-out: last message number each subscriber got, and per message
    /// the latencies so far.
    last_k: Vec<u32>,
    fan: HashMap<u32, Vec<u64>>,
    /// Throughput: per client, a bitset of sequence numbers seen.
    seen: Vec<Vec<u64>>,
    report: WorkerReport,
    received: u64,
}

impl Collector {
    fn new(spec: &WorkerSpec) -> Self {
        let n = spec.count as usize;
        Collector {
            first: spec.first,
            count: spec.count,
            last_k: vec![0; n],
            fan: HashMap::new(),
            seen: vec![Vec::new(); n],
            report: WorkerReport {
                first: spec.first,
                distinct: vec![0; n],
                ..WorkerReport::default()
            },
            received: 0,
        }
    }

    fn got(&mut self, idx: u32, payloads: Vec<Payload>, reset: bool, at_us: u64) {
        let i = idx as usize;
        if reset {
            self.report.resets += 1;
        }
        for p in payloads {
            let latency = at_us.saturating_sub(p.t);
            if p.k > 0 {
                // A fan-out message.
                if p.k <= self.last_k[i] {
                    self.report.duplicates += 1;
                    continue;
                }
                self.last_k[i] = p.k;
                let lats = self.fan.entry(p.k).or_default();
                lats.push(latency);
                if lats.len() == self.count as usize {
                    let lat_us = self.fan.remove(&p.k).unwrap_or_default();
                    emit(&Event::Fan {
                        k: p.k,
                        lat_us,
                        missing: 0,
                    });
                }
            } else if p.s > 0 {
                // A throughput message: c must be this subscriber's client.
                if p.c != self.first + idx {
                    self.report.misrouted += 1;
                    continue;
                }
                let bits = &mut self.seen[i];
                let (word, bit) = ((p.s / 64) as usize, p.s % 64);
                if bits.len() <= word {
                    bits.resize(word + 1, 0);
                }
                if bits[word] & (1 << bit) != 0 {
                    self.report.duplicates += 1;
                    continue;
                }
                bits[word] |= 1 << bit;
                self.report.distinct[i] += 1;
                self.received += 1;
                self.report.latency.record(latency);
                self.report.last_recv_us = self.report.last_recv_us.max(at_us);
            }
        }
    }

    fn flush(&mut self, k: u32) {
        let lat_us = self.fan.remove(&k).unwrap_or_default();
        let missing = self.count - lat_us.len() as u32;
        emit(&Event::Fan { k, lat_us, missing });
    }

    fn error(&mut self, e: String) {
        self.report.errors += 1;
        if self.report.error_samples.len() < 5 {
            self.report.error_samples.push(e);
        }
    }

    fn report(&self) -> WorkerReport {
        self.report.clone()
    }
}

// ---- the parent's side ---------------------------------------------------

struct Proc {
    child: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
}

/// The worker processes of one scenario run.
pub struct Workers {
    procs: Vec<Proc>,
}

impl Workers {
    /// Starts enough workers for clients `0..n` (at most `per_worker`
    /// each), and waits until each has prepared its subscribers.
    pub async fn spawn(
        endpoint: &Endpoint,
        n: u32,
        channel: Option<&str>,
        per_worker: u32,
        connect_concurrency: usize,
        max_seconds: u64,
        transport: crate::wire::Transport,
    ) -> Result<Workers> {
        let count = n.div_ceil(per_worker.max(1)).max(1);
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut procs = Vec::new();
        let mut first = 0;
        for w in 0..count {
            let share = n / count + u32::from(w < n % count);
            let spec = WorkerSpec {
                endpoint: endpoint.clone(),
                first,
                count: share,
                channel: channel.map(str::to_owned),
                connect_concurrency: (connect_concurrency / count as usize).max(1),
                max_seconds,
                transport,
            };
            first += share;
            let mut command = tokio::process::Command::new(&exe);
            command
                .arg("__worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true);
            crate::servers::dies_with_parent(&mut command);
            let mut child = command.spawn().context("starting a worker")?;
            let mut stdin = child.stdin.take().expect("piped");
            let stdout = child.stdout.take().expect("piped");
            let mut line = serde_json::to_vec(&spec)?;
            line.push(b'\n');
            stdin.write_all(&line).await?;
            procs.push(Proc {
                child,
                stdin,
                events: BufReader::new(stdout).lines(),
            });
        }
        let mut workers = Workers { procs };
        for i in 0..workers.procs.len() {
            workers
                .expect(i, Duration::from_secs(60), |e| {
                    matches!(e, Event::Ready).then_some(())
                })
                .await?;
        }
        Ok(workers)
    }

    async fn send(&mut self, command: &Command) -> Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        for p in &mut self.procs {
            p.stdin
                .write_all(&line)
                .await
                .context("writing to a worker")?;
        }
        Ok(())
    }

    /// The next event of worker `i` that `pick` accepts (others skipped).
    async fn expect<T>(
        &mut self,
        i: usize,
        within: Duration,
        mut pick: impl FnMut(Event) -> Option<T>,
    ) -> Result<T> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let line = tokio::time::timeout_at(deadline, self.procs[i].events.next_line())
                .await
                .map_err(|_| anyhow!("worker {i}: no answer within {within:?}"))??
                .ok_or_else(|| anyhow!("worker {i} exited"))?;
            let event: Event =
                serde_json::from_str(&line).with_context(|| format!("worker {i} said {line:?}"))?;
            if let Some(t) = pick(event) {
                return Ok(t);
            }
        }
    }

    /// Resident memory of the worker processes (the tool's own side of the
    /// connections), bytes.
    pub fn rss(&self) -> u64 {
        let pids: Vec<u32> = self.procs.iter().filter_map(|p| p.child.id()).collect();
        crate::procstat::total_rss(&pids)
    }

    /// Starts every subscriber.
    pub async fn go(&mut self) -> Result<()> {
        self.send(&Command::Go).await
    }

    /// Waits until every subscriber has sent its first poll; returns how
    /// many did and how many failed.
    pub async fn wait_sent(&mut self, within: Duration) -> Result<(u32, u32)> {
        let (mut ok, mut failed) = (0, 0);
        for i in 0..self.procs.len() {
            let (o, f) = self
                .expect(i, within, |e| match e {
                    Event::Sent { ok, failed, .. } => Some((ok, failed)),
                    _ => None,
                })
                .await?;
            ok += o;
            failed += f;
        }
        Ok((ok, failed))
    }

    /// Waits until fan-out message `k` reached every subscriber (asking
    /// for what arrived after `within`); returns the latencies (µs) and how
    /// many subscribers did not get it.
    pub async fn wait_fan(&mut self, k: u32, within: Duration) -> Result<(Vec<u64>, u32)> {
        let pick = move |e| match e {
            Event::Fan {
                k: got,
                lat_us,
                missing,
            } if got == k => Some((lat_us, missing)),
            _ => None,
        };
        let deadline = Instant::now() + within;
        let (mut all, mut missing) = (Vec::new(), 0);
        for i in 0..self.procs.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (lats, miss) = match self.expect(i, left, pick).await {
                Ok(got) => got,
                Err(_) => {
                    let line = serde_json::to_vec(&Command::Flush { k })?;
                    self.procs[i].stdin.write_all(&line).await?;
                    self.procs[i].stdin.write_all(b"\n").await?;
                    self.expect(i, Duration::from_secs(10), pick).await?
                }
            };
            all.extend(lats);
            missing += miss;
        }
        Ok((all, missing))
    }

    /// Distinct throughput messages received so far, over all workers.
    pub async fn progress(&mut self) -> Result<u64> {
        self.send(&Command::Progress).await?;
        let mut total = 0;
        for i in 0..self.procs.len() {
            total += self
                .expect(i, Duration::from_secs(10), |e| match e {
                    Event::Progress { received } => Some(received),
                    _ => None,
                })
                .await?;
        }
        Ok(total)
    }

    /// Every worker's final report.
    pub async fn reports(&mut self) -> Result<Vec<WorkerReport>> {
        self.send(&Command::Report).await?;
        let mut reports = Vec::new();
        for i in 0..self.procs.len() {
            reports.push(
                self.expect(i, Duration::from_secs(30), |e| match e {
                    Event::Report(r) => Some(r),
                    _ => None,
                })
                .await?,
            );
        }
        Ok(reports)
    }

    /// Tells every worker to exit, waits briefly, kills stragglers.
    pub async fn stop(mut self) {
        let _ = self.send(&Command::Stop).await;
        for p in &mut self.procs {
            if tokio::time::timeout(Duration::from_secs(10), p.child.wait())
                .await
                .is_err()
            {
                let _ = p.child.kill().await;
            }
        }
    }
}
