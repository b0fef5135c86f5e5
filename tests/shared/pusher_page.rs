//! A page's Pusher connection spoken by hand, as pusher-js speaks protocol
//! 7 to `GET /app/<key>`, with channel signatures made by the tests' own
//! HMAC (what a site's auth endpoint does with the app secret), sharing no
//! code with the server's `cometbox::pusher`. Included by path in the test
//! crates that need it (`tests/it`, `tests/cluster`).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A page's pusher-js connection: the socket, its `socket_id`, and the
/// app's key and secret its site signs with.
pub struct Page {
    pub socket: Socket,
    pub socket_id: String,
    key: String,
    secret: String,
}

impl Page {
    /// Connects to `/app/<key>` on `public` and reads
    /// `pusher:connection_established`.
    pub async fn connect(public: impl std::fmt::Display, key: &str, secret: &str) -> Page {
        let url = format!("ws://{public}/app/{key}?protocol=7&client=js&version=8.4.0&flash=false");
        let (mut socket, _) = connect_async(url).await.expect("the upgrade succeeds");
        let first = next_event(&mut socket).await;
        assert_eq!(first["event"], "pusher:connection_established", "{first}");
        let data = data_of(&first);
        let socket_id = data["socket_id"].as_str().unwrap().to_owned();
        assert!(socket_id.split_once('.').is_some(), "{socket_id}");
        assert_eq!(data["activity_timeout"], 120);
        Page {
            socket,
            socket_id,
            key: key.to_owned(),
            secret: secret.to_owned(),
        }
    }

    pub async fn send(&mut self, event: Value) {
        self.socket
            .send(Message::text(event.to_string()))
            .await
            .unwrap();
    }

    pub async fn next(&mut self) -> Value {
        next_event(&mut self.socket).await
    }

    /// Subscribes, signing as the site's auth endpoint would for private
    /// and presence channels; the answer.
    pub async fn subscribe(&mut self, channel: &str, channel_data: Option<Value>) -> Value {
        let mut data = json!({"channel": channel});
        let channel_data = channel_data.map(|d| d.to_string());
        if channel.starts_with("private-") || channel.starts_with("presence-") {
            data["auth"] = json!(self.auth(channel, channel_data.as_deref()));
        }
        if let Some(cd) = channel_data {
            data["channel_data"] = json!(cd);
        }
        self.send(json!({"event": "pusher:subscribe", "data": data}))
            .await;
        self.next().await
    }

    /// No event within `wait`.
    pub async fn quiet(&mut self, wait: Duration) {
        if let Ok(Some(Ok(Message::Text(text)))) =
            tokio::time::timeout(wait, self.socket.next()).await
        {
            panic!("expected nothing, got {text}");
        }
    }

    /// `<key>:<hex HMAC-SHA256("<socket_id>:<channel>[:<channel_data>]")>`.
    pub fn auth(&self, channel: &str, channel_data: Option<&str>) -> String {
        let mut signed = format!("{}:{channel}", self.socket_id);
        if let Some(data) = channel_data {
            signed = format!("{signed}:{data}");
        }
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(self.secret.as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{}:{hex}", self.key)
    }
}

/// The next text frame as JSON, within 10 s (control frames skipped; a
/// close fails the test).
pub async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("the socket stays open")
            .expect("a valid frame");
        match frame {
            Message::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
            Message::Close(close) => panic!("closed: {close:?}"),
            _ => continue,
        }
    }
}

/// A Pusher event's `data`, which is a JSON string on the wire.
pub fn data_of(event: &Value) -> Value {
    serde_json::from_str(event["data"].as_str().expect("data is a string")).unwrap()
}
