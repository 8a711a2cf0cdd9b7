//! Header comparison: ignore lists, multiset values, a normalized `content-type`.

use std::borrow::Cow;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName};

use super::{Difference, DifferenceKind, Location};
use crate::verify::diff::Found;
use crate::verify::rules::{CompiledRules, REDACTED};

/// Add a difference for every header that is not ignored and whose values differ.
pub(super) fn compare_headers(
    rules: &CompiledRules,
    a: &HeaderMap,
    b: &HeaderMap,
    found: &mut Found,
) {
    for name in a.keys() {
        if rules.ignores_header(name) {
            continue;
        }
        let ours = header_values(a, name);
        if !b.contains_key(name) {
            found.push(header_difference(rules, name, Some(&ours), None));
            continue;
        }
        let theirs = header_values(b, name);
        if ours != theirs {
            found.push(header_difference(rules, name, Some(&ours), Some(&theirs)));
        }
    }
    for name in b.keys() {
        if !rules.ignores_header(name) && !a.contains_key(name) {
            found.push(header_difference(
                rules,
                name,
                None,
                Some(&header_values(b, name)),
            ));
        }
    }
}

/// The values of `name`, sorted (repetition order carries no meaning for comparison).
fn header_values<'h>(map: &'h HeaderMap, name: &HeaderName) -> Vec<Cow<'h, [u8]>> {
    let mut values: Vec<Cow<'h, [u8]>> = map
        .get_all(name)
        .iter()
        .map(|value| {
            if name == CONTENT_TYPE {
                // `application/json; charset=UTF-8` = `application/json;charset=utf-8`.
                Cow::Owned(
                    value
                        .as_bytes()
                        .iter()
                        .filter(|b| !b.is_ascii_whitespace())
                        .map(u8::to_ascii_lowercase)
                        .collect(),
                )
            } else {
                Cow::Borrowed(value.as_bytes())
            }
        })
        .collect();
    values.sort();
    values
}

fn header_difference(
    rules: &CompiledRules,
    name: &HeaderName,
    primary: Option<&[Cow<'_, [u8]>]>,
    candidate: Option<&[Cow<'_, [u8]>]>,
) -> Difference {
    let show = |values: &[Cow<'_, [u8]>]| {
        if rules.redacts_header(name) {
            return REDACTED.to_owned();
        }
        let joined = values
            .iter()
            .map(|v| String::from_utf8_lossy(v))
            .collect::<Vec<_>>()
            .join(", ");
        super::body::bounded_text(&joined)
    };
    let kind = match (primary, candidate) {
        (Some(_), None) => DifferenceKind::Missing,
        (None, Some(_)) => DifferenceKind::Extra,
        _ => DifferenceKind::Changed,
    };
    Difference {
        location: Location::Header(name.as_str().to_owned()),
        kind,
        primary: primary.map(show),
        candidate: candidate.map(show),
        noise: false,
    }
}
