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

fn is_id(s: &str) -> bool {
    s.bytes().all(is_id_char)
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
                if !s.is_empty() && s.len() <= MAX_NAME_LEN && $check(s) {
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
    is_id,
    "client id"
);
name_type!(
    /// A channel name: `[A-Za-z0-9_.:@/-]{1,128}`, or a wildcard pattern
    /// (see [`ChannelName::is_pattern`]).
    ChannelName,
    is_channel_or_pattern,
    "channel name"
);

impl ChannelName {
    /// Whether this is a wildcard pattern rather than one channel: a
    /// prefix ending in `/` then `*` (every channel one segment below it:
    /// `/chat/*` matches `/chat/a`, not `/chat/a/b`) or `**` (every channel
    /// below it, at any depth). Patterns are subscribed to, never
    /// published to.
    pub fn is_pattern(&self) -> bool {
        self.0.ends_with('*')
    }

    /// A channel a message can go to: a name, not a pattern.
    pub fn parse_target(s: &str) -> Result<Self, InvalidName> {
        let name = Self::parse(s)?;
        if name.is_pattern() {
            return Err(InvalidName {
                what: "channel name (a wildcard pattern is subscribed to, never sent to)",
                value: truncate_for_message(s),
            });
        }
        Ok(name)
    }

    /// The patterns that match this channel, most specific first: for
    /// `/chat/room/1`, `/chat/room/*`, `/chat/room/**`, `/chat/**`, `/**`.
    /// Empty for a pattern (patterns do not match patterns).
    pub fn matching_patterns(&self) -> impl Iterator<Item = String> + '_ {
        let name: &str = &self.0;
        let slashes = if self.is_pattern() { None } else { Some(name) };
        slashes
            .into_iter()
            .flat_map(|name| name.rmatch_indices('/').map(move |(at, _)| (name, at)))
            .filter(|(name, at)| at + 1 < name.len())
            .flat_map(|(name, at)| {
                let (prefix, rest) = name.split_at(at + 1);
                let one = (!rest.contains('/')).then(|| format!("{prefix}*"));
                one.into_iter()
                    .chain(std::iter::once(format!("{prefix}**")))
            })
    }
}

/// A channel name, or a pattern: a prefix ending in `/` and `*` or `**`.
fn is_channel_or_pattern(s: &str) -> bool {
    let prefix = s
        .strip_suffix("**")
        .or_else(|| s.strip_suffix('*'))
        .unwrap_or(s);
    if prefix.len() != s.len() && !prefix.ends_with('/') {
        return false;
    }
    prefix.bytes().all(is_channel_char)
}

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
    fn patterns_end_in_one_or_two_stars_after_a_slash() {
        for ok in ["/chat/*", "/chat/**", "/*", "/**", "room/*"] {
            let p = ChannelName::parse(ok).unwrap();
            assert!(p.is_pattern(), "{ok}");
        }
        for bad in [
            "/chat*",
            "*",
            "**",
            "/chat/***",
            "/ch*at/x",
            "/chat/*/x",
            "/chat/a*",
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
        assert!(!ChannelName::parse("/chat/a").unwrap().is_pattern());
    }

    #[test]
    fn a_channel_lists_the_patterns_that_match_it() {
        let name = ChannelName::parse("/chat/room/1").unwrap();
        let found: Vec<String> = name.matching_patterns().collect();
        assert_eq!(found, ["/chat/room/*", "/chat/room/**", "/chat/**", "/**"]);
        let plain = ChannelName::parse("room:42").unwrap();
        assert_eq!(plain.matching_patterns().count(), 0);
        let pattern = ChannelName::parse("/chat/*").unwrap();
        assert_eq!(pattern.matching_patterns().count(), 0);
        // A trailing slash leaves an empty last segment: nothing matches it.
        let odd = ChannelName::parse("/chat/").unwrap();
        let found: Vec<String> = odd.matching_patterns().collect();
        assert_eq!(found, ["/**"]);
    }

    #[test]
    fn grants_cover_patterns_below_their_prefix() {
        let all_chat = ChannelName::parse("/chat/**").unwrap();
        assert!(grant_allows("/chat/*", &all_chat));
        assert!(grant_allows("*", &all_chat));
        assert!(!grant_allows("/chat/demo", &all_chat));
        assert!(!grant_allows("/news/*", &all_chat));
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
