//! Mismatch records: what differed, for which request, when — with secrets redacted.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};
use serde::Serialize;

use super::compare::{Difference, Observed, Verdict};
use super::export;
use super::outcome::{CandidateFailure, Outcome};
use super::rules::{CompiledRules, REDACTED};

/// A record lists at most this many differences (the verdict may list up to
/// [`MAX_DIFFERENCES`](super::MAX_DIFFERENCES)); the rest are counted in
/// `omitted_differences`.
pub const MAX_RECORDED_DIFFERENCES: usize = 50;

/// A record shows at most this many request headers.
const MAX_RECORDED_HEADERS: usize = 64;

/// The request a comparison was about, as the shadow dispatcher saw it.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The request id (`X-Request-Id`).
    pub id: String,
    /// The method.
    pub method: Method,
    /// The normalized path that was forwarded.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// The request headers as the client sent them (redacted when recorded).
    pub headers: HeaderMap,
}

/// One recorded `mismatch` or `candidate_error`, ready to serialize for `/diffs/{route}`,
/// CSV or the `--diff-log` file. Every value in it is already redacted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MismatchRecord {
    /// When the comparison finished, RFC 3339 in UTC with milliseconds.
    pub time: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The route's name.
    pub route: String,
    /// `mismatch` or `candidate_error`.
    pub outcome: Outcome,
    /// The request id.
    pub request_id: String,
    /// The request method.
    pub method: String,
    /// The request path.
    pub path: String,
    /// The query string with redacted parameter values.
    pub query: Option<String>,
    /// The request headers, `[redacted]` where the rules say.
    pub request_headers: Vec<(String, String)>,
    /// The primary's status.
    pub primary_status: u16,
    /// The candidate's status; `None` when it gave no answer.
    pub candidate_status: Option<u16>,
    /// The primary's latency in milliseconds.
    pub primary_latency_ms: f64,
    /// The candidate's latency in milliseconds (until failure for a `candidate_error`).
    pub candidate_latency_ms: f64,
    /// Where the answers differ (the first [`MAX_RECORDED_DIFFERENCES`]).
    pub differences: Vec<Difference>,
    /// Differences found but not listed.
    pub omitted_differences: usize,
    /// Remarks from the comparison (undecodable bodies, first differing byte).
    pub notes: Vec<String>,
    /// For a `candidate_error`: the kind and message (`timeout: ...`).
    pub error: Option<String>,
}

impl RequestInfo {
    /// Describe a request from its parts; `query` is the URI's query without `?`.
    pub fn new(
        id: impl Into<String>,
        method: Method,
        path: impl Into<String>,
        query: Option<&str>,
        headers: HeaderMap,
    ) -> Self {
        Self {
            id: id.into(),
            method,
            path: path.into(),
            query: query.map(str::to_owned),
            headers,
        }
    }
}

impl MismatchRecord {
    /// Record a comparison whose outcome is `mismatch` (differences and notes are taken
    /// from `verdict`, whose values the comparison already redacted).
    pub fn mismatch(
        route: &str,
        rules: &CompiledRules,
        request: &RequestInfo,
        primary: &Observed,
        candidate: &Observed,
        verdict: &Verdict,
        time: SystemTime,
    ) -> Self {
        let listed = verdict.differences.len().min(MAX_RECORDED_DIFFERENCES);
        let mut record = Self::base(route, rules, request, primary, time);
        record.outcome = Outcome::Mismatch;
        record.candidate_status = Some(candidate.status.as_u16());
        record.candidate_latency_ms = millis(candidate.latency);
        record.differences = verdict.differences.iter().take(listed).cloned().collect();
        record.omitted_differences = verdict.omitted + (verdict.differences.len() - listed);
        record.notes = verdict.notes.clone();
        record
    }

    /// Record a candidate that gave no answer.
    pub fn candidate_error(
        route: &str,
        rules: &CompiledRules,
        request: &RequestInfo,
        primary: &Observed,
        failure: &CandidateFailure,
        time: SystemTime,
    ) -> Self {
        let mut record = Self::base(route, rules, request, primary, time);
        record.outcome = Outcome::CandidateError;
        record.candidate_latency_ms = millis(failure.latency);
        record.error = Some(format!("{}: {}", failure.kind, failure.message));
        record
    }

    /// The record as one line of JSON, newline included, for the `--diff-log` file.
    pub fn to_json_line(&self) -> String {
        match serde_json::to_string(self) {
            Ok(mut line) => {
                line.push('\n');
                line
            }
            // Plain data with string keys always serializes; never lose the line anyway.
            Err(error) => format!(
                "{{\"route\":{:?},\"error\":{:?}}}\n",
                self.route,
                error.to_string()
            ),
        }
    }

    fn base(
        route: &str,
        rules: &CompiledRules,
        request: &RequestInfo,
        primary: &Observed,
        time: SystemTime,
    ) -> Self {
        let unix_ms = time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            time: export::rfc3339_millis(unix_ms),
            unix_ms,
            route: route.to_owned(),
            outcome: Outcome::Mismatch,
            request_id: request.id.clone(),
            method: request.method.as_str().to_owned(),
            path: request.path.clone(),
            query: request.query.as_deref().map(|q| redact_query(rules, q)),
            request_headers: redact_headers(rules, &request.headers),
            primary_status: primary.status.as_u16(),
            candidate_status: None,
            primary_latency_ms: millis(primary.latency),
            candidate_latency_ms: 0.0,
            differences: Vec::new(),
            omitted_differences: 0,
            notes: Vec::new(),
            error: None,
        }
    }
}

/// `query` with the value of every redacted parameter replaced by `[redacted]`; the rest
/// is kept as sent.
pub fn redact_query(rules: &CompiledRules, query: &str) -> String {
    query
        .split('&')
        .map(|pair| {
            let (raw_key, has_value) = match pair.split_once('=') {
                Some((key, _)) => (key, true),
                None => (pair, false),
            };
            let redacted = form_urlencoded::parse(raw_key.as_bytes())
                .next()
                .is_some_and(|(key, _)| rules.redacts_query_key(&key));
            if redacted && has_value {
                format!("{raw_key}={REDACTED}")
            } else {
                pair.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn redact_headers(rules: &CompiledRules, headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .take(MAX_RECORDED_HEADERS)
        .map(|(name, value)| {
            let shown = if rules.redacts_header(name) {
                REDACTED.to_owned()
            } else {
                let mut text = String::from_utf8_lossy(value.as_bytes()).into_owned();
                super::diff::truncate_at_char(&mut text, super::MAX_VALUE_PREVIEW);
                text
            };
            (name.as_str().to_owned(), shown)
        })
        .collect()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{HeaderValue, StatusCode};

    use super::*;
    use crate::verify::compare::compare;
    use crate::verify::outcome::CandidateErrorKind;
    use crate::verify::rules::CompareRules;

    fn rules() -> CompiledRules {
        CompareRules {
            redact_headers: vec!["x-secret".into()],
            redact_json: vec!["/card".into()],
            redact_query: vec!["sig".into()],
            ..CompareRules::default()
        }
        .compile()
        .unwrap()
    }

    fn request() -> RequestInfo {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer hunter2"));
        headers.insert("cookie", HeaderValue::from_static("session=abc"));
        headers.insert("x-secret", HeaderValue::from_static("s3"));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        RequestInfo::new(
            "req-1",
            Method::GET,
            "/payroll/7",
            Some("sig=abc&page=2&access_token=t&flag"),
            headers,
        )
    }

    fn answer(body: &'static str, ms: u64) -> Observed {
        Observed::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from_static(body.as_bytes()),
            Duration::from_millis(ms),
        )
    }

    #[test]
    fn redacts_query_values() {
        let rules = rules();
        assert_eq!(
            redact_query(&rules, "sig=abc&page=2&access_token=t&flag&%73ig=x"),
            "sig=[redacted]&page=2&access_token=[redacted]&flag&%73ig=[redacted]"
        );
    }

    #[test]
    fn mismatch_record_is_redacted_and_complete() {
        let rules = rules();
        let primary = answer(r#"{"card":"4111","n":1}"#, 12);
        let candidate = answer(r#"{"card":"4242","n":2}"#, 30);
        let verdict = compare(&rules, &primary, &candidate);
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = MismatchRecord::mismatch(
            "payroll",
            &rules,
            &request(),
            &primary,
            &candidate,
            &verdict,
            time,
        );
        assert_eq!(record.time, "2023-11-14T22:13:20.123Z");
        assert_eq!(record.outcome, Outcome::Mismatch);
        assert_eq!(
            record.query.as_deref(),
            Some("sig=[redacted]&page=2&access_token=[redacted]&flag")
        );
        let line = record.to_json_line();
        assert!(line.ends_with('\n'));
        for secret in ["hunter2", "session=abc", "s3\"", "4111", "4242"] {
            assert!(!line.contains(secret), "{secret} leaked: {line}");
        }
        assert!(line.contains(r#"["accept","application/json"]"#), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["differences"][0]["path"], "/card");
        assert_eq!(value["differences"][0]["primary"], "[redacted]");
        assert_eq!(value["differences"][1]["path"], "/n");
        assert_eq!(value["differences"][1]["primary"], "1");
        assert_eq!(value["differences"][1]["candidate"], "2");
        assert_eq!(value["primary_latency_ms"], 12.0);
        assert_eq!(value["candidate_latency_ms"], 30.0);
        assert_eq!(value["candidate_status"], 200);
    }

    #[test]
    fn candidate_error_record() {
        let rules = rules();
        let failure = CandidateFailure {
            kind: CandidateErrorKind::Timeout,
            latency: Duration::from_secs(5),
            message: "no answer within 5s".into(),
        };
        let record = MismatchRecord::candidate_error(
            "payroll",
            &rules,
            &request(),
            &answer("{}", 3),
            &failure,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(record.outcome, Outcome::CandidateError);
        assert_eq!(record.candidate_status, None);
        assert_eq!(
            record.error.as_deref(),
            Some("timeout: no answer within 5s")
        );
        assert_eq!(record.time, "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn caps_recorded_differences() {
        let rules = rules();
        let many: Vec<String> = (0..80).map(|i| format!(r#""k{i}":{i}"#)).collect();
        let primary = Observed::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(format!("{{{}}}", many.join(","))),
            Duration::ZERO,
        );
        let candidate = answer("{}", 0);
        let verdict = compare(&rules, &primary, &candidate);
        assert_eq!(verdict.differences.len(), 80);
        let record = MismatchRecord::mismatch(
            "r",
            &rules,
            &request(),
            &primary,
            &candidate,
            &verdict,
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(record.differences.len(), MAX_RECORDED_DIFFERENCES);
        assert_eq!(record.omitted_differences, 30);
    }
}
