//! The NATS sources, on `async-nats`: a core-NATS subject, or a JetStream
//! stream through a durable consumer.
//!
//! - Core NATS (`source = "<subject>"`, wildcards allowed): subscribes.
//!   Core NATS keeps nothing for a disconnected subscriber and has no
//!   acknowledgement: at-most-once, and what is published while cometbox
//!   is away is not seen.
//! - JetStream (`source = "jetstream:<stream>"`): a durable pull consumer
//!   named `consumer` (`cometbox`), bound when it exists, else created
//!   (explicit acks, delivering what arrives from then on, ack wait
//!   [`ACK_WAIT`]). The messages already received are applied as one batch
//!   and each is acknowledged only once [`Sink::apply`] returned, so what
//!   cometbox did not store is redelivered by the server after the ack wait
//!   (at-least-once), across a crash of cometbox.
//!
//! Once connected, the client reconnects by itself — with this bridge's
//! backoff — and resubscribes; its connection events drive the bridge's
//! state. A message's NATS headers (`HPUB`) are the routing headers.
//! `tls://` requires TLS, with the bridge's rustls configuration
//! ([`super::tls`]); `user`/`password`, `token` or `credentials_file`
//! authenticate.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Message;
use futures_util::{FutureExt, StreamExt};

use super::credentials::NatsAuth;
use super::{backoff, BridgeError, Sink, Source};

/// How long the server waits for an acknowledgement before it redelivers,
/// for a consumer cometbox creates: far above the time a batch takes to be
/// stored, and the delay before what a killed cometbox had in hand comes
/// again.
pub const ACK_WAIT: Duration = Duration::from_secs(10);
/// Most messages applied as one batch.
const MAX_BATCH: usize = 256;

fn connect_error(e: impl std::fmt::Display) -> BridgeError {
    BridgeError::Connect(super::tls::explain(&e.to_string()))
}

/// Connects with the bridge's credentials and TLS, its backoff for
/// reconnections, and its state following the client's events.
async fn connect(
    sink: &Sink,
    url: &str,
    auth: &NatsAuth,
) -> Result<async_nats::Client, BridgeError> {
    let reporter = sink.reporter();
    let max = sink.bridge().max_backoff;
    let mut options = async_nats::ConnectOptions::new()
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
        });
    if let Some(tls) = &sink.bridge().tls {
        options = options
            .require_tls(true)
            .tls_client_config((*tls.config).clone());
    }
    options = match auth {
        NatsAuth::None => options,
        NatsAuth::UserPassword { user, password } => {
            options.user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => options.token(token.expose().to_owned()),
        NatsAuth::CredentialsFile(path) => options.credentials_file(path).await.map_err(|e| {
            BridgeError::Connect(format!("credentials_file {}: {e}", path.display()))
        })?,
    };
    options.connect(url).await.map_err(connect_error)
}

/// Runs a core-NATS source until the client gives up (it retries for ever
/// once connected).
pub async fn run(sink: &Sink) -> Result<(), BridgeError> {
    let Source::Nats { url, auth, subject } = &sink.bridge().source else {
        unreachable!("nats::run is only called for a NATS source");
    };
    let client = connect(sink, url, auth).await?;
    let mut messages = client
        .subscribe(subject.clone())
        .await
        .map_err(connect_error)?;
    sink.connected();
    while let Some(message) = messages.next().await {
        let headers = message.headers.as_ref();
        let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
        sink.deliver(header, &message.payload).await?;
    }
    Err(BridgeError::Lost("the NATS subscription ended".into()))
}

/// Runs a JetStream source until its message stream fails.
pub async fn run_jetstream(sink: &Sink) -> Result<(), BridgeError> {
    let Source::JetStream {
        url,
        auth,
        stream,
        consumer,
    } = &sink.bridge().source
    else {
        unreachable!("run_jetstream is only called for a JetStream source");
    };
    let client = connect(sink, url, auth).await?;
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(stream)
        .await
        .map_err(|e| BridgeError::Connect(format!("stream {stream:?}: {e}")))?;
    let consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(
            consumer,
            pull::Config {
                durable_name: Some(consumer.clone()),
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::New,
                ack_wait: ACK_WAIT,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BridgeError::Connect(format!("consumer {consumer:?}: {e}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| BridgeError::Connect(e.to_string()))?;
    sink.connected();
    let lost = |e: Box<dyn std::error::Error + Send + Sync>| BridgeError::Lost(e.to_string());
    while let Some(first) = messages.next().await {
        // Messages already received join the first in one hub batch (one
        // journal write); each is acknowledged after it.
        let mut batch: Vec<Message> = vec![first.map_err(|e| lost(e.into()))?];
        while batch.len() < MAX_BATCH {
            match messages.next().now_or_never() {
                Some(Some(message)) => batch.push(message.map_err(|e| lost(e.into()))?),
                Some(None) | None => break,
            }
        }
        let commands = batch
            .iter()
            .filter_map(|m| {
                let headers = m.headers.as_ref();
                let header = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
                sink.route(header, &m.payload)
            })
            .collect();
        sink.apply(commands).await?;
        for message in &batch {
            message.ack().await.map_err(lost)?;
        }
    }
    Err(BridgeError::Lost(
        "the JetStream consumer's messages ended".into(),
    ))
}
