//! Request path normalization: the one canonical form that routes match and upstreams see.

use std::borrow::Cow;

use thiserror::Error;

/// Why a request path was rejected (the proxy answers 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NormalizeError {
    /// The path does not start with `/` (e.g. `*` or an absolute URI form).
    #[error("path does not start with '/'")]
    NotAbsolute,
    /// A `%` not followed by two hexadecimal digits.
    #[error("malformed percent-escape at byte {0}")]
    BadEscape(usize),
    /// `%00`: an encoded NUL byte, never legitimate in a path.
    #[error("encoded NUL byte (%00) in path")]
    EncodedNul,
}

/// Normalizes a raw request path (without query).
///
/// Percent-escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, the
/// remaining escapes get uppercase hex (`%2f` → `%2F`; an encoded slash stays encoded),
/// `.` and `..` segments are removed as in RFC 3986 `remove_dot_segments` (`..` above the
/// root stays at the root), repeated slashes are merged and a trailing slash is kept.
/// Returns `Cow::Borrowed` when the path is already normal, which is the common case.
///
/// # Errors
/// A path not starting with `/`, a malformed escape (`%zz`, `%4`), or `%00`.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, NormalizeError> {
    if !raw.starts_with('/') {
        return Err(NormalizeError::NotAbsolute);
    }
    if is_normal(raw)? {
        Ok(Cow::Borrowed(raw))
    } else {
        Ok(Cow::Owned(rebuild(raw)?))
    }
}

/// Validates every escape and reports whether `raw` is already in normal form.
fn is_normal(raw: &str) -> Result<bool, NormalizeError> {
    let bytes = raw.as_bytes();
    let mut normal = true;
    let mut segment_start = 1;
    let mut i = 1;
    while i <= bytes.len() {
        let b = bytes.get(i).copied();
        match b {
            None | Some(b'/') => {
                let segment = &bytes[segment_start..i];
                let last = b.is_none();
                if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
                    normal = false;
                }
                segment_start = i + 1;
                i += 1;
            }
            Some(b'%') => {
                let decoded = decode_escape(bytes, i)?;
                if is_unreserved(decoded) || bytes[i + 1..i + 3].iter().any(u8::is_ascii_lowercase)
                {
                    normal = false;
                }
                i += 3;
            }
            Some(_) => i += 1,
        }
    }
    Ok(normal)
}

/// The slow path: decode, then remove dot segments and empty segments.
fn rebuild(raw: &str) -> Result<String, NormalizeError> {
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            decoded.push_str(&raw[literal_start..i]);
            let value = decode_escape(bytes, i)?;
            if is_unreserved(value) {
                decoded.push(char::from(value));
            } else {
                decoded.push('%');
                decoded.push(char::from(HEX_UPPER[usize::from(value >> 4)]));
                decoded.push(char::from(HEX_UPPER[usize::from(value & 0xf)]));
            }
            i += 3;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    decoded.push_str(&raw[literal_start..]);

    let mut out: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let mut segments = decoded.split('/').skip(1).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                out.pop();
                trailing_slash = last;
            }
            other => {
                out.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(decoded.len());
    for segment in &out {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        result.push('/');
    }
    Ok(result)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Decodes the escape starting at `bytes[at] == b'%'`.
fn decode_escape(bytes: &[u8], at: usize) -> Result<u8, NormalizeError> {
    let hi = bytes.get(at + 1).and_then(|b| hex_value(*b));
    let lo = bytes.get(at + 2).and_then(|b| hex_value(*b));
    match (hi, lo) {
        (Some(0), Some(0)) => Err(NormalizeError::EncodedNul),
        (Some(hi), Some(lo)) => Ok(hi << 4 | lo),
        _ => Err(NormalizeError::BadEscape(at)),
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, Result<&str, NormalizeError>)] = &[
            ("/", Ok("/")),
            ("/a/b", Ok("/a/b")),
            ("/a/b/", Ok("/a/b/")),
            ("/a/./b/../c", Ok("/a/c")),
            ("//a///b", Ok("/a/b")),
            ("//a///b//", Ok("/a/b/")),
            ("/%7Euser", Ok("/~user")),
            ("/%7euser", Ok("/~user")),
            ("/a%2Fb", Ok("/a%2Fb")),
            ("/a%2fb", Ok("/a%2Fb")),
            ("/caf%c3%a9", Ok("/caf%C3%A9")),
            ("/%41%62c", Ok("/Abc")),
            ("/%2e%2e/etc/passwd", Ok("/etc/passwd")),
            ("/a/%2E/b", Ok("/a/b")),
            ("/..", Ok("/")),
            ("/../..", Ok("/")),
            ("/../a", Ok("/a")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/.", Ok("/")),
            ("/a/..b", Ok("/a/..b")),
            ("/a/.b/", Ok("/a/.b/")),
            ("/%20x", Ok("/%20x")),
            ("/%zz", Err(NormalizeError::BadEscape(1))),
            ("/a%4", Err(NormalizeError::BadEscape(2))),
            ("/a%", Err(NormalizeError::BadEscape(2))),
            ("/a%00b", Err(NormalizeError::EncodedNul)),
            ("//%zz", Err(NormalizeError::BadEscape(2))),
            ("a/b", Err(NormalizeError::NotAbsolute)),
            ("", Err(NormalizeError::NotAbsolute)),
            ("*", Err(NormalizeError::NotAbsolute)),
        ];
        for (input, expected) in cases {
            let got = normalize_path(input);
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                *expected,
                "input {input:?}"
            );
        }
    }

    #[test]
    fn borrowed_when_normal() {
        for path in ["/", "/a", "/a/b/", "/a%2Fb", "/x%C3%A9", "/a/..b"] {
            assert!(
                matches!(normalize_path(path), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
        for path in ["//", "/a/./", "/%7E", "/%c3"] {
            assert!(matches!(normalize_path(path), Ok(Cow::Owned(_))), "{path}");
        }
    }

    #[test]
    fn idempotent() {
        let pieces = ["a", ".", "..", "", "%2e", "%7E", "%2f", "b%41", "~"];
        // Every path of up to four pieces: normalizing twice changes nothing more.
        let mut stack = vec![(String::new(), 0)];
        while let Some((prefix, depth)) = stack.pop() {
            let path = format!("/{prefix}");
            let once = normalize_path(&path).unwrap().into_owned();
            let twice = normalize_path(&once).unwrap();
            assert_eq!(once, twice, "from {path:?}");
            assert!(matches!(twice, Cow::Borrowed(_)), "from {path:?}");
            if depth < 4 {
                for piece in pieces {
                    let next = if depth == 0 {
                        piece.to_owned()
                    } else {
                        format!("{prefix}/{piece}")
                    };
                    stack.push((next, depth + 1));
                }
            }
        }
    }
}
