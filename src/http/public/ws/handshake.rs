//! The RFC 6455 opening handshake of `GET /ws`: which requests upgrade,
//! and the `101 Switching Protocols` that answers them. Anything else is
//! refused over HTTP before the upgrade: `400 bad-upgrade` (no `Upgrade:
//! websocket`, no `Connection: upgrade`, a missing or malformed
//! `Sec-WebSocket-Key`), `426 bad-upgrade` with `Sec-WebSocket-Version:
//! 13` for another version (§4.4), and `403 cors-forbidden` for a page on
//! another origin than the host it connects to that `[public]
//! cors_origins` does not list: a WebSocket is not subject to CORS in the
//! browser, so the server checks `Origin` itself (RFC 6455 §10.2), or any
//! site could open a socket with a token it got hold of.

use base64::Engine;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::http::public::error::PublicError;
use crate::http::public::face::Face;
use crate::http::public::request::{Head, Upgrade};

/// The `Sec-WebSocket-Accept` for a valid opening handshake from an
/// allowed origin.
pub fn accept_key(face: &Face, head: &Head) -> Result<String, PublicError> {
    let bad = |why: &str| Err(PublicError::BadUpgrade(why.to_owned()));
    let Some(upgrade) = head.upgrade.as_deref() else {
        return bad("/ws needs Upgrade: websocket");
    };
    if !upgrade.websocket {
        return bad("/ws needs Upgrade: websocket");
    }
    if !upgrade.connection {
        return bad("/ws needs Connection: Upgrade");
    }
    let Some(key) = upgrade.key.as_deref() else {
        return bad("/ws needs a Sec-WebSocket-Key");
    };
    // §4.1: base64 of 16 bytes.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key.trim());
    if decoded.map_or(true, |bytes| bytes.len() != 16) {
        return bad("Sec-WebSocket-Key must be the base64 of 16 bytes");
    }
    if upgrade.version.as_deref().map(str::trim) != Some("13") {
        return Err(PublicError::WsVersion);
    }
    check_origin(face, upgrade)?;
    Ok(derive_accept_key(key.trim().as_bytes()))
}

/// Whether `host` (the `Host` header) names the origin's `authority`.
/// A proxy that passes `$host` drops the port, so a `Host` without one
/// matches the origin's host name on any port; with a port, exactly.
fn same_host(host: &str, authority: &str) -> bool {
    if host.eq_ignore_ascii_case(authority) {
        return true;
    }
    port_split(host).is_none()
        && port_split(authority).is_some_and(|(name, _)| name.eq_ignore_ascii_case(host))
}

/// `name:port` split at the port, if `s` ends in one.
fn port_split(s: &str) -> Option<(&str, &str)> {
    s.rsplit_once(':')
        .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
}

/// A request without `Origin` (not a browser), from the origin of the
/// host it connects to (the site's own pages, directly or through a proxy
/// that passes `Host` on), or from an origin `cors_origins` allows.
fn check_origin(face: &Face, upgrade: &Upgrade) -> Result<(), PublicError> {
    let Some(origin) = upgrade.origin.as_deref() else {
        return Ok(());
    };
    let authority = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let same_host = upgrade
        .host
        .as_deref()
        .is_some_and(|host| same_host(host.trim(), authority));
    if same_host || face.cors.allow(Some(origin.to_owned()), false).is_some() {
        return Ok(());
    }
    Err(PublicError::CorsForbidden(origin.to_owned()))
}

/// The `101` that completes the handshake. No extension or subprotocol is
/// taken up (`permessage-deflate` is not offered).
pub fn switching(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}
