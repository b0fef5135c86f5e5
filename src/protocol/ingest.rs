//! The ingest XML reader: a request body in, validated commands out.
//!
//! Safety against hostile input comes from what this reader refuses rather
//! than from what it tolerates: a DOCTYPE is an error (so no DTD, no entity
//! definitions, no external entities), the only entities are the five
//! predefined ones and character references, the grammar is at most two
//! elements deep (`<batch>` then a command) so nesting is refused at the third
//! level, and every payload and the command count are checked against their
//! limits while reading. The whole body is validated before any command is
//! returned, which is what makes a batch atomic.
//!
//! - this file: the entry point, and the checks made on the whole body
//!   first (UTF-8, XML's characters);
//! - `reader.rs`: the grammar, event by event;
//! - `command.rs`: a finished command element as a [`Command`];
//! - `error.rs`: the limits, the error codes, and where an error stands.

use super::Command;
use error::line_at;
use reader::Parser;

mod command;
mod error;
mod reader;

pub use command::{event_name, PayloadType};
pub use error::{ErrorCode, ParseError, ParseLimits};

/// Parses one ingest body: a single command element or a `<batch>` of them.
pub fn parse(body: &[u8], limits: ParseLimits) -> Result<Vec<Command>, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| ParseError {
        code: ErrorCode::MalformedXml,
        line: line_at(&body[..e.valid_up_to()]),
        message: format!("body is not valid UTF-8 (byte {})", e.valid_up_to()),
    })?;
    if let Some(at) = first_non_xml_char(text) {
        let c = text[at..].chars().next().expect("a char starts here");
        return Err(ParseError {
            code: ErrorCode::MalformedXml,
            line: line_at(&body[..at]),
            message: format!(
                "U+{:04X} at byte {at} is not a character XML allows",
                c as u32
            ),
        });
    }
    Parser::new(text, limits).run()
}

/// Where the first character outside XML's `Char` production stands, if
/// any: a well-formed document holds none, raw or escaped. In valid UTF-8
/// only control characters and U+FFFE/U+FFFF can be such, so this is a byte
/// scan rather than a decode.
fn first_non_xml_char(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().position(|(i, &b)| match b {
        b'\t' | b'\n' | b'\r' => false,
        0..0x20 => true,
        // U+FFFE and U+FFFF are EF BF BE and EF BF BF.
        0xEF => bytes.get(i + 1) == Some(&0xBF) && matches!(bytes.get(i + 2), Some(0xBE | 0xBF)),
        _ => false,
    })
}

#[cfg(test)]
mod tests;
