//! `POST /`: an XML batch read whole (its declared and actual size
//! bounded, an unread rest drained in the background), parsed, and applied
//! all or nothing.

use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use futures_util::StreamExt;

use crate::http::error::{xml, IngestError};
use crate::http::AppState;
use crate::protocol::ingest::{self, ParseLimits};
/// `POST /`: parse the whole body, then apply every command or none.
pub(super) async fn commands(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, IngestError> {
    if state.hub.is_shutting_down() {
        return Err(IngestError::ShuttingDown);
    }
    check_xml_content_type(&headers)?;
    let limits = &state.settings.limits;
    let body = refuse_declared_length(
        &headers,
        body,
        limits.max_body_bytes,
        limits.request_timeout,
    )?;
    let _slot = state.ingest_slots.try_acquire().map_err(|_| {
        IngestError::Overloaded(format!(
            "more than {} ingest requests in flight",
            state.settings.limits.max_ingest_in_flight
        ))
    })?;
    let body = read_body(
        body,
        &headers,
        limits.max_body_bytes,
        limits.request_timeout,
    )
    .await?;
    let parse_limits = ParseLimits {
        max_payload_bytes: limits.max_payload_bytes,
        max_commands: limits.max_batch_commands,
    };
    let commands = ingest::parse(&body, parse_limits)?;
    let accepted = state.hub.apply(commands).await?;
    Ok(xml(
        StatusCode::OK,
        format!(r#"<ok accepted="{accepted}"/>"#),
    ))
}

/// XML by any of its media types; a missing Content-Type is taken as XML
/// (documented), anything else is refused before the body is read.
fn check_xml_content_type(headers: &HeaderMap) -> Result<(), IngestError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let value = value.to_str().unwrap_or("");
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if matches!(essence.as_str(), "application/xml" | "text/xml") || essence.ends_with("+xml") {
        Ok(())
    } else {
        Err(IngestError::UnsupportedMediaType(value.to_owned()))
    }
}

/// Over-limit bodies up to this size are read to the end and discarded, so
/// that a client still sending sees the 413 rather than a reset connection
/// (closing a socket with unread data resets it). Larger ones are cut off.
const MAX_DRAINED_BODY_BYTES: u64 = 16 << 20;

/// A body whose declared `Content-Length` is over `max` is answered `413`
/// at once, before any of it is read. The connection then closes; what the
/// client still sends (up to [`MAX_DRAINED_BODY_BYTES`], within `timeout`) is read and
/// dropped in the background so that it reads the reply instead of a reset.
pub(crate) fn refuse_declared_length(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    timeout: Duration,
) -> Result<Body, IngestError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|len| *len > max as u64) else {
        return Ok(body);
    };
    if declared <= MAX_DRAINED_BODY_BYTES {
        tokio::spawn(drain(body, timeout));
    }
    Err(IngestError::DeclaredTooLarge(format!(
        "Content-Length {declared} is over limits.max_body_bytes ({max} bytes)"
    )))
}

/// Reads and drops `body` (at most [`MAX_DRAINED_BODY_BYTES`] bytes, bounded by the
/// declared length already checked) for at most `timeout`.
async fn drain(body: Body, timeout: Duration) {
    let mut body = body.into_data_stream();
    let _ = tokio::time::timeout(timeout, async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await;
}

/// Reads at most `max` bytes within `timeout`; a declared length over the
/// limit is refused before reading anything.
pub(crate) async fn read_body(
    body: Body,
    headers: &HeaderMap,
    max: usize,
    timeout: Duration,
) -> Result<bytes::Bytes, IngestError> {
    let too_large =
        || IngestError::TooLarge(format!("body over limits.max_body_bytes ({max} bytes)"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_DRAINED_BODY_BYTES) {
        return Err(too_large());
    }
    let mut body = body.into_data_stream();
    let mut collected = bytes::BytesMut::new();
    let mut seen: u64 = 0;
    let reading = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| {
                IngestError::InvalidRequest(format!("could not read the body: {e}"))
            })?;
            seen += chunk.len() as u64;
            if seen > MAX_DRAINED_BODY_BYTES {
                return Err(too_large());
            }
            if seen <= max as u64 {
                collected.extend_from_slice(&chunk);
            }
        }
        Ok(())
    };
    tokio::time::timeout(timeout, reading)
        .await
        .map_err(|_| IngestError::BodyTimeout(timeout))??;
    if seen > max as u64 {
        return Err(too_large());
    }
    Ok(collected.freeze())
}
