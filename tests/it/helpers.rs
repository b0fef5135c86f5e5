//! A test server on ephemeral ports, and the calls a backend and a browser
//! make to it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cometbox::config::{ListenAddr, Settings};
use cometbox::listener::Listener;
use cometbox::Listeners;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "integration-test-secret";

/// A fresh directory under the system's temporary one, unique to this
/// process and call.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    let unique = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "cometbox-it-{name}-{}-{unique}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[path = "../shared/wait.rs"]
mod wait;
pub use wait::wait_until;

/// A server running in this process until dropped.
pub struct TestServer {
    pub public: SocketAddr,
    pub ingest: SocketAddr,
    pub http: reqwest::Client,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::with(|_| {}).await
    }

    /// Starts with test defaults (short poll timeout, known secret), then `tweak`.
    pub async fn with(tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = Settings::default();
        settings.auth.secret = SECRET.into();
        settings.limits.poll_timeout = Duration::from_secs(2);
        tweak(&mut settings);
        let loopback = ListenAddr::Tcp("127.0.0.1:0".parse().unwrap());
        let public = Listener::bind(&loopback, 0o660).await.unwrap();
        let ingest = Listener::bind(&loopback, 0o660).await.unwrap();
        let addr = |l: &Listener| l.local_addr().parse::<SocketAddr>().unwrap();
        let (public_addr, ingest_addr) = (addr(&public), addr(&ingest));
        let shutdown = CancellationToken::new();
        let store = cometbox::open_store(&settings).expect("the store opens");
        let hooks = cometbox::open_hooks(&settings).expect("the hooks outbox opens");
        let task = tokio::spawn(cometbox::run(
            settings,
            store,
            hooks,
            Listeners { public, ingest },
            shutdown.clone(),
        ));
        TestServer {
            public: public_addr,
            ingest: ingest_addr,
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1000)
                .build()
                .unwrap(),
            shutdown,
            task: Some(task),
        }
    }

    /// Starts shutting down and waits until the server has stopped.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("stops within 10 s")
                .unwrap();
        }
    }

    pub fn ingest_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ingest)
    }

    pub fn public_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    /// `POST /` with an XML body; returns the status and the reply text.
    pub async fn post(&self, xml: &str) -> (StatusCode, String) {
        let reply = self
            .http
            .post(self.ingest_url("/"))
            .header("content-type", "application/xml")
            .body(xml.to_owned())
            .send()
            .await
            .unwrap();
        (reply.status(), reply.text().await.unwrap())
    }

    /// Posts and asserts `<ok accepted="n"/>`.
    pub async fn post_ok(&self, xml: &str, accepted: usize) {
        let (status, body) = self.post(xml).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::OK,
                format!(r#"<ok accepted="{accepted}"/>"#).as_str()
            ),
            "{xml}"
        );
    }

    /// `GET /poll?<query>`; returns the status, the JSON body and the headers.
    pub async fn poll_raw(&self, query: &str) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let reply = self
            .http
            .get(self.public_url(&format!("/poll?{query}")))
            .send()
            .await
            .unwrap();
        let (status, headers) = (reply.status(), reply.headers().clone());
        let body = reply.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
        (status, json, headers)
    }

    /// A successful poll for `client` (token minted here) with extra query.
    pub async fn poll(&self, client: &str, extra: &str) -> Value {
        let (status, body, headers) = self
            .poll_raw(&format!("token={}&{extra}", token(client, &[])))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(headers["cache-control"], "no-store");
        body
    }

    /// Starts `GET <path>` on the public port in the background, as a
    /// waiting browser would; the handle yields the JSON reply.
    pub fn spawn_poll(&self, path: String) -> tokio::task::JoinHandle<Value> {
        let (http, url) = (self.http.clone(), self.public_url(&path));
        tokio::spawn(async move {
            http.get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    }

    /// Waits until `client` holds `n` open polls: the spawned polls have
    /// arrived and are waiting.
    pub async fn until_open_polls(&self, client: &str, n: u64) {
        let what = format!("{client} holds {n} open polls");
        wait_until(&what, Duration::from_secs(5), || async move {
            self.presence(client).await.1["open_polls"] == n
        })
        .await
    }

    /// Waits until the server holds `n` open polls in all.
    pub async fn until_total_open_polls(&self, n: u64) {
        let what = format!("{n} open polls");
        wait_until(&what, Duration::from_secs(10), || async move {
            self.stats().await["open_polls"] == n
        })
        .await
    }

    /// The status of a plain `GET`.
    pub async fn get_status(&self, url: String) -> StatusCode {
        self.http.get(url).send().await.unwrap().status()
    }

    /// `GET /clients/<id>`: the status and the JSON presence (null if none).
    pub async fn presence(&self, client: &str) -> (StatusCode, Value) {
        let reply = self
            .http
            .get(self.ingest_url(&format!("/clients/{client}")))
            .send()
            .await
            .unwrap();
        let status = reply.status();
        (status, reply.json().await.unwrap_or(Value::Null))
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(self.ingest_url("/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        self.http
            .get(self.ingest_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl crate::bayeux_client::BayeuxServer for TestServer {
    fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn bayeux_url(&self) -> String {
        self.public_url("/bayeux")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// One HTTP/1.1 exchange over a Unix socket (reqwest has no Unix
/// transport): writes `request`, reads until the server closes.
pub async fn unix_exchange(path: &std::path::Path, request: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply
}

/// An ingest `POST /` of `xml`, closing the connection after the reply.
pub fn post_request(xml: &str) -> String {
    format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
        xml.len()
    )
}

#[path = "../shared/jwt.rs"]
mod jwt;
pub use jwt::{now, token_with};

/// Mints an HS256 token by hand (`tests/shared/jwt.rs`), the way a backend
/// with any JWT library would: independent of the server's `jsonwebtoken`.
pub fn token(client: &str, channels: &[&str]) -> String {
    token_with(
        json!({ "sub": client, "exp": now() + 600, "channels": channels }),
        SECRET,
    )
}

/// The `data` of each message of a poll reply.
pub fn datas(reply: &Value) -> Vec<Value> {
    reply["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {reply}"))
        .iter()
        .map(|m| m["data"].clone())
        .collect()
}

pub fn cursor(reply: &Value) -> String {
    reply["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("no cursor in {reply}"))
        .to_owned()
}
