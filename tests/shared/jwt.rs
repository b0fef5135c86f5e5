//! Browser tokens minted the way a backend with any JWT library would:
//! HS256 by hand (HMAC-SHA256 over base64url parts), sharing no code with
//! the server's `auth::Tokens` (which uses `jsonwebtoken` both to mint and
//! to verify), so a bug on the server's side cannot hide behind the same
//! bug in the tests' tokens. Included by path in every test crate that
//! needs tokens (`tests/it`, `tests/durability`, and through the latter's
//! harness `tests/cluster`).

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;

/// A token carrying `claims`, signed with `secret`.
pub fn token_with(claims: Value, secret: &str) -> String {
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&mac.finalize().into_bytes()))
}

/// Seconds since the Unix epoch (for `exp`).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Unpadded base64url (RFC 7515), written out so that no base64 crate's
/// defaults are shared with the server either.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}
