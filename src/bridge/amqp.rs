//! The AMQP 0-9-1 source (RabbitMQ), on `lapin`.
//!
//! A queue source consumes the named queue (declared by the operator, so
//! its durability is theirs to choose) with manual acknowledgement and a
//! prefetch window; the deliveries already received are applied as one
//! batch and acknowledged together (`multiple`) only once [`Sink::apply`]
//! returned, so what cometbox did not store is redelivered
//! after a crash or a lost connection (at-least-once). An
//! `<exchange>/<routing key>` source binds a server-named exclusive queue
//! that goes away with the connection: what is published while cometbox is
//! disconnected is not seen (at-most-once). String, number and boolean
//! entries of a message's `headers` table are the routing headers.
//!
//! `amqps://`: lapin's own socket, handed our rustls configuration
//! ([`super::tls`]) instead of its default, so that `ca_file` and a client
//! certificate apply as for every other bridge.

use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};

use super::config::AmqpFrom;
use super::{BridgeError, Sink, Source};

/// Unacknowledged deliveries the broker may send ahead.
const PREFETCH: u16 = 64;

/// Runs until the connection ends.
pub async fn run(sink: &Sink) -> Result<(), BridgeError> {
    let Source::Amqp { url, from } = &sink.bridge().source else {
        unreachable!("amqp::run is only called for an AMQP source");
    };
    let connect = |e: lapin::Error| BridgeError::Connect(super::tls::explain(&e.to_string()));
    let conn = open(sink, url.as_str()).await.map_err(connect)?;
    let channel = conn.create_channel().await.map_err(connect)?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(connect)?;
    let queue = match from {
        AmqpFrom::Queue(name) => name.clone(),
        AmqpFrom::Exchange {
            exchange,
            routing_key,
        } => {
            let queue = channel
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions {
                        exclusive: true,
                        auto_delete: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(connect)?;
            let name = queue.name().as_str().to_owned();
            channel
                .queue_bind(
                    name.clone().into(),
                    exchange.as_str().into(),
                    routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(connect)?;
            name
        }
    };
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "cometbox".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(connect)?;
    sink.connected();
    let lost = |e: lapin::Error| BridgeError::Lost(e.to_string());
    while let Some(first) = consumer.next().await {
        // Deliveries already received join the first in one hub batch (one
        // journal write), acknowledged together with `multiple`.
        let mut batch = vec![first.map_err(lost)?];
        while batch.len() < usize::from(PREFETCH) {
            match consumer.next().now_or_never() {
                Some(Some(delivery)) => batch.push(delivery.map_err(lost)?),
                Some(None) | None => break,
            }
        }
        let commands = batch
            .iter()
            .filter_map(|delivery| {
                let headers = delivery
                    .properties
                    .headers()
                    .as_ref()
                    .map(string_headers)
                    .unwrap_or_default();
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.as_str())
                };
                sink.route(header, &delivery.data)
            })
            .collect();
        sink.apply(commands).await?;
        let last = batch.last().expect("a batch has its first delivery");
        last.ack(BasicAckOptions { multiple: true })
            .await
            .map_err(lost)?;
    }
    Err(BridgeError::Lost("the consumer was cancelled".into()))
}

/// Connects; over TLS with the bridge's configuration for `amqps://`.
async fn open(sink: &Sink, url: &str) -> Result<Connection, lapin::Error> {
    let uri: AMQPUri = url.parse().map_err(|e: String| {
        lapin::Error::from(std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    })?;
    let properties =
        ConnectionProperties::default().with_connection_name(sink.bridge().name.clone().into());
    let Some(tls) = &sink.bridge().tls else {
        return Connection::connect_uri(uri, properties).await;
    };
    let connector = RustlsConnector::from(tls.config.clone());
    Connection::connector(
        uri,
        lapin::runtime::default_runtime()?,
        async move |uri, runtime| {
            // The TCP connection as lapin makes it (timeout, address
            // resolution), then our handshake, checking the URL's host.
            let host = uri.authority.host.clone();
            let mut plain = uri;
            plain.scheme = AMQPScheme::AMQP;
            let tcp = plain.connect_async(&runtime).await?;
            Ok(tcp.into_rustls(&connector, &host).await?)
        },
        properties,
    )
    .await
}

/// The headers a route can read: strings, numbers and booleans as text.
fn string_headers(table: &FieldTable) -> Vec<(String, String)> {
    table
        .inner()
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                AMQPValue::ShortString(s) => s.as_str().to_owned(),
                AMQPValue::LongString(s) => String::from_utf8(s.as_bytes().to_vec()).ok()?,
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::ShortShortInt(n) => n.to_string(),
                AMQPValue::ShortShortUInt(n) => n.to_string(),
                AMQPValue::ShortInt(n) => n.to_string(),
                AMQPValue::ShortUInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                _ => return None,
            };
            Some((k.as_str().to_owned(), text))
        })
        .collect()
}
