//! A STOMP 1.2 frame codec on `tokio-util`'s `Decoder`/`Encoder`.
//!
//! ```text
//! COMMAND EOL (header-name ":" header-value EOL)* EOL body NUL EOL*
//! ```
//!
//! Header names and values are escaped (`\\`, `\n`, `\r`, `\c`) in every
//! frame but CONNECT and CONNECTED; the first of repeated headers wins; a
//! `content-length` header says how many body bytes to read (the body may
//! then hold NULs), otherwise the body ends at the first NUL. EOLs between
//! frames are heart-beats and are skipped. Memory is bounded: a frame larger
//! than the limit is an error before it is buffered whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `CONNECT`, `MESSAGE`, `ACK`, ...
    pub command: String,
    /// Headers in order (repeats kept; [`Frame::header`] returns the first).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
}

impl Frame {
    /// A frame without body.
    pub fn new(command: &str, headers: &[(&str, &str)]) -> Self {
        Frame {
            command: command.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: Bytes::new(),
        }
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Larger than the codec's limit.
    #[error("frame larger than {0} bytes")]
    TooLarge(usize),
    /// Not STOMP.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads and writes [`Frame`]s; an [`Item::HeartBeat`] for each EOL between
/// frames, so the reader knows the connection is alive.
#[derive(Debug)]
pub struct StompCodec {
    max_frame: usize,
}

/// What the decoder yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A frame.
    Frame(Frame),
    /// A heart-beat (one or more EOLs between frames).
    HeartBeat,
}

impl StompCodec {
    /// A codec refusing frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        StompCodec { max_frame }
    }
}

/// Escaping does not apply to these (STOMP 1.2, "Value Encoding").
fn raw_headers(command: &str) -> bool {
    command == "CONNECT" || command == "CONNECTED"
}

impl Decoder for StompCodec {
    type Item = Item;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Item>, CodecError> {
        let eols = src
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        if eols > 0 {
            src.advance(eols);
            return Ok(Some(Item::HeartBeat));
        }
        if src.is_empty() {
            return Ok(None);
        }
        // The head ends at the first blank line: "\n\n" or "\n\r\n".
        let Some((head, body_start)) = head_end(src) else {
            if src.len() > self.max_frame {
                return Err(CodecError::TooLarge(self.max_frame));
            }
            return Ok(None);
        };
        let (command, headers) = parse_head(&src[..head])?;
        let length = content_length(&headers)?;
        let Some(body_end) = self.body_end(src, body_start, length)? else {
            return Ok(None);
        };
        let command = command.to_owned();
        let mut frame = src.split_to(body_end + 1);
        frame.truncate(body_end);
        let body = frame.split_off(body_start).freeze();
        Ok(Some(Item::Frame(Frame {
            command,
            headers,
            body,
        })))
    }
}

impl StompCodec {
    /// Where the body starting at `body_start` ends (at its NUL): after
    /// `content-length` bytes when given, else at the first NUL; `None`
    /// until it has arrived.
    fn body_end(
        &self,
        src: &[u8],
        body_start: usize,
        length: Option<usize>,
    ) -> Result<Option<usize>, CodecError> {
        match length {
            Some(n) => {
                if body_start.saturating_add(n) > self.max_frame {
                    return Err(CodecError::TooLarge(self.max_frame));
                }
                if src.len() <= body_start + n {
                    return Ok(None);
                }
                if src[body_start + n] != 0 {
                    return Err(CodecError::Malformed("no NUL after content-length bytes"));
                }
                Ok(Some(body_start + n))
            }
            None => match src[body_start..].iter().position(|&b| b == 0) {
                Some(at) => Ok(Some(body_start + at)),
                None if src.len() > self.max_frame => Err(CodecError::TooLarge(self.max_frame)),
                None => Ok(None),
            },
        }
    }
}

/// A frame's headers, in order, as [`Frame::headers`] holds them.
type Headers = Vec<(String, String)>;

/// A frame's head: its command (upper-case letters) and its headers,
/// unescaped unless the command is one [`raw_headers`] names.
fn parse_head(head: &[u8]) -> Result<(&str, Headers), CodecError> {
    let head_text =
        std::str::from_utf8(head).map_err(|_| CodecError::Malformed("head is not UTF-8"))?;
    let mut lines = head_text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l));
    let command = lines.next().unwrap_or_default();
    if command.is_empty() || !command.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(CodecError::Malformed("command is not upper-case letters"));
    }
    let raw = raw_headers(command);
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(CodecError::Malformed("header line without ':'"))?;
        let (name, value) = if raw {
            (name.to_owned(), value.to_owned())
        } else {
            (unescape(name)?, unescape(value)?)
        };
        headers.push((name, value));
    }
    Ok((command, headers))
}

/// The `content-length` header's value, if there is one.
fn content_length(headers: &[(String, String)]) -> Result<Option<usize>, CodecError> {
    match headers.iter().find(|(k, _)| k == "content-length") {
        Some((_, v)) => v
            .trim()
            .parse::<usize>()
            .map(Some)
            .map_err(|_| CodecError::Malformed("content-length is not a number")),
        None => Ok(None),
    }
}

/// (end of the head's last line, start of the body), once the blank line
/// that ends the head has arrived.
fn head_end(src: &[u8]) -> Option<(usize, usize)> {
    let mut at = 0;
    while let Some(nl) = src[at..].iter().position(|&b| b == b'\n') {
        let nl = at + nl;
        let next = &src[nl + 1..];
        if next.first() == Some(&b'\n') {
            return Some((nl, nl + 2));
        }
        if next.starts_with(b"\r\n") {
            return Some((nl, nl + 3));
        }
        at = nl + 1;
    }
    None
}

fn unescape(s: &str) -> Result<String, CodecError> {
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next() {
            Some('n') => '\n',
            Some('r') => '\r',
            Some('c') => ':',
            Some('\\') => '\\',
            _ => return Err(CodecError::Malformed("undefined escape in a header")),
        });
    }
    Ok(out)
}

fn escape_into(s: &str, dst: &mut BytesMut) {
    for c in s.chars() {
        match c {
            '\\' => dst.put_slice(b"\\\\"),
            '\n' => dst.put_slice(b"\\n"),
            '\r' => dst.put_slice(b"\\r"),
            ':' => dst.put_slice(b"\\c"),
            c => {
                let mut buf = [0; 4];
                dst.put_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

impl Encoder<Item> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> Result<(), CodecError> {
        let frame = match item {
            Item::HeartBeat => {
                dst.put_u8(b'\n');
                return Ok(());
            }
            Item::Frame(frame) => frame,
        };
        let raw = raw_headers(&frame.command);
        dst.put_slice(frame.command.as_bytes());
        dst.put_u8(b'\n');
        for (name, value) in &frame.headers {
            if raw {
                dst.put_slice(name.as_bytes());
                dst.put_u8(b':');
                dst.put_slice(value.as_bytes());
            } else {
                escape_into(name, dst);
                dst.put_u8(b':');
                escape_into(value, dst);
            }
            dst.put_u8(b'\n');
        }
        if !frame.body.is_empty() && frame.header("content-length").is_none() {
            dst.put_slice(format!("content-length:{}\n", frame.body.len()).as_bytes());
        }
        dst.put_u8(b'\n');
        dst.put_slice(&frame.body);
        dst.put_u8(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 16;

    fn decode_all(bytes: &[u8]) -> Result<Vec<Frame>, CodecError> {
        let mut codec = StompCodec::new(MAX);
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(item) = codec.decode(&mut buf)? {
            if let Item::Frame(f) = item {
                frames.push(f);
            }
        }
        Ok(frames)
    }

    fn encode(frame: &Frame) -> BytesMut {
        let mut buf = BytesMut::new();
        StompCodec::new(MAX)
            .encode(Item::Frame(frame.clone()), &mut buf)
            .unwrap();
        buf
    }

    #[test]
    fn reads_a_message_from_activemq() {
        let wire = b"\nMESSAGE\ndestination:/queue/a\nmessage-id:ID\\c1\nack:7\ncometbox-channel:room\\c1\ncontent-length:5\n\nhe\0lo\0\n";
        let frames = decode_all(wire).unwrap();
        assert_eq!(frames.len(), 1);
        let f = &frames[0];
        assert_eq!(f.command, "MESSAGE");
        assert_eq!(f.header("message-id"), Some("ID:1"));
        assert_eq!(f.header("cometbox-channel"), Some("room:1"));
        assert_eq!(&f.body[..], b"he\0lo");
    }

    #[test]
    fn without_content_length_the_body_ends_at_nul() {
        let frames = decode_all(b"MESSAGE\r\na:1\r\na:2\r\n\r\n{\"x\":1}\0").unwrap();
        assert_eq!(frames[0].header("a"), Some("1"));
        assert_eq!(&frames[0].body[..], b"{\"x\":1}");
    }

    #[test]
    fn connected_headers_are_not_unescaped() {
        let frames = decode_all(b"CONNECTED\nserver:x\\y\n\n\0").unwrap();
        assert_eq!(frames[0].header("server"), Some("x\\y"));
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(decode_all(b"message\n\n\0").is_err());
        assert!(decode_all(b"MESSAGE\nnocolon\n\n\0").is_err());
        assert!(decode_all(b"MESSAGE\na:\\x\n\n\0").is_err());
        assert!(decode_all(b"MESSAGE\ncontent-length:2\n\nabc\0").is_err());
        let big = format!("MESSAGE\ncontent-length:{}\n\n", MAX + 1);
        assert!(matches!(
            decode_all(big.as_bytes()),
            Err(CodecError::TooLarge(_))
        ));
        let endless = vec![b'A'; MAX + 2];
        assert!(matches!(decode_all(&endless), Err(CodecError::TooLarge(_))));
    }

    fn frames() -> impl Strategy<Value = Frame> {
        (
            "[A-Z]{1,12}",
            proptest::collection::vec(("[^\u{0}]{0,12}", "[^\u{0}]{0,24}"), 0..6),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(command, headers, body)| Frame {
                command,
                // A content-length the encoder did not write would be wrong.
                headers: headers
                    .into_iter()
                    .filter(|(k, _)| k != "content-length")
                    .collect(),
                body: Bytes::from(body),
            })
            .prop_filter("CONNECT(ED) headers are sent raw", |f| {
                !raw_headers(&f.command)
            })
    }

    proptest! {
        #[test]
        fn frames_round_trip(frame in frames(), split in 0usize..400) {
            let wire = encode(&frame);
            let mut expected = frame.clone();
            if !frame.body.is_empty() {
                expected.headers.push(("content-length".into(), frame.body.len().to_string()));
            }
            // Whole, and delivered in two reads at any point.
            prop_assert_eq!(decode_all(&wire).unwrap(), vec![expected.clone()]);
            let split = split.min(wire.len());
            let mut codec = StompCodec::new(MAX);
            let mut buf = BytesMut::from(&wire[..split]);
            let mut got = None;
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                if let Item::Frame(f) = item { got = Some(f) }
            }
            buf.extend_from_slice(&wire[split..]);
            while let Some(item) = codec.decode(&mut buf).unwrap() {
                if let Item::Frame(f) = item { got = Some(f) }
            }
            prop_assert_eq!(got, Some(expected));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut codec = StompCodec::new(256);
            let mut buf = BytesMut::from(&bytes[..]);
            // Every call consumes input or stops: bounded.
            for _ in 0..=bytes.len() {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) | Err(_) => break,
                }
            }
            prop_assert!(buf.len() <= bytes.len());
        }

        #[test]
        fn mutated_frames_never_panic(frame in frames(), at in any::<usize>(), byte in any::<u8>()) {
            let mut wire = encode(&frame);
            let at = at % wire.len();
            wire[at] = byte;
            let _ = decode_all(&wire);
        }
    }
}
