//! The real binary on a `disk` store: start it on ephemeral loopback ports
//! and wait for its ready file, SIGKILL it by pid (the process itself is
//! `tests/shared/binary.rs`'s, shared with `tests/it`), and talk to it the way a
//! backend and a browser do. Also the seeded RNG, token minting, and the
//! journal-file helpers the damage tests use.
//!
//! Only processes started here are ever signalled, by their pid, and each is
//! asked to die with this test process (`PR_SET_PDEATHSIG`) so that no server
//! outlives a failed test.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::process::Command;

/// The token secret every test server gets.
pub const SECRET: &str = "durability-test-secret";

/// How long a start (recovery included) may take before the test fails.
pub const READY_LIMIT: Duration = Duration::from_secs(30);

/// The binary under test: `COMETBOX_BIN`, else the one cargo built for
/// this test run (`target/debug/cometbox`).
pub fn bin() -> PathBuf {
    std::env::var_os("COMETBOX_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_cometbox")))
}

#[path = "../shared/wait.rs"]
mod wait;
#[allow(unused_imports)] // the benches that include this file wait on nothing
pub use wait::wait_until;

#[path = "../shared/binary.rs"]
mod binary;
pub use binary::Refused;

/// A fresh scratch directory under the system temp dir, removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "cometbox-durability-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// How to start a server: its store directory, where its logs go, and
/// extra `COMETBOX_*` settings.
#[derive(Clone)]
pub struct Spec {
    /// `store.path`; `None` runs the memory store (harness self-checks).
    pub store: Option<PathBuf>,
    /// Ready files and stderr logs go here.
    pub run_dir: PathBuf,
    /// Extra environment (`COMETBOX_LIMITS__…`, `COMETBOX_STORE__FSYNC`).
    pub env: Vec<(String, String)>,
}

impl Spec {
    pub fn disk(store: &Path, run_dir: &Path) -> Self {
        Spec {
            store: Some(store.to_owned()),
            run_dir: run_dir.to_owned(),
            env: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// This start's ready file and stderr log in `run_dir`, numbered.
    fn next_run_files(&self) -> (PathBuf, PathBuf) {
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        (
            self.run_dir.join(format!("ready-{n}.json")),
            self.run_dir.join(format!("stderr-{n}.log")),
        )
    }

    /// The command line (`tests/shared/binary.rs` adds `--ready-file`).
    fn command(&self) -> Command {
        let mut env: Vec<(OsString, OsString)> = [
            ("COMETBOX_PUBLIC__LISTEN", "127.0.0.1:0"),
            ("COMETBOX_INGEST__LISTEN", "127.0.0.1:0"),
            ("COMETBOX_AUTH__SECRET", SECRET),
            ("COMETBOX_LOG__LEVEL", "info"),
        ]
        .iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect();
        if let Some(store) = &self.store {
            env.push(("COMETBOX_STORE__KIND".into(), "disk".into()));
            env.push(("COMETBOX_STORE__PATH".into(), store.into()));
        }
        env.extend(self.env.iter().map(|(k, v)| (k.into(), v.into())));
        binary::command(&bin(), &env, &[])
    }
}

/// A running server process (`tests/shared/binary.rs`), with a client to
/// talk to it.
pub struct Server {
    process: binary::Process,
    pub public: String,
    pub ingest: String,
    pub http: reqwest::Client,
}

static STARTS: AtomicU32 = AtomicU32::new(0);

/// Starts a server and waits for its ready file; fails the test with its
/// log if it does not come up (at once if it exits during start-up).
pub async fn start(spec: &Spec) -> Server {
    let (ready, log) = spec.next_run_files();
    Server::new(binary::start(spec.command(), &ready, &log, READY_LIMIT).await)
}

/// Starts a server; `Err` if it exits (or is not ready within `limit`, in
/// which case it is killed) before writing its ready file.
pub async fn try_start(spec: &Spec, limit: Duration) -> Result<Server, Refused> {
    let (ready, log) = spec.next_run_files();
    let process = binary::try_start(spec.command(), &ready, &log, limit).await?;
    Ok(Server::new(process))
}

impl Server {
    fn new(process: binary::Process) -> Self {
        Server {
            public: process.public.clone(),
            ingest: process.ingest.clone(),
            process,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// What the server wrote to stderr so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL, then reap; returns the log.
    pub async fn kill9(self) -> String {
        self.process.kill9().await
    }

    /// SIGTERM, then wait for a clean exit; returns the log.
    pub async fn stop(self) -> String {
        self.process.stop(Duration::from_secs(15)).await
    }

    /// `POST /` with an XML body: the status and the reply text, or the
    /// transport error (the server is gone).
    pub async fn post(&self, xml: &str) -> Result<(u16, String), reqwest::Error> {
        let reply = self
            .http
            .post(format!("http://{}/", self.ingest))
            .header("content-type", "application/xml")
            .body(xml.to_owned())
            .send()
            .await?;
        let status = reply.status().as_u16();
        Ok((status, reply.text().await?))
    }

    /// Posts and asserts `<ok accepted="n"/>`.
    pub async fn post_ok(&self, xml: &str, accepted: usize) {
        let (status, body) = self.post(xml).await.expect("ingest answers");
        assert_eq!(
            (status, body.as_str()),
            (200, format!(r#"<ok accepted="{accepted}"/>"#).as_str()),
            "{xml}"
        );
    }

    /// `GET /poll?token=…&<query>`: the status and the JSON body.
    pub async fn poll(&self, token: &str, query: &str) -> Result<(u16, Value), reqwest::Error> {
        let url = format!("http://{}/poll?token={token}&{query}", self.public);
        let reply = self.http.get(url).send().await?;
        let status = reply.status().as_u16();
        let text = reply.text().await?;
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("poll reply is not JSON ({e}): {text}"));
        Ok((status, body))
    }

    /// Everything retained after `since` (from the oldest without it), read
    /// page by page with `timeout=0` until a page comes back empty.
    pub async fn read_all(&self, token: &str, since: Option<&str>) -> Read {
        let mut read = Read {
            reset: false,
            messages: Vec::new(),
            cursor: since.map(str::to_owned),
        };
        for page in 0..100_000 {
            let query = match &read.cursor {
                Some(c) => format!("since={c}&timeout=0"),
                None => "timeout=0".to_owned(),
            };
            let (status, body) = self.poll(token, &query).await.expect("poll answers");
            assert_eq!(status, 200, "poll ?{query}: {body}");
            if body["reset"] == true {
                assert_eq!(page, 0, "reset on a later page of one read: {body}");
                read.reset = true;
            }
            read.cursor = Some(body["cursor"].as_str().expect("a cursor").to_owned());
            let messages = body["messages"].as_array().expect("messages");
            if messages.is_empty() {
                return read;
            }
            read.messages.extend(messages.iter().map(Msg::from_json));
        }
        panic!("a mailbox read did not end within 100,000 pages");
    }
}

/// One read of a mailbox to its end.
#[derive(Debug)]
pub struct Read {
    /// The first page said `"reset": true`.
    pub reset: bool,
    pub messages: Vec<Msg>,
    /// The cursor after the last message.
    pub cursor: Option<String>,
}

/// A delivered message: its id and data (and channel and event, if any).
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub id: String,
    pub channel: Option<String>,
    pub event: Option<String>,
    pub data: Value,
}

impl Msg {
    pub fn from_json(m: &Value) -> Self {
        Msg {
            id: m["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no id in {m}"))
                .to_owned(),
            channel: m["channel"].as_str().map(str::to_owned),
            event: m["event"].as_str().map(str::to_owned),
            data: m["data"].clone(),
        }
    }
}

#[path = "../shared/jwt.rs"]
pub mod jwt;

/// A browser token for `client` (valid an hour) with `channels` grants,
/// minted by hand (`tests/shared/jwt.rs`), not by the server's own code.
pub fn token(client: &str, channels: &[&str]) -> String {
    jwt::token_with(
        json!({ "sub": client, "exp": jwt::now() + 3600, "channels": channels }),
        SECRET,
    )
}

/// A message id (or cursor) as the server spells it, `<epoch>-<seq>`
/// (`src/protocol/cursor.rs`): the epoch in lower-case base 36, the
/// sequence number in decimal. Parsed here, not with the server's
/// `Cursor::parse`, so that a change of the format fails the tests.
pub fn id_parts(id: &str) -> (u32, u64) {
    let parsed = id.split_once('-').and_then(|(epoch, seq)| {
        let base36 = !epoch.is_empty()
            && epoch
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        let decimal = !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit());
        if !(base36 && decimal) {
            return None;
        }
        Some((u32::from_str_radix(epoch, 36).ok()?, seq.parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("an id is <base-36 epoch>-<decimal seq>: {id:?}"))
}

/// Ids of one mailbox in the order it delivered them, with no `reset` in
/// between: one epoch, and strictly increasing sequence numbers (ids that
/// merely differ could still go backwards, and a cursor would skip).
pub fn assert_ids_increase<'a>(who: &str, ids: impl IntoIterator<Item = &'a str>) {
    let mut last: Option<(&str, (u32, u64))> = None;
    for id in ids {
        let (epoch, seq) = id_parts(id);
        if let Some((before, (e, s))) = last {
            assert!(
                epoch == e && seq > s,
                "{who}: id {id} after {before}: ids of one mailbox keep their epoch and grow"
            );
        }
        last = Some((id, (epoch, seq)));
    }
}

/// SplitMix64: a small seeded generator, so that a failing run can be
/// replayed in its choices (`DURABILITY_SEED`); thread timing still varies.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }
}

/// The seed: `DURABILITY_SEED`, else the clock. Printed so a failure can
/// be replayed.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("DURABILITY_SEED")
        .ok()
        .map(|s| s.parse().expect("DURABILITY_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("{test}: seed {seed} (replay with DURABILITY_SEED={seed})");
    seed
}

/// An env var parsed, or `default`.
pub fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    match std::env::var(key) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} does not parse")),
        Err(_) => default,
    }
}

// ---- journal files -------------------------------------------------------

/// The journal segments in `store`, oldest first: `journal-<n>.log`.
pub fn segments(store: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(store)
        .unwrap_or_else(|e| panic!("reading {}: {e}", store.display()))
        .filter_map(|e| {
            let path = e.ok()?.path();
            let name = path.file_name()?.to_str()?;
            let n = name.strip_prefix("journal-")?.strip_suffix(".log")?;
            Some((n.parse().ok()?, path))
        })
        .collect();
    found.sort();
    found
}

/// The newest segment (highest number); fails naming what is there if
/// there is none.
pub fn newest_segment(store: &Path) -> PathBuf {
    let segments = segments(store);
    let listing: Vec<_> = std::fs::read_dir(store)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    segments
        .last()
        .unwrap_or_else(|| {
            panic!(
                "no journal-<n>.log in {}: found {listing:?}",
                store.display()
            )
        })
        .1
        .clone()
}

/// Starts every journal and snapshot record (`src/store/disk/codec.rs`),
/// spelled out here rather than imported so that a change of format on the
/// server's side shows up as a test failure, not as a matching change.
pub const MAGIC: &[u8; 4] = b"CBR1";

/// The kind byte of a unit record (the changes of one submitted command
/// or batch): the only kind a journal segment holds besides probes.
pub const KIND_UNIT: u8 = 1;

/// One framed record: `"CBR1" | u32 LE length | u32 LE crc32 | payload`,
/// where the payload starts with the record's kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Offset of the magic.
    pub start: usize,
    /// Offset of the payload.
    pub payload: usize,
    pub len: usize,
    /// The payload's first byte.
    pub kind: u8,
    /// Whether the stored crc is the IEEE crc32 of the payload.
    pub crc_ok: bool,
}

/// Walks the frames of a segment from its start; stops at the first one
/// that does not start with the magic or does not fit in the file. A frame
/// whose crc does not match is still walked over (its length is trusted):
/// the damage tests flip payload bytes, not headers. Returns the frames and
/// where they end.
pub fn frames(bytes: &[u8]) -> (Vec<Frame>, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 12 <= bytes.len() && bytes[at..at + 4] == MAGIC[..] {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap());
        let payload = at + 12;
        if len == 0 || payload + len > bytes.len() {
            break;
        }
        frames.push(Frame {
            start: at,
            payload,
            len,
            kind: bytes[payload],
            crc_ok: crc32(&bytes[payload..payload + len]) == crc,
        });
        at = payload + len;
    }
    (frames, at)
}

/// The IEEE CRC-32 (as zlib, crc32fast), bit by bit: segments here are small.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ---- mounts --------------------------------------------------------------

/// Runs a command; its status and combined output.
pub fn sh(program: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A filesystem mounted by a test at `dir`, unmounted on drop (also when
/// the test fails: a lazy unmount if a plain one is refused).
pub struct Mount {
    pub dir: PathBuf,
    image: Option<PathBuf>,
}

impl Mount {
    /// A tmpfs of `size` (like "4m") at `dir`; fails the test loudly when
    /// mounting is not allowed here.
    pub fn tmpfs(dir: &Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let opts = format!("size={size}");
        let (ok, out) = sh(
            "mount",
            &["-t", "tmpfs", "-o", &opts, "tmpfs", dir.to_str().unwrap()],
        );
        assert!(
            ok,
            "this test needs to mount a tmpfs (root, or CAP_SYS_ADMIN): mount -t tmpfs -o {opts} tmpfs {}: {out}",
            dir.display()
        );
        Mount {
            dir: dir.to_owned(),
            image: None,
        }
    }

    /// An ext4 filesystem of `mib` MiB in an image file, loop-mounted at
    /// `dir`; fails loudly when mkfs.ext4 or loop mounts are missing.
    pub fn ext4(dir: &Path, image: &Path, mib: u64) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let file = std::fs::File::create(image).unwrap();
        file.set_len(mib << 20).unwrap();
        drop(file);
        let (ok, out) = sh("mkfs.ext4", &["-q", "-F", image.to_str().unwrap()]);
        assert!(ok, "this test needs mkfs.ext4 (e2fsprogs): {out}");
        let (ok, out) = sh(
            "mount",
            &["-o", "loop", image.to_str().unwrap(), dir.to_str().unwrap()],
        );
        assert!(
            ok,
            "this test needs to loop-mount an ext4 image (root, /dev/loop*): {out}"
        );
        Mount {
            dir: dir.to_owned(),
            image: Some(image.to_owned()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let dir = self.dir.to_str().unwrap();
        let (ok, out) = sh("umount", &[dir]);
        if !ok {
            eprintln!("umount {dir}: {out}; unmounting lazily");
            let (ok, out) = sh("umount", &["-l", dir]);
            if !ok {
                eprintln!("umount -l {dir}: {out}");
            }
        }
        if let Some(image) = &self.image {
            let _ = std::fs::remove_file(image);
        }
    }
}
