//! How answers are judged in a parallel run — pure and synchronous: no sockets, no tasks.
//!
//! The shadow dispatcher (`dispatch/shadow.rs`) owns the I/O: it tees the request body,
//! calls primary and candidate, bounds the work and counts metrics. For everything else it
//! calls in here:
//!
//! - [`compare`] two [`Observed`] answers under [`CompiledRules`] (status, headers, JSON
//!   bodies as values with pointer ignore rules, gzip/deflate/br decoded, other bodies as
//!   bytes) into a [`Verdict`] listing every [`Difference`] with both values, redacted.
//! - [`NoiseModel`] learns the locations where two answers of the old system differ and
//!   classifies a verdict confined to them as [`Outcome::Noise`].
//! - [`DiffStore`] counts outcomes and keeps the last [`MismatchRecord`]s (JSON for
//!   `/diffs/{route}`, CSV, one JSON line each for `--diff-log`); [`RouteStats`] keeps
//!   both sides' latency and error figures; [`ShadowGate`] turns the counts into a
//!   [`GateState`].
//! - [`RouteVerifier`] bundles all of that per route, and [`Verifiers`] is the registry
//!   that carries a route's state across reloads and answers `GET /diffs`.
//!
//! # Usage from the shadow dispatcher
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http::{HeaderMap, Method, StatusCode};
//! use strangler::verify::{
//!     CandidateErrorKind, CandidateFailure, CompareRules, DropReason, Observed, Outcome,
//!     RequestInfo, ShadowGate, Verifiers, VerifyConfig,
//! };
//!
//! // At start-up, once: the registry (shared by the runtime builder and the admin API).
//! let verifiers = Verifiers::new();
//!
//! // At each (re)load, for every shadowed route: prepare, swap the runtime, commit.
//! let config = VerifyConfig {
//!     rules: CompareRules {
//!         ignore_json: vec!["/generated_at".into(), "/items/*/etag".into()],
//!         max_decoded_body: 8 << 20, // 8 × max_body
//!         ..CompareRules::default()
//!     },
//!     gate: Some(ShadowGate { min_comparisons: 500, max_mismatch_rate: 0.005 }),
//!     ..VerifyConfig::default()
//! };
//! let payroll = verifiers.prepare("payroll", &config)?; // held by the runtime snapshot
//! verifiers.commit([payroll.clone()]);
//!
//! // Per shadowed request, in the shadow task after both answers are collected.
//! let request = RequestInfo::new("req-1", Method::GET, "/payroll/7", None, HeaderMap::new());
//! let json = |body: &'static str| {
//!     let mut headers = HeaderMap::new();
//!     headers.insert("content-type", "application/json".parse().unwrap());
//!     Observed::new(StatusCode::OK, headers, Bytes::from_static(body.as_bytes()),
//!                   Duration::from_millis(12))
//! };
//! let primary = json(r#"{"id":7,"net":"1000.50","generated_at":1}"#);
//! let candidate = json(r#"{"generated_at":2,"net":"1000.5","id":7}"#);
//! let judgement = payroll.judge(&request, &primary, &candidate);
//! assert_eq!(judgement.outcome, Outcome::Mismatch); // "1000.50" vs "1000.5" are strings
//! // metrics: strangler_shadow_comparisons_total{route, outcome = judgement.outcome.as_str()}
//! if let Some(record) = &judgement.record {
//!     let _line: String = record.to_json_line(); // append to --diff-log
//! }
//!
//! // Noise sample: the same request sent again to the baseline.
//! let baseline = json(r#"{"id":7,"net":"1000.50","generated_at":3}"#);
//! payroll.learn(&primary, &baseline);
//!
//! // Failures and skips.
//! payroll.candidate_failed(&request, &primary, &CandidateFailure {
//!     kind: CandidateErrorKind::Timeout,
//!     latency: Duration::from_secs(5),
//!     message: "no answer within 5s".into(),
//! });
//! payroll.dropped(DropReason::MaxInFlight);
//!
//! // Admin API.
//! let _diffs = serde_json::to_string(&verifiers.summary())?;          // GET /diffs
//! let one = verifiers.get("payroll").expect("registered");
//! let _route = serde_json::to_string(&one.report())?;                 // GET /diffs/payroll
//! let _csv = one.to_csv();                                            // ?format=csv
//! assert_eq!(one.summary().counts.candidate_error, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Comparing is CPU work proportional to the body sizes (about a millisecond per 100 KiB
//! of JSON, see `benches/benches/compare.rs`): run it in the shadow task, never on the
//! primary's response path, and consider `spawn_blocking` for routes with large bodies.

mod compare;
mod decode;
pub(crate) use decode::{Decoded, decode};
mod diff;
mod export;
mod gate;
mod json;
mod noise;
mod outcome;
mod pointer;
mod records;
mod route;
mod rules;
mod stats;
mod store;

#[cfg(test)]
mod properties;

pub use compare::{
    BodyComparison, Difference, DifferenceKind, Incomparable, Location, Observed, Verdict, compare,
};
pub use diff::{MAX_DIFFERENCES, MAX_VALUE_PREVIEW};
pub use export::{CSV_COLUMNS, rfc3339_millis, to_csv};
pub use gate::{GateReport, GateState, ShadowGate};
pub use noise::{LearnedNoise, MAX_NOISE_FIELDS, NoiseField, NoiseModel};
pub use outcome::{CandidateErrorKind, CandidateFailure, DropReason, Outcome};
pub use pointer::{JsonPointer, PatternError, PointerPattern, Segment};
pub use records::{MAX_RECORDED_DIFFERENCES, MismatchRecord, RequestInfo, redact_query};
pub use route::{
    DiffsSummary, Judgement, RouteReport, RouteSummary, RouteVerifier, Verifiers, VerifyConfig,
};
pub use rules::{
    CompareRules, CompiledRules, DEFAULT_IGNORED_HEADERS, DEFAULT_MAX_DECODED_BODY,
    DEFAULT_REDACTED_HEADERS, DEFAULT_REDACTED_QUERY, REDACTED, RulesError,
};
pub use stats::{LatencyHistogram, LatencySummary, RoleStats, RoleSummary, RouteStats};
pub use store::{Counts, DEFAULT_RECORDS, DiffStore};

/// The body re-serialized the way differences show JSON values — compact, object keys
/// sorted, numbers as written — or `None` if the body is not exactly one JSON value
/// (see [`compare`] for what counts as JSON). Useful to display bodies and in tests.
pub fn json_compact(body: &[u8]) -> Option<String> {
    let value = json::Json::parse(body)?;
    let mut out = String::with_capacity(body.len());
    json::write_compact(&value, &mut out);
    Some(out)
}
