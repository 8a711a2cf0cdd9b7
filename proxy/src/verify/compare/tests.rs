//! Comparison of whole answers: the edge cases the shadow mode promises.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::*;
use crate::verify::decode::tests::{brotli, gzip};
use crate::verify::diff::MAX_VALUE_PREVIEW;
use crate::verify::rules::{CompareRules, REDACTED};

fn answer(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Observed {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    Observed::new(
        StatusCode::from_u16(status).unwrap(),
        map,
        body.into(),
        Duration::from_millis(5),
    )
}

fn json(body: &str) -> Observed {
    answer(
        200,
        &[("content-type", "application/json")],
        body.to_owned(),
    )
}

fn default_rules() -> CompiledRules {
    CompareRules::default().compile().unwrap()
}

fn locations(verdict: &Verdict) -> Vec<String> {
    verdict
        .differences
        .iter()
        .map(|d| d.location.to_string())
        .collect()
}

#[test]
fn equal_json_in_a_different_key_order_matches() {
    let verdict = compare(
        &default_rules(),
        &json(r#"{"id":7,"tags":["a","b"],"owner":{"name":"x","age":30}}"#),
        &json(
            "{ \"owner\": {\"age\": 30.0, \"name\": \"x\"},\n \"tags\": [\"a\", \"b\"], \"id\": 7 }",
        ),
    );
    assert!(verdict.is_match(), "{verdict:?}");
    assert_eq!(verdict.body, BodyComparison::Json);
    assert_eq!(verdict.outcome(), Outcome::Match);
}

#[test]
fn identical_bytes_skip_parsing() {
    let verdict = compare(&default_rules(), &json(r#"{"a":1}"#), &json(r#"{"a":1}"#));
    assert_eq!(verdict.body, BodyComparison::Identical);
    assert!(verdict.is_match());
}

#[test]
fn a_changed_field_is_one_difference_with_both_values() {
    let verdict = compare(
        &default_rules(),
        &json(r#"{"id":7,"total":"10.00","items":[{"sku":"a"}]}"#),
        &json(r#"{"id":7,"total":"10.01","items":[{"sku":"a"}]}"#),
    );
    assert_eq!(verdict.outcome(), Outcome::Mismatch);
    assert_eq!(
        verdict.differences,
        [Difference {
            location: Location::Json(JsonPointer::from_steps(&[
                crate::verify::pointer::Step::Key("total")
            ])),
            kind: DifferenceKind::Changed,
            primary: Some(r#""10.00""#.into()),
            candidate: Some(r#""10.01""#.into()),
            noise: false,
        }]
    );
    let shown = serde_json::to_value(&verdict.differences[0]).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({
            "part": "json", "path": "/total", "kind": "changed",
            "primary": "\"10.00\"", "candidate": "\"10.01\""
        })
    );
}

#[test]
fn ignored_fields_and_headers_match() {
    let rules = CompareRules {
        ignore_headers: vec!["x-build".into()],
        ignore_json: vec!["/generated_at".into(), "/items/*/etag".into()],
        ..CompareRules::default()
    }
    .compile()
    .unwrap();
    let primary = answer(
        200,
        &[
            ("content-type", "application/json"),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("x-build", "old"),
            ("x-request-id", "a"),
        ],
        r#"{"generated_at":"2024-01-01","items":[{"id":1,"etag":"x"}]}"#,
    );
    let candidate = answer(
        200,
        &[
            ("content-type", "application/json"),
            ("date", "Tue, 02 Jan 2024 00:00:00 GMT"),
            ("server", "new"),
            ("x-build", "new"),
        ],
        r#"{"generated_at":"2024-01-02","items":[{"id":1,"etag":"y"}]}"#,
    );
    let verdict = compare(&rules, &primary, &candidate);
    assert!(verdict.is_match(), "{verdict:?}");
}

#[test]
fn gzip_and_brotli_bodies_match_the_plain_body() {
    let body = r#"{"id":7,"name":"Ada"}"#;
    let reordered = r#"{"name":"Ada","id":7}"#;
    let plain = json(body);
    let gzipped = answer(
        200,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
            ("content-length", "40"),
        ],
        gzip(reordered.as_bytes()),
    );
    let brotlied = answer(
        200,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "br"),
        ],
        brotli(body.as_bytes()),
    );
    for candidate in [&gzipped, &brotlied] {
        let verdict = compare(&default_rules(), &plain, candidate);
        assert!(verdict.is_match(), "{verdict:?}");
    }
    let verdict = compare(&default_rules(), &gzipped, &brotlied);
    assert!(verdict.is_match(), "{verdict:?}");
}

#[test]
fn big_integers_compare_exactly_and_decimals_by_value() {
    let verdict = compare(
        &default_rules(),
        &json(r#"{"n":12345678901234567890123,"price":10.5}"#),
        &json(r#"{"n":12345678901234567890124,"price":10.50}"#),
    );
    assert_eq!(locations(&verdict), ["json:/n"]);
    assert_eq!(
        verdict.differences[0].primary.as_deref(),
        Some("12345678901234567890123")
    );
    assert_eq!(
        verdict.differences[0].candidate.as_deref(),
        Some("12345678901234567890124")
    );
    let verdict = compare(&default_rules(), &json("10.5"), &json("10.50"));
    assert!(verdict.is_match());
}

#[test]
fn non_json_bodies_compare_as_bytes() {
    let html = |body: &'static str| answer(200, &[("content-type", "text/html")], body);
    let verdict = compare(&default_rules(), &html("<p>1</p>"), &html("<p>1</p>"));
    assert!(verdict.is_match());
    let verdict = compare(&default_rules(), &html("<p>1</p>"), &html("<p>2</p>"));
    assert_eq!(verdict.body, BodyComparison::Bytes);
    assert_eq!(locations(&verdict), ["body"]);
    assert_eq!(verdict.differences[0].primary.as_deref(), Some("<p>1</p>"));
    assert_eq!(
        verdict.differences[0].candidate.as_deref(),
        Some("<p>2</p>")
    );
    assert!(
        verdict.notes[0].contains("from byte 3 (8 vs 8 bytes)"),
        "{:?}",
        verdict.notes
    );
    // Scalars without a JSON content type are text: "1.0" is not "1".
    let text = |body: &'static str| answer(200, &[("content-type", "text/plain")], body);
    assert_eq!(
        compare(&default_rules(), &text("1.0"), &text("1")).body,
        BodyComparison::Bytes
    );
    // But a JSON content type makes them values.
    assert!(compare(&default_rules(), &json("1.0"), &json("1")).is_match());
}

#[test]
fn one_side_json_and_the_other_not_compares_bytes() {
    let verdict = compare(&default_rules(), &json(r#"{"a":1}"#), &json("oops"));
    assert_eq!(verdict.body, BodyComparison::Bytes);
    assert_eq!(locations(&verdict), ["body"]);
}

#[test]
fn byte_previews_window_the_first_difference() {
    let mut a = "x".repeat(10_000);
    let mut b = a.clone();
    a.push_str("tail-A");
    b.push_str("tail-B");
    let verdict = compare(
        &default_rules(),
        &answer(200, &[], a.clone()),
        &answer(200, &[], b),
    );
    let shown = verdict.differences[0].primary.as_deref().unwrap();
    assert!(
        shown.starts_with('…') && shown.ends_with("tail-A"),
        "{shown}"
    );
    assert!(shown.len() <= MAX_VALUE_PREVIEW + 2 * '…'.len_utf8());
    // Binary bodies never panic and stay bounded.
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let verdict = compare(
        &default_rules(),
        &answer(200, &[], binary.clone()),
        &answer(200, &[], binary[1..].to_vec()),
    );
    assert_eq!(verdict.body, BodyComparison::Bytes);
}

#[test]
fn truncated_bodies_are_incomparable_not_mismatched() {
    let primary = json(r#"{"a":1}"#).truncated(true);
    let verdict = compare(&default_rules(), &primary, &json(r#"{"a":2}"#));
    assert_eq!(verdict.incomparable(), Some(Incomparable::PrimaryTruncated));
    assert!(verdict.differences.is_empty());
    assert_eq!(verdict.outcome(), Outcome::Dropped);
    assert_eq!(
        verdict.drop_reason(),
        Some(DropReason::ResponseBodyTooLarge)
    );
    // A status difference is still a certain mismatch.
    let candidate = answer(500, &[("content-type", "application/json")], "{}").truncated(true);
    let verdict = compare(&default_rules(), &json("{}"), &candidate);
    assert_eq!(
        verdict.incomparable(),
        Some(Incomparable::CandidateTruncated)
    );
    assert_eq!(locations(&verdict), ["status"]);
    assert_eq!(verdict.outcome(), Outcome::Mismatch);
}

#[test]
fn invalid_gzip_is_compared_as_bytes_with_a_note() {
    let broken = answer(
        200,
        &[
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ],
        r#"{"a":1}"#,
    );
    // Same raw bytes both sides: a match, with notes.
    let verdict = compare(&default_rules(), &broken, &broken.clone());
    assert!(verdict.is_match(), "{verdict:?}");
    assert_eq!(verdict.notes.len(), 2);
    // Against a valid plain body: the candidate's raw bytes parse as the same JSON.
    let verdict = compare(&default_rules(), &json(r#"{"a":1}"#), &broken);
    assert!(verdict.is_match(), "{verdict:?}");
    assert!(
        verdict.notes[0].starts_with("candidate body: invalid gzip body"),
        "{:?}",
        verdict.notes
    );
    // Garbage that is neither gzip nor JSON.
    let garbage = answer(
        200,
        &[("content-encoding", "gzip")],
        vec![0x1f, 0x8b, 8, 0, 1, 2],
    );
    let verdict = compare(&default_rules(), &json("{}"), &garbage);
    assert_eq!(verdict.body, BodyComparison::Bytes);
}

#[test]
fn zip_bombs_are_incomparable() {
    let rules = CompareRules {
        max_decoded_body: 1 << 20,
        ..CompareRules::default()
    }
    .compile()
    .unwrap();
    let bomb = answer(
        200,
        &[("content-encoding", "gzip")],
        gzip(&vec![b' '; 4 << 20]),
    );
    let verdict = compare(&rules, &json("{}"), &bomb);
    assert_eq!(
        verdict.incomparable(),
        Some(Incomparable::CandidateDecodedTooLarge)
    );
    assert_eq!(verdict.drop_reason(), Some(DropReason::DecodedBodyTooLarge));
}

#[test]
fn header_differences_name_the_header() {
    let primary = answer(
        200,
        &[
            ("etag", "\"v1\""),
            ("cache-control", "no-store"),
            ("vary", "accept"),
            ("vary", "origin"),
            ("content-type", "application/json; charset=UTF-8"),
            ("set-cookie", "session=secret1"),
        ],
        "",
    );
    let candidate = answer(
        200,
        &[
            ("etag", "\"v2\""),
            ("vary", "origin"),
            ("vary", "accept"),
            ("x-new", "1"),
            ("content-type", "application/json;charset=utf-8"),
            ("set-cookie", "session=secret2"),
        ],
        "",
    );
    let verdict = compare(&default_rules(), &primary, &candidate);
    assert_eq!(
        locations(&verdict),
        [
            "header:etag",
            "header:cache-control",
            "header:set-cookie",
            "header:x-new"
        ]
    );
    let kinds: Vec<_> = verdict.differences.iter().map(|d| d.kind).collect();
    assert_eq!(
        kinds,
        [
            DifferenceKind::Changed,
            DifferenceKind::Missing,
            DifferenceKind::Changed,
            DifferenceKind::Extra
        ]
    );
    assert_eq!(verdict.differences[0].primary.as_deref(), Some("\"v1\""));
    assert_eq!(verdict.differences[1].candidate, None);
    assert_eq!(verdict.differences[2].primary.as_deref(), Some(REDACTED));
    assert_eq!(verdict.differences[2].candidate.as_deref(), Some(REDACTED));
}

#[test]
fn status_difference_comes_first() {
    let verdict = compare(&default_rules(), &json("{}"), &answer(404, &[], "{}"));
    assert_eq!(locations(&verdict)[0], "status");
    assert_eq!(verdict.differences[0].primary.as_deref(), Some("200"));
    assert_eq!(verdict.differences[0].candidate.as_deref(), Some("404"));
}

#[test]
fn ignoring_the_whole_body() {
    let rules = CompareRules {
        ignore_json: vec![String::new()],
        ..CompareRules::default()
    }
    .compile()
    .unwrap();
    let verdict = compare(&rules, &answer(200, &[], "a"), &answer(200, &[], "b"));
    assert_eq!(verdict.body, BodyComparison::Ignored);
    assert!(verdict.is_match());
}

#[test]
fn empty_bodies_with_a_coding_header_match() {
    let head = answer(200, &[("content-encoding", "gzip")], "");
    let verdict = compare(&default_rules(), &head, &answer(200, &[], ""));
    assert!(verdict.is_match(), "{verdict:?}");
}

#[test]
fn verdict_serializes() {
    let verdict = compare(&default_rules(), &json(r#"{"a":1}"#), &json(r#"{"b":1}"#));
    let value = serde_json::to_value(&verdict).unwrap();
    assert_eq!(value["body"], "json");
    assert_eq!(value["differences"][0]["kind"], "missing");
    assert_eq!(
        value["differences"][0]["candidate"],
        serde_json::Value::Null
    );
    assert_eq!(value["differences"][1]["kind"], "extra");
    let status = serde_json::to_value(Difference {
        location: Location::Status,
        kind: DifferenceKind::Changed,
        primary: None,
        candidate: None,
        noise: true,
    })
    .unwrap();
    assert_eq!(status["part"], "status");
    assert_eq!(status["noise"], true);
    assert!(status.get("path").is_none());
    let incomparable =
        serde_json::to_value(BodyComparison::Incomparable(Incomparable::PrimaryTruncated)).unwrap();
    assert_eq!(incomparable["incomparable"], "primary_truncated");
}

#[test]
fn a_json_side_against_a_non_json_side_is_shown_redacted() {
    let rules = CompareRules {
        redact_json: vec!["/card".into()],
        ..CompareRules::default()
    }
    .compile()
    .unwrap();
    let verdict = compare(
        &rules,
        &json(r#"{"card":"4111","n":1}"#),
        &answer(
            502,
            &[("content-type", "text/html")],
            "<h1>bad gateway</h1>",
        ),
    );
    assert_eq!(verdict.body, BodyComparison::Bytes);
    let body = verdict.differences.last().unwrap();
    assert_eq!(body.location, Location::Body);
    assert_eq!(
        body.primary.as_deref(),
        Some(r#"{"card":"[redacted]","n":1}"#)
    );
    assert_eq!(body.candidate.as_deref(), Some("<h1>bad gateway</h1>"));
}
