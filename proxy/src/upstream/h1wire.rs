//! An HTTP/1.1 exchange driven by the request's own task, for requests without a body.
//!
//! hyper's client connection lives in a task of its own and meets the request through
//! channels, so every exchange hands work between two tasks several times: that cost was a
//! third of the proxy's instructions per request. A request without a body has nothing to
//! stream while its answer arrives, so the request's task can do the whole exchange on the
//! socket itself: write the head, read the answer's head, then read the body as the client
//! takes it. Requests with bodies (written while the answer may already be coming) and
//! upgrades stay on hyper's connection.
//!
//! Framing follows RFC 9112 §6.3: no body after HEAD, 1xx, 204 and 304; chunked when it is
//! the last transfer coding; else `Content-Length`; else until the upstream closes.

use std::future::{Future, poll_fn};
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::header;
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::headers;
use crate::wire::{self, FieldSpans};

/// Largest response head accepted from an upstream.
const MAX_HEAD: usize = 64 * 1024;
/// Spare room made in the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Longest chunk-size line (size, extensions) accepted before it is called invalid.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What went wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub(super) enum WireError {
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a byte of its answer.
    #[error("upstream closed the connection before answering")]
    Closed,
    /// The upstream closed the connection inside an answer.
    #[error("upstream closed the connection in the middle of its answer")]
    Truncated,
    /// No answer before the deadline.
    #[error("no answer before the deadline")]
    TimedOut,
    /// The answer is not valid HTTP/1.1.
    #[error("invalid response from upstream: {0}")]
    Invalid(String),
}

/// How an exchange failed: `Stale` when nothing came back on a connection the upstream may
/// have closed while it sat idle (safe to send again for an idempotent request).
pub(super) enum Attempt {
    /// Writing failed, or the connection ended before any byte of an answer.
    Stale(WireError),
    /// Anything else.
    Failed(WireError),
}

impl Attempt {
    /// The error, whichever way the exchange failed.
    pub(super) fn into_error(self) -> WireError {
        match self {
            Self::Stale(err) | Self::Failed(err) => err,
        }
    }
}

/// One keep-alive connection to an upstream, with bytes read but not yet consumed.
pub(super) struct WireConn {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
    /// The current exchange's deadline. One timer for the connection's life, pushed back
    /// for each exchange: far cheaper than registering a timer per request.
    deadline: Pin<Box<Sleep>>,
}

/// A response head read from the wire, and how its body is framed.
pub(super) struct Head {
    /// Status, version and headers (the body is attached by the caller).
    pub(super) response: Response<()>,
    /// How the body ends.
    pub(super) framing: Framing,
    /// Whether the connection may carry another exchange once the body has been read.
    pub(super) keep_alive: bool,
}

/// How the end of a response body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// This many bytes are left (`Content-Length`).
    Length(u64),
    /// Chunked transfer coding, in this state.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// The body has ended.
    Done,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields (dropped, as hyper's client does) and the CRLF.
    Trailers,
}

impl Framing {
    /// Whether no more body bytes will come.
    pub(super) fn is_done(self) -> bool {
        matches!(self, Self::Done | Self::Length(0))
    }
}

impl WireConn {
    /// A connection over `stream`, fresh from `connect`.
    pub(super) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            write: Vec::with_capacity(1024),
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// Whether everything read has been consumed: a connection holding extra bytes after a
    /// complete answer is out of step with its upstream and must not be reused.
    pub(super) fn is_clean(&self) -> bool {
        self.read.is_empty()
    }

    /// Send `head` (origin-form URI, `Host` set, no body) and read the answer's head, by
    /// `deadline`; with `relay`, the head may come as [`RelayedFields`](crate::wire::RelayedFields).
    ///
    /// Interim 1xx answers are skipped. A 101 is refused: this path never asks to upgrade.
    pub(super) async fn exchange(
        &mut self,
        head: &Parts,
        deadline: std::time::Instant,
        relay: bool,
    ) -> Result<Head, Attempt> {
        self.deadline.as_mut().reset(deadline.into());
        encode_request(&mut self.write, head);
        if let Err(err) = self.stream.write_all(&self.write).await {
            return Err(Attempt::Stale(err.into()));
        }
        let mut answered = false;
        loop {
            if !self.read.is_empty() {
                match parse_head(&mut self.read, &head.method, relay).map_err(Attempt::Failed)? {
                    Some(parsed) if parsed.response.status().is_informational() => {
                        if parsed.response.status() == StatusCode::SWITCHING_PROTOCOLS {
                            return Err(Attempt::Failed(WireError::Invalid(
                                "101 Switching Protocols to a request that did not ask to upgrade"
                                    .into(),
                            )));
                        }
                        continue;
                    }
                    Some(parsed) => return Ok(parsed),
                    None if self.read.len() >= MAX_HEAD => {
                        return Err(Attempt::Failed(WireError::Invalid(format!(
                            "response head over {MAX_HEAD} bytes"
                        ))));
                    }
                    None => {}
                }
            }
            // `None`: the deadline passed first.
            let filled = poll_fn(|cx| match self.poll_fill(cx) {
                Poll::Ready(filled) => Poll::Ready(Some(filled)),
                Poll::Pending => self.deadline.as_mut().poll(cx).map(|()| None),
            });
            let Some(filled) = filled.await else {
                return Err(Attempt::Failed(WireError::TimedOut));
            };
            match filled {
                Ok(0) if answered => return Err(Attempt::Failed(WireError::Truncated)),
                Ok(0) => return Err(Attempt::Stale(WireError::Closed)),
                Ok(_) => answered = true,
                Err(err) if !answered && err.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Attempt::Stale(err.into()));
                }
                Err(err) => return Err(Attempt::Failed(err.into())),
            }
        }
    }

    /// The next piece of the body framed by `framing`: `None` at its end.
    pub(super) fn poll_body(
        &mut self,
        framing: &mut Framing,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, WireError>>> {
        loop {
            match decode(framing, &mut self.read) {
                Err(err) => return Poll::Ready(Some(Err(err))),
                Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                Ok(Decoded::End) => return Poll::Ready(None),
                Ok(Decoded::More) => {}
            }
            match ready!(self.poll_fill(cx)) {
                Ok(0) if *framing == Framing::UntilClose => {
                    *framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(WireError::Truncated))),
                Ok(_) => {}
                Err(err) => return Poll::Ready(Some(Err(err.into()))),
            }
        }
    }

    /// Read whatever the socket has into the buffer; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        wire::poll_read_some(&self.stream, &mut self.read, READ_CHUNK, cx)
    }
}

/// Write the request line and header fields of `head` into `out`.
///
/// A method that normally carries content gets `Content-Length: 0` when it has no length
/// (as hyper's client does), so the upstream does not wait for a body.
fn encode_request(out: &mut Vec<u8>, head: &Parts) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head
        .uri
        .path_and_query()
        .map_or("/", |target| target.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        wire::push_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if matches!(head.method, Method::POST | Method::PUT | Method::PATCH)
        && !head.headers.contains_key(header::CONTENT_LENGTH)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Parse a response head at the front of `buf`, taking it out of the buffer when complete.
///
/// Header values are slices of the head's bytes, not copies. With `relay`, a head whose
/// fields the proxy has nothing to change in but hop-by-hop ones comes back with an empty
/// header map and its fields as a [`RelayedFields`](crate::wire::RelayedFields) extension.
fn parse_head(buf: &mut BytesMut, method: &Method, relay: bool) -> Result<Option<Head>, WireError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; wire::MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(WireError::Invalid(err.to_string())),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| WireError::Invalid(format!("status code {code}")))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let reason = response
        .reason
        .filter(|reason| Some(*reason) != status.canonical_reason() && !reason.is_empty())
        .and_then(|reason| hyper::ext::ReasonPhrase::try_from(reason.as_bytes().to_vec()).ok());
    let spans = FieldSpans::of(buf, response.headers);
    let facts = FieldFacts::of(&spans, buf, version)?;
    let head = buf.split_to(len).freeze();

    let bodiless = *method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match (bodiless, facts.transfer_coded, facts.chunked, facts.length) {
        (true, ..) => Framing::Done,
        (false, true, true, _) => Framing::Chunked(Chunk::Size),
        (false, true, false, _) => Framing::UntilClose,
        (false, false, _, Some(length)) => Framing::Length(length),
        (false, false, _, None) => Framing::UntilClose,
    };
    // A message framed by both is a smuggling vector: answer it, then drop the connection.
    let keep_alive = !facts.close
        && framing != Framing::UntilClose
        && !(facts.transfer_coded && facts.length.is_some());

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    if relay && facts.relayable {
        // A transfer coding overrides a length, which then goes (RFC 9112, section 6.3).
        let length = facts.length.filter(|_| !facts.transfer_coded);
        let fields = spans.relay(head, facts.dropped, length, facts.dated);
        response.extensions_mut().insert(fields);
    } else {
        // Room for what the proxy adds on the way back (`Via`, the request id) without
        // regrowing.
        *response.headers_mut() = spans
            .header_map(&head, 2)
            .map_err(|err| WireError::Invalid(err.to_string()))?;
    }
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason);
    }
    Ok(Some(Head {
        response,
        framing,
        keep_alive,
    }))
}

// One bit per field in `FieldFacts::dropped`.
const _: () = assert!(wire::MAX_HEADERS <= u128::BITS as usize);

/// What a response head's fields say about its framing and connection, and whether the
/// head can be relayed as it came, read from the bytes before any header map is built.
struct FieldFacts {
    length: Option<u64>,
    transfer_coded: bool,
    /// Whether the transfer coding is chunked (the only one accepted).
    chunked: bool,
    close: bool,
    dated: bool,
    /// False when a field needs the proxy's header rules (`TE`, a name listed in
    /// `Connection`, a `Via` the proxy's joins, an `X-Request-Id` that the proxy replaces).
    relayable: bool,
    /// Fields a relayed head leaves out (bit i = field i): hop-by-hop ones, framing, and
    /// repeats of `Content-Length` (every one, when a transfer coding frames the message).
    dropped: u128,
}

impl FieldFacts {
    fn of(spans: &FieldSpans, buf: &[u8], version: Version) -> Result<Self, WireError> {
        let mut facts = Self {
            length: None,
            transfer_coded: false,
            chunked: false,
            close: version == Version::HTTP_10,
            dated: false,
            relayable: true,
            dropped: 0,
        };
        let mut lengths = 0;
        for (index, (name, value)) in spans.raw(buf).enumerate() {
            let drop = match FieldKind::of(name) {
                FieldKind::ContentLength => {
                    let parsed = std::str::from_utf8(value)
                        .ok()
                        .and_then(|text| text.trim().parse::<u64>().ok())
                        .ok_or_else(|| WireError::Invalid("content-length".into()))?;
                    if facts.length.is_some_and(|seen| seen != parsed) {
                        return Err(WireError::Invalid("conflicting content-length".into()));
                    }
                    lengths |= 1 << index;
                    facts.length.replace(parsed).is_some()
                }
                FieldKind::TransferEncoding => {
                    if let Some(coding) = headers::foreign_coding(value, &mut facts.chunked) {
                        return Err(WireError::Invalid(headers::undecodable(coding)));
                    }
                    facts.transfer_coded = true;
                    true
                }
                FieldKind::Connection => {
                    facts.close |= wire::lists_token(value, b"close");
                    facts.relayable &= value.split(|&b| b == b',').all(|token| {
                        let token = token.trim_ascii();
                        token.eq_ignore_ascii_case(b"close")
                            || token.eq_ignore_ascii_case(b"keep-alive")
                            || token.is_empty()
                    });
                    true
                }
                FieldKind::HopByHop => true,
                FieldKind::NeedsRules => {
                    facts.relayable = false;
                    false
                }
                FieldKind::Date => {
                    facts.dated = true;
                    false
                }
                FieldKind::Other => false,
            };
            if drop {
                facts.dropped |= 1 << index;
            }
        }
        if facts.transfer_coded {
            facts.dropped |= lengths;
        }
        Ok(facts)
    }
}

/// The header names a response head is read for, told apart without building a name.
enum FieldKind {
    ContentLength,
    TransferEncoding,
    Connection,
    Date,
    /// Hop-by-hop, never relayed: `Keep-Alive`, `Proxy-Connection`, `Proxy-Authenticate`,
    /// `Proxy-Authorization`, `Trailer`, `Upgrade`.
    HopByHop,
    /// Handled by the proxy's header rules on a header map: `TE`, `Via`, `X-Request-Id`.
    NeedsRules,
    Other,
}

impl FieldKind {
    fn of(name: &[u8]) -> Self {
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        match name.len() {
            2 if is("te") => Self::NeedsRules,
            3 if is("via") => Self::NeedsRules,
            4 if is("date") => Self::Date,
            7 if is("trailer") || is("upgrade") => Self::HopByHop,
            10 if is("connection") => Self::Connection,
            10 if is("keep-alive") => Self::HopByHop,
            12 if is("x-request-id") => Self::NeedsRules,
            14 if is("content-length") => Self::ContentLength,
            16 if is("proxy-connection") => Self::HopByHop,
            17 if is("transfer-encoding") => Self::TransferEncoding,
            18 if is("proxy-authenticate") => Self::HopByHop,
            19 if is("proxy-authorization") => Self::HopByHop,
            _ => Self::Other,
        }
    }
}

/// One step of body decoding.
#[derive(Debug, PartialEq, Eq)]
enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body has ended.
    End,
    /// More bytes must be read first.
    More,
}

/// Take the next piece of a body framed by `framing` out of `buf`.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Decoded, WireError> {
    loop {
        match framing {
            Framing::Done | Framing::Length(0) => {
                *framing = Framing::Done;
                return Ok(Decoded::End);
            }
            Framing::Length(left) => return Ok(take(buf, left)),
            Framing::UntilClose if buf.is_empty() => return Ok(Decoded::More),
            Framing::UntilClose => return Ok(Decoded::Data(buf.split().freeze())),
            Framing::Chunked(Chunk::Data(0)) => *framing = Framing::Chunked(Chunk::DataEnd),
            Framing::Chunked(Chunk::Data(left)) => return Ok(take(buf, left)),
            Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete((used, size))) => {
                    buf.advance(used);
                    *framing = Framing::Chunked(match size {
                        0 => Chunk::Trailers,
                        size => Chunk::Data(size),
                    });
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_CHUNK_LINE => {
                    return Ok(Decoded::More);
                }
                _ => return Err(WireError::Invalid("chunk size line".into())),
            },
            Framing::Chunked(Chunk::DataEnd) => match buf.get(..2) {
                None if buf.first().is_none_or(|&b| b == b'\r') => return Ok(Decoded::More),
                Some(b"\r\n") => {
                    buf.advance(2);
                    *framing = Framing::Chunked(Chunk::Size);
                }
                _ => return Err(WireError::Invalid("chunk not followed by CRLF".into())),
            },
            Framing::Chunked(Chunk::Trailers) => {
                let mut fields = [httparse::EMPTY_HEADER; 32];
                match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((used, _))) => {
                        buf.advance(used);
                        *framing = Framing::Done;
                    }
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {
                        return Ok(Decoded::More);
                    }
                    _ => return Err(WireError::Invalid("chunked trailer".into())),
                }
            }
        }
    }
}

/// Up to `left` bytes from the front of `buf`.
fn take(buf: &mut BytesMut, left: &mut u64) -> Decoded {
    if buf.is_empty() {
        return Decoded::More;
    }
    let n = usize::try_from(*left).map_or(buf.len(), |left| left.min(buf.len()));
    *left -= n as u64;
    Decoded::Data(buf.split_to(n).freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::RelayedFields;

    /// `bytes` parsed as the answer to `method`, as a relayed head if `relay` allows.
    fn head_of(bytes: &[u8], method: &Method, relay: bool) -> Result<Option<Head>, WireError> {
        parse_head(&mut BytesMut::from(bytes), method, relay)
    }

    /// Decode all of `wire` fed in pieces of `step` bytes; the body and whether it ended.
    fn decode_all(mut framing: Framing, wire: &[u8], step: usize) -> (Vec<u8>, bool, BytesMut) {
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut pieces = wire.chunks(step);
        loop {
            match decode(&mut framing, &mut buf).expect("valid framing") {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::End => return (body, true, buf),
                Decoded::More => match pieces.next() {
                    Some(piece) => buf.extend_from_slice(piece),
                    None => return (body, false, buf),
                },
            }
        }
    }

    #[test]
    fn a_content_length_answer_keeps_the_connection() {
        let head = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
            &Method::GET,
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.response.status(), 200);
        assert_eq!(head.framing, Framing::Length(5));
        assert!(head.keep_alive);
        let values: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn an_incomplete_head_asks_for_more_and_keeps_the_bytes() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(parse_head(&mut buf, &Method::GET, false).unwrap().is_none());
        assert_eq!(buf.len(), 27);
    }

    #[test]
    fn framing_follows_the_rfc() {
        let cases: &[(&[u8], Method, Framing, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                Method::HEAD,
                Framing::Done,
                true,
            ),
            (
                b"HTTP/1.1 204 No Content\r\n\r\n",
                Method::GET,
                Framing::Done,
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
                Method::GET,
                Framing::Done,
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
                Method::GET,
                Framing::Chunked(Chunk::Size),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Method::GET,
                Framing::Chunked(Chunk::Size),
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\n",
                Method::GET,
                Framing::UntilClose,
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
                Method::GET,
                Framing::Length(1),
                false,
            ),
        ];
        for (wire, method, framing, keep_alive) in cases {
            for relay in [false, true] {
                let head = head_of(wire, method, relay).unwrap().unwrap();
                let text = String::from_utf8_lossy(wire);
                assert_eq!(head.framing, *framing, "{text} relay={relay}");
                assert_eq!(head.keep_alive, *keep_alive, "{text} relay={relay}");
            }
        }
    }

    /// The relayed fields of `wire`'s head as the client writer puts them, or `None` when
    /// the head was not relayed.
    fn relayed(wire: &[u8]) -> Option<String> {
        let head = head_of(wire, &Method::GET, true).unwrap().unwrap();
        let fields = head.response.extensions().get::<RelayedFields>()?;
        assert!(
            head.response.headers().is_empty(),
            "a relayed head has no map"
        );
        let mut out = Vec::new();
        fields.write(&mut out);
        Some(String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_relayed_head_keeps_end_to_end_fields_as_sent() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=5\r\n\
            Connection: keep-alive\r\nTransfer-Encoding: chunked\r\nX-A:  1 \r\n\
            Proxy-Connection: x\r\nUpgrade: h2c\r\nTrailer: x-t\r\nDate: today\r\n\r\n";
        assert_eq!(
            relayed(wire).unwrap(),
            "Content-Type: text/plain\r\nX-A: 1\r\nDate: today\r\n"
        );
        let head = head_of(wire, &Method::GET, true).unwrap().unwrap();
        let fields = head.response.extensions().get::<RelayedFields>().unwrap();
        assert!(fields.dated);
        assert_eq!(fields.content_length, None);

        let repeated = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(relayed(repeated).unwrap(), "Content-Length: 2\r\n");

        // A transfer coding overrides the length, which must not reach the client.
        let both = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\n\
            Transfer-Encoding: chunked\r\n\r\n";
        assert_eq!(relayed(both).unwrap(), "X-A: 1\r\n");
        let head = head_of(both, &Method::GET, true).unwrap().unwrap();
        let fields = head.response.extensions().get::<RelayedFields>().unwrap();
        assert_eq!(fields.content_length, None);
        assert_eq!(head.framing, Framing::Chunked(Chunk::Size));
        assert!(
            !head.keep_alive,
            "a head framed both ways ends its connection"
        );
    }

    #[test]
    fn no_hop_by_hop_field_is_ever_relayed() {
        // `FieldKind` tells names apart by their bytes; this keeps it in step with the
        // header rules' own list.
        for name in crate::headers::HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            // (The one transfer coding the proxy decodes; any other is refused.)
            let value = if *name == header::TRANSFER_ENCODING {
                "chunked"
            } else {
                "x"
            };
            let wire = format!(
                "HTTP/1.1 200 OK\r\n{}: {value}\r\nContent-Length: 0\r\n\r\n",
                name.as_str().to_uppercase()
            );
            if let Some(fields) = relayed(wire.as_bytes()) {
                let prefix = format!("{}:", name.as_str());
                assert!(
                    !fields
                        .lines()
                        .any(|line| line.to_ascii_lowercase().starts_with(&prefix)),
                    "{name} relayed: {fields}"
                );
            }
        }
    }

    #[test]
    fn heads_the_proxy_has_rules_for_are_not_relayed() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nX-Request-Id: theirs\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nvia: 1.0 cache\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTE: trailers\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nConnection: close, x-private\r\nX-Private: 1\r\n\r\n",
        ] {
            let text = String::from_utf8_lossy(wire);
            assert_eq!(relayed(wire), None, "{text}");
            let head = head_of(wire, &Method::GET, true).unwrap().unwrap();
            assert!(!head.response.headers().is_empty(), "{text}");
        }
    }

    #[test]
    fn broken_heads_are_errors_with_a_reason() {
        for wire in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            // Codings the proxy cannot decode would reach the client unnamed.
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"SMTP ready\r\n\r\n",
        ] {
            let text = String::from_utf8_lossy(wire);
            for relay in [false, true] {
                let parsed = head_of(wire, &Method::GET, relay);
                assert!(parsed.is_err(), "{text} relay={relay}");
            }
        }
    }

    #[test]
    fn an_uncommon_reason_phrase_is_kept() {
        let head = head_of(
            b"HTTP/1.1 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n",
            &Method::GET,
            false,
        )
        .unwrap()
        .unwrap();
        let reason = head.response.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(reason.map(|r| r.as_bytes()), Some(&b"Fine Thanks"[..]));
    }

    #[test]
    fn a_chunked_body_decodes_whatever_the_read_sizes() {
        let wire = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nx-trailer: t\r\n\r\n";
        for step in 1..wire.len() {
            let (body, ended, rest) = decode_all(Framing::Chunked(Chunk::Size), wire, step);
            assert_eq!(body, b"hello world", "step {step}");
            assert!(ended && rest.is_empty(), "step {step}");
        }
    }

    #[test]
    fn a_length_body_stops_at_its_length() {
        let (body, ended, rest) = decode_all(Framing::Length(5), b"helloEXTRA", 10);
        assert_eq!(body, b"hello");
        assert!(ended);
        assert_eq!(
            &rest[..],
            b"EXTRA",
            "bytes after the body stay for the caller to see"
        );
    }

    #[test]
    fn a_truncated_body_does_not_end() {
        let (body, ended, _) = decode_all(Framing::Length(10), b"hello", 2);
        assert_eq!(body, b"hello");
        assert!(!ended);
        let (_, ended, _) = decode_all(Framing::Chunked(Chunk::Size), b"5\r\nhello\r\n", 4);
        assert!(!ended);
    }

    #[test]
    fn broken_chunks_are_errors() {
        for wire in [&b"zz\r\n"[..], b"3\r\nabcXY", b"ffffffffffffffffffffff\r\n"] {
            let mut framing = Framing::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(wire);
            let mut result = Ok(Decoded::More);
            for _ in 0..8 {
                result = decode(&mut framing, &mut buf);
                if !matches!(result, Ok(Decoded::Data(_))) {
                    break;
                }
            }
            assert!(result.is_err(), "{}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn a_bodiless_post_says_its_length_is_zero() {
        let (mut parts, ()) = http::Request::post("/orders?x=1")
            .header("host", "example")
            .body(())
            .unwrap()
            .into_parts();
        let mut out = Vec::new();
        encode_request(&mut out, &parts);
        assert_eq!(
            out,
            b"POST /orders?x=1 HTTP/1.1\r\nhost: example\r\ncontent-length: 0\r\n\r\n"
        );
        parts.method = Method::GET;
        encode_request(&mut out, &parts);
        assert_eq!(out, b"GET /orders?x=1 HTTP/1.1\r\nhost: example\r\n\r\n");
    }

    proptest::proptest! {
        /// Any body, cut into any chunks and read in any pieces, decodes to itself, and
        /// the decoder stops exactly at the end of the chunked message.
        #[test]
        fn chunked_bodies_decode_to_themselves(
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048),
            cuts in proptest::collection::vec(1usize..300, 1..20),
            step in 1usize..64,
        ) {
            let mut wire = Vec::new();
            let mut rest = &body[..];
            let mut cut = cuts.iter().cycle();
            while !rest.is_empty() {
                let n = (*cut.next().unwrap_or(&1)).min(rest.len());
                wire.extend_from_slice(format!("{n:x}\r\n").as_bytes());
                wire.extend_from_slice(&rest[..n]);
                wire.extend_from_slice(b"\r\n");
                rest = &rest[n..];
            }
            wire.extend_from_slice(b"0\r\n\r\n");
            wire.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
            let (decoded, ended, left) = decode_all(Framing::Chunked(Chunk::Size), &wire, step);
            proptest::prop_assert!(ended);
            proptest::prop_assert_eq!(decoded, body);
            // Whatever was fed past the end stays in the buffer for the next answer.
            proptest::prop_assert!(b"HTTP/1.1 200 OK\r\n".starts_with(&left));
        }
    }
}
