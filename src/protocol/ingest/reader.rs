//! The reader's state machine over `quick-xml` events: the (tiny) grammar
//! of a body (one command, or a `<batch>` of them, two elements deep at
//! most), its limits (commands, payload bytes) checked while reading, and
//! each error placed at its line. What a finished command element becomes
//! is `command.rs`'s.

use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesDecl, BytesRef, BytesStart, Event};
use quick_xml::Reader;

use super::command::{self, Element, OpenCommand};
use super::error::{line_at, ErrorCode, ParseError, ParseLimits};
use crate::protocol::Command;

/// XML 1.0's `Char` production: what a character reference may name.
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
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

/// The reader: the body, the events read from it, and the commands so far.
pub(super) struct Parser<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    limits: ParseLimits,
    commands: Vec<Command>,
}

impl<'a> Parser<'a> {
    pub(super) fn new(text: &'a str, limits: ParseLimits) -> Self {
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
    pub(super) fn run(mut self) -> Result<Vec<Command>, ParseError> {
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
        let (element, at) = (open.element, open.at);
        // The label is built only for an error: this runs once per command.
        let fail = |code, message: String| {
            let label = self.label(element);
            self.error_at(at, code, format!("{label}: {message}"))
        };
        let command = command::build(open, &fail)?;
        self.commands.push(command);
        Ok(())
    }
}
