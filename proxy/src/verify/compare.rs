//! Comparing two answers: status, headers, then the body as JSON values or as bytes.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Serialize;

use super::diff::Found;
use super::outcome::{DropReason, Outcome};
use super::pointer::JsonPointer;
use super::rules::CompiledRules;

mod body;
mod headers;

/// One answer as the shadow dispatcher observed it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The response status.
    pub status: StatusCode,
    /// The response headers, as received from the upstream.
    pub headers: HeaderMap,
    /// The response body as received (still content-encoded), at most `max_body` bytes.
    pub body: Bytes,
    /// True when the body was longer than `max_body` and `body` holds only a prefix (or
    /// nothing): such a body cannot be compared.
    pub truncated: bool,
    /// Time from sending the request to having the whole body (measured the same way for
    /// both sides).
    pub latency: Duration,
}

/// The result of comparing two answers: every difference, already redacted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Where the answers differ, in order: status, headers, body; at most
    /// [`MAX_DIFFERENCES`](super::MAX_DIFFERENCES) of them.
    pub differences: Vec<Difference>,
    /// Differences found beyond that cap, counted but not listed.
    pub omitted: usize,
    /// How the bodies were compared.
    pub body: BodyComparison,
    /// Remarks a reader needs, e.g. a body that claimed gzip but could not be decoded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// How the bodies of a pair were compared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BodyComparison {
    /// The bodies were byte-for-byte identical after decoding.
    #[default]
    Identical,
    /// Both bodies are JSON and were compared as values.
    Json,
    /// At least one body is not JSON; they were compared byte for byte.
    Bytes,
    /// An `ignore_json` pattern `""` excludes the whole body.
    Ignored,
    /// The bodies could not be compared; only status and headers were.
    Incomparable(Incomparable),
}

/// Why a pair's bodies could not be compared (a distinct verdict, not a false mismatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Incomparable {
    /// The primary's body was cut at `max_body`.
    PrimaryTruncated,
    /// The candidate's body was cut at `max_body`.
    CandidateTruncated,
    /// The primary's body decodes to more than `max_decoded_body`.
    PrimaryDecodedTooLarge,
    /// The candidate's body decodes to more than `max_decoded_body`.
    CandidateDecodedTooLarge,
}

/// One place where the answers differ, with both values as shown text.
///
/// Values are previews: compact JSON (keys sorted) for JSON locations, the header values
/// joined by `, `, or a window of the body around its first difference; cut at
/// [`MAX_VALUE_PREVIEW`](super::MAX_VALUE_PREVIEW) bytes, redacted per the rules. `None`
/// means absent on that side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Where.
    #[serde(flatten)]
    pub location: Location,
    /// Changed, or present on one side only.
    pub kind: DifferenceKind,
    /// The primary's value, `None` if it has none there.
    pub primary: Option<String>,
    /// The candidate's value, `None` if it has none there.
    pub candidate: Option<String>,
    /// Set by [`NoiseModel::classify`](super::NoiseModel::classify) when this location is
    /// learned noise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub noise: bool,
}

/// Where a difference is. Serializes as `{"part": "json", "path": "/items/0"}` (no `path`
/// for `status` and `body`); displays as `status`, `header:etag`, `json:/items/0`, `body`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "part", content = "path", rename_all = "snake_case")]
pub enum Location {
    /// The status code.
    Status,
    /// A response header (lowercase name).
    Header(String),
    /// A value inside JSON bodies.
    Json(JsonPointer),
    /// A non-JSON body as a whole.
    Body,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DifferenceKind {
    /// Present on both sides with different values (or types).
    Changed,
    /// Present in the primary's answer only.
    Missing,
    /// Present in the candidate's answer only.
    Extra,
}

impl Observed {
    /// A complete answer.
    pub fn new(status: StatusCode, headers: HeaderMap, body: Bytes, latency: Duration) -> Self {
        Self {
            status,
            headers,
            body,
            truncated: false,
            latency,
        }
    }

    /// Mark the body as cut at `max_body`.
    #[must_use]
    pub fn truncated(mut self, truncated: bool) -> Self {
        self.truncated = truncated;
        self
    }
}

impl Verdict {
    /// Why the bodies could not be compared, if they could not.
    pub fn incomparable(&self) -> Option<Incomparable> {
        match self.body {
            BodyComparison::Incomparable(why) => Some(why),
            _ => None,
        }
    }

    /// True when the answers are the same: nothing differs and everything was compared.
    pub fn is_match(&self) -> bool {
        self.differences.is_empty() && self.omitted == 0 && self.incomparable().is_none()
    }

    /// The outcome, counting differences marked `noise` as noise.
    ///
    /// Without marks (no [`NoiseModel`](super::NoiseModel) consulted) any difference is a
    /// mismatch. Differences beyond the listing cap cannot be shown to be noise, so they
    /// make a mismatch. A pair whose bodies are incomparable is
    /// [`Outcome::Dropped`] unless a listed difference already proves a mismatch.
    pub fn outcome(&self) -> Outcome {
        let real = self.omitted > 0 || self.differences.iter().any(|d| !d.noise);
        match (real, self.incomparable()) {
            (true, _) => Outcome::Mismatch,
            (false, Some(_)) => Outcome::Dropped,
            (false, None) if self.differences.is_empty() => Outcome::Match,
            (false, None) => Outcome::Noise,
        }
    }

    /// The drop reason when [`outcome`](Self::outcome) is [`Outcome::Dropped`].
    pub fn drop_reason(&self) -> Option<DropReason> {
        self.incomparable().map(|why| match why {
            Incomparable::PrimaryTruncated | Incomparable::CandidateTruncated => {
                DropReason::ResponseBodyTooLarge
            }
            Incomparable::PrimaryDecodedTooLarge | Incomparable::CandidateDecodedTooLarge => {
                DropReason::DecodedBodyTooLarge
            }
        })
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Status => f.write_str("status"),
            Location::Header(name) => write!(f, "header:{name}"),
            Location::Json(pointer) => write!(f, "json:{pointer}"),
            Location::Body => f.write_str("body"),
        }
    }
}

impl Location {
    /// The part label (`status`, `header`, `json`, `body`).
    pub fn part(&self) -> &'static str {
        match self {
            Location::Status => "status",
            Location::Header(_) => "header",
            Location::Json(_) => "json",
            Location::Body => "body",
        }
    }

    /// The header name or JSON pointer; empty for `status` and `body`.
    pub fn path(&self) -> String {
        match self {
            Location::Header(name) => name.clone(),
            Location::Json(pointer) => pointer.to_string(),
            Location::Status | Location::Body => String::new(),
        }
    }
}

impl DifferenceKind {
    /// The label (`changed`, `missing`, `extra`).
    pub fn as_str(self) -> &'static str {
        match self {
            DifferenceKind::Changed => "changed",
            DifferenceKind::Missing => "missing",
            DifferenceKind::Extra => "extra",
        }
    }
}

/// Compare the candidate's answer with the primary's (the source of truth).
///
/// Status first, then headers except ignored ones (values of a repeated header compared as
/// a multiset; `content-type` case- and space-insensitively), then bodies: content codings
/// undone (bounded by the rules' `max_decoded_body`; an undecodable body is compared as
/// the raw bytes, with a note), then as JSON values when both sides are JSON (JSON
/// content type, or a body that starts like an object or array, and parses), otherwise
/// byte for byte. A truncated body makes the bodies [`Incomparable`]. Pure and
/// synchronous: CPU time grows with the body sizes (see the `compare` benchmark).
pub fn compare(rules: &CompiledRules, primary: &Observed, candidate: &Observed) -> Verdict {
    let mut found = Found::default();
    if primary.status != candidate.status {
        found.push(Difference {
            location: Location::Status,
            kind: DifferenceKind::Changed,
            primary: Some(primary.status.as_u16().to_string()),
            candidate: Some(candidate.status.as_u16().to_string()),
            noise: false,
        });
    }
    headers::compare_headers(rules, &primary.headers, &candidate.headers, &mut found);
    let mut notes = Vec::new();
    let body = body::compare_bodies(rules, primary, candidate, &mut found, &mut notes);
    Verdict {
        differences: found.list,
        omitted: found.omitted,
        body,
        notes,
    }
}

#[cfg(test)]
mod tests;
