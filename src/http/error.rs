//! Errors as the ingest face answers them: XML, each with the contract's
//! status and code. (The public port's, answered as JSON, are its own:
//! `public/error.rs`.)

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::hub::ApplyError;
use crate::protocol::ingest::ParseError;

/// An error reply of the ingest (backend) port.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// 400/413 with the reader's code and line.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// 400 `invalid-request` outside the XML body (parameters).
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid-id`
    #[error("{0}")]
    InvalidId(String),
    /// 400 `invalid-request`: both `Content-Length` and
    /// `Transfer-Encoding`; the connection closes after the reply.
    #[error("both Content-Length and Transfer-Encoding: send one framing")]
    FramedTwice,
    /// 401 `unauthorized`
    #[error("missing or wrong ingest key: send Authorization: Bearer <ingest.key>")]
    Unauthorized,
    /// 404 `not-found`
    #[error("{0}")]
    NotFound(String),
    /// 408 `timeout`: the body did not arrive within `request_timeout`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// 413 `too-large`
    #[error("{0}")]
    TooLarge(String),
    /// 413 `too-large` from the declared `Content-Length`, answered before
    /// the body is read; the connection closes after the reply.
    #[error("{0}")]
    DeclaredTooLarge(String),
    /// 415 `unsupported-media-type`
    #[error("Content-Type {0:?} is not accepted: send application/xml")]
    UnsupportedMediaType(String),
    /// 503 `overloaded`
    #[error("{0}")]
    Overloaded(String),
    /// 503 `shutting-down`
    #[error("the server is shutting down; nothing was applied")]
    ShuttingDown,
    /// 503 `storage-unavailable`: the store cannot write; nothing applied.
    #[error("{0}")]
    StorageUnavailable(String),
    /// 503 `partly-applied`: a Redis Cluster took part of the batch; the
    /// reply's `applied` and `partly` attributes number the commands.
    #[error("{message}")]
    PartlyApplied {
        /// Commands applied in full, space-separated (1-based).
        applied: String,
        /// Channel messages applied in some slot groups only.
        partly: String,
        /// The whole explanation.
        message: String,
    },
}

/// `1 3 4`: command numbers as an attribute value.
fn numbers(list: &[usize]) -> String {
    list.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<ApplyError> for IngestError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::TooManyClients { .. } => IngestError::Overloaded(e.to_string()),
            ApplyError::TooManyChannels { .. } => IngestError::TooLarge(e.to_string()),
            ApplyError::Storage(_) => IngestError::StorageUnavailable(e.to_string()),
            ApplyError::PartlyApplied {
                ref applied,
                ref partly,
                ..
            } => IngestError::PartlyApplied {
                applied: numbers(applied),
                partly: numbers(partly),
                message: e.to_string(),
            },
        }
    }
}

impl IngestError {
    fn status_code_line(&self) -> (StatusCode, &'static str, Option<usize>) {
        use crate::protocol::ingest::ErrorCode;
        match self {
            IngestError::Parse(e) => {
                let status = if e.code == ErrorCode::TooLarge {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                (status, e.code.as_str(), Some(e.line))
            }
            IngestError::InvalidRequest(_) | IngestError::FramedTwice => {
                (StatusCode::BAD_REQUEST, "invalid-request", None)
            }
            IngestError::InvalidId(_) => (StatusCode::BAD_REQUEST, "invalid-id", None),
            IngestError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            IngestError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", None),
            IngestError::BodyTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout", None),
            IngestError::TooLarge(_) | IngestError::DeclaredTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too-large", None)
            }
            IngestError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                None,
            ),
            IngestError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", None),
            IngestError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting-down", None),
            IngestError::StorageUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "storage-unavailable", None)
            }
            IngestError::PartlyApplied { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "partly-applied", None)
            }
        }
    }
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        let (status, code, line) = self.status_code_line();
        tracing::info!(code, status = status.as_u16(), error = %self, "ingest request rejected");
        let mut line = line.map(|l| format!(r#" line="{l}""#)).unwrap_or_default();
        if let IngestError::PartlyApplied {
            applied, partly, ..
        } = &self
        {
            line = format!(r#" applied="{applied}" partly="{partly}""#);
        }
        let message = quick_xml::escape::escape(self.to_string());
        let mut reply = xml(
            status,
            format!(r#"<error code="{code}"{line}>{message}</error>"#),
        );
        // For the ingest router's layer that counts rejections by code.
        reply.extensions_mut().insert(Rejected(code));
        if matches!(
            self,
            IngestError::DeclaredTooLarge(_) | IngestError::FramedTwice
        ) {
            // The unread body is not another request (nor, framed twice,
            // known to end anywhere): the connection ends.
            reply.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        reply
    }
}

/// Marks a response as an ingest rejection with this error code.
#[derive(Debug, Clone, Copy)]
pub struct Rejected(pub &'static str);

/// An XML reply.
pub fn xml(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        body,
    )
        .into_response()
}
