//! The Redis sources, on the `redis` crate.
//!
//! - Pub/sub (`source = "channel"`, or a pattern with `*`, `?` or `[`):
//!   `SUBSCRIBE`/`PSUBSCRIBE`. Redis keeps nothing for an absent subscriber
//!   and pub/sub messages carry no headers: at-most-once, routed by the
//!   bridge's fixed `channel` and `event` only.
//! - Streams (`source = "stream:<key>"`): read through a consumer group
//!   (created at the stream's end, with `MKSTREAM`, when missing). Each
//!   connection first re-reads the entries this consumer was given but did
//!   not acknowledge (its pending list), then blocks for new ones; each read
//!   is applied as one batch and its entries are `XACK`ed only once
//!   [`Sink::apply`] returned, so a crash
//!   redelivers rather than loses (at-least-once). The entry's `data` field
//!   is the payload; its other fields are the routing headers.
//!
//! `rediss://`: the `redis` crate's rustls connection, given `ca_file` (then
//! trusted instead of the system's store) and the client certificate; the
//! URL's user and password (or `user`/`password`) are an ACL `AUTH`.

use std::time::Duration;

use futures_util::StreamExt;
use redis::{AsyncConnectionConfig, Value};

use super::{BridgeError, Sink, Source};

/// How long one `XREADGROUP` blocks.
const BLOCK: Duration = Duration::from_secs(5);
/// Entries read at once.
const COUNT: usize = 100;
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn connect_error(e: redis::RedisError) -> BridgeError {
    BridgeError::Connect(super::tls::explain(&e.to_string()))
}

/// The client for `url`, with the bridge's TLS files when it has some.
fn client(sink: &Sink, url: &str) -> Result<redis::Client, BridgeError> {
    let tls = sink.bridge().tls.as_ref();
    match tls.filter(|t| t.ca_pem.is_some() || t.client_pem.is_some()) {
        None => redis::Client::open(url),
        Some(tls) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: tls
                    .client_pem
                    .as_ref()
                    .map(|(cert, key)| redis::ClientTlsConfig {
                        client_cert: cert.clone(),
                        client_key: key.clone(),
                    }),
                root_cert: tls.ca_pem.clone(),
            },
        ),
    }
    .map_err(connect_error)
}

fn lost(e: redis::RedisError) -> BridgeError {
    BridgeError::Lost(e.to_string())
}

/// Runs a pub/sub source until the connection ends.
pub async fn run_pubsub(sink: &Sink) -> Result<(), BridgeError> {
    let Source::RedisPubSub { url, channel } = &sink.bridge().source else {
        unreachable!("run_pubsub is only called for a Redis pub/sub source");
    };
    let client = client(sink, url)?;
    let mut pubsub = tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
        .await
        .map_err(|_| BridgeError::Connect("timed out".into()))?
        .map_err(connect_error)?;
    if channel.contains(['*', '?', '[']) {
        pubsub.psubscribe(channel).await.map_err(connect_error)?;
    } else {
        pubsub.subscribe(channel).await.map_err(connect_error)?;
    }
    sink.connected();
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        sink.deliver(|_| None, message.get_payload_bytes()).await?;
    }
    Err(BridgeError::Lost("the Redis connection was closed".into()))
}

/// Runs a stream source until the connection fails.
pub async fn run_stream(sink: &Sink) -> Result<(), BridgeError> {
    let Source::RedisStream {
        url,
        key,
        group,
        consumer,
    } = &sink.bridge().source
    else {
        unreachable!("run_stream is only called for a Redis stream source");
    };
    let client = client(sink, url)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(10)));
    let mut con = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(connect_error)?;
    let created: Result<(), _> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg("$")
        .arg("MKSTREAM")
        .query_async(&mut con)
        .await;
    match created {
        Ok(()) => {
            tracing::info!(bridge = %sink.bridge().name, stream = %key, group = %group, "created the consumer group at the stream's end")
        }
        Err(e) if e.code() == Some("BUSYGROUP") => {}
        Err(e) => return Err(connect_error(e)),
    }
    sink.connected();
    // "0": this consumer's pending entries, until none is left; then ">".
    let mut pending = true;
    loop {
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(COUNT);
        if !pending {
            read.arg("BLOCK").arg(BLOCK.as_millis() as u64);
        }
        read.arg("STREAMS")
            .arg(key)
            .arg(if pending { "0" } else { ">" });
        let reply: Value = read.query_async(&mut con).await.map_err(lost)?;
        let entries = entries(reply).map_err(BridgeError::Protocol)?;
        if pending && entries.is_empty() {
            pending = false;
        }
        // The whole read is one hub batch (one journal write), then one XACK.
        let mut commands = Vec::with_capacity(entries.len());
        for fields in entries.iter().filter_map(|e| e.fields.as_ref()) {
            let header = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| std::str::from_utf8(v).ok())
            };
            let payload = fields
                .iter()
                .find(|(k, _)| k == "data")
                .map_or(&[][..], |(_, v)| v.as_slice());
            commands.extend(sink.route(header, payload));
        }
        sink.apply(commands).await?;
        if !entries.is_empty() {
            // A pending entry deleted from the stream (no fields) is
            // acknowledged too: there is nothing left to deliver.
            let _: i64 = redis::cmd("XACK")
                .arg(key)
                .arg(group)
                .arg(entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
                .query_async(&mut con)
                .await
                .map_err(lost)?;
        }
    }
}

/// One stream entry: its id and fields (none when it was deleted while
/// pending).
#[derive(Debug, PartialEq)]
struct Entry {
    id: String,
    fields: Option<Vec<(String, Vec<u8>)>>,
}

/// The entries of an `XREADGROUP` reply for one key (RESP2 or RESP3):
/// `[[key, [[id, [field, value, ...] | nil], ...]]]`, or nil on timeout.
fn entries(reply: Value) -> Result<Vec<Entry>, String> {
    let streams = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => streams
            .into_iter()
            .map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => Ok(pair.swap_remove(1)),
                other => Err(format!("unexpected XREADGROUP stream {other:?}")),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Value::Map(streams) => streams.into_iter().map(|(_, v)| v).collect(),
        other => return Err(format!("unexpected XREADGROUP reply {other:?}")),
    };
    let mut out = Vec::new();
    for list in streams {
        let Value::Array(list) = list else {
            return Err("unexpected XREADGROUP entry list".into());
        };
        for entry in list {
            let Value::Array(mut parts) = entry else {
                return Err("unexpected XREADGROUP entry".into());
            };
            if parts.len() != 2 {
                return Err("unexpected XREADGROUP entry".into());
            }
            let fields = parts.pop().expect("two parts");
            let id = text(parts.pop().expect("two parts")).ok_or("an entry id is not text")?;
            let fields = match fields {
                Value::Nil => None,
                Value::Array(flat) => Some(
                    flat.chunks(2)
                        .filter_map(|kv| match kv {
                            [k, v] => Some((text(k.clone())?, bytes(v.clone())?)),
                            _ => None,
                        })
                        .collect(),
                ),
                Value::Map(pairs) => Some(
                    pairs
                        .into_iter()
                        .filter_map(|(k, v)| Some((text(k)?, bytes(v)?)))
                        .collect(),
                ),
                _ => return Err("unexpected XREADGROUP fields".into()),
            };
            out.push(Entry { id, fields });
        }
    }
    Ok(out)
}

fn bytes(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.into_bytes()),
        _ => None,
    }
}

fn text(v: Value) -> Option<String> {
    String::from_utf8(bytes(v)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_entries_and_deleted_ones() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("events"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("data"), bulk("{}"), bulk("ch"), bulk("x")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let got = entries(reply).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].id, "1-0");
        assert_eq!(
            got[0].fields,
            Some(vec![
                ("data".into(), b"{}".to_vec()),
                ("ch".into(), b"x".to_vec())
            ])
        );
        assert_eq!(got[1].fields, None);
        assert!(entries(Value::Nil).unwrap().is_empty());
        assert!(entries(Value::Int(1)).is_err());
    }
}
