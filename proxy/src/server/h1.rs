//! HTTP/1.1 on plain connections: a keep-alive loop in the connection's own task for the
//! ordinary request, hyper's connection for everything else.
//!
//! hyper's server connection is general: it reads bodies while the service runs, tracks
//! upgrades, keeps a state machine per direction. A reverse proxy's traffic is mostly the
//! plainest request there is, a bodiless GET, and for that the general machine cost more
//! instructions than all of nginx's work per request. This loop serves only requests that
//! are plainly ordinary: HTTP/1.1, an origin-form target, no body (`Content-Length`
//! absent or 0, no `Transfer-Encoding`), no `Upgrade`, no `Expect`. At the first request
//! that is anything else (a body, an upgrade, HTTP/1.0, the HTTP/2 preface, a head that
//! does not parse or is too long) the bytes read so far are put back in front of the socket
//! and hyper gets the connection for the rest of its life, so bodies, upgrades, h2c and the
//! 400 and 431 answers behave exactly as before.
//!
//! Responses are framed from the body: its `Content-Length` when it has one, its exact size
//! when known, else chunked; the head and whatever body is ready are written together.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::{self, Write as _};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::FutureExt;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Handler;
use crate::body::{self, BoxBody};
use crate::error::ProxyError;
use crate::pipeline::ConnInfo;
use crate::wire::{self, FieldSpans, RelayedFields, has_token};

/// Header fields the proxy may add to a request on its way (request id, `X-Forwarded-*`,
/// `Via`, `Host`).
const ADDED_HEADERS: usize = 6;
/// Spare room made in the read buffer before each read.
const READ_CHUNK: usize = 8 * 1024;
/// Response bytes gathered before they are written even though more are ready.
const WRITE_BATCH: usize = 64 * 1024;

/// How a connection left the keep-alive loop.
pub(super) enum Exit {
    /// It is over: the client left, the head timed out, shutdown, or a response ended it.
    Closed,
    /// hyper takes it from here: the socket, with the bytes already read put back.
    HandOver(Rewound),
}

/// Limits of the loop.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// How long a client may take to send a request's head (idle keep-alive time included).
    pub(super) header_timeout: Duration,
    /// Head bytes read without a complete head before hyper takes over (and answers 431).
    pub(super) max_head_bytes: usize,
}

/// Serve requests on `stream` until the connection ends or needs hyper.
pub(super) async fn serve<H: Handler>(
    stream: TcpStream,
    handler: &H,
    conn: &ConnInfo,
    limits: Limits,
    shutdown: &watch::Receiver<bool>,
) -> Exit {
    let mut connection = Connection {
        stream,
        read: BytesMut::with_capacity(READ_CHUNK),
        write: Vec::with_capacity(READ_CHUNK),
    };
    // One timer per connection, pushed back for each head: cheaper than a timer per request.
    let deadline = tokio::time::sleep(limits.header_timeout);
    tokio::pin!(deadline);
    // One shutdown waiter per connection too, registered once and polled while idle; the
    // check after each answer reads the flag through `shutdown` without registering.
    let mut watcher = shutdown.clone();
    let stop = stopping(&mut watcher);
    tokio::pin!(stop);
    loop {
        deadline
            .as_mut()
            .reset(Instant::now() + limits.header_timeout);
        let ordinary = loop {
            match parse_request(&mut connection.read, limits.max_head_bytes) {
                Parsed::Ordinary(ordinary) => break ordinary,
                Parsed::HandOver(head) => return Exit::HandOver(connection.rewound(head)),
                Parsed::Refused(err) => {
                    let response = handler.refuse(err, conn);
                    if connection
                        .write_response(response, false, false)
                        .await
                        .is_ok()
                    {
                        let deadline = Instant::now() + limits.header_timeout;
                        linger(&mut connection.stream, deadline).await;
                    }
                    return Exit::Closed;
                }
                Parsed::Partial => {}
            }
            let idle = connection.read.is_empty();
            tokio::select! {
                biased;
                read = connection.fill() => match read {
                    Ok(0) | Err(_) => return Exit::Closed,
                    Ok(_) => {}
                },
                () = &mut deadline => return Exit::Closed,
                () = &mut stop, if idle => return Exit::Closed,
            }
        };
        // A client that leaves while its request is being answered aborts it: the answer,
        // and with it the upstream exchange, is dropped (as hyper does on the connections
        // it serves, and nginx unless told to ignore client aborts), so a slow upstream
        // is not kept busy for clients that gave up, and retried, long ago.
        let response = tokio::select! {
            biased;
            response = handler.call(ordinary.request, conn) => response,
            () = connection.client_left(limits.max_head_bytes) => return Exit::Closed,
        };
        let reusable = connection
            .write_response(response, ordinary.head_only, ordinary.keep_alive)
            .await;
        match reusable {
            Ok(true) if !*shutdown.borrow() => {}
            Ok(_) => {
                // FIN after the last answer, rather than a reset that could destroy it.
                let _ = connection.stream.shutdown().await;
                return Exit::Closed;
            }
            Err(_) => return Exit::Closed,
        }
    }
}

/// End a connection after its last answer: FIN, then read what the client still sends
/// until it closes too, or `deadline`. Closing with its bytes unread would reset the
/// connection, and the reset could destroy the answer before the client reads it.
pub(super) async fn linger(stream: &mut TcpStream, deadline: Instant) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout_at(deadline, async {
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Resolves once shutdown begins; never when nobody can begin it any more.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    if shutdown.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A request this loop serves itself.
struct Ordinary {
    request: Request<BoxBody>,
    /// A HEAD request: the answer has no body whatever its headers say.
    head_only: bool,
    /// The client did not ask to close the connection after this answer.
    keep_alive: bool,
}

/// What the bytes at the front of the read buffer hold.
enum Parsed {
    /// An ordinary request, taken out of the buffer.
    Ordinary(Ordinary),
    /// Not a complete head yet.
    Partial,
    /// Something for hyper: the bytes already taken out of the buffer (the head, when the
    /// problem showed only after that; else nothing), to go back in front of the rest.
    HandOver(Bytes),
    /// A head that is not HTTP: answered here with the status and reason (hyper's own
    /// answer would carry neither a reason nor a request id, and be neither logged nor
    /// counted), then the connection closes.
    Refused(ProxyError),
}

/// Whether `bytes` are (the start of) the HTTP/2 connection preface.
fn opens_http2(bytes: &[u8]) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let seen = bytes.len().min(PREFACE.len());
    seen > 0 && bytes[..seen] == PREFACE[..seen]
}

/// Parse the request head at the front of `buf`.
fn parse_request(buf: &mut BytesMut, max_head_bytes: usize) -> Parsed {
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; wire::MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match request.parse_with_uninit_headers(buf, &mut slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head_bytes => return Parsed::Partial,
        // The HTTP/2 preface, and a head too long (431 from hyper, which reads it whole).
        Ok(httparse::Status::Partial) => return Parsed::HandOver(Bytes::new()),
        Err(_) if opens_http2(buf) => return Parsed::HandOver(Bytes::new()),
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Refused(ProxyError::TooManyHeaders(format!(
                "more than {} header fields",
                wire::MAX_HEADERS
            )));
        }
        Err(err) => return Parsed::Refused(ProxyError::BadRequest(err.to_string())),
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::HandOver(Bytes::new());
    };
    if !target.starts_with('/') {
        return Parsed::HandOver(Bytes::new());
    }
    let mut keep_alive = true;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let value = field.value.trim_ascii();
        let ordinary = if name.eq_ignore_ascii_case(b"content-length") {
            value == b"0"
        } else if name.eq_ignore_ascii_case(b"connection") {
            keep_alive &= !wire::lists_token(value, b"close");
            true
        } else {
            !(name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"upgrade")
                || name.eq_ignore_ascii_case(b"expect"))
        };
        if !ordinary {
            return Parsed::HandOver(Bytes::new());
        }
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::HandOver(Bytes::new());
    };
    let base = buf.as_ptr() as usize;
    let target_at = target.as_ptr() as usize - base;
    let target_span = target_at..target_at + target.len();
    let spans = FieldSpans::of(buf, request.headers);
    let head = buf.split_to(len).freeze();

    let Ok(uri) = Uri::from_maybe_shared(head.slice(target_span)) else {
        return Parsed::Refused(ProxyError::BadRequest(
            "invalid request target (characters such as a space, `\"`, `<` or `>` must be \
             percent-encoded)"
                .to_string(),
        ));
    };
    // Room for what the proxy adds (request id, forwarding headers, Via) without regrowing.
    let Ok(headers) = spans.header_map(&head, ADDED_HEADERS) else {
        return Parsed::HandOver(head);
    };
    let head_only = method == Method::HEAD;
    let mut request = Request::new(body::empty());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Parsed::Ordinary(Ordinary {
        request,
        head_only,
        keep_alive,
    })
}

/// One client connection in the loop.
struct Connection {
    stream: TcpStream,
    read: BytesMut,
    write: Vec<u8>,
}

impl Connection {
    /// Read whatever the socket has; `Ok(0)` when the client has closed.
    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| wire::poll_read_some(&self.stream, &mut self.read, READ_CHUNK, cx)).await
    }

    /// Resolves when the client closes the connection (or it breaks). What the client
    /// sends meanwhile (the next request of a pipeline) is read into the buffer for later,
    /// up to `max_head_bytes`; then reading waits for the answer to go out.
    async fn client_left(&mut self, max_head_bytes: usize) {
        poll_fn(|cx| {
            while self.read.len() < max_head_bytes {
                match wire::poll_read_some(&self.stream, &mut self.read, READ_CHUNK, cx) {
                    Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(_)) => {}
                    Poll::Pending => return Poll::Pending,
                }
            }
            Poll::Pending
        })
        .await;
    }

    /// The socket for hyper, with `head` and then the unread buffer in front of it.
    fn rewound(self, head: Bytes) -> Rewound {
        let prefix = if head.is_empty() {
            self.read.freeze()
        } else {
            let mut all = BytesMut::with_capacity(head.len() + self.read.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&self.read);
            all.freeze()
        };
        Rewound {
            prefix,
            stream: self.stream,
        }
    }

    /// Write `response`; whether the connection can carry another request afterwards.
    async fn write_response(
        &mut self,
        response: Response<BoxBody>,
        head_only: bool,
        keep_alive: bool,
    ) -> io::Result<bool> {
        let (parts, body) = response.into_parts();
        self.write.clear();
        let head = encode_head(&mut self.write, &parts, &body, head_only, keep_alive);
        let left = match head.framing {
            Framing::None => {
                drop(body);
                self.stream.write_all(&self.write).await?;
                return Ok(head.keep_alive);
            }
            Framing::Length(length) => Some(length),
            Framing::Chunked => None,
        };
        Ok(self.write_body(body, left).await? && head.keep_alive)
    }

    /// Write `body` after the head already in the write buffer, framed by its length or,
    /// without one, chunked; whether the body ended as its framing said.
    async fn write_body(&mut self, mut body: BoxBody, mut left: Option<u64>) -> io::Result<bool> {
        loop {
            // Whatever the body has ready joins the head in one write.
            let frame = match body.frame().now_or_never() {
                Some(frame) => frame,
                None => {
                    self.stream.write_all(&self.write).await?;
                    self.write.clear();
                    body.frame().await
                }
            };
            let data = match frame {
                None => break,
                Some(Err(err)) => {
                    tracing::debug!(error = %err, "response body failed; closing the connection");
                    self.stream.write_all(&self.write).await?;
                    return Ok(false);
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    // Trailers are not forwarded on HTTP/1.1.
                    Err(_) => continue,
                },
            };
            let out = &mut self.write;
            match &mut left {
                Some(left) => {
                    let take = usize::try_from(*left).map_or(data.len(), |l| l.min(data.len()));
                    out.extend_from_slice(&data[..take]);
                    *left -= take as u64;
                    if take < data.len() {
                        tracing::debug!("response body longer than its content-length");
                        self.stream.write_all(&self.write).await?;
                        return Ok(false);
                    }
                }
                None if data.is_empty() => {}
                None => {
                    let _ = write!(out, "{:x}\r\n", data.len());
                    out.extend_from_slice(&data);
                    out.extend_from_slice(b"\r\n");
                }
            }
            if self.write.len() >= WRITE_BATCH {
                self.stream.write_all(&self.write).await?;
                self.write.clear();
            }
        }
        if left.is_none() {
            self.write.extend_from_slice(b"0\r\n\r\n");
        }
        self.stream.write_all(&self.write).await?;
        // A body shorter than its length leaves the client waiting: end the connection.
        Ok(left.is_none_or(|left| left == 0))
    }
}

/// How the body after a response head is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body follows (HEAD, 1xx, 204, 304).
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// What [`encode_head`] decided about the message.
struct EncodedHead {
    framing: Framing,
    /// Whether the connection may carry another request afterwards.
    keep_alive: bool,
}

/// Write the status line and header fields of a response into `out`.
///
/// `Transfer-Encoding` and `Connection` are the proxy's to decide: the body is framed by
/// its `Content-Length` when it has a usable one, its exact size when known, else chunked;
/// `Connection: close` is sent when the connection ends after this answer. A `Date` is
/// added when the response has none.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    body: &BoxBody,
    head_only: bool,
    mut keep_alive: bool,
) -> EncodedHead {
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    let reason = parts.extensions.get::<hyper::ext::ReasonPhrase>();
    out.extend_from_slice(reason.map_or_else(
        || status.canonical_reason().unwrap_or("").as_bytes(),
        |reason| reason.as_bytes(),
    ));
    out.extend_from_slice(b"\r\n");

    // An answer relayed as it came: its fields first, then what the proxy added; what hooks
    // added to it follows the rules of the header map's fields.
    let relayed = parts.extensions.get::<RelayedFields>();
    let mut declared = relayed.and_then(|fields| fields.content_length);
    let mut dated = relayed.is_some_and(|fields| fields.dated);
    if let Some(fields) = relayed {
        fields.write(out);
    }
    let mut field = |name: &HeaderName, value: &HeaderValue| {
        if name == header::CONTENT_LENGTH {
            match value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
            {
                // The first usable value frames the body; repeats of it are dropped.
                Some(length) if declared.is_none() => declared = Some(length),
                _ => return,
            }
        } else if name == header::TRANSFER_ENCODING {
            return;
        } else if name == header::CONNECTION {
            keep_alive &= !has_token(value, b"close");
            return;
        } else if name == header::DATE {
            dated = true;
        }
        wire::push_field(out, name.as_str().as_bytes(), value.as_bytes());
    };
    for (name, value) in &parts.headers {
        field(name, value);
    }
    if let Some(relayed) = relayed {
        for (name, value) in relayed.fields.added() {
            field(name, value);
        }
    }
    if !dated {
        out.extend_from_slice(b"date: ");
        push_date(out);
        out.extend_from_slice(b"\r\n");
    }

    let bodiless = head_only
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = if bodiless {
        Framing::None
    } else {
        let length = declared.or_else(|| {
            if body.is_end_stream() {
                Some(0)
            } else {
                body.size_hint().exact()
            }
        });
        match length {
            Some(length) => {
                if declared.is_none() {
                    let _ = write!(out, "content-length: {length}\r\n");
                }
                Framing::Length(length)
            }
            None => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
        }
    };
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    EncodedHead {
        framing,
        keep_alive,
    }
}

/// The current time as an HTTP date, formatted at most once a second per thread.
fn push_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(cached, text)| {
        if *cached != second || text.is_empty() {
            *cached = second;
            *text = httpdate::fmt_http_date(now);
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A socket with bytes already read from it put back in front, for hyper to read again.
pub(super) struct Rewound {
    prefix: Bytes,
    stream: TcpStream,
}

impl Rewound {
    /// Whether the client began with the HTTP/2 preface (prior knowledge, h2c).
    pub(super) fn is_http2(&self) -> bool {
        opens_http2(&self.prefix)
    }
}

impl AsyncRead for Rewound {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.prefix.is_empty() {
            return Pin::new(&mut this.stream).poll_read(cx, buf);
        }
        let n = this.prefix.len().min(buf.remaining());
        buf.put_slice(&this.prefix[..n]);
        this.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewound {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(wire: &[u8]) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(wire);
        (parse_request(&mut buf, 64 * 1024), buf)
    }

    #[test]
    fn an_ordinary_get_is_served_here_and_leaves_the_next_request_in_the_buffer() {
        let (parsed, rest) =
            parse(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next");
        let Parsed::Ordinary(ordinary) = parsed else {
            panic!("not served here");
        };
        let request = ordinary.request;
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=1");
        assert_eq!(request.headers()["host"], "x");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
        assert!(ordinary.keep_alive && !ordinary.head_only);
        assert_eq!(&rest[..], b"GET /next");
    }

    #[test]
    fn connection_close_and_head_are_noticed() {
        let (parsed, _) =
            parse(b"HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n");
        let Parsed::Ordinary(ordinary) = parsed else {
            panic!("not served here");
        };
        assert!(ordinary.head_only && !ordinary.keep_alive);
    }

    #[test]
    fn anything_unusual_goes_to_hyper_with_the_buffer_untouched() {
        for wire in [
            &b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n",
            b"GET http://example/ HTTP/1.1\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let (parsed, rest) = parse(wire);
            let text = String::from_utf8_lossy(wire);
            assert!(
                matches!(&parsed, Parsed::HandOver(taken) if taken.is_empty()),
                "{text}"
            );
            assert_eq!(&rest[..], wire, "{text}");
        }
    }

    #[test]
    fn a_head_that_is_not_http_is_refused_here_with_its_reason() {
        for (wire, status, reason) in [
            (
                &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..],
                400,
                "invalid header name",
            ),
            (b"GET / HTTP/1.2\r\n\r\n", 400, "invalid HTTP version"),
            (
                b"GET /?q=\"x\" HTTP/1.1\r\nHost: a\r\n\r\n",
                400,
                "invalid request target",
            ),
        ] {
            let text = String::from_utf8_lossy(wire);
            let Parsed::Refused(refused) = parse(wire).0 else {
                panic!("not refused: {text}");
            };
            assert_eq!(refused.status().as_u16(), status, "{text}");
            assert!(refused.to_string().contains(reason), "{text}: {refused}");
        }
    }

    #[test]
    fn a_partial_head_waits_and_an_endless_one_goes_to_hyper() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nHost:").0,
            Parsed::Partial
        ));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(70 * 1024, b'a');
        assert!(matches!(parse(&long).0, Parsed::HandOver(taken) if taken.is_empty()));
    }

    fn head_of(response: Response<BoxBody>, head_only: bool) -> (String, EncodedHead) {
        let (parts, body) = response.into_parts();
        let mut out = Vec::new();
        let head = encode_head(&mut out, &parts, &body, head_only, true);
        (String::from_utf8(out).unwrap(), head)
    }

    #[test]
    fn a_head_is_framed_from_its_body_and_dated() {
        let (text, head) = head_of(Response::new(body::full("hello")), false);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(
            text.contains("content-length: 5\r\n") && text.contains("date: "),
            "{text}"
        );
        assert_eq!(head.framing, Framing::Length(5));

        let stream = http_body_util::StreamBody::new(futures_util::stream::empty::<
            Result<hyper::body::Frame<Bytes>, crate::body::BoxError>,
        >());
        let (text, head) = head_of(Response::new(body::boxed(stream)), false);
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert_eq!(head.framing, Framing::Chunked);
    }

    #[test]
    fn the_proxy_decides_framing_and_connection_headers() {
        let mut response = Response::new(body::full("hello"));
        let headers = response.headers_mut();
        headers.insert("transfer-encoding", "chunked".parse().unwrap());
        headers.insert("connection", "close".parse().unwrap());
        headers.append("content-length", "5".parse().unwrap());
        headers.append("content-length", "5".parse().unwrap());
        let (text, head) = head_of(response, false);
        assert_eq!(text.matches("content-length").count(), 1, "{text}");
        assert!(!text.contains("transfer-encoding"), "{text}");
        assert!(
            text.contains("connection: close\r\n") && !head.keep_alive,
            "{text}"
        );

        let mut not_modified = Response::new(body::empty());
        *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
        let (text, head) = head_of(not_modified, false);
        assert!(
            !text.contains("content-length") && head.framing == Framing::None,
            "{text}"
        );
        let (text, head) = head_of(Response::new(body::full("hello")), true);
        assert!(
            head.framing == Framing::None,
            "HEAD: no body follows; {text}"
        );
    }
}
