//! A real nginx (Debian's) in front of several nodes, for one test: its own
//! prefix directory, config and temp dirs, a free loopback port, started
//! and stopped by pid. The `server {}` includes `deploy/nginx/cometbox.conf`
//! unchanged, and the upstream is `deploy/nginx/cometbox-upstream-cluster.conf`
//! with only its `server` addresses replaced by the test nodes' (their
//! parameters, `keepalive` and the rest as shipped). The access log records
//! which node answered each request (`$upstream_addr`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::redis_server::free_port;

/// The repository root (for the shipped snippets).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The binary: `NGINX_BIN`, else `/usr/sbin/nginx` (Debian's, not always on
/// a user's PATH), else `nginx`.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NGINX_BIN") {
        return PathBuf::from(bin);
    }
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        debian
    } else {
        PathBuf::from("nginx")
    }
}

/// The shipped multi-node upstream with the `server host:port` of each line
/// replaced, in order, by `nodes` (more or fewer lines as needed, each with
/// the first shipped line's parameters).
pub fn cluster_upstream(nodes: &[String]) -> String {
    let shipped =
        std::fs::read_to_string(repo().join("deploy/nginx/cometbox-upstream-cluster.conf"))
            .expect("deploy/nginx/cometbox-upstream-cluster.conf");
    let is_server = |l: &str| l.trim_start().starts_with("server ");
    let first = shipped
        .lines()
        .find(|l| is_server(l))
        .expect("a server line");
    let params = first
        .trim()
        .trim_end_matches(';')
        .split_whitespace()
        .skip(2)
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = String::new();
    let mut written = false;
    for line in shipped.lines() {
        if !is_server(line) {
            out.push_str(line);
            out.push('\n');
        } else if !written {
            written = true;
            for node in nodes {
                out.push_str(&format!("    server {node} {params};\n"));
            }
        }
    }
    out
}

/// A running nginx.
pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: PathBuf,
    pub http: reqwest::Client,
}

impl Nginx {
    /// Starts nginx in `dir` proxying `/cometbox/` to `nodes` (their public
    /// addresses), and waits until it answers.
    pub async fn start(dir: &Path, nodes: &[String]) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let upstream = cluster_upstream(nodes);
        let snippet = repo().join("deploy/nginx/cometbox.conf");
        let mut last_error = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            let conf = dir.join("nginx.conf");
            std::fs::write(&conf, config(dir, port, &upstream, &snippet)).unwrap();
            let mut command = Command::new(binary());
            command
                .arg("-p")
                .arg(dir)
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.join("error.log"))
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap());
            // SAFETY: prctl only. SIGTERM (not SIGKILL) if the test process
            // dies first: nginx's master then takes its workers down too.
            unsafe {
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let mut child = command.spawn().unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (apt-get install nginx)",
                    binary().display()
                )
            });
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
                {
                    return Nginx {
                        child,
                        port,
                        dir: dir.to_owned(),
                        http: reqwest::Client::builder()
                            .pool_max_idle_per_host(256)
                            .timeout(Duration::from_secs(60))
                            .build()
                            .unwrap(),
                    };
                }
                if let Some(status) = child.try_wait().unwrap() {
                    last_error = format!(
                        "nginx exited ({status}): {}{}",
                        std::fs::read_to_string(dir.join("stderr.log")).unwrap_or_default(),
                        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                    );
                    break; // the port was taken meanwhile, most likely: again
                }
                if Instant::now() > deadline {
                    last_error = "nginx did not listen within 20 s".into();
                    stop(&mut child);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("nginx did not start: {last_error}");
    }

    /// `http://127.0.0.1:<port>/cometbox/<path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/cometbox/{path}", self.port)
    }

    /// A poll of `token` through nginx: the status and the body (JSON when
    /// it is JSON, else `Value::Null` with the text logged), or the
    /// transport error.
    pub async fn poll(
        &self,
        token: &str,
        query: &str,
    ) -> Result<(u16, serde_json::Value), reqwest::Error> {
        let reply = self
            .http
            .get(self.url(&format!("poll?token={token}&{query}")))
            .send()
            .await?;
        let status = reply.status().as_u16();
        let text = reply.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }

    /// The upstream addresses that answered requests whose URI contains
    /// `needle`, in order (nginx's own answers, such as a 502 with no node
    /// left, show as `-`; a retried request lists each node tried).
    pub fn upstreams_of(&self, needle: &str) -> Vec<String> {
        self.access_log()
            .lines()
            .filter(|l| l.contains(needle))
            .filter_map(|l| l.split('|').nth(2).map(str::to_owned))
            .collect()
    }

    /// Lines of the access log: `<uri>|<status>|<upstream_addr>|<upstream_status>`
    /// (a retried request lists every node tried: `a:1, b:2`).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    /// nginx's error log (where it says which upstream failed and why).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM to our own nginx master (it stops its workers), then reap; SIGKILL
/// after 10 s.
fn stop(child: &mut Child) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The test's nginx.conf: everything in `dir`, one worker, the snippet
/// included in a site's `server {}` as deploy/README.md says.
fn config(dir: &Path, port: u16, upstream: &str, snippet: &Path) -> String {
    let d = dir.display();
    // As root, workers would otherwise run as `nobody`; nothing here needs
    // that (loopback only, files in the test's own directory).
    // SAFETY: geteuid has no preconditions.
    let user = if unsafe { libc::geteuid() } == 0 {
        "user root root;"
    } else {
        ""
    };
    format!(
        r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 4096; }}
http {{
    log_format upstreams '$request_uri|$status|$upstream_addr|$upstream_status';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{upstream}
    server {{
        listen 127.0.0.1:{port};
        server_name localhost;
        location / {{ return 404; }}
        include {snippet};
    }}
}}
"#,
        snippet = snippet.display()
    )
}
