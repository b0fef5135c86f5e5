//! Client ids and channel names, validated once at the edge and then shared
//! cheaply (`Arc<str>`) by mailboxes, channel sets and replies.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest client id or channel name the contract allows.
pub const MAX_NAME_LEN: usize = 128;

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-')
}

fn is_channel_char(b: u8) -> bool {
    is_id_char(b) || b == b'/'
}

fn valid(s: &str, allowed: fn(u8) -> bool) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(allowed)
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $check:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` against the contract's pattern.
            pub fn parse(s: &str) -> Result<Self, InvalidName> {
                if valid(s, $check) {
                    Ok(Self(Arc::from(s)))
                } else {
                    Err(InvalidName { what: $what, value: truncate_for_message(s) })
                }
            }

            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A client id: `[A-Za-z0-9_.:@-]{1,128}`, chosen by the backend.
    ClientId,
    is_id_char,
    "client id"
);
name_type!(
    /// A channel name: `[A-Za-z0-9_.:@/-]{1,128}`.
    ChannelName,
    is_channel_char,
    "channel name"
);

/// Checks a channel grant from a token or `POST /token`: a channel name, or a
/// prefix of one followed by `*` (a lone `*` grants every channel).
pub fn is_valid_channel_grant(grant: &str) -> bool {
    match grant.strip_suffix('*') {
        Some("") => true,
        Some(prefix) => valid(prefix, is_channel_char),
        None => valid(grant, is_channel_char),
    }
}

/// Whether `grant` (as checked by [`is_valid_channel_grant`]) allows `channel`.
pub fn grant_allows(grant: &str, channel: &ChannelName) -> bool {
    match grant.strip_suffix('*') {
        Some(prefix) => channel.as_str().starts_with(prefix),
        None => grant == channel.as_str(),
    }
}

/// A name that does not match the contract's pattern.
#[derive(Debug, Clone, thiserror::Error)]
#[error("invalid {what} {value:?}")]
pub struct InvalidName {
    what: &'static str,
    value: String,
}

/// Error messages quote what they refuse, but never more than a screenful.
fn truncate_for_message(s: &str) -> String {
    const SHOWN: usize = 40;
    match s.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_follow_the_pattern() {
        for ok in ["alice", "user:42", "session-9f1c", "a@b.c", "_"] {
            assert!(ClientId::parse(ok).is_ok(), "{ok}");
        }
        let too_long = "x".repeat(129);
        for bad in ["", "a b", "room/1", "é", "a\n", too_long.as_str()] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
        assert!(ClientId::parse(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn channel_names_also_allow_slashes() {
        assert!(ChannelName::parse("room/42:news").is_ok());
        assert!(ChannelName::parse("room 42").is_err());
    }

    #[test]
    fn grants_match_names_and_prefixes() {
        let room = ChannelName::parse("room:42").unwrap();
        assert!(grant_allows("room:42", &room));
        assert!(grant_allows("room:*", &room));
        assert!(grant_allows("*", &room));
        assert!(!grant_allows("room:4", &room));
        assert!(!grant_allows("news:*", &room));
        assert!(is_valid_channel_grant("room:*"));
        assert!(!is_valid_channel_grant("ro om*"));
        assert!(!is_valid_channel_grant("a*b"));
    }
}
