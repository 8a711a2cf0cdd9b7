//! Header comparison: ignore lists, multiset values, a normalized `content-type`.

use std::borrow::Cow;

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue};

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
        if !b.contains_key(name) {
            let ours = header_values(a, name);
            found.push(header_difference(rules, name, Some(&ours), None));
            continue;
        }
        if !same_values(a, b, name) {
            let (ours, theirs) = (header_values(a, name), header_values(b, name));
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

/// Whether `name` has the same values in `a` and `b`, in any order.
fn same_values(a: &HeaderMap, b: &HeaderMap, name: &HeaderName) -> bool {
    let (mut ours, mut theirs) = (a.get_all(name).iter(), b.get_all(name).iter());
    match (ours.next(), ours.next(), theirs.next(), theirs.next()) {
        // The common case, one value on each side: compared without sorting or allocating.
        (Some(x), None, Some(y), None) => comparable(name, x).eq(comparable(name, y)),
        _ => header_values(a, name) == header_values(b, name),
    }
}

/// The bytes of `value` as compared: `content-type` without whitespace, in lower case.
fn comparable<'v>(name: &HeaderName, value: &'v HeaderValue) -> impl Iterator<Item = u8> + 'v {
    let normalize = name == CONTENT_TYPE;
    value
        .as_bytes()
        .iter()
        .filter(move |b| !(normalize && b.is_ascii_whitespace()))
        .map(move |b| {
            if normalize {
                b.to_ascii_lowercase()
            } else {
                *b
            }
        })
}

/// The values of `name`, sorted (repetition order carries no meaning for comparison).
fn header_values<'h>(map: &'h HeaderMap, name: &HeaderName) -> Vec<Cow<'h, [u8]>> {
    let mut values: Vec<Cow<'h, [u8]>> = map
        .get_all(name)
        .iter()
        .map(|value| {
            if name == CONTENT_TYPE {
                // `application/json; charset=UTF-8` = `application/json;charset=utf-8`.
                Cow::Owned(comparable(name, value).collect())
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
