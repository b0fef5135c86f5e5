//! The cometbox load tool: `cargo bench --bench load -- <scenario> [args]
//! [--target cometbox|nchan|both] [--runs R] [--json FILE]`.
//!
//! It starts the servers itself (the release cometbox binary, nginx with
//! Nchan), drives them over loopback as browsers and backends would, and
//! prints a table of medians over the runs, with cometbox/Nchan ratios when
//! both run. See benches/README.md.
//!
//! Modules: `client` (minimal HTTP/1.1), `wire` (how each server is
//! spoken to), `servers` (start/stop), `worker` (subscriber processes),
//! `scenarios`, `report` (table, JSON, histogram), `procstat` (RSS/CPU).

mod bayeux;
mod client;
mod procstat;
mod report;
mod scenarios;
mod servers;
mod sse;
mod wire;
mod worker;
mod ws;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};

use report::{ScenarioResult, TargetResult};
use scenarios::{Scenario, Settings};
use servers::ServerOptions;
use wire::Kind;

const USAGE: &str = "\
usage: cargo bench --bench load -- <scenario> [options]

scenarios:
  hold N                  N waiting polls (one client each; with --transport sse or ws one
                          open stream or WebSocket each): server RSS per poll, time to hold
                          all, the tool's own RSS
  fanout N K              N subscribers of one channel, K messages one after another:
                          first / median / p99 / last delivery latency (medians over K)
  throughput N SECONDS    N clients polling their own mailbox, publishers as fast as accepted:
                          delivered msgs/s, latency p50/p99, server CPU per 1,000, lost, duplicates
                          (runs both modes: one message per request, and <batch> of --batch)
  smoke                   hold 200, fanout 200 3, throughput 50 2 against cometbox only;
                          exits non-zero if anything is lost or fails (for CI)
  all                     hold 15000, fanout 10000 5, throughput 1000 10

options:
  --target cometbox|nchan|both   servers to measure (default cometbox; smoke: cometbox)
  --runs R                       repeat each scenario R times, report medians (default 1)
  --json FILE                    also write every run and the medians as JSON
  --mode single|batch|both       throughput modes (default both)
  --batch B                      messages per batch request (default 100)
  --publishers P                 concurrent publisher connections (default 4)
  --rate R                       throughput: R requests per second in all, paced on a
                                 fixed schedule (open loop), to compare latency at the
                                 same load (default: as fast as accepted)
  --per-worker N                 subscribers per worker process (default 9000)
  --connect-concurrency C        connections opened at once (default 256)
  --nginx-workers W              Nchan's worker_processes (default 2)
  --store memory|disk|redis|redis-cluster
                                 cometbox's store (default memory; disk: in the run's
                                 temporary directory, fsync always; redis: a redis-server
                                 (Debian's) started in it, no persistence; redis-cluster:
                                 a 3-master Redis Cluster of them, made by redis-cli)
  --nodes N                      cometbox nodes sharing that Redis (--store redis or
                                 redis-cluster; default 1):
                                 subscribers and publishers spread over them; CPU is the
                                 nodes' sum, Redis's own CPU is printed apart
  --cometbox-bin PATH            the binary to measure (default target/release/cometbox,
                                 rebuilt with `cargo build --release` when stale)
  --no-build                     never run cargo build
  --transport poll|sse|ws|bayeux hold and fanout subscribers long-poll (default, as
                                 client-js's poll transport), hold an EventSource
                                 stream each (cometbox /events, Nchan eventsource),
                                 hold a WebSocket each as a page's new WebSocket(url)
                                 (cometbox /ws?token=&channels=, Nchan's websocket
                                 subscriber), or are Bayeux sessions as CometD's
                                 long-polling (cometbox only)

Exit status: 0 when every run completed with nothing lost and no errors.";

/// The parsed command line.
struct Cli {
    scenarios: Vec<Scenario>,
    targets: Vec<Kind>,
    runs: usize,
    json: Option<PathBuf>,
    settings: Settings,
    /// Run the tool's own checks first (smoke).
    self_check: bool,
}

fn parse_args(args: &[String]) -> Result<Cli> {
    let mut positional = Vec::new();
    let mut target = None;
    let mut runs = 1;
    let mut json = None;
    let mut mode = "both".to_owned();
    let mut settings = Settings {
        servers: ServerOptions {
            cometbox_bin: None,
            no_build: false,
            nginx_workers: 2,
            store: "memory".into(),
            nodes: 1,
            bayeux: false,
        },
        per_worker: 9000,
        connect_concurrency: 256,
        publishers: 4,
        batch: 100,
        rate: None,
        transport: crate::wire::Transport::Poll,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| anyhow!("{name} needs a value"))
        };
        match arg.as_str() {
            // `cargo bench` passes --bench to harness = false targets.
            "--bench" => {}
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--target" => target = Some(value("--target")?),
            "--runs" => runs = value("--runs")?.parse().context("--runs")?,
            "--json" => json = Some(PathBuf::from(value("--json")?)),
            "--mode" => mode = value("--mode")?,
            "--batch" => settings.batch = value("--batch")?.parse().context("--batch")?,
            "--rate" => settings.rate = Some(value("--rate")?.parse().context("--rate")?),
            "--publishers" => {
                settings.publishers = value("--publishers")?.parse().context("--publishers")?
            }
            "--per-worker" => {
                settings.per_worker = value("--per-worker")?.parse().context("--per-worker")?
            }
            "--connect-concurrency" => {
                settings.connect_concurrency = value("--connect-concurrency")?
                    .parse()
                    .context("--connect-concurrency")?
            }
            "--nginx-workers" => {
                settings.servers.nginx_workers = value("--nginx-workers")?
                    .parse()
                    .context("--nginx-workers")?
            }
            "--cometbox-bin" => {
                settings.servers.cometbox_bin = Some(PathBuf::from(value("--cometbox-bin")?))
            }
            "--no-build" => settings.servers.no_build = true,
            "--nodes" => {
                settings.servers.nodes = value("--nodes")?.parse().context("--nodes")?;
                if settings.servers.nodes == 0 {
                    bail!("--nodes must be at least 1");
                }
            }
            "--transport" => {
                settings.transport = match value("--transport")?.as_str() {
                    "poll" => crate::wire::Transport::Poll,
                    "sse" => crate::wire::Transport::Sse,
                    "ws" => crate::wire::Transport::Ws,
                    "bayeux" => crate::wire::Transport::Bayeux,
                    other => bail!("--transport {other}: expected poll, sse, ws or bayeux"),
                };
                settings.servers.bayeux = settings.transport == crate::wire::Transport::Bayeux;
            }
            "--store" => {
                settings.servers.store = value("--store")?;
                if !matches!(
                    settings.servers.store.as_str(),
                    "memory" | "disk" | "redis" | "redis-cluster"
                ) {
                    bail!("--store must be memory, disk, redis or redis-cluster");
                }
            }
            flag if flag.starts_with("--") => bail!("unknown option {flag}\n\n{USAGE}"),
            _ => positional.push(arg.clone()),
        }
    }
    if runs == 0 || runs > 50 {
        bail!("--runs must be 1..=50");
    }
    if !(1..=10_000).contains(&settings.batch) {
        bail!("--batch must be 1..=10000");
    }
    if settings
        .rate
        .is_some_and(|r| !(1.0..=10_000_000.0).contains(&r))
    {
        bail!("--rate must be 1..=10000000 requests per second");
    }
    if !(1..=64).contains(&settings.publishers) {
        bail!("--publishers must be 1..=64");
    }
    if !(1..=9_500).contains(&settings.per_worker) {
        bail!("--per-worker must be 1..=9500 (one socket per client)");
    }
    let modes: Vec<bool> = match mode.as_str() {
        "single" => vec![false],
        "batch" => vec![true],
        "both" => vec![false, true],
        other => bail!("--mode {other}: expected single, batch or both"),
    };
    let num = |i: usize, what: &str| -> Result<u64> {
        positional
            .get(i)
            .ok_or_else(|| anyhow!("missing {what}\n\n{USAGE}"))?
            .parse::<u64>()
            .with_context(|| format!("{what} must be a number"))
    };
    let throughput = |n: u32, seconds: u64| -> Vec<Scenario> {
        modes
            .iter()
            .map(|&batch| Scenario::Throughput { n, seconds, batch })
            .collect()
    };
    let name = positional.first().map(String::as_str).unwrap_or("");
    let scenarios = match name {
        "hold" => vec![Scenario::Hold {
            n: bounded(num(1, "N")?, 1, 60_000, "N")?,
        }],
        "fanout" => vec![Scenario::Fanout {
            n: bounded(num(1, "N")?, 1, 19_000, "N")?,
            k: bounded(num(2, "K")?, 1, 1000, "K")?,
        }],
        "throughput" => throughput(
            bounded(num(1, "N")?, 1, 9_000, "N")?,
            u64::from(bounded(num(2, "SECONDS")?, 1, 600, "SECONDS")?),
        ),
        "smoke" => {
            let mut list = vec![Scenario::Hold { n: 200 }, Scenario::Fanout { n: 200, k: 3 }];
            list.extend(throughput(50, 2));
            list
        }
        "all" => {
            let mut list = vec![
                Scenario::Hold { n: 15_000 },
                Scenario::Fanout { n: 10_000, k: 5 },
            ];
            list.extend(throughput(1000, 10));
            list
        }
        "" => bail!("no scenario given\n\n{USAGE}"),
        other => bail!("unknown scenario {other:?}\n\n{USAGE}"),
    };
    let targets = match target.as_deref().unwrap_or("cometbox") {
        "cometbox" => vec![Kind::Cometbox],
        "nchan" => vec![Kind::Nchan],
        "both" => vec![Kind::Cometbox, Kind::Nchan],
        other => bail!("--target {other}: expected cometbox, nchan or both"),
    };
    if name == "smoke" && targets != [Kind::Cometbox] {
        bail!("smoke runs against cometbox only");
    }
    Ok(Cli {
        scenarios,
        targets,
        runs,
        json,
        settings,
        self_check: name == "smoke",
    })
}

fn bounded(v: u64, min: u64, max: u64, what: &str) -> Result<u32> {
    if v < min || v > max {
        bail!("{what} must be {min}..={max}");
    }
    Ok(v as u32)
}

/// The tool's own unit checks (a `harness = false` bench runs no
/// `#[test]`s); `smoke` runs them first.
async fn self_check() {
    report::checks::histogram_is_close();
    report::checks::medians();
    wire::checks::splits_nchan_multipart();
    wire::checks::cometbox_polls_like_the_browser_class();
    ws::checks::handshake_and_frames();
    procstat::checks::reads_itself();
    client::checks::parses_length_and_chunked_bodies().await;
}

async fn run(mut cli: Cli, command: String) -> Result<bool> {
    if cli.self_check {
        self_check().await;
        eprintln!("self-check passed");
    }
    // Measure one fixed copy of the binary, so a rebuild in the same target
    // dir during a long run cannot change what is measured half-way.
    let snapshot = if cli.targets.contains(&Kind::Cometbox) {
        let built = servers::ensure_cometbox_built(&cli.settings.servers)?;
        let copy = std::env::temp_dir().join(format!("cometbox-load-bin-{}", std::process::id()));
        std::fs::copy(&built, &copy)
            .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
        cli.settings.servers.cometbox_bin = Some(copy.clone());
        cli.settings.servers.no_build = true;
        Some(copy)
    } else {
        None
    };
    let result = run_all(&cli, command).await;
    if let Some(copy) = snapshot {
        let _ = std::fs::remove_file(copy);
    }
    result
}

async fn run_all(cli: &Cli, command: String) -> Result<bool> {
    if cli.targets.contains(&Kind::Nchan) {
        servers::nchan_available()?;
    }
    let mut results: Vec<ScenarioResult> = cli
        .scenarios
        .iter()
        .map(|s| ScenarioResult {
            scenario: s.title(&cli.settings),
            targets: cli
                .targets
                .iter()
                .map(|&target| TargetResult {
                    target,
                    skipped: s.unsupported(target, cli.settings.transport),
                    runs: Vec::new(),
                    median: Vec::new(),
                })
                .collect(),
        })
        .collect();
    // Runs interleave scenarios and targets, so slow drift on the machine
    // affects both servers alike.
    for run in 1..=cli.runs {
        for (scenario, result) in cli.scenarios.iter().zip(&mut results) {
            for target in &mut result.targets {
                if target.skipped.is_some() {
                    continue;
                }
                eprintln!(
                    "[run {run}/{}] {} against {}",
                    cli.runs,
                    result.scenario,
                    target.target.name()
                );
                let outcome = scenario.run(target.target, &cli.settings).await;
                let summary: Vec<String> = outcome
                    .metrics
                    .iter()
                    .filter(|m| m.better != report::Better::Neither)
                    .map(|m| format!("{} {:.3} {}", m.name, m.value, m.unit))
                    .collect();
                eprintln!("  {}", summary.join(", "));
                target.runs.push(outcome);
            }
        }
    }
    for result in &mut results {
        for target in &mut result.targets {
            target.finish();
        }
    }
    println!("{}", report::table(&results, cli.runs));
    if let Some(path) = &cli.json {
        let json = report::json(&command, cli.runs, &results);
        std::fs::write(path, serde_json::to_string_pretty(&json)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    let clean = results
        .iter()
        .flat_map(|r| &r.targets)
        .all(|t| t.runs.iter().all(|o| o.problems.is_empty()));
    Ok(clean)
}

fn raise_nofile() {
    // Soft limit up to the hard one: one socket per simulated browser.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("could not raise the open-file limit: {e}");
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    raise_nofile();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: {e}");
            return ExitCode::FAILURE;
        }
    };
    if args.first().map(String::as_str) == Some("__worker") {
        // Exit at once: a blocking stdin read would hold up the runtime's drop.
        let code = match runtime.block_on(worker::run_worker()) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("load worker: {e:#}");
                1
            }
        };
        std::process::exit(code);
    }
    let cli = match parse_args(&args) {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("load: {e:#}");
            return ExitCode::from(2);
        }
    };
    let command = format!(
        "cargo bench --bench load -- {}",
        args.iter()
            .filter(|a| *a != "--bench")
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    );
    match runtime.block_on(run(cli, command)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("load: some runs lost messages or had errors (see problems above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
