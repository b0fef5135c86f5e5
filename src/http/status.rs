//! `GET /status` on the ingest listener: one HTML page for a person, the
//! figures of `/stats` and `/health` refreshed in place by its own script.
//!
//! The page is embedded at build time and is whole in itself (inline style
//! and script, no build step, nothing fetched from elsewhere: the
//! `Content-Security-Policy` below forbids it), so it works on an
//! air-gapped host and shows the version it was built with. It holds no
//! figures: the script reads them from `stats` and `health` beside it, so
//! the page also works behind a proxy prefix.
//!
//! With an ingest key, opening the page in a browser gets `401` with
//! `WWW-Authenticate: Basic`: the browser asks for a user name (any) and a
//! password (the key), and sends the same credentials with the page's own
//! requests. The key is never in a URL (logs, history) and the page keeps
//! no copy of it (see `ingest::require_key`).

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The page, from `status.html` beside this file.
const PAGE: &str = include_str!("status.html");

/// Only the page's own inline style and script, and requests to its own
/// origin: an injected or mistaken external asset is refused by the browser.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /status`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        PAGE,
    )
        .into_response()
}
