//! Cursors: `<epoch>-<seq>`, a position in one mailbox.
//!
//! The epoch is chosen by the store when a mailbox is created (random for the
//! memory store), so a cursor from a forgotten mailbox or from before a
//! restart never matches and gets `reset` instead of silently skipping
//! messages. Clients treat the whole string as opaque.

use std::fmt;

/// A position in one mailbox: every message with a higher `seq` comes after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// Identifies one incarnation of one mailbox.
    pub epoch: u32,
    /// The sequence number of the last message before this position (0: none).
    pub seq: u64,
}

/// A `since` that is not of the form the server hands out.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bad cursor syntax: expected the opaque value of a previous reply's \"cursor\"")]
pub struct BadCursor;

impl Cursor {
    /// Parses what [`Cursor`]'s `Display` writes.
    pub fn parse(s: &str) -> Result<Self, BadCursor> {
        let (epoch, seq) = s.split_once('-').ok_or(BadCursor)?;
        let digits_only =
            |part: &str, radix| !part.is_empty() && part.chars().all(|c| c.is_digit(radix));
        if !digits_only(epoch, 36)
            || !digits_only(seq, 10)
            || epoch.bytes().any(|b| b.is_ascii_uppercase())
        {
            return Err(BadCursor);
        }
        Ok(Cursor {
            epoch: u32::from_str_radix(epoch, 36).map_err(|_| BadCursor)?,
            seq: seq.parse().map_err(|_| BadCursor)?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // base 36 keeps the epoch short: at most 7 characters for a u32.
        let mut digits = [0u8; 7];
        let mut n = self.epoch;
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize];
            n /= 36;
            if n == 0 {
                break;
            }
        }
        let epoch = std::str::from_utf8(&digits[start..]).expect("ascii digits");
        write!(f, "{epoch}-{}", self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for c in [
            Cursor { epoch: 0, seq: 0 },
            Cursor {
                epoch: u32::MAX,
                seq: u64::MAX,
            },
            Cursor { epoch: 35, seq: 18 },
        ] {
            assert_eq!(Cursor::parse(&c.to_string()).unwrap(), c);
        }
        assert_eq!(Cursor { epoch: 35, seq: 18 }.to_string(), "z-18");
    }

    #[test]
    fn refuses_what_it_never_hands_out() {
        for bad in [
            "",
            "-",
            "abc",
            "k3f9-",
            "-18",
            "K3F9-1",
            "k3f9-1-2",
            "k3f9-x",
            "zzzzzzzz-1",
            "a-99999999999999999999",
        ] {
            assert!(Cursor::parse(bad).is_err(), "{bad}");
        }
    }
}
