//! Body comparison: decode, then JSON values when both sides are JSON, else bytes.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::CONTENT_TYPE;

use super::{BodyComparison, Difference, DifferenceKind, Incomparable, Location, Observed};
use crate::verify::decode::{self, Decoded};
use crate::verify::diff::{self, Found, MAX_VALUE_PREVIEW};
use crate::verify::json::Json;
use crate::verify::rules::CompiledRules;

/// Compare the bodies, adding differences to `found` and remarks to `notes`.
pub(super) fn compare_bodies(
    rules: &CompiledRules,
    primary: &Observed,
    candidate: &Observed,
    found: &mut Found,
    notes: &mut Vec<String>,
) -> BodyComparison {
    if primary.truncated {
        return BodyComparison::Incomparable(Incomparable::PrimaryTruncated);
    }
    if candidate.truncated {
        return BodyComparison::Incomparable(Incomparable::CandidateTruncated);
    }
    if rules
        .ignore_json
        .patterns()
        .iter()
        .any(|p| p.as_str().is_empty())
    {
        return BodyComparison::Ignored;
    }
    let limit = rules.max_decoded_body;
    let a = match decode::decode(&primary.headers, &primary.body, limit) {
        Decoded::Body(body) => body,
        Decoded::Raw(raw, why) => {
            notes.push(format!("primary body: {why}; compared as bytes"));
            Cow::Borrowed(raw)
        }
        Decoded::TooLarge => {
            return BodyComparison::Incomparable(Incomparable::PrimaryDecodedTooLarge);
        }
    };
    let b = match decode::decode(&candidate.headers, &candidate.body, limit) {
        Decoded::Body(body) => body,
        Decoded::Raw(raw, why) => {
            notes.push(format!("candidate body: {why}; compared as bytes"));
            Cow::Borrowed(raw)
        }
        Decoded::TooLarge => {
            return BodyComparison::Incomparable(Incomparable::CandidateDecodedTooLarge);
        }
    };
    if a == b {
        return BodyComparison::Identical;
    }
    let redacting = !rules.redact_json.is_empty();
    let x = if wants_json(&primary.headers, &a) {
        Json::parse(&a)
    } else {
        None
    };
    // The candidate is parsed when it can be compared as JSON, or must be shown redacted.
    let y = if (x.is_some() || redacting) && wants_json(&candidate.headers, &b) {
        Json::parse(&b)
    } else {
        None
    };
    if let (Some(x), Some(y)) = (&x, &y) {
        diff::diff_json(rules, x, y, found);
        return BodyComparison::Json;
    }
    let at = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    notes.push(format!(
        "bodies differ from byte {at} ({} vs {} bytes)",
        a.len(),
        b.len()
    ));
    // A JSON side is shown as a redacted value when fields are redacted: its raw bytes
    // would show them.
    let show = |body: &[u8], parsed: &Option<Json<'_>>| match parsed {
        Some(value) if redacting => diff::preview(value, &mut Vec::new(), &rules.redact_json),
        _ => body_window(body, at),
    };
    found.push(Difference {
        location: Location::Body,
        kind: DifferenceKind::Changed,
        primary: Some(show(&a, &x)),
        candidate: Some(show(&b, &y)),
        noise: false,
    });
    BodyComparison::Bytes
}

/// A JSON media type (`application/json`, `application/problem+json`, `text/json`), or a
/// body that starts like a JSON object or array.
fn wants_json(headers: &HeaderMap, body: &[u8]) -> bool {
    let typed = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            let essence = value.split(';').next().unwrap_or_default().trim();
            let essence = essence.to_ascii_lowercase();
            essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
        })
        .unwrap_or(false);
    typed
        || matches!(
            body.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{' | b'[')
        )
}

/// Up to [`MAX_VALUE_PREVIEW`] bytes of `body` shown around offset `at`.
fn body_window(body: &[u8], at: usize) -> String {
    if body.len() <= MAX_VALUE_PREVIEW {
        return bounded_text(&String::from_utf8_lossy(body));
    }
    let start = at.saturating_sub(MAX_VALUE_PREVIEW / 4);
    let end = (start + MAX_VALUE_PREVIEW).min(body.len());
    let text = String::from_utf8_lossy(body.get(start..end).unwrap_or_default());
    let mut shown = bounded_text(&text);
    if start > 0 {
        shown.insert(0, '…');
    }
    if end < body.len() && !shown.ends_with('…') {
        shown.push('…');
    }
    shown
}

/// `text` with control characters escaped, cut to at most [`MAX_VALUE_PREVIEW`] bytes
/// (then `…` is appended).
pub(super) fn bounded_text(text: &str) -> String {
    let mut shown = String::new();
    let mut escaped = String::new();
    for c in text.chars() {
        escaped.clear();
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
        if shown.len() + escaped.len() > MAX_VALUE_PREVIEW {
            shown.push('…');
            break;
        }
        shown.push_str(&escaped);
    }
    shown
}
