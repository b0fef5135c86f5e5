//! The NATS source (core NATS), on `async-nats`.
//!
//! Subscribes to the subject (wildcards allowed). Core NATS keeps nothing
//! for a disconnected subscriber and has no acknowledgement: delivery is
//! at-most-once, and what is published while cometbox is away is not seen
//! (a JetStream stream would be needed for more; not supported yet). Once
//! connected, the client reconnects by itself — with this bridge's backoff —
//! and resubscribes; its connection events drive the bridge's state. A
//! message's NATS headers (`HPUB`) are the routing headers.

use futures_util::StreamExt;

use super::{backoff, BridgeError, Sink, Source};

/// Runs until the client gives up (it retries for ever once connected).
pub async fn run(sink: &Sink) -> Result<(), BridgeError> {
    let Source::Nats { url, subject } = &sink.bridge().source else {
        unreachable!("nats::run is only called for a NATS source");
    };
    let reporter = sink.reporter();
    let max = sink.bridge().max_backoff;
    let client = async_nats::ConnectOptions::new()
        .name(format!("cometbox {}", sink.bridge().name))
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempt| backoff(attempt.min(32) as u32, max))
        .event_callback(move |event| {
            let reporter = reporter.clone();
            async move {
                match event {
                    async_nats::Event::Connected => reporter.connected(),
                    async_nats::Event::Disconnected => {
                        reporter.disconnected("the NATS connection was lost")
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        })
        .connect(url.as_str())
        .await
        .map_err(|e| BridgeError::Connect(e.to_string()))?;
    let mut messages = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| BridgeError::Connect(e.to_string()))?;
    sink.connected();
    while let Some(message) = messages.next().await {
        let headers = message.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        sink.deliver(header, &message.payload).await?;
    }
    Err(BridgeError::Lost("the NATS subscription ended".into()))
}
