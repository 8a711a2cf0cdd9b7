//! A route's verifier end to end: judging, noise, records, figures, gate, reloads.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};

use super::*;
use crate::verify::gate::GateState;
use crate::verify::outcome::CandidateErrorKind;

fn json(status: u16, body: &str, ms: u64) -> Observed {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    Observed::new(
        StatusCode::from_u16(status).unwrap(),
        headers,
        Bytes::from(body.to_owned()),
        Duration::from_millis(ms),
    )
}

fn request(id: &str) -> RequestInfo {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
    RequestInfo::new(id, Method::GET, "/payroll/7", Some("page=1"), headers)
}

fn config() -> VerifyConfig {
    VerifyConfig {
        rules: CompareRules {
            ignore_json: vec!["/ignored".into()],
            ..CompareRules::default()
        },
        gate: Some(ShadowGate {
            min_comparisons: 4,
            max_mismatch_rate: 0.25,
        }),
        records: 2,
    }
}

#[test]
fn judges_counts_and_records() {
    let verifier = RouteVerifier::new("payroll", &config()).unwrap();
    let m = verifier.judge(
        &request("1"),
        &json(200, r#"{"a":1,"ignored":1}"#, 10),
        &json(200, r#"{"a":1,"ignored":2}"#, 20),
    );
    assert_eq!(m.outcome, Outcome::Match);
    assert!(m.record.is_none());
    let mm = verifier.judge(
        &request("2"),
        &json(200, r#"{"a":1}"#, 10),
        &json(200, r#"{"a":2}"#, 20),
    );
    assert_eq!(mm.outcome, Outcome::Mismatch);
    let record = mm.record.unwrap();
    assert_eq!(record.request_id, "2");
    assert_eq!(record.route, "payroll");
    assert_eq!(
        record.request_headers,
        [("authorization".into(), "[redacted]".into())]
    );
    let dropped = verifier.judge(
        &request("3"),
        &json(200, "{}", 10),
        &json(200, "{}", 20).truncated(true),
    );
    assert_eq!(dropped.outcome, Outcome::Dropped);
    assert_eq!(dropped.drop_reason, Some(DropReason::ResponseBodyTooLarge));
    let failed = verifier.candidate_failed(
        &request("4"),
        &json(200, "{}", 10),
        &CandidateFailure {
            kind: CandidateErrorKind::Connect,
            latency: Duration::from_millis(1),
            message: "connection refused".into(),
        },
    );
    assert_eq!(failed.outcome, Outcome::CandidateError);
    verifier.dropped(DropReason::MaxInFlight);

    let summary = verifier.summary();
    assert_eq!(summary.counts.matched, 1);
    assert_eq!(summary.counts.mismatch, 1);
    assert_eq!(summary.counts.candidate_error, 1);
    assert_eq!(summary.counts.dropped, 2);
    assert_eq!(
        summary.counts.dropped_by_reason["response_body_too_large"],
        1
    );
    assert_eq!(summary.counts.dropped_by_reason["max_in_flight"], 1);
    assert_eq!(summary.comparisons, 3);
    assert_eq!(summary.mismatch_rate, Some(2.0 / 3.0));
    assert_eq!(summary.latency.primary.requests, 4);
    assert_eq!(summary.latency.candidate.requests, 4);
    assert_eq!(summary.latency.candidate.failures, 1);
    // The store keeps 2 records: the newest first.
    assert_eq!(summary.records, 2);
    let ids: Vec<_> = verifier
        .report()
        .records
        .iter()
        .map(|r| r.request_id.clone())
        .collect();
    assert_eq!(ids, ["4", "2"]);
    let gate = summary.gate.unwrap();
    assert_eq!(gate.state, GateState::Inconclusive);
}

#[test]
fn noise_learned_from_the_baseline_turns_mismatches_into_noise() {
    let verifier = RouteVerifier::new("r", &config()).unwrap();
    let primary = json(200, r#"{"id":1,"at":"10:00"}"#, 1);
    let candidate = json(200, r#"{"id":1,"at":"10:01"}"#, 1);
    assert_eq!(
        verifier.judge(&request("1"), &primary, &candidate).outcome,
        Outcome::Mismatch
    );
    assert_eq!(
        verifier.learn(&primary, &json(200, r#"{"id":1,"at":"10:02"}"#, 1)),
        1
    );
    let judgement = verifier.judge(&request("2"), &primary, &candidate);
    assert_eq!(judgement.outcome, Outcome::Noise);
    assert!(judgement.record.is_none());
    assert!(judgement.verdict.unwrap().differences[0].noise);
    let summary = verifier.summary();
    assert_eq!(summary.noise.json, ["/at"]);
    assert_eq!(summary.counts.noise, 1);
}

#[test]
fn gate_passes_and_fails_from_the_counts() {
    let verifier = RouteVerifier::new("r", &config()).unwrap();
    let same = json(200, "{}", 1);
    for id in 0..3 {
        verifier.judge(&request(&id.to_string()), &same, &same);
    }
    verifier.judge(&request("x"), &same, &json(500, "{}", 1));
    assert_eq!(verifier.gate().unwrap().state, GateState::Passing);
    verifier.judge(&request("y"), &same, &json(500, "{}", 1));
    let gate = verifier.gate().unwrap();
    assert_eq!(gate.state, GateState::Failing, "{}", gate.reason);
    verifier.reset();
    assert_eq!(verifier.gate().unwrap().state, GateState::Inconclusive);
    assert_eq!(verifier.summary().records, 0);
    let without = RouteVerifier::new("r", &VerifyConfig::default()).unwrap();
    assert!(without.gate().is_none());
}

#[test]
fn registry_keeps_state_across_reloads_and_forgets_removed_routes() {
    let verifiers = Verifiers::new();
    let first = verifiers.prepare("a", &config()).unwrap();
    let other = verifiers.prepare("b", &config()).unwrap();
    verifiers.commit([first.clone(), other]);
    first.judge(&request("1"), &json(200, "{}", 1), &json(200, "[]", 1));
    assert_eq!(verifiers.routes(), ["a", "b"]);

    // Reload with another gate: same state; "b" removed.
    let mut regated = config();
    regated.gate = None;
    let reloaded = verifiers.prepare("a", &regated).unwrap();
    assert_eq!(reloaded.summary().counts.mismatch, 1);
    // Not committed yet: the registry still shows the old settings.
    assert!(verifiers.get("a").unwrap().gate().is_some());
    verifiers.commit([reloaded.clone()]);
    assert_eq!(verifiers.routes(), ["a"]);
    assert!(verifiers.get("a").unwrap().gate().is_none());
    assert_eq!(
        reloaded
            .judge(&request("2"), &json(200, "{}", 1), &json(200, "{}", 1))
            .outcome,
        Outcome::Match
    );
    // The old verifier (an in-flight request on the old runtime) shares the counters.
    assert_eq!(first.summary().counts.matched, 1);

    // New compare rules: the outcomes so far were judged by other rules, so the
    // comparison starts over (and the new rules apply).
    let mut changed = regated.clone();
    changed.rules.ignore_json = vec![String::new()];
    let rejudged = verifiers.prepare("a", &changed).unwrap();
    assert_eq!(rejudged.summary().comparisons, 0);
    assert_eq!(
        rejudged
            .judge(&request("3"), &json(200, "{}", 1), &json(200, "[]", 1))
            .outcome,
        Outcome::Match
    );
    assert_eq!(
        reloaded.summary().counts.matched,
        1,
        "the old state is its own"
    );

    // A route that comes back later starts afresh.
    let b_again = verifiers.prepare("b", &config()).unwrap();
    assert_eq!(b_again.summary().comparisons, 0);

    let bad = VerifyConfig {
        rules: CompareRules {
            ignore_json: vec!["nope".into()],
            ..CompareRules::default()
        },
        ..VerifyConfig::default()
    };
    assert_eq!(verifiers.prepare("a", &bad).unwrap_err().key, "ignore_json");
}

#[test]
fn summaries_serialize_for_the_admin_api() {
    let verifiers = Verifiers::new();
    let verifier = verifiers.prepare("payroll", &config()).unwrap();
    verifiers.commit([verifier.clone()]);
    verifier.judge(
        &request("1"),
        &json(200, r#"{"a":1}"#, 10),
        &json(200, r#"{"a":2}"#, 30),
    );
    let summary = serde_json::to_value(verifiers.summary()).unwrap();
    let route = &summary["routes"][0];
    assert_eq!(route["route"], "payroll");
    assert_eq!(route["counts"]["mismatch"], 1);
    assert_eq!(route["mismatch_rate"], 1.0);
    assert_eq!(route["gate"]["state"], "inconclusive");
    assert!(route["latency"]["candidate"]["p99_ms"].as_f64().unwrap() > 25.0);
    assert!(route["latency"]["p50_ratio"].as_f64().unwrap() > 2.5);
    assert_eq!(route["noise"]["json"], serde_json::json!([]));
    let report = serde_json::to_value(verifier.report()).unwrap();
    assert_eq!(report["records"][0]["differences"][0]["path"], "/a");
    assert_eq!(report["records"][0]["query"], "page=1");
    let csv = verifier.to_csv();
    assert!(csv.contains(",json:/a,changed,1,2,false,"), "{csv}");
}

#[test]
fn concurrent_judging_counts_every_pair() {
    let verifier = RouteVerifier::new("r", &VerifyConfig::default()).unwrap();
    let same = json(200, r#"{"a":[1,2,3]}"#, 1);
    let other = json(200, r#"{"a":[1,2,4]}"#, 1);
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let (verifier, same, other) = (&verifier, &same, &other);
            scope.spawn(move || {
                for i in 0..250 {
                    let candidate = if i % 5 == 0 { other } else { same };
                    verifier.judge(&request(&format!("{thread}-{i}")), same, candidate);
                    if i % 50 == 0 {
                        verifier.learn(same, same);
                        let _ = verifier.summary();
                    }
                }
            });
        }
    });
    let counts = verifier.summary().counts;
    assert_eq!(counts.matched, 800);
    assert_eq!(counts.mismatch, 200);
    assert_eq!(verifier.store().records().len(), DEFAULT_RECORDS);
}
