//! `/bayeux` (`[bayeux] path`, and any path below it) on the public port:
//! the HTTP side of [`crate::bayeux`].
//!
//! - `POST` carries the batch as JSON (`application/json`, or any type
//!   but a form: some clients send `text/plain` to avoid a preflight), or as
//!   a form field `message=`; the body is read whole, within
//!   `request_timeout`, `max_body_bytes` and the port's budget of body
//!   bytes in flight (`max_public_body_bytes_in_flight`: past it, `503
//!   overloaded`).
//! - `GET ?message=...&jsonp=<callback>` is callback-polling: the reply is
//!   `text/javascript`, the array passed to the callback. The callback
//!   name must be a plain JavaScript identifier (`[A-Za-z_$][A-Za-z0-9_$]*`,
//!   at most 64 bytes): no dots, so a request cannot name a function the
//!   page did not define for it (`location.assign`,
//!   `constructor.constructor`) and have the reply call it with data the
//!   requester chose. `HEAD` is checked the same way and answered with a
//!   GET's headers, its batch not run.
//! - Replies are always `200` with an array of Bayeux messages, errors
//!   included (as Bayeux wants); a request that is not Bayeux at all gets
//!   the port's usual `400 invalid-request`.
//! - CORS: the configured origins, with credentials (cookies), so the
//!   origin is echoed, never `*`.

use super::connection::body::BodyError;
use super::connection::{Connection, Socket};
use super::error::PublicError;
use super::face::Face;
use super::request::{Head, Method};
use super::response::Response;
use super::routed::Routed;
use tokio::sync::OwnedSemaphorePermit;

use crate::bayeux::{parse_batch, Bayeux, Inbound};

/// What a credentialed CORS reply adds.
pub const CREDENTIALS: &[(&str, &str)] = &[("access-control-allow-credentials", "true")];

/// What a preflight to the Bayeux path answers, besides the origin.
pub const PREFLIGHT: &[(&str, &str)] = &[
    ("access-control-allow-methods", "GET,POST,OPTIONS"),
    // `pragma`: Faye's cross-origin transport sends it.
    (
        "access-control-allow-headers",
        "authorization,content-type,pragma",
    ),
    ("access-control-allow-credentials", "true"),
    ("access-control-max-age", "600"),
];

/// Longest callback name a callback-polling request may give.
const MAX_CALLBACK: usize = 64;

/// A request's batch as it came: its JSON text, the callback a
/// callback-polling reply goes to, and the share of the body budget held
/// until the text is parsed.
struct Sent {
    text: Vec<u8>,
    callback: Option<String>,
    budget: Option<OwnedSemaphorePermit>,
}

/// Serves one Bayeux request.
pub async fn serve<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    bayeux: &Bayeux,
    head: Head,
) -> Result<Routed, PublicError> {
    if face.state.hub.is_shutting_down() {
        return Err(PublicError::ShuttingDown);
    }
    let sent = match head.method {
        Method::Post => {
            let limit = face.state.settings.limits.max_body_bytes;
            let body = match connection.read_body(head.body, limit).await {
                Ok(body) => body,
                Err(e) => return Ok(body_failure(e, limit)),
            };
            let (bytes, budget) = body.into_parts();
            Sent {
                text: batch_of_post(head.content_type.as_deref(), bytes)?,
                callback: None,
                budget,
            }
        }
        Method::Get => {
            let (message, callback) = callback_query(head.query())?;
            Sent {
                text: message.into_bytes(),
                callback: Some(callback),
                budget: None,
            }
        }
        // What a GET would answer, without running its batch: a HEAD
        // changes nothing (no handshake, no publish, no connect).
        Method::Head => {
            callback_query(head.query())?;
            return Ok(Routed::from(Response::head_of(
                "text/javascript; charset=utf-8",
            )));
        }
        _ => return Err(PublicError::MethodNotAllowed),
    };
    drop(head);
    let Sent {
        text,
        callback,
        budget,
    } = sent;
    let batch = parse_batch(&text).map_err(|e| PublicError::InvalidRequest(e.to_string()))?;
    // The body's share of the budget is held until it is parsed.
    drop((text, budget));
    Ok(answer(connection, face, bayeux, batch, callback).await)
}

/// Runs a batch, waiting on its connect (if it has one) while watching the
/// socket, and answers it.
async fn answer<S: Socket>(
    connection: &mut Connection<S>,
    face: &Face,
    bayeux: &Bayeux,
    batch: Vec<Inbound>,
    callback: Option<String>,
) -> Routed {
    let exchange = bayeux.handle(&face.state.tokens, batch).await;
    let mut replies = exchange.replies;
    let mut poll = None;
    if let Some(pending) = exchange.connect {
        let Some(connected) = connection.wait_for(bayeux.connect(pending)).await else {
            return Routed::ClientLeft;
        };
        replies.extend(connected.messages);
        poll = connected.open;
    }
    let json = serde_json::Value::Array(replies).to_string();
    let response = match callback {
        // The leading comment keeps a reply from ever starting with bytes
        // a browser could sniff as something else.
        Some(callback) => Response::ok(
            "text/javascript; charset=utf-8",
            format!("/**/{callback}({json});"),
        ),
        None => Response::ok("application/json", json),
    };
    Routed::Reply { response, poll }
}

/// A POST body as a batch's JSON text: the body itself, or its `message`
/// form field (a form, or Faye's cross-origin `text/plain` POST of
/// `message=`).
fn batch_of_post(content_type: Option<&str>, body: Vec<u8>) -> Result<Vec<u8>, PublicError> {
    let media = content_type
        .and_then(|t| t.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    let is_form = media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || (media.eq_ignore_ascii_case("text/plain") && body.starts_with(b"message="));
    if !is_form {
        return Ok(body);
    }
    form_urlencoded::parse(&body)
        .find(|(key, _)| key == "message")
        .map(|(_, value)| value.into_owned().into_bytes())
        .ok_or_else(|| PublicError::InvalidRequest("a form body needs a message field".into()))
}

/// Callback-polling's `message` and `jsonp` (default `jsonpcallback`).
fn callback_query(query: &str) -> Result<(String, String), PublicError> {
    let mut message = None;
    let mut callback = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "message" => message = Some(value.into_owned()),
            "jsonp" => callback = Some(value.into_owned()),
            _ => {}
        }
    }
    let message = message.ok_or_else(|| {
        PublicError::InvalidRequest(
            "a GET is callback-polling and needs ?message=[...]&jsonp=<callback>".into(),
        )
    })?;
    let callback = callback.unwrap_or_else(|| "jsonpcallback".into());
    if !is_identifier(&callback) {
        return Err(PublicError::InvalidRequest(format!(
            "jsonp: {callback:?} is not a callback name (a JavaScript identifier: \
             letters, digits, _ and $, not starting with a digit, at most {MAX_CALLBACK} bytes)"
        )));
    }
    Ok((message, callback))
}

/// `[A-Za-z_$][A-Za-z0-9_$]*`, at most [`MAX_CALLBACK`] bytes.
fn is_identifier(name: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$');
    match name.as_bytes() {
        [first, rest @ ..] => {
            name.len() <= MAX_CALLBACK
                && !first.is_ascii_digit()
                && word(*first)
                && rest.iter().all(|b| word(*b))
        }
        [] => false,
    }
}

/// The reply to a body that could not be read (the connection then closes).
fn body_failure(e: BodyError, limit: usize) -> Routed {
    match e {
        BodyError::TooLarge(n) => Routed::Close(Response::error(
            413,
            "too-large",
            &format!("the body is {n} bytes, over limits.max_body_bytes ({limit})"),
        )),
        BodyError::BadChunk(why) => Routed::Close(Response::error(
            400,
            "invalid-request",
            &format!("chunked body: {why}"),
        )),
        BodyError::TimedOut => Routed::Close(Response::error(
            408,
            "timeout",
            "the request body did not arrive in time",
        )),
        BodyError::Overloaded => Routed::Close(Response::error(
            503,
            "overloaded",
            "too many request bodies in flight (limits.max_public_body_bytes_in_flight); retry shortly",
        )),
        BodyError::Closed => Routed::ClientLeft,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_names_are_checked() {
        let (message, callback) = callback_query("message=%5B%5D&jsonp=_cometd_cb_1").unwrap();
        assert_eq!(
            (message.as_str(), callback.as_str()),
            ("[]", "_cometd_cb_1")
        );
        assert_eq!(callback_query("message=[]").unwrap().1, "jsonpcallback");
        for bad in [
            "alert(1)",
            "a;b",
            "1a",
            "x<y",
            "location.assign",
            "constructor.constructor",
            "a.b",
            "",
        ] {
            let query = format!("message=[]&jsonp={}", bad.replace(';', "%3B"));
            assert!(callback_query(&query).is_err(), "{bad}");
        }
        assert!(callback_query("jsonp=cb").is_err(), "no message");
    }

    #[test]
    fn a_form_body_carries_the_batch_in_message() {
        let form = b"message=%5B%7B%22channel%22%3A%22%2Fmeta%2Fconnect%22%7D%5D".to_vec();
        let text = batch_of_post(
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            form,
        )
        .unwrap();
        assert_eq!(text, br#"[{"channel":"/meta/connect"}]"#);
        let json = br#"[{"channel":"/meta/connect"}]"#.to_vec();
        assert_eq!(
            batch_of_post(Some("application/json"), json.clone()).unwrap(),
            json
        );
        assert!(batch_of_post(Some("application/x-www-form-urlencoded"), b"a=b".to_vec()).is_err());
        let faye = b"message=%5B%5D".to_vec();
        assert_eq!(
            batch_of_post(Some("text/plain;charset=UTF-8"), faye).unwrap(),
            b"[]"
        );
        let plain_json = b"[]".to_vec();
        assert_eq!(
            batch_of_post(Some("text/plain"), plain_json).unwrap(),
            b"[]"
        );
    }
}
