//! Starting cometbox nodes on one Redis, and the looks the tests share.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{self, Server, Spec};
use crate::redis_server::TestRedis;

/// What a node is pointed at: a URL (one server) or a [`TestRedis`] (one
/// server or a cluster).
pub trait RedisAt {
    /// The `COMETBOX_STORE__*` settings naming it.
    fn store_env(&self) -> Vec<(&'static str, String)>;
}

impl RedisAt for String {
    fn store_env(&self) -> Vec<(&'static str, String)> {
        vec![("COMETBOX_STORE__URL", self.clone())]
    }
}

impl RedisAt for TestRedis {
    fn store_env(&self) -> Vec<(&'static str, String)> {
        TestRedis::store_env(self)
    }
}

/// Starts a node on `redis` with extra `COMETBOX_*` settings.
pub async fn node(redis: &impl RedisAt, run_dir: &Path, extra: &[(&str, &str)]) -> Server {
    harness::start(&node_spec(redis, run_dir, extra)).await
}

/// What [`node`] starts (to start it again after a kill).
pub fn node_spec(redis: &impl RedisAt, run_dir: &Path, extra: &[(&str, &str)]) -> Spec {
    let mut spec = Spec {
        store: None,
        run_dir: run_dir.to_owned(),
        env: Vec::new(),
    }
    .with("COMETBOX_STORE__KIND", "redis")
    .with("COMETBOX_STORE__TIMEOUT", "1s")
    .with("COMETBOX_LOG__LEVEL", "debug");
    for (k, v) in redis.store_env() {
        spec = spec.with(k, &v);
    }
    for (k, v) in extra {
        spec = spec.with(k, v);
    }
    spec
}

/// `n` nodes on `redis`.
pub async fn nodes(redis: &impl RedisAt, run_dir: &Path, n: usize) -> Vec<Server> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(node(redis, run_dir, &[]).await);
    }
    all
}

/// `GET <path>` on the ingest port: status and body.
pub async fn ingest_get(server: &Server, path: &str) -> (u16, String) {
    let reply = server
        .http
        .get(format!("http://{}{path}", server.ingest))
        .send()
        .await
        .expect("ingest answers");
    (reply.status().as_u16(), reply.text().await.unwrap())
}

/// The `/stats` JSON.
pub async fn stats(server: &Server) -> Value {
    let (status, body) = ingest_get(server, "/stats").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A poll that must answer 200; its body.
pub async fn poll_ok(server: &Server, token: &str, query: &str) -> Value {
    let (status, body) = server.poll(token, query).await.expect("poll answers");
    assert_eq!(status, 200, "poll ?{query}: {body}");
    body
}

/// Message ids of a poll reply.
pub fn ids(body: &Value) -> Vec<String> {
    body["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Generous bound for anything a loaded machine should still do quickly.
pub const PROMPT: Duration = Duration::from_secs(5);

/// The `i` of each message of a poll reply (`{"i": n}` payloads).
pub fn numbers(body: &Value) -> Vec<i64> {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["data"]["i"].as_i64().unwrap())
        .collect()
}
