//! How long a `disk` store takes to come back after SIGKILL with a million
//! retained messages.
//!
//! ```sh
//! cargo bench --bench disk_restart                       # 10,000 clients × 100
//! cargo bench --bench disk_restart -- --clients 1000 --per-client 10   # a smoke run
//! cargo bench --bench disk_restart -- --segment-bytes 8388608   # restart from a snapshot
//! ```
//!
//! Fills a fresh store through ingest `<batch>`es (round by round, so each
//! mailbox's messages are spread over the whole journal), checks a mailbox,
//! SIGKILLs the server, restarts it on the same path and measures the time
//! from spawn to the ready file (recovery done, listening) and to the first
//! poll answered from a cursor handed out before the kill (no `reset`, every
//! message after it there). Target: under 5 s. Runs the release binary
//! cargo builds for benches, or `COMETBOX_BIN`.

#[allow(dead_code)]
#[path = "../tests/durability/harness.rs"]
mod harness;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use harness::{token, try_start, Scratch, Spec};

const TARGET: Duration = Duration::from_secs(5);

struct Options {
    clients: usize,
    per_client: usize,
    batch: usize,
    posters: usize,
    /// `store.segment_bytes`, when given: smaller segments make the store
    /// snapshot during the fill, so the restart reads a snapshot and a
    /// few segments instead of one long journal.
    segment_bytes: Option<usize>,
}

fn options() -> Options {
    let mut o = Options {
        clients: 10_000,
        per_client: 100,
        batch: 5_000,
        posters: 4,
        segment_bytes: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || -> usize {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--clients" => o.clients = value(),
            "--per-client" => o.per_client = value(),
            "--batch" => o.batch = value(),
            "--posters" => o.posters = value(),
            "--segment-bytes" => o.segment_bytes = Some(value()),
            "--bench" => {
                i += 1;
                continue;
            }
            other => {
                panic!("unknown argument {other}: --clients N --per-client M --batch B --posters P --segment-bytes S")
            }
        }
        i += 2;
    }
    o
}

fn main() -> ExitCode {
    let o = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match runtime.block_on(run(&o)) {
        Ok(within) => {
            if !within {
                println!("over the {TARGET:?} target");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("disk_restart: {e}");
            ExitCode::FAILURE
        }
    }
}

fn client(i: usize) -> String {
    format!("c{i:05}")
}

fn dir_size(dir: &Path) -> (u64, usize) {
    let mut bytes = 0;
    let mut files = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                bytes += m.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}

async fn run(o: &Options) -> Result<bool, String> {
    let scratch = Scratch::new("bench-restart");
    let store = scratch.0.join("store");
    let max = o.per_client.max(1000).to_string();
    let spec = Spec::disk(&store, &scratch.0)
        .with("COMETBOX_LOG__LEVEL", "warn")
        .with("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", &max)
        .with("COMETBOX_LIMITS__MESSAGE_TTL", "1h")
        .with("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "1h")
        .with("COMETBOX_LIMITS__MAX_BATCH_COMMANDS", &o.batch.to_string())
        .with("COMETBOX_LIMITS__MAX_BODY_BYTES", "8388608");
    let spec = match o.segment_bytes {
        Some(n) => spec.with("COMETBOX_STORE__SEGMENT_BYTES", &n.to_string()),
        None => spec,
    };
    let total = o.clients * o.per_client;
    println!(
        "disk_restart: {} clients × {} = {total} messages, batches of {}, binary {}",
        o.clients,
        o.per_client,
        o.batch,
        harness::bin().display()
    );
    let server = try_start(&spec, Duration::from_secs(60))
        .await
        .map_err(|r| format!("did not start: {r:?}"))?;

    // A cursor in the middle of one mailbox, handed out before the kill.
    let sample = client(o.clients / 2);
    let sample_token = token(&sample, &[]);
    let ingest = format!("http://{}/", server.ingest);
    let started = Instant::now();
    let mut cursor = None;
    for round in 0..o.per_client {
        let batches: Vec<String> = (0..o.clients)
            .step_by(o.batch)
            .map(|from| {
                let mut xml = String::from("<batch>");
                for i in from..(from + o.batch).min(o.clients) {
                    xml += &format!(
                        r#"<message to="{}">{{"r":{round},"c":{i}}}</message>"#,
                        client(i)
                    );
                }
                xml + "</batch>"
            })
            .collect();
        for group in batches.chunks(o.posters) {
            let mut posts = tokio::task::JoinSet::new();
            for xml in group {
                let (http, url, xml) = (server.http.clone(), ingest.clone(), xml.clone());
                posts.spawn(async move {
                    let reply = http
                        .post(url)
                        .header("content-type", "application/xml")
                        .body(xml)
                        .send()
                        .await?;
                    Ok::<_, reqwest::Error>((reply.status().as_u16(), reply.text().await?))
                });
            }
            while let Some(reply) = posts.join_next().await {
                let (status, body) = reply.unwrap().map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("ingest: {status} {body}"));
                }
            }
        }
        if round == o.per_client / 2 {
            cursor = server.read_all(&sample_token, None).await.cursor;
        }
    }
    let fill = started.elapsed();
    let before = server.read_all(&sample_token, cursor.as_deref()).await;
    let expect_after = o.per_client - (o.per_client / 2 + 1);
    if before.messages.len() != expect_after {
        return Err(format!(
            "{sample}: {} messages after the cursor, expected {expect_after}",
            before.messages.len()
        ));
    }
    let (bytes, files) = dir_size(&store);
    server.kill9().await;

    let spawned = Instant::now();
    let server = try_start(&spec, Duration::from_secs(300))
        .await
        .map_err(|r| format!("did not restart: {r:?}"))?;
    let ready = spawned.elapsed();
    let (status, body) = server
        .poll(
            &sample_token,
            &format!("since={}&timeout=0", cursor.as_deref().unwrap_or("")),
        )
        .await
        .map_err(|e| e.to_string())?;
    let first_poll = spawned.elapsed();
    if status != 200 || body["reset"] == true {
        return Err(format!("first poll after restart: {status} {body}"));
    }
    let after = server.read_all(&sample_token, cursor.as_deref()).await;
    if after.reset || after.messages != before.messages {
        return Err(format!(
            "{sample}: after restart {} messages (reset {}), before {}",
            after.messages.len(),
            after.reset,
            before.messages.len()
        ));
    }
    let rss = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        })
        .unwrap_or_default();
    server.kill9().await;

    println!("| figure | value |");
    println!("|---|---|");
    println!("| retained messages | {total} |");
    println!(
        "| fill through ingest | {fill:.2?} ({:.0} msgs/s) |",
        total as f64 / fill.as_secs_f64()
    );
    println!(
        "| store on disk at the kill | {:.1} MiB in {files} files |",
        bytes as f64 / 1048576.0
    );
    println!("| spawn → ready file (recovery) | {ready:.2?} |");
    println!("| spawn → first poll answered | {first_poll:.2?} |");
    println!("| server RSS after restart | {rss} |");
    println!(
        "| target {TARGET:?} | {} |",
        if first_poll < TARGET { "met" } else { "OVER" }
    );
    Ok(first_poll < TARGET)
}
