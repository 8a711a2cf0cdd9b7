//! Fuzz the comparison of two arbitrary response bodies (decoding, JSON parsing, diffing).
//!
//! Properties checked on every input, besides "never panics":
//! - an answer always equals itself (unless it decodes past the cap: incomparable);
//! - comparing is symmetric: B vs A lists as many differences as A vs B;
//! - the compact JSON form is a fixed point and compares equal to the original body.
//!
//! Input layout: byte 0 selects the content coding and content type, bytes 1..3 where the
//! rest splits into the primary's and the candidate's body.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use strangler::verify::{CompareRules, Observed, compare, json_compact};

const CODINGS: [&str; 6] = ["", "gzip", "deflate", "br", "gzip, br", "identity"];

fn observed(body: &[u8], coding: &'static str, json: bool) -> Observed {
    let mut headers = HeaderMap::new();
    if !coding.is_empty() {
        headers.insert("content-encoding", HeaderValue::from_static(coding));
    }
    if json {
        headers.insert("content-type", HeaderValue::from_static("application/json"));
    }
    Observed::new(
        StatusCode::OK,
        headers,
        Bytes::copy_from_slice(body),
        Duration::ZERO,
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((split, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let at = usize::from(u16::from_le_bytes(*split)) % (rest.len() + 1);
    let (a, b) = rest.split_at(at);
    let coding = CODINGS[usize::from(flags) % CODINGS.len()];
    let json = flags & 0x80 != 0;
    let rules = CompareRules {
        ignore_json: if flags & 0x40 != 0 {
            vec!["/*/id".into()]
        } else {
            Vec::new()
        },
        redact_json: if flags & 0x20 != 0 {
            vec!["/*".into()]
        } else {
            Vec::new()
        },
        max_decoded_body: 1 << 20,
        ..CompareRules::default()
    }
    .compile()
    .unwrap_or_default();

    let (primary, candidate) = (observed(a, coding, json), observed(b, coding, json));
    // A body that decodes past the cap is incomparable, even with itself.
    let own = compare(&rules, &primary, &primary);
    assert!(own.is_match() || own.incomparable().is_some());
    let forward = compare(&rules, &primary, &candidate);
    let backward = compare(&rules, &candidate, &primary);
    assert_eq!(forward.differences.len(), backward.differences.len());
    assert_eq!(forward.omitted, backward.omitted);

    if let Some(compact) = json_compact(a) {
        assert_eq!(
            json_compact(compact.as_bytes()).as_deref(),
            Some(compact.as_str())
        );
        let plain = observed(a, "", true);
        let reformatted = observed(compact.as_bytes(), "", true);
        assert!(compare(&rules, &plain, &reformatted).is_match());
    }
});
