//! Starting and stopping the servers under test, each in its own temporary
//! directory on loopback: the release cometbox binary (built first when
//! missing or older than the sources) on port 0, its addresses read from
//! `--ready-file`; and nginx with the Nchan module and a configuration
//! written here, on a port chosen here (another one when it was taken in
//! between). Only processes started here are ever signalled, by pid.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};

use crate::procstat;
use crate::wire::{Endpoint, Kind, POLL_TIMEOUT};

/// The token secret the tool gives cometbox (and mints tokens with).
pub const SECRET: &str = "cometbox-load-secret";

/// How the servers are found and started.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// The cometbox binary; default `<target>/release/cometbox`.
    pub cometbox_bin: Option<PathBuf>,
    /// Skip the staleness check and `cargo build --release`.
    pub no_build: bool,
    /// Nchan's nginx worker processes.
    pub nginx_workers: u32,
    /// cometbox's `[store] kind`: "memory", "disk" (in the run's
    /// directory, default fsync policy) or "redis" (a redis-server the
    /// tool starts in the run's directory), or "redis-cluster" (kind
    /// redis on a 3-master Redis Cluster the tool starts likewise).
    pub store: String,
    /// cometbox nodes sharing that Redis (`--nodes`; 1 otherwise).
    pub nodes: usize,
    /// Turn `[bayeux]` on (`--transport bayeux`); left unset otherwise, so
    /// that binaries from before it (compared with `--cometbox-bin`) start.
    pub bayeux: bool,
}

/// A running server.
pub struct Server {
    /// Its addresses.
    pub endpoint: Endpoint,
    child: Child,
    pid: u32,
    dir: PathBuf,
    /// With `--nodes N`: the other cometbox nodes (process, pid).
    extra: Vec<(Child, u32)>,
    /// With `--store redis`: the redis-server (process, pid); with
    /// `redis-cluster`, the cluster's three.
    redis: Vec<(Child, u32)>,
}

impl Server {
    /// Starts `kind` and waits until it serves.
    pub async fn start(kind: Kind, options: &ServerOptions) -> Result<Server> {
        let dir = temp_dir(kind)?;
        let started = match kind {
            Kind::Cometbox => start_cometbox(&dir, options).await,
            Kind::Nchan => start_nchan(&dir, options).await,
        };
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    /// The server's processes: cometbox's one, or nginx's master and workers.
    pub fn pids(&self) -> Vec<u32> {
        match self.endpoint.kind {
            Kind::Cometbox => std::iter::once(self.pid)
                .chain(self.extra.iter().map(|(_, pid)| *pid))
                .collect(),
            Kind::Nchan => procstat::family(self.pid),
        }
    }

    /// Resident memory of all its processes, bytes.
    pub fn rss(&self) -> u64 {
        procstat::total_rss(&self.pids())
    }

    /// CPU seconds used by all its processes so far.
    pub fn cpu(&self) -> f64 {
        procstat::total_cpu(&self.pids())
    }

    /// CPU seconds redis-server used so far (`--store redis`), apart from
    /// the nodes' [`Server::cpu`].
    pub fn redis_cpu(&self) -> Option<f64> {
        let pids: Vec<u32> = self.redis.iter().map(|(_, pid)| *pid).collect();
        (!pids.is_empty()).then(|| procstat::total_cpu(&pids))
    }

    /// SIGTERM, wait up to 10 s, then SIGKILL; removes the temporary dir.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(redis_cpu) = self.redis_cpu() {
            eprintln!(
                "cpu over the whole run: cometbox nodes {:.2} s, redis-server {redis_cpu:.2} s",
                self.cpu()
            );
        }
        for (mut child, pid) in std::mem::take(&mut self.extra) {
            signal(pid, libc::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        for (mut child, pid) in std::mem::take(&mut self.redis) {
            signal(pid, libc::SIGTERM);
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
        signal(self.pid, libc::SIGTERM);
        let exited = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
        if exited.is_err() {
            eprintln!(
                "{} did not stop within 10 s; killing it",
                self.endpoint.kind.name()
            );
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid this tool started and has not reaped yet
    // (the Child is still held), so it names our own process.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn temp_dir(kind: Kind) -> Result<PathBuf> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "cometbox-load-{}-{}-{nanos}",
        kind.name(),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn log_file(dir: &Path, name: &str) -> Result<Stdio> {
    Ok(std::fs::File::create(dir.join(name))?.into())
}

/// The open-file hard limit: what servers may raise themselves to.
pub fn nofile_hard_limit() -> u64 {
    rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(20_000, |(_, hard)| hard)
}

// ---- cometbox ------------------------------------------------------------

/// The crate root (where Cargo.toml is).
fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/release/cometbox`: the bench binary runs from
/// `<target>/release/deps/`, so its grandparent is the profile dir.
fn default_cometbox_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("cometbox")))
        .filter(|p| p.parent().is_some_and(|d| d.ends_with("release")))
        .unwrap_or_else(|| crate_root().join("target/release/cometbox"))
}

/// Newest modification time under the inputs of the binary.
fn newest_source(root: &Path) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = std::fs::metadata(path) else {
            return;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for e in entries.flatten() {
                    walk(&e.path(), newest);
                }
            }
        } else if let Ok(m) = meta.modified() {
            *newest = Some(newest.map_or(m, |n: SystemTime| n.max(m)));
        }
    }
    let mut newest = None;
    for input in ["src", "Cargo.toml", "Cargo.lock", "client-js/cometbox.js"] {
        walk(&root.join(input), &mut newest);
    }
    newest
}

/// Builds `target/release/cometbox` when it is missing or older than its
/// sources (`cargo bench` builds the bench, not the binary).
pub fn ensure_cometbox_built(options: &ServerOptions) -> Result<PathBuf> {
    let bin = options
        .cometbox_bin
        .clone()
        .unwrap_or_else(default_cometbox_bin);
    if options.no_build || options.cometbox_bin.is_some() {
        if !bin.exists() {
            bail!("{} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    let stale = match (built, newest_source(&crate_root())) {
        (Some(built), Some(source)) => source > built,
        _ => true,
    };
    if stale {
        eprintln!("building the release binary: cargo build --release --bin cometbox");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--release", "--bin", "cometbox"])
            .current_dir(crate_root())
            .status()
            .context("running cargo build --release")?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
    }
    if !bin.exists() {
        bail!("{} missing after the build", bin.display());
    }
    Ok(bin)
}

/// Asks the kernel to SIGTERM the child if this tool dies (killed by a
/// timeout, say) before it could stop the child itself: a server or worker
/// must never outlive the run that started it.
pub fn dies_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

/// Starts a server with its output logged in `dir`; it is killed when its
/// handle drops or when this tool dies.
fn spawn_server(mut command: Command, dir: &Path, program: &Path) -> Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(log_file(dir, "stdout.log")?)
        .stderr(log_file(dir, "stderr.log")?)
        .kill_on_drop(true);
    dies_with_parent(&mut command);
    command
        .spawn()
        .with_context(|| format!("starting {}", program.display()))
}

async fn start_cometbox(dir: &Path, options: &ServerOptions) -> Result<Server> {
    let bin = ensure_cometbox_built(options)?;
    let (redis, store_env) = match options.store.as_str() {
        "redis" => {
            let (child, pid, port) = start_redis(&dir.join("redis"), None).await?;
            let url = format!("redis://127.0.0.1:{port}/0");
            (vec![(child, pid)], Some(("COMETBOX_STORE__URL", url)))
        }
        "redis-cluster" => {
            let (servers, seeds) = start_redis_cluster(dir).await?;
            (servers, Some(("COMETBOX_STORE__CLUSTER", seeds)))
        }
        _ => (Vec::new(), None),
    };
    let count = if !redis.is_empty() {
        options.nodes.max(1)
    } else {
        1
    };
    let mut nodes = Vec::new();
    for i in 0..count {
        let node_dir = if count == 1 {
            dir.to_owned()
        } else {
            dir.join(format!("node-{i}"))
        };
        std::fs::create_dir_all(&node_dir)?;
        nodes.push(start_node(&bin, &node_dir, options, store_env.clone()).await?);
    }
    let addrs: Vec<(SocketAddr, SocketAddr)> = nodes.iter().map(|n| (n.2, n.3)).collect();
    let mut nodes = nodes.into_iter();
    let (child, pid, public, ingest) = nodes.next().expect("at least one node");
    Ok(Server {
        endpoint: Endpoint {
            kind: Kind::Cometbox,
            public,
            ingest,
            secret: SECRET.into(),
            nodes: if count > 1 { addrs } else { Vec::new() },
        },
        child,
        pid,
        dir: dir.to_owned(),
        extra: nodes.map(|(child, pid, _, _)| (child, pid)).collect(),
        redis,
    })
}

/// Debian's redis-server on a free loopback port in `redis_dir`, without
/// persistence (a cluster node when `bus`, its cluster bus port, is given);
/// returns it, its pid and its port once it answers PING.
async fn start_redis(redis_dir: &Path, bus: Option<u16>) -> Result<(Child, u32, u16)> {
    let port = free_port()?;
    std::fs::create_dir_all(redis_dir)?;
    let mut command = Command::new("redis-server");
    command
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(redis_dir);
    if let Some(bus) = bus {
        command
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", "nodes.conf"]);
    }
    let child = spawn_server(command, redis_dir, Path::new("redis-server"))
        .context("--store redis needs Debian's redis-server (apt-get install redis-server)")?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("redis-server exited at once"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").await.is_ok()
                && stream.read_exact(&mut reply).await.is_ok()
                && &reply == b"+PONG\r\n"
            {
                return Ok((child, pid, port));
            }
        }
        if Instant::now() > deadline {
            bail!("redis-server did not answer on port {port} within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three cluster-enabled redis-servers joined into a 3-master Redis
/// Cluster by `redis-cli --cluster create`; returns them and their URLs,
/// comma-separated (`store.cluster`), once the cluster says ok.
async fn start_redis_cluster(dir: &Path) -> Result<(Vec<(Child, u32)>, String)> {
    let mut servers = Vec::new();
    let mut ports = Vec::new();
    for i in 0..3 {
        let node_dir = dir.join(format!("redis-{i}"));
        let (child, pid, port) = start_redis(&node_dir, Some(free_port()?)).await?;
        servers.push((child, pid));
        ports.push(port);
    }
    let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let out = std::process::Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .context("--store redis-cluster needs redis-cli (apt-get install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for port in &ports {
        loop {
            let info = std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string(), "cluster", "info"])
                .output()?;
            if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                break;
            }
            if Instant::now() > deadline {
                bail!("the Redis Cluster was not ok within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let seeds: Vec<String> = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}"))
        .collect();
    Ok((servers, seeds.join(",")))
}

/// One cometbox process in `dir` (on the Redis `store_env` names, if
/// given): the process, its pid, and its public and ingest addresses.
async fn start_node(
    bin: &Path,
    dir: &Path,
    options: &ServerOptions,
    store_env: Option<(&str, String)>,
) -> Result<(Child, u32, SocketAddr, SocketAddr)> {
    let ready = dir.join("ready.json");
    let max_timeout = POLL_TIMEOUT * 2;
    let mut command = Command::new(bin);
    command
        .arg("--ready-file")
        .arg(&ready)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("COMETBOX_PUBLIC__LISTEN", "127.0.0.1:0")
        .env("COMETBOX_INGEST__LISTEN", "127.0.0.1:0")
        .env("COMETBOX_AUTH__SECRET", SECRET)
        .env("COMETBOX_LOG__LEVEL", "warn")
        .env(
            "COMETBOX_LIMITS__POLL_TIMEOUT",
            format!("{}s", POLL_TIMEOUT.as_secs()),
        )
        .env(
            "COMETBOX_LIMITS__MAX_POLL_TIMEOUT",
            format!("{}s", max_timeout.as_secs()),
        )
        .env("COMETBOX_LIMITS__MAX_POLLS_PER_CLIENT", "64")
        .env("COMETBOX_LIMITS__MAILBOX_MAX_MESSAGES", "10000")
        .env("COMETBOX_LIMITS__MAX_INGEST_IN_FLIGHT", "1024")
        .env("COMETBOX_LIMITS__CLIENT_IDLE_TIMEOUT", "10m")
        .env("COMETBOX_LIMITS__REQUEST_TIMEOUT", "60s")
        .env(
            "COMETBOX_STORE__KIND",
            // (a cluster is `kind = "redis"` with `cluster` seeds)
            options.store.trim_end_matches("-cluster"),
        )
        .env("COMETBOX_STORE__PATH", dir.join("store"));
    if options.bayeux {
        command.env("COMETBOX_BAYEUX__ENABLED", "true");
    }
    if let Some((key, value)) = store_env {
        command.env(key, value);
    }
    let mut child = spawn_server(command, dir, bin)?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("cometbox exited at once"))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(&ready) {
            let v: serde_json::Value = serde_json::from_str(&text).context("ready file")?;
            let addr = |k: &str| -> Result<SocketAddr> {
                v[k].as_str()
                    .ok_or_else(|| anyhow!("ready file: no {k}"))?
                    .parse()
                    .with_context(|| format!("ready file: {k}"))
            };
            return Ok((child, pid, addr("public")?, addr("ingest")?));
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            bail!("cometbox exited with {status} before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("cometbox wrote no ready file within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- Nchan ---------------------------------------------------------------

/// The Nchan module, where Debian puts it.
pub fn nchan_module() -> Option<PathBuf> {
    [
        "/usr/lib/nginx/modules/ngx_nchan_module.so",
        "/usr/share/nginx/modules/ngx_nchan_module.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Whether `--target nchan` can run here, or why not.
pub fn nchan_available() -> Result<()> {
    nginx_bin().ok_or_else(|| {
        anyhow!("nginx is not installed (apt-get install -y nginx libnginx-mod-nchan)")
    })?;
    nchan_module().ok_or_else(|| {
        anyhow!("the Nchan module is not installed (apt-get install -y libnginx-mod-nchan)")
    })?;
    Ok(())
}

/// A loopback port that was free a moment ago. Only for nginx, which
/// cannot bind port 0 and report the port it got (cometbox does: it binds
/// `127.0.0.1:0` and writes its addresses to `--ready-file`). Another process
/// may take the port before nginx binds it: [`start_nchan`] then retries.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Ports tried for nginx before giving up (each one only fails if another
/// process took it between [`free_port`] and nginx's bind).
const NGINX_PORT_ATTEMPTS: u32 = 5;

/// The configuration: long-poll subscribers on `/sub/<id>`, publishers on
/// `/pub/<id>`, limits as generous as cometbox's (60 s polls, 10,000
/// messages kept per channel for 5 minutes), logs and temp files in `dir`.
fn nginx_conf(dir: &Path, module: &Path, port: u16, workers: u32) -> String {
    let d = dir.display();
    let nofile = nofile_hard_limit();
    let connections = nofile.saturating_sub(100).max(1024);
    let timeout = POLL_TIMEOUT.as_secs();
    format!(
        r#"load_module {module};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log error;
events {{
    worker_connections {connections};
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    nchan_shared_memory_size 512m;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location ~ ^/sub/(.+)$ {{
            nchan_subscriber longpoll;
            nchan_channel_id $1;
            nchan_subscriber_timeout {timeout}s;
            nchan_subscriber_first_message oldest;
            nchan_longpoll_multipart_response on;
        }}
        location ~ ^/es/(.+)$ {{
            nchan_subscriber eventsource;
            nchan_channel_id $1;
            nchan_subscriber_timeout 0;
        }}
        location ~ ^/ws/(.+)$ {{
            nchan_subscriber websocket;
            nchan_channel_id $1;
            nchan_subscriber_timeout 0;
        }}
        location ~ ^/pub/(.+)$ {{
            nchan_publisher;
            nchan_channel_id $1;
            nchan_message_buffer_length 10000;
            nchan_message_timeout 5m;
        }}
        location = /nchan_status {{
            nchan_stub_status;
        }}
    }}
}}
"#,
        module = module.display()
    )
}

async fn start_nchan(dir: &Path, options: &ServerOptions) -> Result<Server> {
    nchan_available()?;
    for attempt in 1..=NGINX_PORT_ATTEMPTS {
        let port = free_port()?;
        if let Some(server) = start_nginx_on(dir, options, port).await? {
            return Ok(server);
        }
        eprintln!(
            "nginx could not bind 127.0.0.1:{port} (taken since it was chosen); \
             another port ({attempt}/{NGINX_PORT_ATTEMPTS})"
        );
    }
    bail!("nginx could not bind a loopback port in {NGINX_PORT_ATTEMPTS} attempts")
}

/// Starts nginx on `port`; `None` when it exited because the port was
/// taken (try another), an error for any other failure.
async fn start_nginx_on(dir: &Path, options: &ServerOptions, port: u16) -> Result<Option<Server>> {
    let nginx = nginx_bin().expect("checked");
    let module = nchan_module().expect("checked");
    // A previous attempt's log would look like this one's failure.
    let _ = std::fs::remove_file(dir.join("error.log"));
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(dir, &module, port, options.nginx_workers))?;
    let mut command = Command::new(&nginx);
    command
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"]);
    let mut child = spawn_server(command, dir, &nginx)?;
    let pid = child.id().ok_or_else(|| anyhow!("nginx exited at once"))?;
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let endpoint = Endpoint {
        kind: Kind::Nchan,
        public: addr,
        ingest: addr,
        secret: String::new(),
        nodes: Vec::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let workers = procstat::children_of(pid).len() as u32;
        let mut probe = crate::client::Client::new(addr);
        if workers >= options.nginx_workers && endpoint.held_polls(&mut probe).await.is_ok() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
            let err = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            if format!("{log}{err}").contains("Address already in use") {
                return Ok(None);
            }
            bail!("nginx exited with {status} before it was ready:\n{log}{err}");
        }
        if Instant::now() > deadline {
            let _ = child.kill().await;
            bail!("nginx did not serve within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Some(Server {
        endpoint,
        child,
        pid,
        dir: dir.to_owned(),
        extra: Vec::new(),
        redis: Vec::new(),
    }))
}
