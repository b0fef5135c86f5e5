//! A request head as the public port reads it: parsed by `httparse` from the
//! connection's buffer, then kept as the few owned fields the routes use, so
//! the read buffer can be freed before a poll waits.
//!
//! Strict on purpose: anything a browser or a proxy would not send (obsolete
//! line folding, spaces before a colon, conflicting lengths, more headers
//! than [`MAX_HEADERS`], a `Transfer-Encoding` other than one `chunked` on
//! HTTP/1.1, an HTTP/1.1 request without exactly one `Host`, or whose
//! absolute target names another host) is refused with the connection
//! closed, since the framing of what follows it cannot be trusted, and a
//! proxy in front may have read the request otherwise.

/// Headers a request may carry. Browsers send about 15; past this the
/// request is refused with 431, like one whose head is over
/// `max_header_bytes`.
pub const MAX_HEADERS: usize = 64;

/// The methods the public port knows; the rest are answered 405.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Options,
    Post,
    Other,
}

/// How a request says its body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body (no `Content-Length`, or `Content-Length: 0`).
    None,
    /// `Content-Length: n`, n > 0.
    Length(u64),
    /// `Transfer-Encoding: chunked` (Node's `http.request` sends a body so
    /// when it is written in parts: CometD's Node adapter does).
    Chunked,
}

/// One request's head, owned.
#[derive(Debug)]
pub struct Head {
    pub method: Method,
    /// The request target in origin form (`/poll?token=...`); an absolute
    /// target (`http://host/poll?...`) is cut to this form.
    target: String,
    /// Where the path ends in `target` (at `?` or the end).
    path_end: usize,
    /// Whether the client lets the connection stay open after the reply.
    pub keep_alive: bool,
    /// `Authorization`, if sent.
    pub authorization: Option<String>,
    /// `Origin`, if sent.
    pub origin: Option<String>,
    /// `Last-Event-ID`, if sent (an `EventSource` resuming a stream).
    pub last_event_id: Option<String>,
    /// `Content-Type`, if sent (a Bayeux POST: JSON or a form).
    pub content_type: Option<String>,
    pub body: BodyFraming,
    /// `Expect: 100-continue`: the client waits for `100 Continue` before
    /// sending its body.
    pub expect_continue: bool,
    /// What the request says of a WebSocket upgrade (`GET /ws`); boxed and
    /// made only when the request carries such a header, so a poll's head
    /// stays small.
    pub upgrade: Option<Box<Upgrade>>,
}

/// The headers of an RFC 6455 opening handshake, as sent; `ws.rs` judges
/// them. Nothing is allocated unless the request carries them.
#[derive(Debug, Default)]
pub struct Upgrade {
    /// `Upgrade: websocket`.
    pub websocket: bool,
    /// `Connection` lists `upgrade`.
    pub connection: bool,
    /// `Sec-WebSocket-Key`.
    pub key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub version: Option<String>,
    /// `Host`, as sent.
    pub host: Option<String>,
    /// `Origin`, as sent (a browser always sends it on an upgrade).
    pub origin: Option<String>,
}

impl Head {
    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.target[..self.path_end]
    }

    /// The query, without the `?`; empty when there is none.
    pub fn query(&self) -> &str {
        self.target.get(self.path_end + 1..).unwrap_or("")
    }
}

/// Why a head was refused; the connection is closed after the reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not HTTP/1.x as a browser or proxy sends it.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// 431: more than [`MAX_HEADERS`] headers, or over `max_header_bytes`.
    #[error("request headers too large")]
    TooLarge,
    /// 501: a `Transfer-Encoding` coding other than `chunked`: the body's
    /// end cannot be found.
    #[error("Transfer-Encoding {0:?} is not supported: send chunked or Content-Length")]
    UnknownCoding(String),
}

/// What one look at the buffer found.
#[derive(Debug)]
pub enum Parsed {
    /// A whole head, and how many bytes of the buffer it took.
    Complete(Head, usize),
    /// More bytes are needed.
    Partial,
}

/// Parses the head at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let taken = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(e) => return Err(HeadError::Malformed(parse_error(e))),
    };
    let version = request.version.ok_or(HeadError::Malformed("no version"))?;
    let http10 = version == 0;
    let (target, path_end, authority) = origin_form(request.path.unwrap_or(""))?;
    let mut head = Head {
        method: method_of(request.method.unwrap_or("")),
        target,
        path_end,
        keep_alive: !http10,
        authorization: None,
        origin: None,
        last_event_id: None,
        content_type: None,
        body: BodyFraming::None,
        expect_continue: false,
        upgrade: None,
    };
    let mut framing = Framing::default();
    for header in request.headers.iter() {
        if !framing.read(header, http10)? {
            head.read_header(header, http10)?;
        }
    }
    head.body = framing.body()?;
    framing.check_host(authority, http10)?;
    if let Some(upgrade) = head.upgrade.as_deref_mut() {
        // A WebSocket's `Origin` is checked against the host it asked for.
        upgrade.host = framing
            .host
            .map(|h| String::from_utf8_lossy(h).into_owned());
        upgrade.origin = head.origin.clone();
    }
    Ok(Parsed::Complete(head, taken))
}

fn method_of(method: &str) -> Method {
    match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        "POST" => Method::Post,
        _ => Method::Other,
    }
}

impl Head {
    /// Keeps what the routes use of a header that does not frame the
    /// request; ignores the rest.
    fn read_header(
        &mut self,
        header: &httparse::Header<'_>,
        http10: bool,
    ) -> Result<(), HeadError> {
        let name = header.name;
        if name.eq_ignore_ascii_case("expect") {
            self.expect_continue = header.value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            self.read_connection(header.value, http10);
        } else if name.eq_ignore_ascii_case("authorization") {
            self.authorization = Some(text(header.value)?);
        } else if name.eq_ignore_ascii_case("origin") {
            self.origin = Some(text(header.value)?);
        } else if name.eq_ignore_ascii_case("last-event-id") {
            self.last_event_id = Some(text(header.value)?);
        } else if name.eq_ignore_ascii_case("content-type") {
            self.content_type = Some(text(header.value)?);
        } else if name.len() > 8 && name[..8].eq_ignore_ascii_case("sec-webs") {
            self.read_websocket(name, header.value)?;
        } else if name.eq_ignore_ascii_case("upgrade") {
            self.upgrade_mut().websocket = header
                .value
                .split(|b| *b == b',')
                .any(|p| p.trim_ascii().eq_ignore_ascii_case(b"websocket"));
        }
        Ok(())
    }

    fn upgrade_mut(&mut self) -> &mut Upgrade {
        self.upgrade.get_or_insert_with(Default::default)
    }

    /// `Sec-WebSocket-Key` and `Sec-WebSocket-Version`; other
    /// `Sec-WebSocket-*` headers (protocols, extensions) are not taken up.
    fn read_websocket(&mut self, name: &str, value: &[u8]) -> Result<(), HeadError> {
        if name.eq_ignore_ascii_case("sec-websocket-key") {
            self.upgrade_mut().key = Some(text(value)?);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            self.upgrade_mut().version = Some(text(value)?);
        }
        Ok(())
    }

    /// `Connection: close`, or `keep-alive` on HTTP/1.0 (1.1 keeps alive
    /// unless told otherwise).
    fn read_connection(&mut self, value: &[u8], http10: bool) {
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.eq_ignore_ascii_case(b"close") {
                self.keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && http10 {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade_mut().connection = true;
            }
        }
    }
}

/// The headers that say where the request ends and whom it is for, checked
/// together once all are read: each may come once, and they must agree.
#[derive(Default)]
struct Framing<'b> {
    /// `Content-Length`.
    length: Option<u64>,
    /// `Host`.
    host: Option<&'b [u8]>,
    /// `Transfer-Encoding: chunked`.
    chunked: bool,
}

impl<'b> Framing<'b> {
    /// Reads `header` if it is `Host`, `Content-Length` or
    /// `Transfer-Encoding`; `false` for any other.
    fn read(&mut self, header: &httparse::Header<'b>, http10: bool) -> Result<bool, HeadError> {
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if self.host.is_some() {
                return Err(HeadError::Malformed("more than one Host header"));
            }
            self.host = Some(header.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            self.read_length(header.value)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            self.read_coding(header.value, http10)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// A `Content-Length`: digits only; repeated, only with the same value.
    fn read_length(&mut self, value: &[u8]) -> Result<(), HeadError> {
        let value = std::str::from_utf8(value)
            .ok()
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or(HeadError::Malformed("invalid Content-Length"))?;
        if self.length.is_some_and(|l| l != value) {
            return Err(HeadError::Malformed("conflicting Content-Length headers"));
        }
        self.length = Some(value);
        Ok(())
    }

    /// A `Transfer-Encoding`: once, on HTTP/1.1, exactly `chunked`.
    fn read_coding(&mut self, value: &[u8], http10: bool) -> Result<(), HeadError> {
        if http10 {
            // HTTP/1.0 has no chunked framing: a 1.0 proxy before us
            // would have read this body by its Content-Length or the
            // connection's end.
            return Err(HeadError::Malformed("Transfer-Encoding on HTTP/1.0"));
        }
        if self.chunked {
            return Err(HeadError::Malformed(
                "more than one Transfer-Encoding header",
            ));
        }
        self.chunked = true;
        transfer_coding(value)
    }

    /// How the body is framed: chunked, a length, or none; never both.
    fn body(&self) -> Result<BodyFraming, HeadError> {
        match (self.chunked, self.length) {
            // Request smuggling's classic: two framings, two readings.
            (true, Some(_)) => Err(HeadError::Malformed(
                "both Transfer-Encoding and Content-Length",
            )),
            (true, None) => Ok(BodyFraming::Chunked),
            (false, Some(n)) if n > 0 => Ok(BodyFraming::Length(n)),
            (false, _) => Ok(BodyFraming::None),
        }
    }

    /// HTTP/1.1 needs one `Host`, and it must name the host an absolute
    /// target names.
    fn check_host(&self, authority: Option<&str>, http10: bool) -> Result<(), HeadError> {
        match (self.host, authority) {
            (None, _) if !http10 => Err(HeadError::Malformed("no Host header")),
            (Some(host), Some(authority)) if !host.eq_ignore_ascii_case(authority.as_bytes()) => {
                Err(HeadError::Malformed(
                    "the request target names another host than Host",
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Checks a `Transfer-Encoding` value: exactly `chunked` is the one body
/// framing read here. A list (`gzip, chunked`) would need decoding the
/// port does not do (`501`); `chunked` twice, or an empty element, is
/// malformed (`400`).
fn transfer_coding(value: &[u8]) -> Result<(), HeadError> {
    let mut chunked = 0;
    let mut unknown = None;
    for coding in value.split(|b| *b == b',') {
        let coding = coding.trim_ascii();
        if coding.is_empty() {
            return Err(HeadError::Malformed("an empty Transfer-Encoding coding"));
        }
        if coding.eq_ignore_ascii_case(b"chunked") {
            chunked += 1;
        } else {
            unknown.get_or_insert(coding);
        }
    }
    if chunked > 1 {
        return Err(HeadError::Malformed(
            "chunked given twice in Transfer-Encoding",
        ));
    }
    match unknown {
        None => Ok(()),
        Some(coding) => Err(HeadError::UnknownCoding(
            String::from_utf8_lossy(coding).into_owned(),
        )),
    }
}

/// A header value the routes read as text.
fn text(value: &[u8]) -> Result<String, HeadError> {
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| HeadError::Malformed("a header value is not UTF-8"))
}

/// The target in origin form, where its path ends, and the host an
/// absolute target names (which `Host` must repeat).
fn origin_form(target: &str) -> Result<(String, usize, Option<&str>), HeadError> {
    let (target, authority) = match target.split_once("://") {
        // Absolute form (`GET http://host/poll HTTP/1.1`), as sent to proxies.
        Some((scheme, rest))
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") =>
        {
            let end = rest.find('/').unwrap_or(rest.len());
            (
                if end < rest.len() { &rest[end..] } else { "/" },
                Some(&rest[..end]),
            )
        }
        _ => (target, None),
    };
    if !target.starts_with('/') {
        return Err(HeadError::Malformed("the request target must start with /"));
    }
    let path_end = target.find('?').unwrap_or(target.len());
    Ok((target.to_owned(), path_end, authority))
}

fn parse_error(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "not HTTP/1.0 or HTTP/1.1",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse(raw.as_bytes()) {
            Ok(Parsed::Complete(head, n)) => {
                assert_eq!(n, raw.len());
                head
            }
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn a_browser_poll_is_read() {
        let h = head("GET /poll?since=a-1&channels=x HTTP/1.1\r\nHost: h\r\nOrigin: https://o\r\nAuthorization: Bearer t\r\n\r\n");
        assert_eq!(
            (h.method, h.path(), h.query()),
            (Method::Get, "/poll", "since=a-1&channels=x")
        );
        assert!(h.keep_alive);
        assert_eq!(h.origin.as_deref(), Some("https://o"));
        assert_eq!(h.authorization.as_deref(), Some("Bearer t"));
        assert_eq!(h.body, BodyFraming::None);
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(
            !head("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n").keep_alive
        );
    }

    #[test]
    fn absolute_targets_are_cut_to_their_path() {
        assert_eq!(
            head("GET http://h:1/poll?x=1 HTTP/1.1\r\nHost: h:1\r\n\r\n").query(),
            "x=1"
        );
        assert_eq!(
            head("GET https://h HTTP/1.1\r\nHost: h\r\n\r\n").path(),
            "/"
        );
    }

    #[test]
    fn bodies_are_framed_or_refused() {
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").body,
            BodyFraming::None
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n").body,
            BodyFraming::Length(5)
        );
        assert_eq!(
            head("GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").body,
            BodyFraming::Chunked
        );
        for bad in [
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nFolded: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: h\r\nSpace : a\r\n\r\n",
            "GET poll HTTP/1.1\r\nHost: h\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn one_chunked_coding_on_http_1_1_is_the_only_one_read() {
        let te = |version: &str, value: &str| {
            parse(
                format!("POST / HTTP/{version}\r\nHost: h\r\nTransfer-Encoding: {value}\r\n\r\n")
                    .as_bytes(),
            )
            .map(|_| ())
        };
        assert_eq!(te("1.1", "Chunked"), Ok(()));
        for unknown in ["gzip, chunked", "gzip", "chunked, gzip", "identity"] {
            assert!(
                matches!(te("1.1", unknown), Err(HeadError::UnknownCoding(_))),
                "{unknown}"
            );
        }
        for malformed in ["chunked, chunked", "chunked,", ", chunked", ""] {
            assert!(
                matches!(te("1.1", malformed), Err(HeadError::Malformed(_))),
                "{malformed:?}"
            );
        }
        assert!(matches!(te("1.0", "chunked"), Err(HeadError::Malformed(_))));
        let twice = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(twice), Err(HeadError::Malformed(_))));
    }

    #[test]
    fn http_1_1_needs_one_host_matching_an_absolute_target() {
        for bad in [
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a:8480/ HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(HeadError::Malformed(_))),
                "{bad:?}"
            );
        }
        head("GET / HTTP/1.0\r\n\r\n");
        head("GET http://A:1/x HTTP/1.1\r\nHost: a:1\r\n\r\n");
        assert!(head("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn too_many_headers_is_too_large_and_a_partial_head_asks_for_more() {
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(parse(raw.as_bytes()).unwrap_err(), HeadError::TooLarge);
        assert!(matches!(
            parse(b"GET /poll HTTP/1.1\r\nHost:"),
            Ok(Parsed::Partial)
        ));
        let pipelined = parse(b"GET / HTTP/1.1\r\nHost: h\r\n\r\nGET");
        assert!(
            matches!(pipelined, Ok(Parsed::Complete(_, 27))),
            "{pipelined:?}"
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap stand-in for the fuzz target: every prefix and every
        // single-byte corruption of a real request.
        let raw = b"GET /poll?token=a.b.c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        for end in 0..=raw.len() {
            let _ = parse(&raw[..end]);
        }
        for at in 0..raw.len() {
            for byte in [0u8, b'\r', b'\n', b' ', b':', 0x80, 0xff] {
                let mut bent = raw.to_vec();
                bent[at] = byte;
                let _ = parse(&bent);
            }
        }
    }
}
