//! A Bayeux client as tests need one: raw JSON over HTTP, so every field
//! the server sends can be checked (the real CometD and Faye libraries are
//! driven from Node in tests/bayeux/). One copy for `tests/it` and
//! `tests/cluster`: each implements [`BayeuxServer`] for its own server.

use serde_json::{json, Value};

/// What the client needs of a running server: an HTTP client, and where
/// its `/bayeux` is.
pub trait BayeuxServer {
    fn http(&self) -> &reqwest::Client;
    fn bayeux_url(&self) -> String;
}

/// One Bayeux session's calls.
pub struct BayeuxClient {
    http: reqwest::Client,
    url: String,
    pub client_id: String,
    next_id: u64,
}

impl BayeuxClient {
    /// Posts a batch to `/bayeux`; the status and the reply array.
    pub async fn post(server: &impl BayeuxServer, batch: Value) -> (u16, Value) {
        let reply = server
            .http()
            .post(server.bayeux_url())
            .header("content-type", "application/json")
            .body(batch.to_string())
            .send()
            .await
            .unwrap();
        let status = reply.status().as_u16();
        let text = reply.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        (status, body)
    }

    /// The handshake reply for `ext`.
    pub async fn handshake_reply(server: &impl BayeuxServer, ext: Value) -> Value {
        let handshake = json!([{
            "channel": "/meta/handshake", "version": "1.0", "id": "1",
            "supportedConnectionTypes": ["long-polling", "callback-polling"], "ext": ext,
        }]);
        let (status, reply) = Self::post(server, handshake).await;
        assert_eq!(status, 200, "{reply}");
        reply[0].clone()
    }

    /// A session started with `ext`; panics if refused.
    pub async fn handshake(server: &impl BayeuxServer, ext: Value) -> Self {
        let reply = Self::handshake_reply(server, ext).await;
        assert_eq!(reply["successful"], true, "{reply}");
        BayeuxClient {
            http: server.http().clone(),
            url: server.bayeux_url(),
            client_id: reply["clientId"].as_str().unwrap().to_owned(),
            next_id: 2,
        }
    }

    /// A session for a token.
    pub async fn with_token(server: &impl BayeuxServer, token: &str) -> Self {
        Self::handshake(server, json!({"cometbox": {"token": token}})).await
    }

    /// Sends `messages` (each completed with this session's clientId and
    /// an id); returns the reply array.
    pub async fn send(&mut self, messages: Vec<Value>) -> Vec<Value> {
        let batch: Vec<Value> = messages
            .into_iter()
            .map(|mut m| {
                m["clientId"] = Value::from(self.client_id.as_str());
                m["id"] = Value::from(self.next_id.to_string());
                self.next_id += 1;
                m
            })
            .collect();
        let reply = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .body(Value::Array(batch).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200);
        reply
            .json::<Value>()
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// One message's reply.
    pub async fn one(&mut self, message: Value) -> Value {
        self.send(vec![message]).await.remove(0)
    }

    pub async fn subscribe(&mut self, subscription: Value) -> Value {
        self.one(json!({"channel": "/meta/subscribe", "subscription": subscription}))
            .await
    }

    pub async fn publish(&mut self, channel: &str, data: Value) -> Value {
        self.one(json!({"channel": channel, "data": data})).await
    }

    /// A connect letting the server hold it `timeout_ms`, with `ext`; the
    /// delivered messages and the connect's own reply (last).
    pub async fn connect_with(
        &mut self,
        timeout_ms: u64,
        ext: Option<Value>,
    ) -> (Vec<Value>, Value) {
        let mut connect = json!({
            "channel": "/meta/connect", "connectionType": "long-polling",
            "advice": {"timeout": timeout_ms},
        });
        if let Some(ext) = ext {
            connect["ext"] = ext;
        }
        let mut replies = self.send(vec![connect]).await;
        let own = replies.pop().expect("a connect reply");
        assert_eq!(own["channel"], "/meta/connect", "{own}");
        (replies, own)
    }

    pub async fn connect(&mut self, timeout_ms: u64) -> (Vec<Value>, Value) {
        self.connect_with(timeout_ms, None).await
    }
}

/// `(channel, data)` of delivered messages.
pub fn deliveries(messages: &[Value]) -> Vec<(String, Value)> {
    messages
        .iter()
        .map(|m| (m["channel"].as_str().unwrap().to_owned(), m["data"].clone()))
        .collect()
}
