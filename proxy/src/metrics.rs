//! Prometheus metrics on one explicit registry, with label handles resolved off the hot path.

mod hook_runs;
mod retired;

pub use hook_runs::HookRuns;
use hook_runs::hook_label;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use retired::Retired;
use strangler_routes::{Action, Route, RouteTable};

use crate::verify::CandidateErrorKind;

/// The `kind` values of `strangler_upstream_errors_total` for a failed exchange.
const UPSTREAM_ERROR_KINDS: [&str; 3] = ["connect", "timeout", "broken"];

/// Latency buckets in seconds: 0.5 ms to 30 s, dense where proxies live.
const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// Every metric of the design, registered once at start-up.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_errors: IntCounterVec,
    reloads: IntCounterVec,
    config_info: IntGaugeVec,
    inflight: IntGauge,
    shadow_comparisons: IntCounterVec,
    shadow_duration: HistogramVec,
    shadow_gate: IntGaugeVec,
    canary_rollbacks: IntCounterVec,
    fallbacks: IntCounterVec,
    fallbacks_skipped: IntCounterVec,
    hook_runs: Arc<HookRuns>,
    /// Routes a reload took out of the table (see [`Retired`]).
    retired: Arc<Retired>,
}

/// Why the metrics could not be set up (a programming error: duplicate or invalid names).
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// Create and register every metric.
    ///
    /// # Errors
    /// [`MetricsError`] if a metric cannot be registered.
    pub fn new() -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "strangler_requests_total",
                "Requests answered, by route, upstream and status code.",
            ),
            &["route", "upstream", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "strangler_request_duration_seconds",
                "Time from request head to the end of the response body, by route and upstream.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "upstream"],
        )?;
        let upstream_errors = IntCounterVec::new(
            Opts::new(
                "strangler_upstream_errors_total",
                "Failed upstream exchanges, by upstream and kind.",
            ),
            &["upstream", "kind"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "strangler_config_reloads_total",
                "Route file reloads, by result (success or failure).",
            ),
            &["result"],
        )?;
        let config_info = IntGaugeVec::new(
            Opts::new(
                "strangler_config_info",
                "1 for the version (sha256) of the route file serving now.",
            ),
            &["version"],
        )?;
        let inflight = IntGauge::new(
            "strangler_inflight_requests",
            "Requests being served right now.",
        )?;
        let shadow_comparisons = IntCounterVec::new(
            Opts::new(
                "strangler_shadow_comparisons_total",
                "Shadowed requests by route and outcome (match, mismatch, noise, candidate_error, dropped).",
            ),
            &["route", "outcome"],
        )?;
        let shadow_duration = HistogramVec::new(
            HistogramOpts::new(
                "strangler_shadow_duration_seconds",
                "Latency of each side of a shadowed request (primary, candidate, baseline).",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "role"],
        )?;
        let shadow_gate = IntGaugeVec::new(
            Opts::new(
                "strangler_shadow_gate",
                "1 for the current state of a shadow route's promotion gate (inconclusive, passing, failing).",
            ),
            &["route", "state"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(config_info.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(shadow_comparisons.clone()))?;
        registry.register(Box::new(shadow_duration.clone()))?;
        registry.register(Box::new(shadow_gate.clone()))?;
        let canary_rollbacks = IntCounterVec::new(
            Opts::new(
                "strangler_canary_rollbacks_total",
                "Automatic rollbacks of canary routes by a failing gate.",
            ),
            &["route"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "strangler_fallbacks_total",
                "Requests replayed to a route's fallback upstream.",
            ),
            &["route"],
        )?;
        let fallbacks_skipped = IntCounterVec::new(
            Opts::new(
                "strangler_fallbacks_skipped_total",
                "Requests of fallback routes sent without a fallback, by reason.",
            ),
            &["route", "reason"],
        )?;
        registry.register(Box::new(canary_rollbacks.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(fallbacks_skipped.clone()))?;
        let hook_runs = IntCounterVec::new(
            Opts::new(
                "strangler_hook_runs_total",
                "Lua hook runs by script, phase and result (ok, error, timeout, dropped).",
            ),
            &["hook", "phase", "result"],
        )?;
        registry.register(Box::new(hook_runs.clone()))?;
        let hook_runs = Arc::new(HookRuns::new(hook_runs));
        for result in ["success", "failure"] {
            reloads.with_label_values(&[result]);
        }
        Ok(Self {
            registry,
            requests,
            duration,
            upstream_errors,
            reloads,
            config_info,
            inflight,
            shadow_comparisons,
            shadow_duration,
            shadow_gate,
            canary_rollbacks,
            fallbacks,
            fallbacks_skipped,
            hook_runs,
            retired: Arc::default(),
        })
    }

    /// `strangler_hook_runs_total`, the hook engine's observer.
    pub fn hook_runs(&self) -> Arc<HookRuns> {
        Arc::clone(&self.hook_runs)
    }

    /// Count an automatic rollback of `route` (not counted for a route a reload removed).
    pub fn canary_rollback(&self, route: &str) {
        let counter = self
            .retired
            .unless_retired(route, || self.canary_rollbacks.with_label_values(&[route]));
        if let Some(counter) = counter {
            counter.inc();
        }
    }

    /// Pre-resolved fallback counters of one route; call when building a runtime.
    pub fn fallback(&self, route: &str) -> FallbackMetrics {
        FallbackMetrics {
            fallbacks: self.fallbacks.with_label_values(&[route]),
            skipped_body: self
                .fallbacks_skipped
                .with_label_values(&[route, "body_too_large"]),
        }
    }

    /// Pre-resolved handles for one shadowed route; call when building a runtime.
    pub fn shadow(&self, route: &str, candidate: &str) -> ShadowMetrics {
        let outcome = |label: &str| self.shadow_comparisons.with_label_values(&[route, label]);
        let role = |label: &str| self.shadow_duration.with_label_values(&[route, label]);
        ShadowMetrics {
            candidate_errors: UPSTREAM_ERROR_KINDS
                .map(|kind| self.upstream_errors.with_label_values(&[candidate, kind])),
            matched: outcome("match"),
            mismatch: outcome("mismatch"),
            noise: outcome("noise"),
            candidate_error: outcome("candidate_error"),
            dropped: outcome("dropped"),
            primary: role("primary"),
            candidate: role("candidate"),
            baseline: role("baseline"),
            gate: ["inconclusive", "passing", "failing"]
                .map(|state| self.shadow_gate.with_label_values(&[route, state])),
        }
    }

    /// The handles for one (route, upstream) pair, resolved once per table, not per request.
    /// For a route a reload removed they count nothing (see [`Metrics::forget_route`]).
    pub fn pair(&self, route: &str, upstream: &str) -> PairMetrics {
        PairMetrics {
            route: route.to_string(),
            upstream: upstream.to_string(),
            requests: self.requests.clone(),
            duration: self.retired.unless_retired(route, || {
                self.duration.with_label_values(&[route, upstream])
            }),
            codes: OnceLock::new(),
            retired: Arc::clone(&self.retired),
        }
    }

    /// Count a failed upstream exchange (error path only, so the label lookup is fine here).
    pub fn upstream_error(&self, upstream: &str, kind: &str) {
        self.upstream_errors
            .with_label_values(&[upstream, kind])
            .inc();
    }

    /// Count a reload and, on success, publish the new version.
    pub fn reloaded(&self, ok: bool, version: &str) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
        if ok {
            self.set_version(version);
        }
    }

    /// Publish `version` as the one serving (the only `strangler_config_info` series).
    pub fn set_version(&self, version: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[version]).set(1);
    }

    /// Start timing a request; the returned guard records it when dropped.
    pub fn start(&self) -> InFlight {
        self.inflight.inc();
        InFlight {
            gauge: self.inflight.clone(),
        }
    }

    /// Call before `table` serves: the routes and hook scripts it has that a reload removed
    /// earlier count again.
    pub fn serve(&self, table: &RouteTable) {
        self.retired
            .serve(table.routes().iter().map(|route| route.name.as_str()));
        self.hook_runs
            .serve(hook_labels(table).iter().map(String::as_str));
        // Every upstream's error series exist from the start, at zero: `rate()` and alerts
        // on them work before the first failure instead of seeing no series at all.
        for upstream in table.upstreams() {
            for kind in UPSTREAM_ERROR_KINDS {
                self.upstream_errors
                    .with_label_values(&[upstream.name.as_str(), kind]);
            }
        }
    }

    /// Call once `new` serves instead of `old`: the series of the routes, upstreams and hook
    /// scripts `old` had and `new` has not leave `/metrics`, and so do the parallel-run series of
    /// routes no longer shadowed (promoted, say): a gate gauge left at `failing` would keep
    /// an alert firing for a comparison that has ended.
    pub fn forget_removed(&self, old: &RouteTable, new: &RouteTable) {
        for gone in old
            .upstreams()
            .iter()
            .filter(|u| !new.upstreams().iter().any(|kept| kept.name == u.name))
        {
            forget(&self.upstream_errors, "upstream", &gone.name);
        }
        let shadowed = |route: &Route| matches!(route.action, Action::Shadow(_));
        for route in old.routes() {
            match new.route(&route.name) {
                None => self.forget_route(&route.name),
                Some(now) if shadowed(route) && !shadowed(now) => {
                    forget(&self.shadow_comparisons, "route", &route.name);
                    forget(&self.shadow_duration, "route", &route.name);
                    forget(&self.shadow_gate, "route", &route.name);
                }
                Some(_) => {}
            }
        }
        for gone in hook_labels(old).difference(&hook_labels(new)) {
            self.hook_runs.forget(gone);
        }
    }

    /// Drop every series labelled with `route`, a route the table no longer has: graphs,
    /// alerts and the dashboard stop showing it (its counters start from zero should it
    /// come back, which `rate()` reads as a reset). Requests still in flight on it count
    /// nothing from now on, so that they do not bring its series back, until
    /// [`Metrics::serve`] gets a table that has it again.
    fn forget_route(&self, route: &str) {
        self.retired.retire(route, || {
            forget(&self.requests, "route", route);
            forget(&self.duration, "route", route);
            forget(&self.shadow_comparisons, "route", route);
            forget(&self.shadow_duration, "route", route);
            forget(&self.shadow_gate, "route", route);
            forget(&self.canary_rollbacks, "route", route);
            forget(&self.fallbacks, "route", route);
            forget(&self.fallbacks_skipped, "route", route);
        });
    }

    /// Requests answered so far (`strangler_requests_total` summed over status codes), by
    /// route name and then upstream name: what the dashboard's traffic figures are made of.
    pub fn answered(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let mut answered: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        for family in self.requests.collect() {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|pair| pair.name() == name)
                        .map(|pair| pair.value().to_string())
                };
                let (Some(route), Some(upstream)) = (label("route"), label("upstream")) else {
                    continue;
                };
                // Counter values are whole numbers kept as f64.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let count = metric.get_counter().get_value() as u64;
                *answered
                    .entry(route)
                    .or_default()
                    .entry(upstream)
                    .or_default() += count;
            }
        }
        answered
    }

    /// The registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "cannot encode metrics");
        }
        out
    }
}

/// The `hook` labels of the scripts `table`'s routes run.
fn hook_labels(table: &RouteTable) -> BTreeSet<String> {
    table
        .routes()
        .iter()
        .flat_map(|route| &route.hooks)
        .map(|hook| hook_label(&hook.script).into_owned())
        .collect()
}

/// Remove the series of `family` whose `label` is `value`.
fn forget<T: MetricVecBuilder>(family: &MetricVec<T>, label: &str, value: &str) {
    for collected in family.collect() {
        for metric in collected.get_metric() {
            let labels = metric.get_label();
            if labels
                .iter()
                .any(|pair| pair.name() == label && pair.value() == value)
            {
                let by_name: HashMap<&str, &str> = labels
                    .iter()
                    .map(|pair| (pair.name(), pair.value()))
                    .collect();
                let _ = family.remove(&by_name);
            }
        }
    }
}

/// Counts one in-flight request until dropped.
pub struct InFlight {
    gauge: IntGauge,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Pre-resolved metric handles of one (route, upstream) pair.
///
/// The histogram child is resolved up front; a counter per status code is resolved the
/// first time that code is seen and then reused, so a request costs no label hashing.
/// Neither is resolved for a route a reload removed (none: nothing is counted).
pub struct PairMetrics {
    route: String,
    upstream: String,
    requests: IntCounterVec,
    duration: Option<Histogram>,
    codes: OnceLock<Box<[OnceLock<IntCounter>]>>,
    retired: Arc<Retired>,
}

impl PairMetrics {
    /// Count an answer with `status` and record how long the exchange took since `started`.
    pub fn observe(&self, status: u16, started: Instant) {
        if let Some(counter) = self.counter(status) {
            counter.inc();
        }
        if let Some(duration) = &self.duration {
            duration.observe(started.elapsed().as_secs_f64());
        }
    }

    fn counter(&self, status: u16) -> Option<&IntCounter> {
        let codes = self
            .codes
            .get_or_init(|| (100..600).map(|_| OnceLock::new()).collect());
        let slot = &codes[usize::from(status.clamp(100, 599) - 100)];
        if let Some(counter) = slot.get() {
            return Some(counter);
        }
        let counter = self.retired.unless_retired(&self.route, || {
            self.requests
                .with_label_values(&[&self.route, &self.upstream, &status.to_string()])
        })?;
        Some(slot.get_or_init(|| counter))
    }
}

/// Handles for `strangler_shadow_*` of one route, resolved once per runtime.
#[derive(Clone)]
pub struct ShadowMetrics {
    /// `outcome="match"`.
    pub matched: IntCounter,
    /// `outcome="mismatch"`.
    pub mismatch: IntCounter,
    /// `outcome="noise"`.
    pub noise: IntCounter,
    /// `outcome="candidate_error"`.
    pub candidate_error: IntCounter,
    /// `outcome="dropped"`.
    pub dropped: IntCounter,
    /// `role="primary"`.
    pub primary: Histogram,
    /// `role="candidate"`.
    pub candidate: Histogram,
    /// `role="baseline"`.
    pub baseline: Histogram,
    /// `strangler_shadow_gate{state}` for inconclusive, passing, failing.
    gate: [IntGauge; 3],
    /// `strangler_upstream_errors_total{upstream=<candidate>}` for connect, timeout, broken.
    candidate_errors: [IntCounter; 3],
}

impl ShadowMetrics {
    /// Publish the gate's current state (1 for it, 0 for the others).
    pub fn gate_state(&self, state: &str) {
        for (gauge, name) in self.gate.iter().zip(["inconclusive", "passing", "failing"]) {
            gauge.set(i64::from(name == state));
        }
    }

    /// Count a copy the candidate failed as the candidate's upstream error: a failed
    /// exchange like any other, though no client saw it.
    pub fn candidate_failed(&self, kind: CandidateErrorKind) {
        let [connect, timeout, broken] = &self.candidate_errors;
        match kind {
            CandidateErrorKind::Connect => connect.inc(),
            CandidateErrorKind::Timeout => timeout.inc(),
            CandidateErrorKind::Exchange => broken.inc(),
        }
    }
}

/// Handles for the fallback counters of one route.
#[derive(Clone)]
pub struct FallbackMetrics {
    /// `strangler_fallbacks_total{route}`.
    pub fallbacks: IntCounter,
    /// `strangler_fallbacks_skipped_total{route, reason="body_too_large"}`.
    pub skipped_body: IntCounter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_route_counts_nothing_until_a_table_serves_it_again() {
        let metrics = Metrics::new().unwrap();
        let before_removal = metrics.pair("invoices", "service");
        metrics.forget_route("invoices");
        let after_removal = metrics.pair("invoices", "service");
        for pair in [&before_removal, &after_removal] {
            pair.observe(200, Instant::now());
        }
        metrics.canary_rollback("invoices");
        assert!(
            !metrics.render().contains("invoices"),
            "{}",
            metrics.render()
        );

        metrics.retired.serve(["invoices"]);
        metrics
            .pair("invoices", "service")
            .observe(200, Instant::now());
        metrics.canary_rollback("invoices");
        let text = metrics.render();
        assert!(
            text.contains(
                r#"strangler_requests_total{code="200",route="invoices",upstream="service"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"strangler_canary_rollbacks_total{route="invoices"} 1"#),
            "{text}"
        );
    }
}
