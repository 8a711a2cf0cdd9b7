//! Header rules of a faithful proxy: hop-by-hop removal, forwarding headers, request ids.

use std::cell::RefCell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`: kept when the client sent a usable one, created otherwise.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Forwarded-For`: the client address is appended.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`: the scheme the client used.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one hop and never travel further (RFC 9110 §7.6.1).
pub(crate) const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The `Content-Type` of a body the proxy wrote itself (an error, a route's `respond:`, a
/// hook's `req:respond`, an admin page) and did not type otherwise.
pub const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");

/// Remove hop-by-hop headers, including every header named in `Connection`.
///
/// `TE: trailers` survives on requests (gRPC needs it). `Upgrade` goes too: a tunnel sets
/// its own `Connection`/`Upgrade` pair for the next hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the (few) headers present is far
    // cheaper than a hashed removal per hop-by-hop name.
    let present = headers
        .keys()
        .any(|name| *name == header::UPGRADE || HOP_BY_HOP.contains(name));
    if !present {
        return;
    }
    // Names listed in Connection are hop-by-hop too; collect first, the map is borrowed.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    // The proxy's own fields are set for the next hop whatever the client named: a
    // `Connection: x-request-id` must not take the id the proxy logs away from the upstream.
    for name in named.iter().filter(|name| **name != X_REQUEST_ID) {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a `Host` value is a host and an optional port (RFC 9112, section 3.2; RFC 3986,
/// section 3.2.2): a name of letters, digits, `-`, `_` and single dots, or an IPv6 literal
/// in brackets, then `:` and a port up to 65535. Empty is allowed (a target without an
/// authority). Stricter than the RFC's reg-name, whose sub-delimiters (`,`, `;`, `$`…) no
/// real host has and upstreams that split or build URLs would misread.
pub fn is_host(value: &[u8]) -> bool {
    // One pass, no allocation: this runs on every request.
    if let [b'[', literal @ ..] = value {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let address = &literal[..end];
        return !address.is_empty()
            && address
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            && match &literal[end + 1..] {
                [] => true,
                [b':', port @ ..] => is_port(port),
                _ => false,
            };
    }
    let mut previous = 0;
    for (at, &b) in value.iter().enumerate() {
        if b == b':' {
            return is_port(&value[at + 1..]);
        }
        if !NAME_BYTES[usize::from(b)] || (b == b'.' && previous == b'.') {
            return false;
        }
        previous = b;
    }
    true
}

/// The bytes of a host name: letters, digits, `-`, `_` and `.`.
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] =
            matches!(byte as u8, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.');
        byte += 1;
    }
    table
};

/// A port: one to five digits, at most 65535.
fn is_port(port: &[u8]) -> bool {
    (1..=5).contains(&port.len())
        && port
            .iter()
            .try_fold(0u32, |n, &b| {
                b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
            })
            .is_some_and(|n| n <= 65535)
}

/// Add `X-Forwarded-For`, `-Proto`, `-Host` and `Via` for a request that arrived from `client`.
pub fn add_forwarding(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    proto: &'static str,
    host: Option<&HeaderValue>,
    via: &HeaderValue,
) {
    append_to_list(headers, X_FORWARDED_FOR, client);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
    append_via(headers, via);
}

/// The first transfer coding in the `Transfer-Encoding` field value `value` that the proxy
/// cannot decode: anything but a single `chunked`. `chunked` says whether an earlier field
/// line of the message listed it, and is set when this one does. The proxy decodes
/// `chunked` only; a body under another coding (`gzip`, `deflate`, the obsolete
/// `identity`) would reach the client still coded but without the field that names it
/// (a hop-by-hop one), so such an answer is refused, as nginx does.
pub fn foreign_coding<'a>(value: &'a [u8], chunked: &mut bool) -> Option<&'a [u8]> {
    for coding in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if coding.is_empty() {
            continue;
        }
        if *chunked || !coding.eq_ignore_ascii_case(b"chunked") {
            return Some(coding);
        }
        *chunked = true;
    }
    None
}

/// Why an answer under `coding` (from [`foreign_coding`]) is refused.
pub fn undecodable(coding: &[u8]) -> String {
    format!(
        "transfer coding {:?}: only chunked is supported",
        String::from_utf8_lossy(coding)
    )
}

/// [`foreign_coding`] over every `Transfer-Encoding` line of a head that hyper parsed: why
/// the message is refused, if it is. For a request too: hyper decodes a final `chunked`
/// and hands on the body still under the codings before it, which the upstream would then
/// take for plain content (the field naming them is hop-by-hop).
pub fn foreign_transfer_coding(headers: &HeaderMap) -> Option<String> {
    let mut chunked = false;
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .find_map(|value| foreign_coding(value.as_bytes(), &mut chunked))
        .map(undecodable)
}

/// The `Content-Length` an answer may pass on, before its hop-by-hop fields go.
///
/// None when a `Transfer-Encoding` framed the message: that coding overrides the length,
/// and an intermediary must drop the length before forwarding (RFC 9112, section 6.3);
/// the client would otherwise wait for bytes that never come. One where the answer
/// repeated the same value: HTTP/1.1 lets a recipient take the list as one value (RFC 9110,
/// section 8.6), but an HTTP/2 peer refuses a response that carries the field twice (curl
/// resets the stream). Different values never get here: both upstream clients refuse them.
pub fn settle_content_length(headers: &mut HeaderMap) {
    // Most answers have one length and no coding: one pass over the (few) fields present
    // instead of two hashed look-ups, as in `strip_hop_by_hop`.
    let (mut coded, mut lengths) = (false, 0);
    for (name, _) in headers.iter() {
        coded |= name == header::TRANSFER_ENCODING;
        lengths += usize::from(name == header::CONTENT_LENGTH);
    }
    if coded {
        headers.remove(header::CONTENT_LENGTH);
    } else if lengths > 1
        && let Some(first) = headers.get(header::CONTENT_LENGTH).cloned()
    {
        headers.insert(header::CONTENT_LENGTH, first);
    }
}

/// Append this hop to `Via` (requests and responses alike).
pub fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    append_to_list(headers, header::VIA, via);
}

/// Add `item` to the comma-separated list in header `name`, as one field: the first
/// field's value is extended (`a, item`), or the header is set to `item`.
///
/// One hashed lookup (an entry), not a get and then an insert: this runs on every request.
fn append_to_list(headers: &mut HeaderMap, name: HeaderName, item: &HeaderValue) {
    match headers.entry(name) {
        Entry::Occupied(mut previous) => {
            let previous = previous.get_mut();
            let mut joined = Vec::with_capacity(previous.len() + 2 + item.len());
            joined.extend_from_slice(previous.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(item.as_bytes());
            if let Ok(value) = HeaderValue::from_bytes(&joined) {
                *previous = value;
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(item.clone());
        }
    }
}

/// The request id: the client's `X-Request-Id` when it is short and printable, else a new one.
///
/// The header is (re)written on the request so the upstream sees the same id we log.
pub fn request_id(headers: &mut HeaderMap) -> HeaderValue {
    match headers.entry(X_REQUEST_ID) {
        Entry::Occupied(mut existing) => {
            let bytes = existing.get().as_bytes();
            if !bytes.is_empty() && bytes.len() <= 128 && bytes.iter().all(u8::is_ascii_graphic) {
                return existing.get().clone();
            }
            let id = new_request_id();
            existing.insert(id.clone());
            id
        }
        Entry::Vacant(slot) => slot.insert(new_request_id()).clone(),
    }
}

/// A new process-unique request id: a random per-process prefix and a counter, in hex.
///
/// Ids are made 64 at a time into one buffer that each id's value shares: one allocation
/// per 64 requests instead of two per request (the value, and its shared form once the
/// response header clones it).
pub fn new_request_id() -> HeaderValue {
    const ID_LEN: usize = 32;
    const BATCH: usize = 64;
    static PREFIX: OnceLock<[u8; 16]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static IDS: RefCell<(Bytes, usize)> = const { RefCell::new((Bytes::new(), 0)) };
    }
    IDS.with_borrow_mut(|(ids, next)| {
        if *next * ID_LEN >= ids.len() {
            let prefix = PREFIX.get_or_init(|| hex(crate::random::next_u64()));
            let first = COUNTER.fetch_add(BATCH as u64, Ordering::Relaxed);
            let mut text = Vec::with_capacity(ID_LEN * BATCH);
            for n in first..first + BATCH as u64 {
                text.extend_from_slice(prefix);
                text.extend_from_slice(&hex(n));
            }
            *ids = Bytes::from(text);
            *next = 0;
        }
        let id = ids.slice(*next * ID_LEN..(*next + 1) * ID_LEN);
        *next += 1;
        HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    })
}

/// `n` as 16 lowercase hex digits. Written by hand: `format!` costs several times more.
fn hex(n: u64) -> [u8; 16] {
    let mut digits = [0u8; 16];
    for (i, digit) in digits.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    digits
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (k, v) in pairs {
            headers.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn host_values_are_a_host_and_a_port() {
        for good in [
            "",
            "shop",
            "shop.example",
            "shop.example:8080",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "svc_internal",
            "a-b.c",
        ] {
            assert!(is_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b",
            "user@a",
            "a/b/../c",
            "a:99999",
            "a\"><script>",
            "a,b",
            "[::1",
            "a?x=1",
            "a..b",
            "a:",
            "a:x",
            "[::1]x",
            "::1",
            "caf\u{e9}",
        ] {
            assert!(!is_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn only_a_single_chunked_coding_is_decodable() {
        let foreign = |lines: &[&str]| {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_str(line).unwrap(),
                );
            }
            foreign_transfer_coding(&headers)
        };
        assert_eq!(foreign(&[]), None);
        assert_eq!(foreign(&["chunked"]), None);
        assert_eq!(foreign(&[" Chunked "]), None);
        let refused = |coding: &str| Some(undecodable(coding.as_bytes()));
        assert_eq!(foreign(&["gzip, chunked"]), refused("gzip"));
        assert_eq!(foreign(&["chunked, gzip"]), refused("gzip"));
        assert_eq!(foreign(&["identity"]), refused("identity"));
        assert_eq!(foreign(&["chunked", "chunked"]), refused("chunked"));
        assert_eq!(
            foreign(&["", "chunked"]),
            None,
            "an empty line lists nothing"
        );
    }

    #[test]
    fn a_repeated_content_length_is_kept_once_and_a_transfer_coded_one_goes() {
        let mut headers = HeaderMap::new();
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        headers.append(header::CONTENT_LENGTH, HeaderValue::from_static("2"));
        headers.append(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        settle_content_length(&mut headers);
        let lengths: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
        assert_eq!(lengths, ["2"]);
        assert_eq!(headers.len(), 2);

        let mut once = HeaderMap::new();
        once.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        settle_content_length(&mut once);
        assert_eq!(once[header::CONTENT_LENGTH], "5");

        let mut coded = HeaderMap::new();
        coded.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        coded.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        settle_content_length(&mut coded);
        assert!(!coded.contains_key(header::CONTENT_LENGTH));
        assert_eq!(coded[header::TRANSFER_ENCODING], "chunked");
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get("keep-alive").is_none());
        assert!(headers.get("connection").is_none());
        assert!(headers.get("transfer-encoding").is_none());
        assert!(headers.get("upgrade").is_none());
        assert_eq!(headers["te"], "trailers");
        assert_eq!(headers["x-kept"], "yes");
    }

    #[test]
    fn forwarding_headers_append_to_what_came_in() {
        let mut headers = map(&[("x-forwarded-for", "10.0.0.1"), ("via", "1.1 edge")]);
        let host = HeaderValue::from_static("shop.example");
        add_forwarding(
            &mut headers,
            &HeaderValue::from_static("127.0.0.1"),
            "http",
            Some(&host),
            &HeaderValue::from_static("1.1 strangler"),
        );
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["x-forwarded-host"], "shop.example");
        assert_eq!(headers["via"], "1.1 edge, 1.1 strangler");
    }

    #[test]
    fn request_ids_are_kept_or_created_unique() {
        let mut with = map(&[("x-request-id", "abc-123")]);
        assert_eq!(request_id(&mut with), "abc-123");
        let mut a = HeaderMap::new();
        let mut b = HeaderMap::new();
        let (ida, idb) = (request_id(&mut a), request_id(&mut b));
        assert_ne!(ida, idb);
        assert_eq!(a[X_REQUEST_ID], ida);
        // Across batches too, and every id is 32 hex digits.
        let ids: std::collections::HashSet<_> = (0..300)
            .map(|_| request_id(&mut HeaderMap::new()))
            .inspect(|id| {
                assert!(id.len() == 32 && id.as_bytes().iter().all(u8::is_ascii_hexdigit))
            })
            .collect();
        assert_eq!(ids.len(), 300);
    }
}
