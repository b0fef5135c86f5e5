//! The public port's refusals: each error a request can meet, with the
//! contract's status and code, answered as `{"error": code, "message": ...}`.

use axum::http::StatusCode;

use super::response::Response;
use crate::auth::TokenError;
use crate::hub::PollError;

/// An error reply of the public (browser) port.
#[derive(Debug, thiserror::Error)]
pub enum PublicError {
    /// 400 `invalid-request`
    #[error("{0}")]
    InvalidRequest(String),
    /// 401 `invalid-token` / `token-expired`
    #[error(transparent)]
    Token(#[from] TokenError),
    /// 403 `channel-forbidden`
    #[error("the token does not allow channel {0:?}")]
    ChannelForbidden(String),
    /// 403 `cors-forbidden`: a preflight, or a WebSocket upgrade, from an
    /// origin not in `[public] cors_origins` (an upgrade from the origin of
    /// the host it asks for is the site's own).
    #[error("origin {0:?} is not in [public] cors_origins: this server does not answer that page's cross-origin requests")]
    CorsForbidden(String),
    /// 429 `too-many-polls`, 503 `overloaded`
    #[error(transparent)]
    Poll(#[from] PollError),
    /// 503 `shutting-down`
    #[error("the server is shutting down; poll again shortly")]
    ShuttingDown,
    /// 404 `not-found`
    #[error("no such endpoint; polls go to /poll")]
    NotFound,
    /// 405 `method-not-allowed`
    #[error("this endpoint answers GET, HEAD and OPTIONS only")]
    MethodNotAllowed,
    /// 405 `method-not-allowed` on `/ws`, which only upgrades a `GET`.
    #[error("/ws answers only a GET that upgrades to a WebSocket")]
    WsMethod,
    /// 400 `bad-upgrade`: `GET /ws` that is not a valid RFC 6455 opening
    /// handshake; 426 when only its `Sec-WebSocket-Version` is not 13.
    #[error("{0}")]
    BadUpgrade(String),
    /// 426 `bad-upgrade`: a `Sec-WebSocket-Version` other than 13.
    #[error("Sec-WebSocket-Version must be 13")]
    WsVersion,
}

impl PublicError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            PublicError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid-request"),
            PublicError::Token(TokenError::Expired) => (StatusCode::UNAUTHORIZED, "token-expired"),
            PublicError::Token(TokenError::Invalid(_)) => {
                (StatusCode::UNAUTHORIZED, "invalid-token")
            }
            PublicError::ChannelForbidden(_) => (StatusCode::FORBIDDEN, "channel-forbidden"),
            PublicError::CorsForbidden(_) => (StatusCode::FORBIDDEN, "cors-forbidden"),
            PublicError::Poll(PollError::TooManyPolls(_)) => {
                (StatusCode::TOO_MANY_REQUESTS, "too-many-polls")
            }
            PublicError::Poll(PollError::TooManyChannels(_)) => {
                (StatusCode::BAD_REQUEST, "invalid-request")
            }
            PublicError::Poll(PollError::TooManyClients(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
            PublicError::Poll(PollError::Denied(_)) => (StatusCode::FORBIDDEN, "denied"),
            PublicError::Poll(PollError::Storage(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage-unavailable")
            }
            PublicError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting-down"),
            PublicError::NotFound => (StatusCode::NOT_FOUND, "not-found"),
            PublicError::MethodNotAllowed | PublicError::WsMethod => {
                (StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed")
            }
            PublicError::BadUpgrade(_) => (StatusCode::BAD_REQUEST, "bad-upgrade"),
            PublicError::WsVersion => (StatusCode::UPGRADE_REQUIRED, "bad-upgrade"),
        }
    }

    /// The reply: the status, and `{"error": code, "message": ...}`.
    pub fn response(&self) -> Response {
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "poll refused");
        } else {
            tracing::debug!(code, error = %self, "poll refused");
        }
        let mut reply = Response::error(status.as_u16(), code, &self.to_string());
        match self {
            PublicError::MethodNotAllowed => reply.extra = &[("allow", "GET, HEAD, OPTIONS")],
            PublicError::WsMethod => reply.extra = &[("allow", "GET")],
            PublicError::WsVersion => reply.extra = &[("sec-websocket-version", "13")],
            _ => {}
        }
        reply
    }
}
