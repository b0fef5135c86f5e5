//! Browser tokens: HS256 JWTs with `sub` (the client id), `exp`, an
//! optional `channels` grant list, and an optional `publish` grant list
//! (what a Bayeux page may publish to). Minted by `POST /token` or by any JWT
//! library holding the shared secret; checked on every poll.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::sync::Arc;

use dashmap::DashMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::protocol::ids::{grant_allows, is_valid_channel_grant};
use crate::protocol::{ChannelName, ClientId};

/// The claims cometbox reads and writes.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    publish: Vec<String>,
}

/// What a valid token lets its bearer do. Cheap to clone (two `Arc`s).
#[derive(Debug, Clone)]
pub struct Grant {
    /// The client the browser is.
    pub client: ClientId,
    /// Channel names or `prefix*` patterns it may subscribe to by itself.
    pub channels: Arc<[String]>,
    /// Channel names or `prefix*` patterns it may publish to (Bayeux).
    pub publish: Arc<[String]>,
    /// The token's `iat` (unix seconds), when it has one.
    pub issued_at: Option<u64>,
    /// The token's `exp` (unix seconds): a stream (SSE) ends then.
    pub expires_at: u64,
}

impl Grant {
    /// Whether the token allows subscribing to `channel`.
    pub fn allows(&self, channel: &ChannelName) -> bool {
        self.channels
            .iter()
            .any(|grant| grant_allows(grant, channel))
    }

    /// Whether the token allows publishing to `channel`.
    pub fn allows_publish(&self, channel: &ChannelName) -> bool {
        self.publish
            .iter()
            .any(|grant| grant_allows(grant, channel))
    }
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Well signed but past its `exp`: the page should fetch a new one.
    #[error("the token expired")]
    Expired,
    /// Anything else: bad signature, bad claims, not a JWT.
    #[error("{0}")]
    Invalid(String),
}

/// Verified tokens kept at most; the cache is emptied when it fills up
/// (a browser re-polls with the same token, so it refills with live ones).
const CACHE_CAPACITY: usize = 100_000;

/// A token that passed verification, and what it granted until when.
#[derive(Debug)]
struct Verified {
    token: Box<str>,
    grant: Grant,
    exp: u64,
}

/// Signs and checks tokens with the configured secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    /// Tokens already verified, with their `exp`: a browser presents the
    /// same token on every re-poll, and checking it again (base64, JSON,
    /// HMAC) was a tenth of the server's CPU per delivered message. Keyed by
    /// the signature (short, so cheap to hash); a hit counts only when the
    /// whole stored token equals the one presented.
    verified: DashMap<Box<str>, Verified>,
}

impl Tokens {
    /// Keys for `secret`.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // Backend and sidecar share a host or a clock-synced network; no
        // leeway keeps "expired" meaning what it says.
        validation.leeway = 0;
        validation.validate_aud = false;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            verified: DashMap::new(),
        }
    }

    /// Checks a token and returns its grant.
    pub fn verify(&self, token: &str) -> Result<Grant, TokenError> {
        let now = unix_now();
        let signature = token.rsplit('.').next().unwrap_or(token);
        if let Some(hit) = self
            .verified
            .get(signature)
            .filter(|hit| &*hit.token == token)
        {
            if hit.exp >= now {
                return Ok(hit.grant.clone());
            }
            drop(hit);
            self.verified.remove(signature);
            return Err(TokenError::Expired);
        }
        let (grant, exp) = self.verify_signature_and_claims(token)?;
        if self.verified.len() >= CACHE_CAPACITY {
            self.verified.clear();
        }
        let entry = Verified {
            token: token.into(),
            grant: grant.clone(),
            exp,
        };
        self.verified.insert(signature.into(), entry);
        Ok(grant)
    }

    fn verify_signature_and_claims(&self, token: &str) -> Result<(Grant, u64), TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| clean_error(token, e.kind()))?;
        let claims = data.claims;
        let client = ClientId::parse(&claims.sub)
            .map_err(|e| TokenError::Invalid(format!("claim sub: {e}")))?;
        for (claim, grants) in [("channels", &claims.channels), ("publish", &claims.publish)] {
            if let Some(bad) = grants.iter().find(|g| !is_valid_channel_grant(g)) {
                return Err(TokenError::Invalid(format!(
                    "claim {claim}: invalid grant {bad:?}"
                )));
            }
        }
        let grant = Grant {
            client,
            channels: claims.channels.into(),
            publish: claims.publish.into(),
            issued_at: claims.iat,
            expires_at: claims.exp,
        };
        Ok((grant, claims.exp))
    }

    /// Mints a token for `client` valid for `ttl`; returns it with its `exp`.
    pub fn mint(&self, client: &ClientId, ttl: Duration, channels: Vec<String>) -> (String, u64) {
        self.mint_with_publish(client, ttl, channels, Vec::new())
    }

    /// [`Tokens::mint`] with a `publish` claim (omitted when empty).
    pub fn mint_with_publish(
        &self,
        client: &ClientId,
        ttl: Duration,
        channels: Vec<String>,
        publish: Vec<String>,
    ) -> (String, u64) {
        let now = unix_now();
        let exp = now + ttl.as_secs();
        let claims = Claims {
            sub: client.to_string(),
            exp,
            iat: Some(now),
            channels,
            publish,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, exp)
    }
}

/// Says what is wrong in the contract's words, never in the JWT library's
/// (whose messages name its internals: "unknown variant `none`, expected
/// one of `HS256`, ..."), so the reply stays the same whatever the library
/// version.
fn clean_error(token: &str, kind: &ErrorKind) -> TokenError {
    let invalid = |message: &str| TokenError::Invalid(message.to_owned());
    match kind {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidSignature => invalid("bad signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            invalid("the token must be signed with alg HS256")
        }
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => invalid("claim exp is required"),
            "sub" => invalid("claim sub is required"),
            _ => invalid("a required claim is missing"),
        },
        ErrorKind::Json(_) if jsonwebtoken::decode_header(token).is_err() => invalid(
            "the token header is not a JWT header with alg HS256",
        ),
        ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => invalid(
            "the token claims are not as expected: sub (a string) and exp (a number) are required; channels and publish, if present, are lists of strings",
        ),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            invalid("not a JWT: expected three base64url parts separated by dots")
        }
        _ => invalid("not a valid cometbox token"),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_verify_with_their_grants() {
        let tokens = Tokens::new(b"secret");
        let (token, _) = tokens.mint(
            &ClientId::parse("alice").unwrap(),
            Duration::from_secs(60),
            vec!["room:*".into()],
        );
        let grant = tokens.verify(&token).unwrap();
        assert_eq!(grant.client.as_str(), "alice");
        assert!(grant.allows(&ChannelName::parse("room:1").unwrap()));
        assert!(!grant.allows(&ChannelName::parse("news").unwrap()));
    }

    #[test]
    fn refuses_other_secrets_expired_and_garbage() {
        let (token, _) = Tokens::new(b"other").mint(
            &ClientId::parse("a").unwrap(),
            Duration::from_secs(60),
            vec![],
        );
        assert!(matches!(
            Tokens::new(b"secret").verify(&token),
            Err(TokenError::Invalid(_))
        ));
        let tokens = Tokens::new(b"secret");
        let expired = Claims {
            sub: "a".into(),
            exp: 1_000,
            iat: None,
            channels: vec![],
            publish: vec![],
        };
        let expired = jsonwebtoken::encode(
            &Header::default(),
            &expired,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(tokens.verify(&expired), Err(TokenError::Expired)));
        assert!(matches!(
            tokens.verify("not.a.jwt"),
            Err(TokenError::Invalid(_))
        ));
        let bad_sub = Claims {
            sub: "a b".into(),
            exp: u64::MAX / 2,
            iat: None,
            channels: vec![],
            publish: vec![],
        };
        let bad_sub = jsonwebtoken::encode(
            &Header::default(),
            &bad_sub,
            &EncodingKey::from_secret(b"secret"),
        )
        .unwrap();
        assert!(matches!(
            tokens.verify(&bad_sub),
            Err(TokenError::Invalid(_))
        ));
    }

    /// Hand-made tokens with a given header and claims, signed with `secret`.
    fn raw_token(header: &str, claims: &str) -> String {
        let signing = format!("{}.{}", base64_url(header), base64_url(claims));
        let signature = jsonwebtoken::crypto::sign(
            signing.as_bytes(),
            &EncodingKey::from_secret(b"secret"),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing}.{signature}")
    }

    fn base64_url(s: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in s.as_bytes().chunks(3) {
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

    #[test]
    fn errors_speak_the_contract_not_the_library() {
        let tokens = Tokens::new(b"secret");
        let claims = r#"{"sub":"a","exp":99999999999}"#;
        for (header, claims, expected) in [
            (r#"{"alg":"none","typ":"JWT"}"#, claims, "HS256"),
            (r#"{"alg":"HS512","typ":"JWT"}"#, claims, "HS256"),
            (
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"a"}"#,
                "exp (a number) are required",
            ),
            (
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"a","exp":"soon"}"#,
                "not as expected",
            ),
            (
                r#"{"alg":"HS256"}"#,
                r#"{"sub":"a","exp":9,"#,
                "not as expected",
            ),
        ] {
            let Err(TokenError::Invalid(message)) = tokens.verify(&raw_token(header, claims))
            else {
                panic!("{header} {claims} accepted");
            };
            assert!(message.contains(expected), "{header} {claims}: {message}");
            for internal in ["variant", "expected one of", "Error", "`"] {
                assert!(!message.contains(internal), "{header} {claims}: {message}");
            }
        }
        let Err(TokenError::Invalid(message)) = tokens.verify("garbage") else {
            panic!("garbage accepted");
        };
        assert!(message.contains("three base64url parts"), "{message}");
    }

    #[test]
    fn a_cached_token_still_expires() {
        let tokens = Tokens::new(b"secret");
        let client = ClientId::parse("a").unwrap();
        let (token, exp) = tokens.mint(&client, Duration::from_secs(1), vec![]);
        assert!(tokens.verify(&token).is_ok());
        assert!(tokens.verify(&token).is_ok(), "from the cache");
        while unix_now() <= exp {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(matches!(tokens.verify(&token), Err(TokenError::Expired)));
        assert!(
            matches!(tokens.verify(&token), Err(TokenError::Expired)),
            "verified afresh"
        );
    }
}
