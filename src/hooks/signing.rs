//! The `Cometbox-Signature` header: `t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>" with hooks.secret>`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header every hook request carries.
pub const HEADER: &str = "cometbox-signature";

/// The header value for `body` signed at unix second `t`.
pub fn signature(secret: &[u8], t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
        hex.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
    }
    format!("t={t},v1={hex}")
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
}
