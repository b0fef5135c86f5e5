//! The `Cometbox-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" with hooks.secret>`; and a Pusher webhook's
//! `X-Pusher-Signature`, the hex HMAC-SHA256 of the body alone with the app
//! secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header every hook request carries.
pub const HEADER: &str = "cometbox-signature";

/// The header value for `body` signed at unix second `t`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let hex = hmac_hex(secret, &[t.to_string().as_bytes(), b".", body]);
    format!("t={t},v1={hex}")
}

/// The headers of a hook request with `body`, signed now.
pub fn headers(secret: &[u8], body: &[u8]) -> Vec<(&'static str, String)> {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    vec![(HEADER, signature(secret, t, body))]
}

/// The headers of a Pusher webhook with `body`: the app key, and the
/// body's signature with the app secret.
pub fn pusher_headers(key: &str, secret: &[u8], body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("x-pusher-key", key.to_owned()),
        ("x-pusher-signature", hmac_hex(secret, &[body])),
    ]
}

/// The hex HMAC-SHA256 of `parts` one after the other.
fn hmac_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    for part in parts {
        mac.update(part);
    }
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector python-client/tests/test_hooks.py checks with openssl:
    /// `printf '%s' "1763712000.$BODY" | openssl dgst -sha256 -hmac whsec-test`.
    #[test]
    fn matches_the_openssl_vector() {
        let body = br#"{"id":"evt-1","type":"subscribe","client":"alice","channel":"room:42","ts":1763712000123,"node":"n1"}"#;
        assert_eq!(
            signature(b"whsec-test", 1763712000, body),
            "t=1763712000,v1=db1a4fd54f8f549afdca1dd6705b6f6822dc1eef24b73aae61f7979792979849"
        );
    }

    /// `printf '%s' "$BODY" | openssl dgst -sha256 -hmac app-secret`.
    #[test]
    fn pusher_signs_the_body_alone() {
        let body = br#"{"time_ms":1,"events":[]}"#;
        let headers = pusher_headers("app-key", b"app-secret", body);
        assert_eq!(headers[0], ("x-pusher-key", "app-key".to_owned()));
        assert_eq!(
            headers[1],
            (
                "x-pusher-signature",
                "786f49f91684a7686ab05b497c091b2a12e239335563fbc11198764aee85265e".to_owned()
            )
        );
    }
}
