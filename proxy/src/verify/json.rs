//! A small JSON reader for comparison: numbers stay decimal text, so they compare by exact value.
//!
//! serde_json's `Value` turns numbers into `u64`/`i64`/`f64`, which loses integers beyond 64
//! bits, and its `arbitrary_precision` feature would change number handling for every crate in
//! the workspace (features unify) while still comparing `10.5` and `10.50` as different. So
//! the comparison parses bodies itself: numbers are kept as their text and compared as exact
//! decimals; strings borrow from the body unless they hold escapes; objects are sorted by key.

use std::borrow::Cow;
use std::cmp::Ordering;

pub(crate) use number::numbers_equal;

mod number;

/// Nesting deeper than this is not treated as JSON (the body is compared as bytes): it
/// bounds the recursion of parsing, comparing and dropping a document from the network.
pub(crate) const MAX_DEPTH: usize = 128;

/// A parsed JSON value borrowing from the body it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json<'a> {
    Null,
    Bool(bool),
    /// The number's text, exactly as written (already validated against the JSON grammar).
    Number(&'a str),
    String(Cow<'a, str>),
    Array(Vec<Json<'a>>),
    /// Members sorted by key; of duplicate keys the last one wins, as in most parsers.
    Object(Vec<(Cow<'a, str>, Json<'a>)>),
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Json<'a> {
    /// Parse a whole body; `None` when it is not exactly one JSON value (whitespace around
    /// it allowed), not UTF-8, or nested deeper than [`MAX_DEPTH`].
    pub(crate) fn parse(body: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(body).ok()?;
        let mut parser = Parser {
            text,
            bytes: body,
            at: 0,
        };
        parser.skip_whitespace();
        let value = parser.value(0)?;
        parser.skip_whitespace();
        (parser.at == body.len()).then_some(value)
    }
}

/// Write `value` to `out` as compact JSON (keys sorted, numbers as written).
pub(crate) fn write_compact(value: &Json<'_>, out: &mut String) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(true) => out.push_str("true"),
        Json::Bool(false) => out.push_str("false"),
        Json::Number(text) => out.push_str(text),
        Json::String(text) => write_string(text, out),
        Json::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_compact(item, out);
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (index, (key, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_compact(item, out);
            }
            out.push('}');
        }
    }
}

/// Write `text` as a JSON string literal.
pub(crate) fn write_string(text: &str, out: &mut String) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json<'a>> {
        match self.peek()? {
            b'{' => self.object(depth + 1),
            b'[' => self.array(depth + 1),
            b'"' => self.string().map(Json::String),
            b't' => self.literal(b"true", Json::Bool(true)),
            b'f' => self.literal(b"false", Json::Bool(false)),
            b'n' => self.literal(b"null", Json::Null),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn literal(&mut self, word: &[u8], value: Json<'a>) -> Option<Json<'a>> {
        let end = self.at + word.len();
        (self.bytes.get(self.at..end)? == word).then(|| {
            self.at = end;
            value
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        self.at - start
    }

    fn number(&mut self) -> Option<Json<'a>> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => self.at += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        self.text.get(start..self.at).map(Json::Number)
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.at += 1; // the opening quote
        let start = self.at;
        loop {
            match self.peek()? {
                b'"' => {
                    let text = self.text.get(start..self.at)?;
                    self.at += 1;
                    return Some(Cow::Borrowed(text));
                }
                b'\\' => break,
                0x00..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        // Escapes: copy what was scanned, then decode the rest.
        let mut out = String::from(self.text.get(start..self.at)?);
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(Cow::Owned(out));
                }
                b'\\' => {
                    self.at += 1;
                    let escape = self.peek()?;
                    self.at += 1;
                    match escape {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape()?),
                        _ => return None,
                    }
                }
                0x00..=0x1f => return None,
                _ => {
                    // Copy one whole UTF-8 character (the text is valid UTF-8).
                    let rest = self.text.get(self.at..)?;
                    let c = rest.chars().next()?;
                    out.push(c);
                    self.at += c.len_utf8();
                }
            }
        }
    }

    /// After `\u`: four hex digits, or a surrogate pair spelled as two escapes.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        if (0xD800..0xDC00).contains(&first) {
            if self.bytes.get(self.at..self.at + 2)? != b"\\u" {
                return None;
            }
            self.at += 2;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return None;
            }
            char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
        } else {
            char::from_u32(first)
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + 4)?;
        let mut value = 0;
        for &b in digits {
            value = value * 16 + char::from(b).to_digit(16)?;
        }
        self.at += 4;
        Some(value)
    }

    fn array(&mut self, depth: usize) -> Option<Json<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek()? == b']' {
            self.at += 1;
            return Some(Json::Array(items));
        }
        loop {
            self.skip_whitespace();
            items.push(self.value(depth)?);
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b']' => {
                    self.at += 1;
                    return Some(Json::Array(items));
                }
                _ => return None,
            }
        }
    }

    fn object(&mut self, depth: usize) -> Option<Json<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.at += 1;
        let mut members: Vec<(Cow<'a, str>, Json<'a>)> = Vec::new();
        self.skip_whitespace();
        if self.peek()? == b'}' {
            self.at += 1;
            return Some(Json::Object(members));
        }
        loop {
            self.skip_whitespace();
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.peek()? != b':' {
                return None;
            }
            self.at += 1;
            self.skip_whitespace();
            let value = self.value(depth)?;
            members.push((key, value));
            self.skip_whitespace();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => {
                    self.at += 1;
                    break;
                }
                _ => return None,
            }
        }
        // Stable sort, then keep the last of equal keys: `dedup_by` removes the later
        // element, so swap it into the kept slot first.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        members.dedup_by(|later, kept| {
            if later.0.cmp(&kept.0) == Ordering::Equal {
                std::mem::swap(later, kept);
                true
            } else {
                false
            }
        });
        Some(Json::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compact(text: &str) -> Option<String> {
        let value = Json::parse(text.as_bytes())?;
        let mut out = String::new();
        write_compact(&value, &mut out);
        Some(out)
    }

    #[test]
    fn parses_and_sorts_objects() {
        assert_eq!(
            compact(r#" { "b": [1, 2.50, {"y": null, "x": true}], "a": "s" } "#).as_deref(),
            Some(r#"{"a":"s","b":[1,2.50,{"x":true,"y":null}]}"#)
        );
    }

    #[test]
    fn last_duplicate_key_wins() {
        assert_eq!(
            compact(r#"{"a":1,"b":2,"a":3}"#).as_deref(),
            Some(r#"{"a":3,"b":2}"#)
        );
    }

    #[test]
    fn decodes_escapes() {
        let value = Json::parse(br#""a\"b\\c\/\u00e9\ud83d\ude00\n""#).unwrap();
        assert_eq!(value, Json::String(Cow::Owned("a\"b\\c/é😀\n".into())));
        assert_eq!(compact(r#""caf\u00e9""#), compact("\"café\""));
    }

    #[test]
    fn rejects_invalid_documents() {
        for text in [
            "",
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "1e",
            "-",
            "+1",
            "tru",
            "nul",
            "\"\\x\"",
            "\"\\ud800\"",
            "\"a\nb\"",
            "[1] 2",
            "{\"a\":1,}",
            ".5",
            "NaN",
        ] {
            assert!(Json::parse(text.as_bytes()).is_none(), "{text:?}");
        }
        assert!(Json::parse(b"\xff\"").is_none());
    }

    #[test]
    fn bounds_nesting_depth() {
        let deep_ok = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(Json::parse(deep_ok.as_bytes()).is_some());
        let too_deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(Json::parse(too_deep.as_bytes()).is_none());
        let bomb = "[".repeat(1_000_000);
        assert!(Json::parse(bomb.as_bytes()).is_none());
    }

    #[test]
    fn writes_control_characters_escaped() {
        let mut out = String::new();
        write_string("a\u{1}\"\\\t", &mut out);
        assert_eq!(out, r#""a\u0001\"\\\t""#);
    }
}
