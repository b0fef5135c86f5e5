//! A public reply: status, the few headers the port sends, and a body,
//! encoded as one head buffer written together with the body (one
//! `writev`), so a delivered poll costs one write.
//!
//! Every reply says `X-Content-Type-Options: nosniff`: a JSON poll reply
//! or error carries text a backend or a requester chose, and a browser
//! loading it as a script or a page must not guess it is one.

use std::fmt::Write as _;

use bytes::Bytes;

/// A reply before encoding.
#[derive(Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body (its length is `Content-Length`).
    pub body: Bytes,
    /// `Access-Control-Allow-Origin`, when the request's origin is allowed.
    pub allow_origin: Option<AllowOrigin>,
    /// Headers some replies add (preflights, 405's `Allow`).
    pub extra: &'static [(&'static str, &'static str)],
    /// A stream (SSE): no `Content-Length`; the body is written as it comes
    /// and ends when the connection closes.
    pub streamed: bool,
    /// A reply to `HEAD` whose `GET` body is not known without doing what
    /// the `GET` would (a poll): no `Content-Length`, which would have to
    /// be the `GET`'s.
    pub unsized_head: bool,
}

/// What `Access-Control-Allow-Origin` says.
#[derive(Debug, Clone)]
pub enum AllowOrigin {
    /// `*`: every origin is configured.
    Any,
    /// The request's own origin, which is on the configured list.
    Echo(String),
}

impl Response {
    /// A `200` with `body`.
    pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Response {
            status: 200,
            content_type,
            body: body.into(),
            allow_origin: None,
            extra: &[],
            streamed: false,
            unsized_head: false,
        }
    }

    /// The `200` head a `GET` would get, for a `HEAD` that does not do
    /// what the `GET` does.
    pub fn head_of(content_type: &'static str) -> Self {
        Response {
            unsized_head: true,
            ..Response::ok(content_type, "")
        }
    }

    /// The head of a stream of `content_type`, whose end is the
    /// connection's.
    pub fn stream(content_type: &'static str) -> Self {
        Response {
            streamed: true,
            ..Response::ok(content_type, "")
        }
    }

    /// An error reply: `{"error": code, "message": ...}`.
    pub fn error(status: u16, code: &str, message: &str) -> Self {
        let body = serde_json::json!({ "error": code, "message": message }).to_string();
        Response {
            status,
            ..Response::ok("application/json", body)
        }
    }

    /// The head: status line and headers, ending in the blank line. The
    /// body is sent unless the request was a `HEAD`; its length is given
    /// either way.
    pub fn encode_head(&self, close: bool) -> Vec<u8> {
        // Room for the CORS headers of an echoed origin too: one allocation.
        let mut head = String::with_capacity(320);
        // Writing to a String cannot fail.
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\ndate: {}\r\ncontent-type: {}\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n",
            self.status,
            reason(self.status),
            date::now(),
            self.content_type,
        );
        if self.streamed {
            // nginx passes the stream on as it comes even where buffering
            // is on.
            head.push_str("x-accel-buffering: no\r\n");
        } else if !self.unsized_head {
            let _ = write!(head, "content-length: {}\r\n", self.body.len());
        }
        match &self.allow_origin {
            Some(AllowOrigin::Any) => head.push_str("access-control-allow-origin: *\r\n"),
            Some(AllowOrigin::Echo(origin)) => {
                let _ = write!(
                    head,
                    "access-control-allow-origin: {origin}\r\nvary: origin\r\n"
                );
            }
            None => {}
        }
        for (name, value) in self.extra {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        if close || self.streamed {
            head.push_str("connection: close\r\n");
        }
        head.push_str("\r\n");
        head.into_bytes()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The `Date` header, formatted once per second per thread rather than per
/// reply.
mod date {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }

    pub fn now() -> String {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|cached| {
            let mut cached = cached.borrow_mut();
            if cached.0 != second || cached.1.is_empty() {
                *cached = (second, httpdate::fmt_http_date(now));
            }
            cached.1.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_names_length_type_and_cors() {
        let mut reply = Response::ok("application/json", "{}");
        reply.allow_origin = Some(AllowOrigin::Echo("https://a.example".into()));
        let head = String::from_utf8(reply.encode_head(true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ndate: "), "{head}");
        for line in [
            "content-type: application/json\r\n",
            "content-length: 2\r\n",
            "cache-control: no-store\r\n",
            "x-content-type-options: nosniff\r\n",
            "access-control-allow-origin: https://a.example\r\n",
            "vary: origin\r\n",
            "connection: close\r\n",
        ] {
            assert!(head.contains(line), "{line:?} in {head}");
        }
        assert!(head.ends_with("\r\n\r\n"));
    }

    #[test]
    fn errors_carry_their_code_as_json() {
        let reply = Response::error(403, "denied", "no \"quotes\" here");
        assert_eq!(reply.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"], "denied");
        assert_eq!(body["message"], "no \"quotes\" here");
    }
}
