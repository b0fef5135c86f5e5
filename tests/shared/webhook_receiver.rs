//! A Pusher webhook receiver for the tests: an HTTP server on loopback
//! (axum, in the test's process) recording every request's
//! `X-Pusher-Key`, `X-Pusher-Signature` and body, answering the status it
//! is set to (200 unless told otherwise).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// One request the receiver got: its headers and body, and the status it
/// answered.
#[derive(Clone, Debug)]
pub struct Got {
    pub key: String,
    pub signature: String,
    pub body: String,
    pub status: u16,
}

/// An HTTP server on loopback recording every webhook; it answers
/// `status` (200 unless told otherwise).
pub struct Receiver {
    addr: SocketAddr,
    pub got: Arc<Mutex<Vec<Got>>>,
    pub status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let status = Arc::new(AtomicU16::new(200));
        let (got2, status2) = (got.clone(), status.clone());
        let app = axum::Router::new().route(
            "/pusher/webhooks",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (got, status) = (got2.clone(), status2.clone());
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let answer = status.load(SeqCst);
                    got.lock().unwrap().push(Got {
                        key: header("x-pusher-key"),
                        signature: header("x-pusher-signature"),
                        body,
                        status: answer,
                    });
                    StatusCode::from_u16(answer).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            addr,
            got,
            status,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/pusher/webhooks", self.addr)
    }

    /// The events of every request answered 200, in order of arrival.
    pub fn delivered(&self) -> Vec<Value> {
        let got = self.got.lock().unwrap().clone();
        got.iter()
            .filter(|g| g.status == 200)
            .flat_map(|g| {
                let body: Value = serde_json::from_str(&g.body).unwrap();
                body["events"].as_array().unwrap().clone()
            })
            .collect()
    }

    /// Waits until the delivered events named `name` number `count`.
    pub async fn until(&self, name: &str, count: usize) -> Vec<Value> {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while self.named(name).len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{count} {name} webhooks did not come in 15 s; got {:?}",
                self.delivered()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.named(name)
    }

    pub fn named(&self, name: &str) -> Vec<Value> {
        (self.delivered().into_iter())
            .filter(|e| e["name"] == name)
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
