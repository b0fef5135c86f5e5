//! Pusher's signatures, both HMAC-SHA256 with the app secret, hex-encoded:
//!
//! - the HTTP API's request signature ([`verify_request`]): `auth_key`,
//!   `auth_timestamp`, `auth_version`, `body_md5` and `auth_signature` in
//!   the query string, the signature over `"<METHOD>\n<path>\n<query>"`
//!   where `<query>` is every other parameter, keys lowercased, sorted by
//!   key, joined `k=v&...` with the values exactly as sent (not decoded:
//!   the official SDKs sign the values and send them unescaped);
//! - channel authorisation ([`channel_auth`]): `<key>:<hex HMAC of
//!   "<socket_id>:<channel>[:<channel_data>]">`, which a backend's auth
//!   endpoint hands the browser for `private-` and `presence-` channels.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha2::Sha256;

/// How far `auth_timestamp` may be from now, either way (Pusher's 600 s).
pub const MAX_CLOCK_SKEW_S: u64 = 600;

/// Why a signed request is refused: each is a `401`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// A required query parameter is missing.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// The same parameter twice: which one is signed would be ambiguous.
    #[error("query parameter {0:?} given twice")]
    Duplicate(String),
    /// `auth_key` is not the app's key.
    #[error("unknown auth_key")]
    WrongKey,
    /// `auth_version` is not `1.0`.
    #[error("auth_version must be 1.0")]
    Version,
    /// `auth_timestamp` is not a number within 600 s of the server's clock.
    #[error("auth_timestamp is not within {MAX_CLOCK_SKEW_S} s of the server's time ({now}): check the clock")]
    Stale {
        /// The server's unix time.
        now: u64,
    },
    /// `body_md5` is missing for a body, or does not match it.
    #[error("body_md5 does not match the body")]
    BodyMd5,
    /// `auth_signature` is wrong.
    #[error("invalid signature: expected HMAC-SHA256 hex digest of the string to sign")]
    Signature,
}

/// Hex HMAC-SHA256 of `message` with `secret`.
pub fn hmac_hex(secret: &str, message: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Hex MD5 of `body`, as `body_md5` carries it.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

/// Compares without returning early, so response timing does not reveal
/// how much of a guessed signature was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The string the signature covers: `METHOD\npath\nquery`, the query being
/// `params` but `auth_signature`, keys lowercased, sorted, `k=v&...`.
pub fn string_to_sign(method: &str, path: &str, params: &[(String, &str)]) -> String {
    let mut signed: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    signed.sort_unstable();
    let query = signed
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{}\n{path}\n{query}", method.to_ascii_uppercase())
}

/// The raw query's parameters, keys lowercased, values as sent. A
/// parameter without `=` has an empty value; empty pieces are skipped.
pub fn raw_params(raw_query: &str) -> Result<Vec<(String, &str)>, SignatureError> {
    let mut params: Vec<(String, &str)> = Vec::new();
    for piece in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = piece.split_once('=').unwrap_or((piece, ""));
        let k = k.to_ascii_lowercase();
        if params.iter().any(|(seen, _)| *seen == k) {
            return Err(SignatureError::Duplicate(k));
        }
        params.push((k, v));
    }
    Ok(params)
}

/// Checks a Pusher HTTP API request: `auth_key` is `key`, `auth_version`
/// `1.0`, `auth_timestamp` within [`MAX_CLOCK_SKEW_S`] of `now_unix`,
/// `body_md5` the body's (required when there is a body; checked when
/// sent with an empty one, as the Python SDK does), and `auth_signature`
/// the HMAC of [`string_to_sign`].
pub fn verify_request(
    key: &str,
    secret: &str,
    method: &str,
    path: &str,
    raw_query: &str,
    body: &[u8],
    now_unix: u64,
) -> Result<(), SignatureError> {
    let params = raw_params(raw_query)?;
    let get = |name: &'static str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
            .ok_or(SignatureError::Missing(name))
    };
    let signature = get("auth_signature")?;
    if !constant_time_eq(get("auth_key")?.as_bytes(), key.as_bytes()) {
        return Err(SignatureError::WrongKey);
    }
    if get("auth_version")? != "1.0" {
        return Err(SignatureError::Version);
    }
    let timestamp: u64 = get("auth_timestamp")?
        .parse()
        .map_err(|_| SignatureError::Stale { now: now_unix })?;
    if timestamp.abs_diff(now_unix) > MAX_CLOCK_SKEW_S {
        return Err(SignatureError::Stale { now: now_unix });
    }
    match get("body_md5") {
        Ok(sent) if !sent.eq_ignore_ascii_case(&body_md5(body)) => {
            return Err(SignatureError::BodyMd5)
        }
        Err(_) if !body.is_empty() => return Err(SignatureError::BodyMd5),
        _ => {}
    }
    let expected = hmac_hex(secret, &string_to_sign(method, path, &params));
    if !constant_time_eq(
        signature.to_ascii_lowercase().as_bytes(),
        expected.as_bytes(),
    ) {
        return Err(SignatureError::Signature);
    }
    Ok(())
}

/// What a backend's auth endpoint answers for `socket_id` joining
/// `channel`: `<key>:<hex HMAC-SHA256 of "<socket_id>:<channel>">`, with
/// `:<channel_data>` appended to the signed string for presence channels.
pub fn channel_auth(
    secret: &str,
    key: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let mut signed = format!("{socket_id}:{channel}");
    if let Some(data) = channel_data {
        signed.push(':');
        signed.push_str(data);
    }
    format!("{key}:{}", hmac_hex(secret, &signed))
}

/// Whether `auth` (a browser's `pusher:subscribe` `auth`) is the one
/// [`channel_auth`] makes, compared in constant time.
pub fn check_channel_auth(
    secret: &str,
    key: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let expected = channel_auth(secret, key, socket_id, channel, channel_data);
    constant_time_eq(auth.as_bytes(), expected.as_bytes())
}

/// Whether `s` is a Pusher socket id: digits, a dot, digits.
pub fn is_socket_id(s: &str) -> bool {
    let Some((a, b)) = s.split_once('.') else {
        return false;
    };
    let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|c| c.is_ascii_digit());
    digits(a) && digits(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "278d425bdf160c739803";
    const SECRET: &str = "7ad3773142a6692b25b8";

    /// Pusher's documented worked example of channel authorisation.
    #[test]
    fn channel_auth_matches_pushers_worked_example() {
        let auth = channel_auth(SECRET, KEY, "1234.1234", "private-foobar", None);
        assert_eq!(
            auth,
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
        );
        assert!(check_channel_auth(
            SECRET,
            KEY,
            "1234.1234",
            "private-foobar",
            None,
            &auth
        ));
        assert!(!check_channel_auth(
            SECRET,
            KEY,
            "1234.1235",
            "private-foobar",
            None,
            &auth
        ));
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let presence = channel_auth(SECRET, KEY, "1234.1234", "presence-foobar", Some(data));
        assert_ne!(presence.split(':').nth(1), auth.split(':').nth(1));
        assert!(check_channel_auth(
            SECRET,
            KEY,
            "1234.1234",
            "presence-foobar",
            Some(data),
            &presence
        ));
    }

    /// Pusher's documented worked example of a signed `POST /apps/3/events`
    /// (body and signature as the HTTP API reference gives them).
    #[test]
    fn request_signature_matches_pushers_worked_example() {
        let body = br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
        assert_eq!(body_md5(body), "ec365a775a4cd0599faeb73354201b6f");
        let query = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        let params = raw_params(query).unwrap();
        let expected = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        assert_eq!(string_to_sign("post", "/apps/3/events", &params), expected);
        let signature = hmac_hex(SECRET, expected);
        assert_eq!(
            signature,
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let full = format!("{query}&auth_signature={signature}");
        let now = 1353088179 + 30;
        assert_eq!(
            verify_request(KEY, SECRET, "POST", "/apps/3/events", &full, body, now),
            Ok(())
        );
        let check = |q: &str, body: &[u8], now: u64| {
            verify_request(KEY, SECRET, "POST", "/apps/3/events", q, body, now)
        };
        assert_eq!(
            check(&full, body, 1353088179 + 601),
            Err(SignatureError::Stale {
                now: 1353088179 + 601
            })
        );
        assert_eq!(check(&full, b"{}", now), Err(SignatureError::BodyMd5));
        assert_eq!(
            check(&full.replace("278d", "178d"), body, now),
            Err(SignatureError::WrongKey)
        );
        assert_eq!(
            verify_request(KEY, "other", "POST", "/apps/3/events", &full, body, now),
            Err(SignatureError::Signature)
        );
        assert_eq!(
            verify_request(KEY, SECRET, "GET", "/apps/3/events", &full, body, now),
            Err(SignatureError::Signature)
        );
        let without_md5 = full.replace("&body_md5=ec365a775a4cd0599faeb73354201b6f", "");
        assert_eq!(check(&without_md5, body, now), Err(SignatureError::BodyMd5));
        assert!(matches!(
            check(&format!("{full}&auth_key=x"), body, now),
            Err(SignatureError::Duplicate(_))
        ));
    }

    /// Extra parameters are signed as sent, keys lowercased and sorted; a
    /// GET may carry the empty body's md5 (the Python SDK sends it).
    #[test]
    fn query_parameters_are_signed_raw_and_sorted() {
        let now = 1_700_000_000;
        let base = format!(
            "info=subscription_count,user_count&Filter_By_Prefix=presence-&auth_version=1.0&auth_key={KEY}&auth_timestamp={now}&body_md5={}",
            body_md5(b"")
        );
        let params = raw_params(&base).unwrap();
        let to_sign = string_to_sign("GET", "/apps/3/channels", &params);
        assert!(to_sign.ends_with("&filter_by_prefix=presence-&info=subscription_count,user_count"));
        let signed = format!("{base}&auth_signature={}", hmac_hex(SECRET, &to_sign));
        assert_eq!(
            verify_request(KEY, SECRET, "GET", "/apps/3/channels", &signed, b"", now),
            Ok(())
        );
    }

    #[test]
    fn socket_ids_are_digits_dot_digits() {
        assert!(is_socket_id("1234.5678"));
        for bad in ["", "1234", ".1", "1.", "1.2.3", "a.1", "1.2 "] {
            assert!(!is_socket_id(bad), "{bad}");
        }
    }
}
