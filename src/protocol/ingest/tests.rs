//! Fixtures for the ingest XML reader: the contract's example, every error
//! code, and the hostile documents it must refuse quickly.

use super::*;
use crate::protocol::{Payload, Target};

const LIMITS: ParseLimits = ParseLimits {
    max_payload_bytes: 1024,
    max_commands: 10,
};

/// Fixtures can be huge (deep nesting): failure messages show their start.
fn shown(xml: &str) -> &str {
    &xml[..xml.len().min(80)]
}

fn ok(xml: &str) -> Vec<Command> {
    parse(xml.as_bytes(), LIMITS).unwrap_or_else(|e| panic!("{}: {e:?}", shown(xml)))
}

fn err(xml: &str) -> ParseError {
    match parse(xml.as_bytes(), LIMITS) {
        Ok(cmds) => panic!("accepted {}: {} commands", shown(xml), cmds.len()),
        Err(e) => e,
    }
}

fn data(cmd: &Command) -> String {
    match cmd {
        Command::Message {
            payload: Payload::Json(raw),
            ..
        } => raw.get().to_owned(),
        Command::Message {
            payload: Payload::Text(t),
            ..
        } => t.clone(),
        other => panic!("not a message: {other:?}"),
    }
}

#[test]
fn reads_the_contract_example() {
    let cmds = ok(r#"<batch>
  <message to="alice" event="notice">{"text": "Your export is ready"}</message>
  <message channel="room:42" event="chat">{"from": "bob", "text": "hello"}</message>
  <message to="alice" type="text">plain text, delivered as a JSON string</message>
  <subscribe client="alice" channel="room:42"/>
  <unsubscribe client="alice" channel="room:7"/>
  <disconnect client="mallory"/>
</batch>"#);
    assert_eq!(cmds.len(), 6);
    match &cmds[1] {
        Command::Message {
            target: Target::Channel(c),
            event: Some(e),
            ..
        } => {
            assert_eq!(c.as_str(), "room:42");
            assert_eq!(e, "chat");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(data(&cmds[2]), "plain text, delivered as a JSON string");
    assert!(matches!(&cmds[5], Command::Disconnect { client } if client.as_str() == "mallory"));
}

#[test]
fn reads_a_single_command_cdata_and_entities() {
    let cmds = ok(r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- a comment --><message to="a" type="text" ttl="30"><![CDATA[<b>&amp;</b> ]]>&lt;&#x263A;&#65;</message>"#);
    assert_eq!(data(&cmds[0]), "<b>&amp;</b> <\u{263A}A");
    assert!(matches!(&cmds[0], Command::Message { ttl: Some(t), .. } if t.as_secs() == 30));
    let cmds = ok(r#"<message to="a" event="x &amp; y">  {"k": [1, 2]}  </message>"#);
    assert_eq!(data(&cmds[0]), r#"{"k": [1, 2]}"#);
}

#[test]
fn an_empty_batch_is_fine() {
    assert!(ok("<batch/>").is_empty());
    assert!(ok("<batch>\n</batch>").is_empty());
}

#[test]
fn names_the_command_and_line_of_bad_json() {
    let e = err(
        "<batch>\n<message to=\"a\">1</message>\n<message to=\"b\">{\"x\": }</message>\n</batch>",
    );
    assert_eq!(e.code, ErrorCode::InvalidJson);
    assert_eq!(e.line, 3);
    assert_eq!(e.message, "message 2: expected value at column 7");
    assert_eq!(err(r#"<message to="a"/>"#).code, ErrorCode::InvalidJson);
    assert_eq!(
        err(r#"<message to="a">  </message>"#).code,
        ErrorCode::InvalidJson
    );
}

#[test]
fn refuses_bad_ids() {
    for xml in [
        r#"<message to="a b">1</message>"#,
        r#"<message channel="">1</message>"#,
        r#"<subscribe client="a" channel="x y"/>"#,
        r#"<disconnect client="é"/>"#,
    ] {
        assert_eq!(err(xml).code, ErrorCode::InvalidId, "{xml}");
    }
}

#[test]
fn refuses_what_is_not_a_command() {
    for xml in [
        r#"<message>1</message>"#,
        r#"<message to="a" channel="b">1</message>"#,
        r#"<message to="a" type="xml">1</message>"#,
        r#"<message to="a" ttl="0">1</message>"#,
        r#"<message to="a" ttl="soon">1</message>"#,
        r#"<message to="a" event="">1</message>"#,
        r#"<message to="a" colour="red">1</message>"#,
        r#"<publish to="a">1</publish>"#,
        r#"<batch><batch/></batch>"#,
        r#"<batch id="1"/>"#,
        r#"<batch>stray<message to="a">1</message></batch>"#,
        r#"<message to="a"><b>1</b></message>"#,
        r#"<subscribe client="a"/>"#,
        r#"<disconnect client="a">why</disconnect>"#,
    ] {
        assert_eq!(err(xml).code, ErrorCode::InvalidRequest, "{xml}");
    }
}

#[test]
fn refuses_malformed_xml() {
    for xml in [
        "",
        "   ",
        "<batch>",
        "<message to=\"a\">1</mesage>",
        "<message to=\"a\">1</message><message to=\"b\">1</message>",
        "<message to='a' to='b'>1</message>",
        "<message to=\"a\">&nbsp;</message>",
        "<message to=\"a &foo;\">1</message>",
        "text<message to=\"a\">1</message>",
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><message to=\"a\">1</message>",
        "<message to=\"a\">1</message>trailing",
        "<message to=\"a\" type=\"text\">&#1;</message>",
        "<message to=\"a\" type=\"text\">&#xFFFE;</message>",
    ] {
        assert_eq!(err(xml).code, ErrorCode::MalformedXml, "{xml:?}");
    }
    let e = parse(
        b"<message to=\"a\" type=\"text\">\xff\xfe</message>",
        LIMITS,
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::MalformedXml);
}

#[test]
fn refuses_dtds_so_entities_cannot_expand() {
    let laughs = r#"<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>
<message to="a" type="text">&lol2;</message>"#;
    let e = err(laughs);
    assert_eq!((e.code, e.line), (ErrorCode::MalformedXml, 2));
    let external = r#"<!DOCTYPE m [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><message to="a" type="text">&xxe;</message>"#;
    assert_eq!(err(external).code, ErrorCode::MalformedXml);
}

#[test]
fn refuses_deep_nesting_at_the_third_level() {
    let deep = format!(
        "<batch>{}{}</batch>",
        "<message to=\"a\">".repeat(100_000),
        "</message>".repeat(100_000)
    );
    let started = std::time::Instant::now();
    assert_eq!(err(&deep).code, ErrorCode::InvalidRequest);
    assert!(started.elapsed().as_secs() < 5);
    let deep_unknown = "<x>".repeat(100_000);
    assert_eq!(err(&deep_unknown).code, ErrorCode::InvalidRequest);
}

#[test]
fn enforces_payload_and_command_limits() {
    let big = format!(
        r#"<message to="a" type="text">{}</message>"#,
        "x".repeat(1025)
    );
    assert_eq!(err(&big).code, ErrorCode::TooLarge);
    let just = format!(
        r#"<message to="a" type="text">{}</message>"#,
        "x".repeat(1024)
    );
    assert_eq!(data(&ok(&just)[0]).len(), 1024);
    let many = format!(
        "<batch>{}</batch>",
        r#"<disconnect client="a"/>"#.repeat(11)
    );
    assert_eq!(err(&many).code, ErrorCode::TooLarge);
    let ten = format!(
        "<batch>{}</batch>",
        r#"<disconnect client="a"/>"#.repeat(10)
    );
    assert_eq!(ok(&ten).len(), 10);
}

#[test]
fn deep_json_is_checked_without_recursion() {
    // serde_json skips a raw value iteratively: a deep payload is checked
    // and passed on verbatim (the browser parses it), never overflowing.
    let limits = ParseLimits {
        max_payload_bytes: 1 << 20,
        max_commands: 10,
    };
    let deep = format!(
        r#"<message to="a">{}{}</message>"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_eq!(
        data(&parse(deep.as_bytes(), limits).unwrap()[0]).len(),
        200_000
    );
    let unbalanced = format!(r#"<message to="a">{}</message>"#, "[".repeat(100_000));
    assert_eq!(
        parse(unbalanced.as_bytes(), limits)
            .map(|_| ())
            .unwrap_err()
            .code,
        ErrorCode::InvalidJson
    );
}

/// A small deterministic fuzzer: mutates valid documents byte by byte
/// (flip, insert, delete, duplicate spans) and checks the reader only ever
/// answers `Ok` or a `ParseError`, with a line inside the document.
#[test]
fn mutated_documents_never_panic() {
    let seeds: [&[u8]; 4] = [
        br#"<batch><message to="a" event="e" ttl="5">{"k": [1, "x"]}</message><subscribe client="a" channel="c"/></batch>"#,
        br#"<?xml version="1.0"?><message channel="r" type="text"><![CDATA[x]]>&amp;&#65;</message>"#,
        br#"<batch><unsubscribe client="a" channel="c"/><disconnect client="b"/></batch>"#,
        br#"<!DOCTYPE x [<!ENTITY a "b">]><message to="a">&a;</message>"#,
    ];
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for round in 0..20_000 {
        let mut doc = seeds[round % seeds.len()].to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % doc.len().max(1);
            match next() % 4 {
                0 => doc[at] = next() as u8,
                1 => {
                    let interesting = b"<>&;\"'/![]-x\n\xff";
                    doc.insert(at, interesting[(next() as usize) % interesting.len()]);
                }
                2 if doc.len() > 1 => {
                    doc.remove(at);
                }
                _ => {
                    let end = (at + (next() as usize) % 16).min(doc.len());
                    let span = doc[at..end].to_vec();
                    doc.splice(at..at, span);
                }
            }
        }
        if let Err(e) = parse(&doc, LIMITS) {
            let lines = 1 + doc.iter().filter(|&&b| b == b'\n').count();
            assert!(e.line >= 1 && e.line <= lines, "line {} of {lines}", e.line);
            assert!(!e.message.is_empty());
        }
    }
}

#[test]
fn refuses_characters_xml_does_not_allow_even_raw() {
    for (doc, line) in [
        ("<message to=\"a\" type=\"text\">nul \0 here</message>", 1),
        (
            "<batch>\n<message to=\"a\" type=\"text\">bell \u{7}</message>\n</batch>",
            2,
        ),
        (
            "<batch>\n\n<message to=\"a\" type=\"text\">\u{FFFF}</message></batch>",
            3,
        ),
        ("<message to=\"a\u{1}\" type=\"text\">x</message>", 1),
    ] {
        let e = err(doc);
        assert_eq!(e.code, ErrorCode::MalformedXml, "{doc:?}: {e}");
        assert_eq!(e.line, line, "{doc:?}: {e}");
        assert!(e.message.contains("not a character XML allows"), "{e}");
    }
    assert_eq!(
        ok("<message to=\"a\" type=\"text\">tab\tcr\r lf\n</message>").len(),
        1
    );
}

#[test]
fn error_lines_are_right_deep_into_a_long_batch() {
    let mut doc = String::from("<batch>\n");
    for _ in 0..5_000 {
        doc.push_str("<message to=\"a\">1</message>\n");
    }
    doc.push_str("<message to=\"a\">{bad</message>\n</batch>");
    let e = parse(
        doc.as_bytes(),
        ParseLimits {
            max_payload_bytes: 100,
            max_commands: 10_000,
        },
    )
    .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidJson);
    assert_eq!(e.line, 5_002, "{e}");
    assert!(e.message.starts_with("message 5001:"), "{e}");
}
