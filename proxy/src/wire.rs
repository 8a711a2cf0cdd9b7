//! What the two hand-written HTTP/1.1 paths (the inline upstream exchange and the server's
//! keep-alive loop) share: reading a socket, and header fields as slices of the bytes they
//! came in.
//!
//! Both parse a head with httparse, then take the head out of the read buffer as one
//! shared `Bytes`; every header value becomes a slice of it instead of a copy.

use std::io;
use std::ops::Range;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use strangler_plugins::UpstreamFields;
use tokio::io::Interest;
use tokio::net::TcpStream;

/// Most header fields in a head either path parses (hyper's limit too); a head with more
/// goes to hyper (requests) or is refused (upstream answers).
pub(crate) const MAX_HEADERS: usize = 100;

/// Where each header field of a parsed head sits, as offsets into the head's bytes, so the
/// fields outlive the parser's borrow of the read buffer.
pub(crate) struct FieldSpans(Vec<(Range<usize>, Range<usize>)>);

/// An upstream answer's header fields as the upstream sent them, for the plain HTTP/1.1
/// loop to copy to its client: an answer that is only relayed needs no header map built from
/// its head and encoded again.
///
/// Travels as an extension of a response whose header map is empty, and only to a writer
/// that knows it (see `ConnInfo::relays_heads`). Hop-by-hop fields and `Transfer-Encoding`
/// are left out; a `Content-Length` is kept once, its value in `content_length`. What the
/// proxy adds to every answer (`Via`, `X-Request-Id`) and what `on_response` hooks set or add
/// are kept here rather than in a header map, which would cost more to build than the rest
/// of the head.
#[derive(Debug, Clone)]
pub(crate) struct RelayedFields {
    /// The fields as they came, the proxy's `Via`, and what hooks did to them.
    pub(crate) fields: UpstreamFields,
    /// The answer's `Content-Length`, when it has one.
    pub(crate) content_length: Option<u64>,
    /// Whether the answer has a `Date`.
    pub(crate) dated: bool,
    /// The exchange's `X-Request-Id`.
    pub(crate) request_id: Option<HeaderValue>,
}

impl RelayedFields {
    /// Append the fields that are not hidden (the proxy's `Via` among them), then the
    /// request id, to `out` as `name: value` lines.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        for (name, value) in self.fields.lines() {
            push_field(out, name, value);
        }
        if let Some(id) = &self.request_id {
            push_field(out, b"x-request-id", id.as_bytes());
        }
    }

    /// Take back `fields` after hooks read them: what they hid no longer frames or dates the
    /// answer.
    pub(crate) fn restore(&mut self, fields: UpstreamFields) {
        if fields.is_hidden(b"content-length") {
            self.content_length = None;
        }
        if fields.is_hidden(b"date") {
            self.dated = false;
        }
        self.fields = fields;
    }
}

/// Append one header field line, `name: value` and CRLF, to `out`.
pub(crate) fn push_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A header field that `http` does not accept.
#[derive(Debug, thiserror::Error)]
#[error("invalid header field {0:?}")]
pub(crate) struct InvalidField(String);

impl FieldSpans {
    /// The spans of `fields`, which httparse parsed out of `buf`.
    pub(crate) fn of(buf: &[u8], fields: &[httparse::Header<'_>]) -> Self {
        let base = buf.as_ptr() as usize;
        let at = |part: &[u8]| {
            let start = part.as_ptr() as usize - base;
            start..start + part.len()
        };
        Self(
            fields
                .iter()
                .map(|field| (at(field.name.as_bytes()), at(field.value)))
                .collect(),
        )
    }

    /// The fields as they are in `head`, the bytes the spans were taken from: name, value.
    pub(crate) fn raw<'a>(&'a self, head: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.0
            .iter()
            .map(move |(name, value)| (&head[name.clone()], &head[value.clone()]))
    }

    /// The fields whose bit in `dropped` is clear, kept as the bytes of `head` for
    /// [`RelayedFields::write`].
    pub(crate) fn relay(
        mut self,
        head: Bytes,
        dropped: u128,
        content_length: Option<u64>,
        dated: bool,
    ) -> RelayedFields {
        if dropped != 0 {
            let mut index = 0;
            self.0.retain(|_| {
                let keep = dropped & (1 << index) == 0;
                index += 1;
                keep
            });
        }
        RelayedFields {
            fields: UpstreamFields {
                head,
                fields: self.0,
                edits: Vec::new(),
                via: None,
            },
            content_length,
            dated,
            request_id: None,
        }
    }

    /// The fields as a header map with room for `spare` more; the values share `head`, the
    /// bytes the spans were taken from.
    ///
    /// # Errors
    /// The first field that `http` does not accept.
    pub(crate) fn header_map(&self, head: &Bytes, spare: usize) -> Result<HeaderMap, InvalidField> {
        let mut headers = HeaderMap::with_capacity(self.0.len() + spare);
        for (name, value) in &self.0 {
            let invalid = || InvalidField(String::from_utf8_lossy(&head[name.clone()]).into());
            let name = HeaderName::from_bytes(&head[name.clone()]).map_err(|_| invalid())?;
            let value =
                HeaderValue::from_maybe_shared(head.slice(value.clone())).map_err(|_| invalid())?;
            headers.append(name, value);
        }
        Ok(headers)
    }
}

/// Whether the comma-separated `value` lists `token` (ASCII case-insensitive).
pub(crate) fn has_token(value: &HeaderValue, token: &[u8]) -> bool {
    lists_token(value.as_bytes(), token)
}

/// Whether the comma-separated field value `value` lists `token` (ASCII case-insensitive).
pub(crate) fn lists_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

/// Read what `stream` has into `buf` after making `room` bytes of space; `Ok(0)` at the end
/// of the stream.
///
/// A read that did not fill the space took everything the socket had (the kernel copies
/// until its queue is empty), so tokio is told the socket is drained, as nginx does with its
/// `ready` flag: the next wait then goes straight to epoll instead of first spending a
/// system call on a read that can only say "would block". Data that arrives later raises a
/// new edge, so nothing is missed.
pub(crate) fn poll_read_some(
    stream: &TcpStream,
    buf: &mut BytesMut,
    room: usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(stream.poll_read_ready(cx))?;
        buf.reserve(room);
        let space = buf.capacity() - buf.len();
        match stream.try_read_buf(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Ok(n) if n > 0 && n < space => {
                let _ = stream.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                });
                return Poll::Ready(Ok(n));
            }
            result => return Poll::Ready(result),
        }
    }
}
