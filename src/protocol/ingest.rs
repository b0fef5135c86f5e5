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

use std::time::Duration;

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, Event};
use quick_xml::{Reader, XmlVersion};
use serde_json::value::RawValue;

use super::{ChannelName, ClientId, Command, Payload, Target};

/// Limits the reader enforces (all from the `[limits]` config section).
#[derive(Debug, Clone, Copy)]
pub struct ParseLimits {
    /// Longest message payload, in bytes of unescaped text.
    pub max_payload_bytes: usize,
    /// Most commands in one request.
    pub max_commands: usize,
}

/// The contract's error codes for a rejected ingest body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// Not well-formed XML, a DTD, an unknown entity, not UTF-8.
    MalformedXml,
    /// A `type="json"` payload that does not parse.
    InvalidJson,
    /// A client id or channel name outside the contract's pattern.
    InvalidId,
    /// Well-formed XML that is not a valid command.
    InvalidRequest,
    /// A payload or batch over its limit.
    TooLarge,
}

impl ErrorCode {
    /// The `code` attribute of the `<error>` reply.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedXml => "malformed-xml",
            ErrorCode::InvalidJson => "invalid-json",
            ErrorCode::InvalidId => "invalid-id",
            ErrorCode::InvalidRequest => "invalid-request",
            ErrorCode::TooLarge => "too-large",
        }
    }
}

/// Why a body was rejected, and where.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// The contract's error code.
    pub code: ErrorCode,
    /// 1-based line of the offending element or syntax error.
    pub line: usize,
    /// A human-readable explanation, naming the command when there is one.
    pub message: String,
}

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

/// XML 1.0's `Char` production: what a character reference may name.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
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

/// 1-based line at the end of `prefix`. Counted only when an error is
/// reported: counting per command would rescan the body once per command.
fn line_at(prefix: &[u8]) -> usize {
    1 + prefix.iter().filter(|&&b| b == b'\n').count()
}

/// Text where only blanks may stand, outside the root element.
const OUTSIDE_ROOT: &str = "text outside the root element";

/// Where the reader is in the (tiny) grammar.
enum State {
    BeforeRoot,
    InBatch,
    InCommand(OpenCommand),
    AfterRoot,
}

/// A command whose start tag has been read and whose text is being gathered.
struct OpenCommand {
    element: Element,
    start: BytesStart<'static>,
    /// Byte offset of its start tag, for error lines.
    at: usize,
    text: String,
    in_batch: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Element {
    Message,
    Subscribe,
    Unsubscribe,
    Disconnect,
}

impl Element {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "message" => Element::Message,
            "subscribe" => Element::Subscribe,
            "unsubscribe" => Element::Unsubscribe,
            "disconnect" => Element::Disconnect,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Element::Message => "message",
            Element::Subscribe => "subscribe",
            Element::Unsubscribe => "unsubscribe",
            Element::Disconnect => "disconnect",
        }
    }

    fn attributes(self) -> &'static [&'static str] {
        match self {
            Element::Message => &["to", "channel", "event", "type", "ttl"],
            Element::Subscribe | Element::Unsubscribe => &["client", "channel"],
            Element::Disconnect => &["client"],
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    limits: ParseLimits,
    commands: Vec<Command>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, limits: ParseLimits) -> Self {
        Parser {
            text,
            reader: Reader::from_str(text),
            limits,
            commands: Vec::new(),
        }
    }

    /// Reads events until the end, handing each to the method of the state
    /// the reader is in. Declarations, comments and processing instructions
    /// are the same everywhere and handled here.
    fn run(mut self) -> Result<Vec<Command>, ParseError> {
        let mut state = State::BeforeRoot;
        loop {
            let at = self.reader.buffer_position() as usize;
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(e) => {
                    let pos = self.reader.error_position() as usize;
                    return Err(self.error_at(pos, ErrorCode::MalformedXml, e.to_string()));
                }
            };
            state = match event {
                Event::DocType(_) => {
                    return Err(self.error_at(
                        at,
                        ErrorCode::MalformedXml,
                        "DOCTYPE is not accepted: no DTD processing".into(),
                    ))
                }
                Event::Decl(decl) => {
                    self.check_declaration(at, &decl)?;
                    state
                }
                Event::Comment(_) | Event::PI(_) => state,
                Event::Eof => return self.at_end(at, state),
                event => match state {
                    State::BeforeRoot => self.before_root(at, event)?,
                    State::InBatch => self.in_batch(at, event)?,
                    State::InCommand(open) => self.in_command(at, open, event)?,
                    State::AfterRoot => self.after_root(at, event)?,
                },
            };
        }
    }

    fn check_declaration(&self, at: usize, decl: &BytesDecl<'_>) -> Result<(), ParseError> {
        match decl.encoding() {
            Some(Ok(enc)) if !enc.eq_ignore_ascii_case("utf-8") => Err(self.error_at(
                at,
                ErrorCode::MalformedXml,
                format!("encoding {enc:?} is not accepted: send UTF-8"),
            )),
            _ => Ok(()),
        }
    }

    /// The root: `<batch>` or a single command.
    fn before_root(&mut self, at: usize, event: Event<'_>) -> Result<State, ParseError> {
        match event {
            Event::Start(e) if e.name().0 == "batch" => {
                self.check_batch_attributes(at, &e)?;
                Ok(State::InBatch)
            }
            Event::Empty(e) if e.name().0 == "batch" => {
                self.check_batch_attributes(at, &e)?;
                Ok(State::AfterRoot)
            }
            Event::Start(e) => Ok(State::InCommand(self.open_command(at, e, false)?)),
            Event::Empty(e) => {
                let open = self.open_command(at, e, false)?;
                self.finish_command(open)?;
                Ok(State::AfterRoot)
            }
            Event::End(_) => Err(self.closing_without_opening(at)),
            other => {
                self.only_blank(at, &other, ErrorCode::MalformedXml, OUTSIDE_ROOT)?;
                Ok(State::BeforeRoot)
            }
        }
    }

    /// Inside `<batch>`: commands, then its end tag.
    fn in_batch(&mut self, at: usize, event: Event<'_>) -> Result<State, ParseError> {
        match event {
            Event::Start(e) => Ok(State::InCommand(self.open_command(at, e, true)?)),
            Event::Empty(e) => {
                let open = self.open_command(at, e, true)?;
                self.finish_command(open)?;
                Ok(State::InBatch)
            }
            Event::End(_) => Ok(State::AfterRoot),
            other => {
                self.only_blank(
                    at,
                    &other,
                    ErrorCode::InvalidRequest,
                    "text between commands",
                )?;
                Ok(State::InBatch)
            }
        }
    }

    /// Inside a command: its text, then its end tag.
    fn in_command(
        &mut self,
        at: usize,
        mut open: OpenCommand,
        event: Event<'_>,
    ) -> Result<State, ParseError> {
        match event {
            Event::Text(t) => self.push_text(&mut open, &t.xml10_content())?,
            Event::CData(t) => self.push_text(&mut open, &t.xml10_content())?,
            Event::GeneralRef(r) => {
                let resolved = self.resolve_ref(at, &r)?;
                self.push_text(&mut open, &resolved)?;
            }
            Event::End(_) => {
                let in_batch = open.in_batch;
                self.finish_command(open)?;
                return Ok(if in_batch {
                    State::InBatch
                } else {
                    State::AfterRoot
                });
            }
            Event::Start(e) | Event::Empty(e) => {
                return Err(self.error_at(
                    at,
                    ErrorCode::InvalidRequest,
                    format!(
                        "{}: <{}> holds text only, found <{}>",
                        self.label(open.element),
                        open.element.name(),
                        e.name().0
                    ),
                ))
            }
            _ => {}
        }
        Ok(State::InCommand(open))
    }

    /// After the root element: nothing but blanks, comments and PIs.
    fn after_root(&mut self, at: usize, event: Event<'_>) -> Result<State, ParseError> {
        match event {
            Event::Start(_) | Event::Empty(_) => Err(self.error_at(
                at,
                ErrorCode::MalformedXml,
                "more than one root element".into(),
            )),
            Event::End(_) => Err(self.closing_without_opening(at)),
            other => {
                self.only_blank(at, &other, ErrorCode::MalformedXml, OUTSIDE_ROOT)?;
                Ok(State::AfterRoot)
            }
        }
    }

    fn at_end(self, at: usize, state: State) -> Result<Vec<Command>, ParseError> {
        let problem = match state {
            State::AfterRoot => return Ok(self.commands),
            State::BeforeRoot => "empty document: expected <batch> or a command",
            State::InBatch | State::InCommand(_) => {
                "unexpected end of document: an element is not closed"
            }
        };
        Err(self.error_at(at, ErrorCode::MalformedXml, problem.into()))
    }

    /// Whitespace between elements is fine; any other text there is `code`.
    fn only_blank(
        &self,
        at: usize,
        event: &Event<'_>,
        code: ErrorCode,
        what: &str,
    ) -> Result<(), ParseError> {
        match event {
            Event::Text(t) if t.xml10_content().trim().is_empty() => Ok(()),
            _ => Err(self.error_at(at, code, what.into())),
        }
    }

    fn closing_without_opening(&self, at: usize) -> ParseError {
        self.error_at(
            at,
            ErrorCode::MalformedXml,
            "closing tag without an opening one".into(),
        )
    }

    fn error_at(&self, pos: usize, code: ErrorCode, message: String) -> ParseError {
        let pos = pos.min(self.text.len());
        ParseError {
            code,
            line: line_at(&self.text.as_bytes()[..pos]),
            message,
        }
    }

    /// "message 2": the command's element and its 1-based place in the request.
    fn label(&self, element: Element) -> String {
        format!("{} {}", element.name(), self.commands.len() + 1)
    }

    fn check_batch_attributes(&self, at: usize, e: &BytesStart<'_>) -> Result<(), ParseError> {
        match e.attributes().next() {
            None => Ok(()),
            Some(_) => Err(self.error_at(
                at,
                ErrorCode::InvalidRequest,
                "<batch> takes no attributes".into(),
            )),
        }
    }

    fn open_command(
        &self,
        at: usize,
        e: BytesStart<'_>,
        in_batch: bool,
    ) -> Result<OpenCommand, ParseError> {
        let name = e.name().0;
        let Some(element) = Element::from_name(name) else {
            let hint = if name == "batch" {
                " (a <batch> cannot be nested)"
            } else {
                ""
            };
            return Err(self.error_at(
                at,
                ErrorCode::InvalidRequest,
                format!("unknown element <{name}>{hint}: expected message, subscribe, unsubscribe or disconnect"),
            ));
        };
        if self.commands.len() >= self.limits.max_commands {
            return Err(self.error_at(
                at,
                ErrorCode::TooLarge,
                format!(
                    "more than {} commands in one request",
                    self.limits.max_commands
                ),
            ));
        }
        Ok(OpenCommand {
            element,
            start: e.into_owned(),
            at,
            text: String::new(),
            in_batch,
        })
    }

    fn resolve_ref(&self, at: usize, r: &BytesRef<'_>) -> Result<String, ParseError> {
        match r.resolve_char_ref() {
            Ok(Some(c)) if is_xml_char(c) => Ok(c.to_string()),
            Ok(Some(c)) => Err(self.error_at(at, ErrorCode::MalformedXml, format!("&#{};: U+{:04X} is not a character XML allows", &r[1..], c as u32))),
            Ok(None) => match resolve_predefined_entity(r) {
                Some(s) => Ok(s.to_owned()),
                None => Err(self.error_at(
                    at,
                    ErrorCode::MalformedXml,
                    format!("unknown entity &{};: only &lt; &gt; &amp; &apos; &quot; and character references", &**r),
                )),
            },
            Err(e) => Err(self.error_at(at, ErrorCode::MalformedXml, e.to_string())),
        }
    }

    fn push_text(&self, open: &mut OpenCommand, text: &str) -> Result<(), ParseError> {
        if open.text.len() + text.len() > self.limits.max_payload_bytes {
            return Err(self.error_at(
                open.at,
                ErrorCode::TooLarge,
                format!(
                    "{}: payload over {} bytes",
                    self.label(open.element),
                    self.limits.max_payload_bytes
                ),
            ));
        }
        open.text.push_str(text);
        Ok(())
    }

    fn finish_command(&mut self, open: OpenCommand) -> Result<(), ParseError> {
        // The label is built only for an error: this runs once per command.
        let fail = |code, message: String| {
            let label = self.label(open.element);
            self.error_at(open.at, code, format!("{label}: {message}"))
        };
        let attrs = Attributes::read(&open, &fail)?;
        if open.element != Element::Message && !open.text.trim().is_empty() {
            return Err(fail(
                ErrorCode::InvalidRequest,
                format!("<{}> takes no text", open.element.name()),
            ));
        }
        let command = match open.element {
            Element::Message => build_message(&attrs, open.text, &fail)?,
            Element::Subscribe => Command::Subscribe {
                client: attrs.client_id("client", &fail)?,
                channel: attrs.channel("channel", &fail)?,
            },
            Element::Unsubscribe => Command::Unsubscribe {
                client: attrs.client_id("client", &fail)?,
                channel: attrs.channel("channel", &fail)?,
            },
            Element::Disconnect => Command::Disconnect {
                client: attrs.client_id("client", &fail)?,
            },
        };
        self.commands.push(command);
        Ok(())
    }
}

/// The attributes of one command element, unescaped and checked against the
/// element's allowed names.
struct Attributes(Vec<(&'static str, String)>);

impl Attributes {
    fn read(
        open: &OpenCommand,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<Self, ParseError> {
        let allowed = open.element.attributes();
        let mut found = Vec::new();
        for attr in open.start.attributes() {
            let attr = attr.map_err(|e| fail(ErrorCode::MalformedXml, e.to_string()))?;
            let key = attr.key.0;
            let Some(&known) = allowed.iter().find(|&&a| a == key) else {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    format!(
                        "unknown attribute {key:?} on <{}> (allowed: {})",
                        open.element.name(),
                        allowed.join(", ")
                    ),
                ));
            };
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| fail(ErrorCode::MalformedXml, e.to_string()))?;
            found.push((known, value.into_owned()));
        }
        Ok(Attributes(found))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    fn required(
        &self,
        name: &str,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<&str, ParseError> {
        self.get(name).ok_or_else(|| {
            fail(
                ErrorCode::InvalidRequest,
                format!("missing attribute {name:?}"),
            )
        })
    }

    fn client_id(
        &self,
        name: &str,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<ClientId, ParseError> {
        ClientId::parse(self.required(name, fail)?)
            .map_err(|e| fail(ErrorCode::InvalidId, e.to_string()))
    }

    fn channel(
        &self,
        name: &str,
        fail: &impl Fn(ErrorCode, String) -> ParseError,
    ) -> Result<ChannelName, ParseError> {
        ChannelName::parse(self.required(name, fail)?)
            .map_err(|e| fail(ErrorCode::InvalidId, e.to_string()))
    }
}

/// Longest `event` name accepted.
const MAX_EVENT_LEN: usize = 128;

fn build_message(
    attrs: &Attributes,
    text: String,
    fail: &impl Fn(ErrorCode, String) -> ParseError,
) -> Result<Command, ParseError> {
    let target = match (attrs.get("to"), attrs.get("channel")) {
        (Some(_), None) => Target::Client(attrs.client_id("to", fail)?),
        (None, Some(_)) => Target::Channel(
            ChannelName::parse_target(attrs.required("channel", fail)?)
                .map_err(|e| fail(ErrorCode::InvalidId, e.to_string()))?,
        ),
        _ => {
            return Err(fail(
                ErrorCode::InvalidRequest,
                "needs exactly one of \"to\" or \"channel\"".into(),
            ))
        }
    };
    let event = attrs
        .get("event")
        .map(event_name)
        .transpose()
        .map_err(|m| fail(ErrorCode::InvalidRequest, m))?;
    let ttl = match attrs.get("ttl") {
        None => None,
        Some(s) => match s.trim().parse::<u32>() {
            Ok(secs) if secs > 0 => Some(Duration::from_secs(secs.into())),
            _ => {
                return Err(fail(
                    ErrorCode::InvalidRequest,
                    format!("\"ttl\" must be a whole number of seconds above 0, got {s:?}"),
                ))
            }
        },
    };
    let payload = match PayloadType::parse(attrs.get("type").unwrap_or("json")) {
        Ok(kind) => kind
            .read(text)
            .map_err(|m| fail(ErrorCode::InvalidJson, m))?,
        Err(m) => return Err(fail(ErrorCode::InvalidRequest, m)),
    };
    Ok(Command::Message {
        target,
        event,
        payload,
        ttl,
    })
}

/// A message's `event` name, checked: what ingest's `event` attribute and a
/// bridge's event (fixed or from a header) must both be.
pub fn event_name(e: &str) -> Result<String, String> {
    if e.is_empty() || e.len() > MAX_EVENT_LEN || e.chars().any(char::is_control) {
        return Err(format!(
            "\"event\" must be 1 to {MAX_EVENT_LEN} bytes without control characters"
        ));
    }
    Ok(e.to_owned())
}

/// How a message's text is read: a `<message type="...">`, or a bridge's
/// `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadType {
    /// `json`: the text must be one JSON value, delivered verbatim.
    Json,
    /// `text`: delivered as a JSON string.
    Text,
}

impl PayloadType {
    /// `json` or `text`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(PayloadType::Json),
            "text" => Ok(PayloadType::Text),
            other => Err(format!("\"type\" must be json or text, got {other:?}")),
        }
    }

    /// The payload `text` makes, or why it is not valid JSON.
    pub fn read(self, text: String) -> Result<Payload, String> {
        match self {
            PayloadType::Json => parse_json(&text).map(Payload::Json),
            PayloadType::Text => Ok(Payload::Text(text)),
        }
    }
}

fn parse_json(text: &str) -> Result<Box<RawValue>, String> {
    let trimmed = text.trim_matches(|c: char| c.is_ascii_whitespace());
    if trimmed.is_empty() {
        return Err("empty payload: a json message needs a JSON value (or type=\"text\")".into());
    }
    serde_json::from_str::<Box<RawValue>>(trimmed).map_err(|e| {
        let full = e.to_string();
        let what = full
            .rsplit_once(" at line ")
            .map_or(full.as_str(), |(what, _)| what);
        if e.line() == 1 {
            format!("{what} at column {}", e.column())
        } else {
            format!("{what} at line {} column {}", e.line(), e.column())
        }
    })
}

#[cfg(test)]
mod tests;
