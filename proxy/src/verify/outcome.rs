//! The closed sets of labels a comparison ends with: outcomes, drop reasons, candidate errors.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

/// How one shadowed request ended; the `outcome` label of
/// `strangler_shadow_comparisons_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Both answers are the same (after ignore rules).
    Match,
    /// The answers differ somewhere not learned as noise.
    Mismatch,
    /// The answers differ only where the old system itself is non-deterministic.
    Noise,
    /// The candidate gave no answer: refused, failed mid-exchange or timed out.
    CandidateError,
    /// No comparison was made (see [`DropReason`]).
    Dropped,
}

/// Why a shadow comparison was skipped; counted per reason, never queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// `max_in_flight` shadow exchanges were already running.
    MaxInFlight,
    /// The request body was larger than `max_body`, so no complete copy was kept.
    RequestBodyTooLarge,
    /// A response body was larger than `max_body` (an [`Observed`](super::Observed) was
    /// truncated).
    ResponseBodyTooLarge,
    /// A body decoded (gzip/deflate/br) to more than the rules' `max_decoded_body`.
    DecodedBodyTooLarge,
    /// The primary failed, so there is no source of truth to compare with.
    PrimaryError,
    /// The proxy was shutting down or reloading the route away.
    Shutdown,
    /// The CPUs had no time to spare (`--shadow-spare-cpu`): a copy would have taken CPU
    /// from the client traffic.
    NoSpareCpu,
}

/// What kind of failure left the candidate without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CandidateErrorKind {
    /// No answer within the shadow `timeout`.
    Timeout,
    /// No connection could be made (refused, unreachable, TLS handshake).
    Connect,
    /// The exchange failed after connecting (reset, malformed response, body error).
    Exchange,
}

/// A candidate exchange that produced no answer to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateFailure {
    /// The kind of failure.
    pub kind: CandidateErrorKind,
    /// Time from sending the copy until the failure was known.
    pub latency: Duration,
    /// A short description for the record (e.g. the error's display text).
    pub message: String,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Match,
        Outcome::Mismatch,
        Outcome::Noise,
        Outcome::CandidateError,
        Outcome::Dropped,
    ];

    /// The metric label (`match`, `mismatch`, `noise`, `candidate_error`, `dropped`).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Match => "match",
            Outcome::Mismatch => "mismatch",
            Outcome::Noise => "noise",
            Outcome::CandidateError => "candidate_error",
            Outcome::Dropped => "dropped",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DropReason {
    /// Every reason, in label order.
    pub const ALL: [DropReason; 7] = [
        DropReason::MaxInFlight,
        DropReason::RequestBodyTooLarge,
        DropReason::ResponseBodyTooLarge,
        DropReason::DecodedBodyTooLarge,
        DropReason::PrimaryError,
        DropReason::Shutdown,
        DropReason::NoSpareCpu,
    ];

    /// The label (`max_in_flight`, `request_body_too_large`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MaxInFlight => "max_in_flight",
            DropReason::RequestBodyTooLarge => "request_body_too_large",
            DropReason::ResponseBodyTooLarge => "response_body_too_large",
            DropReason::DecodedBodyTooLarge => "decoded_body_too_large",
            DropReason::PrimaryError => "primary_error",
            DropReason::Shutdown => "shutdown",
            DropReason::NoSpareCpu => "no_spare_cpu",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CandidateErrorKind {
    /// Every kind, in label order.
    pub const ALL: [CandidateErrorKind; 3] = [
        CandidateErrorKind::Timeout,
        CandidateErrorKind::Connect,
        CandidateErrorKind::Exchange,
    ];

    /// The label (`timeout`, `connect`, `exchange`).
    pub fn as_str(self) -> &'static str {
        match self {
            CandidateErrorKind::Timeout => "timeout",
            CandidateErrorKind::Connect => "connect",
            CandidateErrorKind::Exchange => "exchange",
        }
    }
}

impl fmt::Display for CandidateErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_match_serde_names() {
        for outcome in Outcome::ALL {
            let json = serde_json::to_string(&outcome).unwrap();
            assert_eq!(json, format!("\"{}\"", outcome.as_str()));
        }
        for reason in DropReason::ALL {
            let json = serde_json::to_string(&reason).unwrap();
            assert_eq!(json, format!("\"{reason}\""));
        }
        for kind in CandidateErrorKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{kind}\""));
        }
    }
}
