//! Body predicates (`match.form`, `match.json`): evaluated on a buffered request body.
//!
//! JSON values are looked up lazily: the document is validated once per route, then
//! each pointer re-reads only the containers on its way ([`RawValue`]), and numbers are
//! compared as exact decimals, so `10 == 10.0 == 1e1` and integers beyond 64 bits keep
//! every digit.

use std::collections::HashMap;
use std::fmt;

use http::HeaderMap;
use serde_json::value::RawValue;

/// A compiled `json` entry: a JSON pointer and the value found there must equal.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JsonPredicate {
    /// The pointer as written (`/order/total`).
    pub pointer: String,
    /// The pointer's reference tokens, unescaped (`~1` → `/`, `~0` → `~`).
    pub tokens: Vec<String>,
    /// The value the pointer must lead to.
    pub expected: Expected,
}

/// A value from the route file, typed as YAML typed it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expected {
    /// `~` or `null`: the JSON value is `null`.
    Null,
    /// `true`/`false`: the JSON value is that boolean.
    Bool(bool),
    /// A YAML number: the JSON value is a number equal in value.
    Number(Decimal),
    /// A YAML string (quoted or not): the JSON value is a string with exactly this text.
    Str(String),
}

/// An exact decimal `digits × 10^scale`, normalized (no leading or trailing zeros in
/// `digits`; zero is `digits == ""`, never negative), so equal values are equal structs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Decimal {
    negative: bool,
    digits: String,
    scale: i64,
}

/// Why a body failed the JSON predicates of a route.
#[derive(Clone, Copy, Debug)]
pub(crate) enum JsonFailure<'m> {
    /// The body is not one valid JSON document.
    Unparsable,
    /// This predicate does not hold.
    Predicate(&'m JsonPredicate),
}

const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// Whether the request says its body is a URL-encoded form (`Content-Type`, parameters
/// and case ignored). A form predicate needs this, since any bytes parse as a form.
pub(crate) fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let media = value.split(';').next().unwrap_or("").trim();
            media.eq_ignore_ascii_case(FORM_TYPE)
        })
}

/// The first `(field, value)` that `body` (a URL-encoded form) does not have; a field
/// holds when any of its occurrences, percent- and `+`-decoded, equals the value.
pub(crate) fn form_failure<'m>(
    body: &[u8],
    fields: &'m [(String, String)],
) -> Option<&'m (String, String)> {
    fields.iter().find(|(field, value)| {
        !form_urlencoded::parse(body).any(|(k, v)| k == field.as_str() && v == value.as_str())
    })
}

/// The decoded values of `field` in a URL-encoded `body` (for explanations).
pub(crate) fn form_values(body: &[u8], field: &str) -> Vec<String> {
    form_urlencoded::parse(body)
        .filter(|(k, _)| k == field)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The first JSON predicate that `body` fails, if any.
pub(crate) fn json_failure<'m>(
    body: &[u8],
    predicates: &'m [JsonPredicate],
) -> Option<JsonFailure<'m>> {
    let Ok(root) = serde_json::from_slice::<&RawValue>(body) else {
        return Some(JsonFailure::Unparsable);
    };
    predicates
        .iter()
        .find(|predicate| {
            !lookup(root, &predicate.tokens).is_some_and(|v| predicate.expected.matches(v))
        })
        .map(JsonFailure::Predicate)
}

/// The raw JSON text the pointer leads to in `body`: `Err` when the body is not JSON,
/// `Ok(None)` when nothing is there (for explanations).
pub(crate) fn json_value(body: &[u8], tokens: &[String]) -> Result<Option<String>, ()> {
    let root = serde_json::from_slice::<&RawValue>(body).map_err(|_| ())?;
    Ok(lookup(root, tokens).map(|raw| raw.get().to_owned()))
}

/// Follows `tokens` from `root`; `None` when a step leads nowhere.
fn lookup<'b>(root: &'b RawValue, tokens: &[String]) -> Option<&'b RawValue> {
    let mut current = root;
    for token in tokens {
        let text = current.get().trim_start();
        current = if text.starts_with('{') {
            // Duplicate keys: the last one wins, as in most JSON parsers.
            let object: HashMap<String, &'b RawValue> = serde_json::from_str(current.get()).ok()?;
            object.get(token.as_str()).copied()?
        } else if text.starts_with('[') {
            let index = array_index(token)?;
            let array: Vec<&'b RawValue> = serde_json::from_str(current.get()).ok()?;
            array.get(index).copied()?
        } else {
            return None;
        };
    }
    Some(current)
}

/// RFC 6901 array index: `0` or digits without a leading zero (`-` is past the end).
fn array_index(token: &str) -> Option<usize> {
    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
    if !canonical || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// Splits a JSON pointer (`""` or starting with `/`) into unescaped reference tokens;
/// `Err` says what is wrong with it.
pub(crate) fn pointer_tokens(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err("a JSON pointer must be empty or start with '/'".to_owned());
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                match (c, c == '~') {
                    (_, false) => out.push(c),
                    (_, true) => match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => {
                            return Err(
                                "`~` must be followed by 0 or 1 (`~0` is `~`, `~1` is `/`)"
                                    .to_owned(),
                            );
                        }
                    },
                }
            }
            Ok(out)
        })
        .collect()
}

impl Expected {
    fn matches(&self, raw: &RawValue) -> bool {
        let text = raw.get().trim();
        match self {
            Expected::Null => text == "null",
            Expected::Bool(expected) => text == if *expected { "true" } else { "false" },
            Expected::Str(expected) => {
                text.starts_with('"')
                    && serde_json::from_str::<String>(text).is_ok_and(|s| s == *expected)
            }
            Expected::Number(expected) => Decimal::parse(text).is_some_and(|d| d == *expected),
        }
    }
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Null => f.write_str("null"),
            Expected::Bool(b) => write!(f, "{b}"),
            Expected::Str(s) => write!(f, "{s:?}"),
            Expected::Number(d) => write!(f, "{d}"),
        }
    }
}

impl Decimal {
    /// Parses a JSON-style number (`-12`, `10.50`, `1e3`, `2.5E-3`); `None` if it is not
    /// one, or its exponent does not fit in 64 bits.
    pub(crate) fn parse(text: &str) -> Option<Decimal> {
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match rest.find(['e', 'E']) {
            Some(at) => {
                let exp = &rest[at + 1..];
                let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                (&rest[..at], exp.parse::<i64>().ok()?)
            }
            None => (rest, 0),
        };
        let (int, frac) = match mantissa.split_once('.') {
            Some((_, "")) => return None,
            Some((int, frac)) => (int, frac),
            None => (mantissa, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let mut digits = String::with_capacity(int.len() + frac.len());
        digits.push_str(int);
        digits.push_str(frac);
        let significant = digits.trim_start_matches('0');
        if significant.is_empty() {
            return Some(Decimal {
                negative: false,
                digits: String::new(),
                scale: 0,
            });
        }
        let trimmed = significant.trim_end_matches('0');
        let frac_len = i64::try_from(frac.len()).ok()?;
        let trailing = i64::try_from(significant.len() - trimmed.len()).ok()?;
        let scale = exponent.checked_sub(frac_len)?.checked_add(trailing)?;
        Some(Decimal {
            negative,
            digits: trimmed.to_owned(),
            scale,
        })
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.digits.is_empty() {
            return f.write_str("0");
        }
        if self.negative {
            f.write_str("-")?;
        }
        f.write_str(&self.digits)?;
        if self.scale != 0 {
            write!(f, "e{}", self.scale)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Expected {
        Expected::Number(Decimal::parse(text).unwrap())
    }

    fn predicate(pointer: &str, expected: Expected) -> JsonPredicate {
        JsonPredicate {
            pointer: pointer.to_owned(),
            tokens: pointer_tokens(pointer).unwrap(),
            expected,
        }
    }

    #[test]
    fn decimals_compare_by_value() {
        let equal = [
            ("10", "10.0"),
            ("10.5", "10.50"),
            ("1e1", "10"),
            ("1E+1", "10.000"),
            ("0.25", "25e-2"),
            ("-0", "0"),
            ("0.0", "0e10"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567890.0",
            ),
        ];
        for (a, b) in equal {
            assert_eq!(Decimal::parse(a), Decimal::parse(b), "{a} == {b}");
            assert!(Decimal::parse(a).is_some(), "{a}");
        }
        let different = [
            ("10", "10.1"),
            ("-1", "1"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567891",
            ),
            ("0.1", "0.10000000000000001"),
        ];
        for (a, b) in different {
            assert_ne!(Decimal::parse(a), Decimal::parse(b), "{a} != {b}");
        }
        for bad in [
            "",
            "-",
            "1.",
            ".5",
            "1e",
            "1e+",
            "abc",
            "1x",
            "1e99999999999999999999",
        ] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn pointers() {
        assert_eq!(pointer_tokens(""), Ok(vec![]));
        assert_eq!(pointer_tokens("/a/b"), Ok(vec!["a".into(), "b".into()]));
        assert_eq!(
            pointer_tokens("/a~1b/~0c/"),
            Ok(vec!["a/b".into(), "~c".into(), String::new()])
        );
        assert!(pointer_tokens("a").is_err());
        assert!(pointer_tokens("/a~2").is_err());
        assert!(pointer_tokens("/a~").is_err());
    }

    #[test]
    fn json_predicates() {
        let body = br#"{"order": {"total": 10.0, "items": [{"sku": "a"}, {"sku": "b", "qty": 2}],
            "big": 123456789012345678901234567890, "gift": false, "note": null, "a/b": "s\u00e9"}}"#;
        let holds = [
            predicate("/order/total", number("10")),
            predicate("/order/items/1/sku", Expected::Str("b".into())),
            predicate("/order/items/1/qty", number("2.0")),
            predicate("/order/big", number("123456789012345678901234567890")),
            predicate("/order/gift", Expected::Bool(false)),
            predicate("/order/note", Expected::Null),
            predicate("/order/a~1b", Expected::Str("sé".into())),
        ];
        for p in &holds {
            assert!(
                json_failure(body, std::slice::from_ref(p)).is_none(),
                "{}",
                p.pointer
            );
        }
        let fails = [
            predicate("/order/total", Expected::Str("10".into())),
            predicate("/order/total", number("10.01")),
            predicate("/order/items/2/sku", Expected::Str("b".into())),
            predicate("/order/items/01/sku", Expected::Str("b".into())),
            predicate("/order/items/-", Expected::Null),
            predicate("/order/missing", Expected::Null),
            predicate("/order/gift", Expected::Null),
            predicate("/order/total/x", number("10")),
            predicate("/order/big", number("123456789012345678901234567891")),
        ];
        for p in &fails {
            assert!(
                matches!(
                    json_failure(body, std::slice::from_ref(p)),
                    Some(JsonFailure::Predicate(_))
                ),
                "{}",
                p.pointer
            );
        }
        let root = predicate("", number("3"));
        assert!(json_failure(b" 3 ", std::slice::from_ref(&root)).is_none());
        for bad in [&b"{"[..], b"", b"{\"a\":1} x", b"\xff"] {
            assert!(matches!(
                json_failure(bad, std::slice::from_ref(&root)),
                Some(JsonFailure::Unparsable)
            ));
        }
    }

    #[test]
    fn forms() {
        let fields = vec![
            ("action".to_owned(), "pay roll".to_owned()),
            ("id".to_owned(), "7".to_owned()),
        ];
        assert_eq!(form_failure(b"id=7&action=pay+roll", &fields), None);
        assert_eq!(form_failure(b"action=pay%20roll&id=7&id=8", &fields), None);
        assert_eq!(
            form_failure(b"action=other&id=7", &fields),
            Some(&fields[0])
        );
        assert_eq!(form_failure(b"action=pay+roll", &fields), Some(&fields[1]));
        assert_eq!(form_values(b"a=1&b=2&a=3", "a"), vec!["1", "3"]);
        let mut headers = HeaderMap::new();
        assert!(!is_form(&headers));
        headers.insert(
            http::header::CONTENT_TYPE,
            "Application/X-WWW-Form-Urlencoded; charset=utf-8"
                .parse()
                .unwrap(),
        );
        assert!(is_form(&headers));
    }
}
