//! The `shadow` strategy (parallel run): the primary answers the client; a copy of the
//! request goes to the candidate; both answers are compared off the hot path.
//!
//! Invariants, each of which a test guards:
//! - the client's answer is the primary's, streamed as soon as its head arrives; the
//!   candidate never delays it, nor the request body on its way to the primary (the body
//!   streams through a [`Tee`] that keeps a bounded copy);
//! - shadow work is bounded per route (`max_in_flight`, `timeout`, `max_body`); above a
//!   bound it is skipped and counted with its reason, never queued; copies start no faster
//!   than the route's slots free up (see `pace`), so their answers do not come in waves;
//! - no copy starts while the CPUs have no time to spare (see [`crate::cpu`]): it would
//!   take CPU from the client traffic;
//! - only safe methods are shadowed unless the route says `unsafe_methods: true`.

mod pace;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use strangler_routes::{Rewrite, Shadow};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::Exchange;
use super::forward::{self, Origin, copy_head};
use crate::body::{self, BoxBody, CopyError, CopyReceiver, Tee};
use crate::cpu::SpareCpu;
use crate::difflog::DiffLog;
use crate::error::ProxyError;
use crate::metrics::ShadowMetrics;
use crate::pipeline::content_length;
use crate::random;
use crate::upstream::UpstreamPool;
use crate::verify::{
    CandidateErrorKind, CandidateFailure, DropReason, Observed, Outcome, RequestInfo, RouteVerifier,
};
use pace::Pace;

/// `X-Strangler-Shadow: 1` marks every copy, so the new service can tell them apart.
const SHADOW_HEADER: &str = "x-strangler-shadow";

/// How long the comparison waits for the client to finish reading the primary's body.
const PRIMARY_BODY_WAIT: Duration = Duration::from_secs(60);

/// Everything a shadowed route needs at request time, built with each runtime.
pub struct ShadowRoute {
    /// The route's `shadow:` settings.
    pub spec: Shadow,
    /// The judge: rules, noise model, records, statistics, gate (state survives reloads).
    pub verifier: RouteVerifier,
    /// Pre-resolved metric handles.
    pub metrics: ShadowMetrics,
    /// Where mismatch records are appended, if `--diff-log` is set.
    pub diff_log: Option<Arc<DiffLog>>,
    /// Caps concurrent shadow exchanges of this route (`max_in_flight`).
    in_flight: Arc<Semaphore>,
    /// Spreads their starts evenly over the time each holds its slot.
    pace: Arc<Pace>,
    /// Whether the CPUs have time to spare for a copy.
    spare_cpu: Arc<SpareCpu>,
}

impl ShadowRoute {
    /// A shadowed route judged by `verifier`, with `spec.max_in_flight` slots for copies.
    ///
    /// `previous` is the same route in the table being replaced, if it was shadowed there.
    /// With the same `max_in_flight` its slots and pace carry over: copies still in flight
    /// keep counting against the bound, and the pace keeps its hold time, so a reload
    /// neither lets another `max_in_flight` copies in nor starts them in one wave. (A new
    /// `max_in_flight` starts a new bound; the copies under the old one run out.)
    pub fn new(
        spec: Shadow,
        verifier: RouteVerifier,
        metrics: ShadowMetrics,
        diff_log: Option<Arc<DiffLog>>,
        spare_cpu: Arc<SpareCpu>,
        previous: Option<&ShadowRoute>,
    ) -> Self {
        let (in_flight, pace) = match previous {
            Some(old) if old.spec.max_in_flight == spec.max_in_flight => {
                (old.in_flight.clone(), old.pace.clone())
            }
            _ => (
                Arc::new(Semaphore::new(spec.max_in_flight)),
                Arc::new(Pace::new(spec.max_in_flight)),
            ),
        };
        let route = Self {
            in_flight,
            pace,
            spec,
            verifier,
            metrics,
            diff_log,
            spare_cpu,
        };
        // The gate has a state before the first comparison (and after a reload): an alert on
        // `state="inconclusive"` must see a route whose copies are all being dropped.
        route.publish_gate();
        route
    }

    /// Count a shadow that was skipped. (Drops do not move the gate: it judges comparisons.)
    pub(super) fn dropped(&self, reason: DropReason) {
        self.verifier.dropped(reason);
        self.metrics.dropped.inc();
    }

    /// Set `strangler_shadow_gate` to the gate's state now (after a comparison, a reset).
    pub fn publish_gate(&self) {
        if let Some(report) = self.verifier.gate() {
            self.metrics.gate_state(report.state.as_str());
        }
    }
}

/// Serve `request` from the primary while a copy, admitted with `flight`, is judged
/// against the candidate.
///
/// # Errors
/// The primary's [`ProxyError`]; the candidate's failures never reach the client.
pub(super) async fn shadow(
    exchange: &Exchange<'_>,
    route: &Arc<ShadowRoute>,
    rewrite: Option<&Rewrite>,
    request: Request<BoxBody>,
    flight: Flight,
) -> Result<Response<BoxBody>, ProxyError> {
    let spec = &route.spec;
    let runtime = exchange.runtime;
    let primary_pool = runtime.pool(spec.primary).clone();
    let candidate_pool = runtime.pool(spec.candidate).clone();
    let origin = Origin::of(&request);
    let (mut parts, incoming) = request.into_parts();
    let info = RequestInfo::new(
        exchange.request_id.to_str().unwrap_or("-"),
        parts.method.clone(),
        exchange.path.clone(),
        parts.uri.query(),
        parts.headers.clone(),
    );
    // Copies of the head are taken before the primary's is rewritten for its upstream.
    let mut candidate_head = copy_head(&parts);
    forward::prepare(
        exchange,
        &candidate_pool,
        rewrite,
        &origin,
        &mut candidate_head,
    )?;
    candidate_head
        .headers
        .insert(SHADOW_HEADER, HeaderValue::from_static("1"));
    let baseline = match &spec.compare.noise {
        Some(noise) if is_safe(&parts.method) && random::sampled(noise.sample) => {
            let pool = runtime.pool(noise.baseline).clone();
            let mut head = copy_head(&parts);
            forward::prepare(exchange, &pool, None, &origin, &mut head)?;
            head.headers
                .insert(SHADOW_HEADER, HeaderValue::from_static("1"));
            Some((pool, head))
        }
        _ => None,
    };
    forward::prepare(exchange, &primary_pool, None, &origin, &mut parts)?;

    let max_body = usize::try_from(spec.max_body).unwrap_or(usize::MAX);
    let (tee, request_copy) = Tee::new(incoming, max_body);
    let (primary_tx, primary_rx) = oneshot::channel();
    // Boxed: the judge's future is large, and a task moves its future into place at spawn
    // and overwrites it when done; a box makes those copies a pointer's.
    tokio::spawn(Box::pin(judge(Job {
        route: route.clone(),
        info,
        candidate_pool,
        candidate_head,
        baseline,
        request_copy,
        primary: primary_rx,
        max_body,
        _flight: flight,
    })));

    let started = Instant::now();
    let response = primary_pool
        .send(Request::from_parts(
            parts,
            forward::limit(exchange, body::boxed(tee)),
        ))
        .await?;
    let latency = started.elapsed();
    route.metrics.primary.observe(latency.as_secs_f64());
    let (head, body) = response.into_parts();
    let (tee, body_copy) = Tee::new(body, max_body);
    let _ = primary_tx.send(PrimaryHead {
        status: head.status,
        headers: head.headers.clone(),
        latency,
        body: body_copy,
    });
    Ok(forward::clean_response(
        Response::from_parts(head, body::boxed(tee)),
        origin.via,
    ))
}

/// Whether a request gets a shadow copy.
pub(super) enum Admission {
    /// It does, in this slot.
    Shadow(Flight),
    /// Not shadowed; `Some` when that is a drop to count (not a method or sampling choice).
    Skip(Option<DropReason>),
}

/// Whether `request` gets a copy: the method, the sample, the body's size, the route's
/// slots and their pace decide.
pub(super) fn admit<B>(route: &ShadowRoute, request: &Request<B>) -> Admission {
    let spec = &route.spec;
    if !(spec.unsafe_methods || is_safe(request.method())) || !random::sampled(spec.sample) {
        return Admission::Skip(None);
    }
    if content_length(request).is_some_and(|length| length > spec.max_body) {
        return Admission::Skip(Some(DropReason::RequestBodyTooLarge));
    }
    // A copy out of turn would start a burst that comes back as one: it counts as over
    // `max_in_flight`, the rate at which the slots free up.
    if !route.pace.admit() {
        return Admission::Skip(Some(DropReason::MaxInFlight));
    }
    // Asked only for a copy that would start: the drops by this reason are the copies the
    // client traffic needed the CPU for.
    if route.spare_cpu.busy() {
        return Admission::Skip(Some(DropReason::NoSpareCpu));
    }
    match route.in_flight.clone().try_acquire_owned() {
        Ok(permit) => Admission::Shadow(Flight {
            _permit: permit,
            admitted: Instant::now(),
            pace: route.pace.clone(),
        }),
        Err(_) => Admission::Skip(Some(DropReason::MaxInFlight)),
    }
}

/// One copy's slot: released, and its hold time given to the pace, when the copy's work
/// ends whichever way it ends.
pub(super) struct Flight {
    _permit: OwnedSemaphorePermit,
    admitted: Instant,
    pace: Arc<Pace>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.pace.held(self.admitted.elapsed());
    }
}

/// GET, HEAD and OPTIONS: a parallel run must not double side effects.
fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The primary's answer as the comparison needs it.
struct PrimaryHead {
    status: StatusCode,
    headers: HeaderMap,
    latency: Duration,
    body: CopyReceiver,
}

/// One shadow exchange and its comparison, run as its own task.
struct Job {
    route: Arc<ShadowRoute>,
    info: RequestInfo,
    candidate_pool: Arc<UpstreamPool>,
    candidate_head: Parts,
    baseline: Option<(Arc<UpstreamPool>, Parts)>,
    request_copy: CopyReceiver,
    primary: oneshot::Receiver<PrimaryHead>,
    max_body: usize,
    /// Held until the comparison is done: the `max_in_flight` bound covers all of it.
    _flight: Flight,
}

async fn judge(job: Job) {
    let route = &job.route;
    let timeout = route.spec.timeout;
    let request_body = match tokio::time::timeout(timeout, job.request_copy).await {
        Ok(Ok(Ok(body))) => body,
        Ok(Ok(Err(CopyError::TooLarge))) => return route.dropped(DropReason::RequestBodyTooLarge),
        // The client went away or the primary failed before the body was read.
        _ => return route.dropped(DropReason::PrimaryError),
    };
    // The old system's second answer, when this request is sampled for it, is taken at the
    // same time: what differs between its two answers is noise in this very comparison.
    let baseline = async {
        let (pool, head) = job.baseline?;
        call(&pool, head, request_body.clone(), timeout, job.max_body)
            .await
            .ok()
    };
    let (candidate, primary, baseline) = tokio::join!(
        call(
            &job.candidate_pool,
            job.candidate_head,
            request_body.clone(),
            timeout,
            job.max_body
        ),
        primary_observed(job.primary),
        baseline,
    );
    let Some(primary) = primary else {
        return route.dropped(DropReason::PrimaryError);
    };
    if let Some(baseline) = baseline {
        route
            .metrics
            .baseline
            .observe(baseline.latency.as_secs_f64());
        route.verifier.learn(&primary, &baseline);
    }
    let judgement = match candidate {
        Ok(candidate) => {
            route
                .metrics
                .candidate
                .observe(candidate.latency.as_secs_f64());
            route.verifier.judge(&job.info, &primary, &candidate)
        }
        Err(failure) => {
            route
                .metrics
                .candidate
                .observe(failure.latency.as_secs_f64());
            route.metrics.candidate_failed(failure.kind);
            route
                .verifier
                .candidate_failed(&job.info, &primary, &failure)
        }
    };
    let counter = match judgement.outcome {
        Outcome::Match => &route.metrics.matched,
        Outcome::Mismatch => &route.metrics.mismatch,
        Outcome::Noise => &route.metrics.noise,
        Outcome::CandidateError => &route.metrics.candidate_error,
        Outcome::Dropped => &route.metrics.dropped,
    };
    counter.inc();
    if let (Some(record), Some(log)) = (&judgement.record, &route.diff_log) {
        log.append(record.to_json_line());
    }
    route.publish_gate();
}

/// The primary's full answer, once the client has read it (or `None` if it never did).
async fn primary_observed(head: oneshot::Receiver<PrimaryHead>) -> Option<Observed> {
    let head = head.await.ok()?;
    let (body, truncated) = match tokio::time::timeout(PRIMARY_BODY_WAIT, head.body).await {
        Ok(Ok(Ok(body))) => (body, false),
        Ok(Ok(Err(CopyError::TooLarge))) => (Bytes::new(), true),
        _ => return None,
    };
    Some(Observed::new(head.status, head.headers, body, head.latency).truncated(truncated))
}

/// Send one copy of the request and read its answer within `timeout`.
async fn call(
    pool: &UpstreamPool,
    head: Parts,
    body: Bytes,
    timeout: Duration,
    max_body: usize,
) -> Result<Observed, CandidateFailure> {
    let started = Instant::now();
    // Boxed: the exchange's future is large, and the judge's task (built and moved for every
    // copy) holds two of these.
    let exchange = Box::pin(async {
        let response = pool
            .send(Request::from_parts(head, body::full(body)))
            .await
            .map_err(|err| {
                let kind = match err {
                    ProxyError::UpstreamConnect { .. } => CandidateErrorKind::Connect,
                    ProxyError::UpstreamTimeout { .. } => CandidateErrorKind::Timeout,
                    _ => CandidateErrorKind::Exchange,
                };
                (kind, err.to_string())
            })?;
        let latency = started.elapsed();
        let (head, body) = response.into_parts();
        let (body, truncated) = body::collect_bounded(body, max_body)
            .await
            .map_err(|err| (CandidateErrorKind::Exchange, err.to_string()))?;
        Ok(Observed::new(head.status, head.headers, body, latency).truncated(truncated))
    });
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(observed)) => Ok(observed),
        Ok(Err((kind, message))) => Err(CandidateFailure {
            kind,
            latency: started.elapsed(),
            message,
        }),
        Err(_) => Err(CandidateFailure {
            kind: CandidateErrorKind::Timeout,
            latency: started.elapsed(),
            message: format!("no answer within {timeout:?}"),
        }),
    }
}
