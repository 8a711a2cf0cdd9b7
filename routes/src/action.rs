//! What a matched route does: the closed set of actions and the settings of each strategy.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

use crate::table::UpstreamId;

/// What a route does with a request: exactly one of the route file's `to`, `respond`,
/// `shadow` and `canary`.
///
/// A route's [`Rewrite`](crate::Rewrite) describes the *new service's* paths: it applies to
/// the `to` upstream, to the shadow `candidate`, and to every canary side except the
/// [`Canary::baseline`]; never to a shadow `primary`, a noise baseline or a rollback.
#[derive(Clone, Debug)]
pub enum Action {
    /// Forward to an upstream (`to:`).
    Forward(UpstreamId),
    /// Answer directly (`respond:`).
    Respond(Respond),
    /// Parallel run (`shadow:`): the primary answers, the candidate gets a compared copy.
    Shadow(Shadow),
    /// Weighted split between upstreams (`canary:`), optionally sticky and gated.
    Canary(Canary),
}

/// A fixed answer (`respond:`).
#[derive(Clone, Debug)]
pub struct Respond {
    /// Status code (200–599: a final status).
    pub status: StatusCode,
    /// Body, sent as is (default empty).
    pub body: String,
    /// Extra response headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// `shadow:`: the primary (source of truth) answers the client; a copy of the request goes
/// to the candidate and both answers are compared. The candidate's answer is never
/// returned, and the primary exchange is never altered or delayed by shadowing.
#[derive(Clone, Debug, PartialEq)]
pub struct Shadow {
    /// The upstream that answers the client (`primary`, required).
    pub primary: UpstreamId,
    /// The upstream that receives the copy (`candidate`, required, different from
    /// `primary`). The route's `rewrite` applies to this side only.
    pub candidate: UpstreamId,
    /// Fraction of matching requests that are copied, in `0.0..=1.0` (`sample: 5%`;
    /// default `1.0`).
    pub sample: f64,
    /// Whether methods other than GET, HEAD and OPTIONS are copied too
    /// (`unsafe_methods`; default `false`, because a parallel run must not double side
    /// effects).
    pub unsafe_methods: bool,
    /// Most shadow copies in flight for this route; above it a copy is skipped and
    /// counted (`max_in_flight`; default 256, always > 0).
    pub max_in_flight: usize,
    /// Deadline for the candidate's whole answer (`timeout`; default 5 s, > 0).
    pub timeout: Duration,
    /// Most bytes kept per side (request copy, each response body) for comparison;
    /// above it the comparison is skipped and counted (`max_body`; default 1 MiB).
    pub max_body: u64,
    /// How the two answers are compared (`compare`).
    pub compare: Compare,
    /// When the route counts as ready to promote (`gate`); reporting only.
    pub gate: Option<ShadowGate>,
}

/// `shadow.compare`: what to ignore and what to redact when comparing two answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Compare {
    /// Response headers left out of the comparison, lowercase, valid header names
    /// (in addition to the built-in defaults such as `date`).
    pub ignore_headers: Vec<String>,
    /// JSON pointer patterns left out of body comparison, as written: `""` (the whole
    /// document) or starting with `/`, with `~0`/`~1` escapes; a segment `*` matches
    /// any key or index (`/items/*/etag`).
    pub ignore_json: Vec<String>,
    /// Request headers replaced by a placeholder in mismatch records, lowercase (in
    /// addition to `authorization` and `cookie`).
    pub redact_headers: Vec<String>,
    /// JSON pointer patterns (same syntax as `ignore_json`) whose values are replaced by
    /// a placeholder in mismatch records.
    pub redact_json: Vec<String>,
    /// Learning of non-deterministic fields (`noise`), if enabled.
    pub noise: Option<Noise>,
}

/// `shadow.compare.noise`: a sample of safe requests also goes a second time to
/// `baseline`; fields that differ between two answers of the same system are noise.
#[derive(Clone, Debug, PartialEq)]
pub struct Noise {
    /// The upstream asked twice (`baseline`, required; usually the primary). Never
    /// rewritten.
    pub baseline: UpstreamId,
    /// Fraction of shadowed safe requests also sent to the baseline, in `0.0..=1.0`
    /// (`sample`; default `0.05`).
    pub sample: f64,
}

/// `shadow.gate`: when a shadowed route counts as ready to promote.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowGate {
    /// Fewer comparisons than this: inconclusive (`min_comparisons`; default 100).
    pub min_comparisons: u64,
    /// Highest passing mismatch rate, a fraction in `0.0..=1.0` (`max_mismatch_rate:
    /// 0.5%`; required).
    pub max_mismatch_rate: f64,
}

/// `canary:`: each request goes to one side of a weighted split.
#[derive(Clone, Debug, PartialEq)]
pub struct Canary {
    /// Upstreams and their weights, in file order: at least two entries, each upstream at
    /// most once, weights sum to more than zero (a weight may be 0).
    pub split: Vec<(UpstreamId, u32)>,
    /// The "old" side: the route's `rollback_to` when it is part of the split, else the
    /// split's first entry. The route's `rewrite` applies to every other side.
    pub baseline: UpstreamId,
    /// How a client keeps its side across requests (`sticky`), if at all.
    pub sticky: Option<Sticky>,
    /// When to roll the route back automatically (`gate`), if at all.
    pub gate: Option<CanaryGate>,
}

/// `canary.sticky`: what identifies a client, so that it keeps seeing the same side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sticky {
    /// The value of this cookie (`{ cookie: NAME }`).
    Cookie(String),
    /// The value of this request header (`{ header: NAME }`).
    Header(HeaderName),
}

/// `canary.gate`: a failing gate rolls the route back to `rollback_to`.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryGate {
    /// Fewer requests than this on the new side within `window`: inconclusive
    /// (`min_requests`; default 100).
    pub min_requests: u64,
    /// Highest passing error rate of the new side, a fraction (`max_error_rate: 1%`).
    pub max_error_rate: Option<f64>,
    /// Highest passing ratio of the new side's p99 latency to the baseline's
    /// (`max_p99_ratio: 1.5`; > 0).
    pub max_p99_ratio: Option<f64>,
    /// Highest passing p99 latency of the new side (`max_p99: 300ms`).
    pub max_p99: Option<Duration>,
    /// The sliding window the statistics cover (`window`; default 60 s, > 0).
    pub window: Duration,
}

/// One entry of a route's `hooks`, run in list order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hook {
    /// The Lua script, resolved against the route file's directory; it existed when the
    /// table was loaded (and is in [`RouteTable::watched_files`](crate::RouteTable::watched_files)).
    pub script: PathBuf,
    /// What an error in `on_request`/`on_response` does (`on_error`; default
    /// [`OnError::Fail`]).
    pub on_error: OnError,
}

/// `hooks[N].on_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum OnError {
    /// Fail closed: answer 500 (`fail`, the default), because a hook that guards a route
    /// must not silently stop guarding it.
    #[default]
    Fail,
    /// Fail open: log, count and carry on as if the hook were absent (`continue`).
    Continue,
}

impl Action {
    /// Every upstream this action may send a request to, primary side first, without
    /// duplicates.
    pub fn upstreams(&self) -> Vec<UpstreamId> {
        let mut out = Vec::new();
        let mut add = |id: UpstreamId| {
            if !out.contains(&id) {
                out.push(id);
            }
        };
        match self {
            Action::Forward(id) => add(*id),
            Action::Respond(_) => {}
            Action::Shadow(shadow) => {
                add(shadow.primary);
                add(shadow.candidate);
                if let Some(noise) = &shadow.compare.noise {
                    add(noise.baseline);
                }
            }
            Action::Canary(canary) => {
                add(canary.baseline);
                for (id, _) in &canary.split {
                    add(*id);
                }
            }
        }
        out
    }
}
