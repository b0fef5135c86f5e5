//! What the ingest reader refuses a body with: the limits it enforces, the
//! contract's error codes, and each error with the line it stands on.

/// Limits the reader enforces (all from the `[limits]` config section).
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Longest message payload, in bytes of unescaped text.
    pub max_payload_bytes: usize,
    /// Most commands in one request.
    pub max_commands: usize,
}

/// The contract's error codes for a rejected ingest body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not well-formed XML, a DTD, an unknown entity, not UTF-8.
    MalformedXml,
    /// A `type="json"` payload that does not parse.
    InvalidJson,
    /// A client id or channel name outside the contract's pattern.
    InvalidId,
    /// Well-formed XML that is not a valid command.
    InvalidRequest,
    /// A payload or batch over its limit.
    TooLarge,
}

impl ErrorCode {
    /// The `code` attribute of the `<error>` reply.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedXml => "malformed-xml",
            ErrorCode::InvalidJson => "invalid-json",
            ErrorCode::InvalidId => "invalid-id",
            ErrorCode::InvalidRequest => "invalid-request",
            ErrorCode::TooLarge => "too-large",
        }
    }
}

/// Why a body was rejected, and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// The contract's error code.
    pub code: ErrorCode,
    /// 1-based line of the offending element or syntax error.
    pub line: usize,
    /// A human-readable explanation, naming the command when there is one.
    pub message: String,
}

/// 1-based line at the end of `prefix`. Counted only when an error is
/// reported: counting per command would rescan the body once per command.
pub(super) fn line_at(prefix: &[u8]) -> usize {
    1 + prefix.iter().filter(|&&b| b == b'\n').count()
}
