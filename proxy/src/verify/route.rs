//! Everything one shadowed route judges and remembers, and the registry of routes for `/diffs`.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::SystemTime;

use serde::Serialize;

use super::compare::{self, Observed, Verdict};
use super::gate::{GateReport, ShadowGate};
use super::noise::{LearnedNoise, NoiseModel};
use super::outcome::{CandidateFailure, DropReason, Outcome};
use super::records::{MismatchRecord, RequestInfo};
use super::rules::{CompareRules, CompiledRules, RulesError};
use super::stats::{LatencySummary, RouteStats};
use super::store::{Counts, DEFAULT_RECORDS, DiffStore};

/// A shadowed route's verification settings (`shadow.compare` and `shadow.gate`).
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyConfig {
    /// What to ignore and redact.
    pub rules: CompareRules,
    /// The promotion gate, if the route has one.
    pub gate: Option<ShadowGate>,
    /// How many recent records `/diffs/{route}` keeps; fixed when the route first appears
    /// (a reload keeps the existing store).
    pub records: usize,
}

/// One shadowed route's judge: its compiled rules and gate, plus state (noise model,
/// counters, records, latency figures) that outlives reloads while the route keeps its
/// name. Cheap to clone; `Send + Sync`; every method is synchronous and never blocks for
/// long (short locks, atomics).
#[derive(Debug, Clone)]
pub struct RouteVerifier {
    route: Arc<str>,
    /// The rules as configured, to tell whether a reload changed them.
    configured: Arc<CompareRules>,
    rules: Arc<CompiledRules>,
    gate: Option<ShadowGate>,
    state: Arc<RouteState>,
}

/// The state of a route that survives reloads.
#[derive(Debug)]
struct RouteState {
    noise: NoiseModel,
    store: DiffStore,
    stats: RouteStats,
}

/// What [`RouteVerifier::judge`] concluded about one pair of answers.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The outcome: the label for `strangler_shadow_comparisons_total`.
    pub outcome: Outcome,
    /// For `dropped`: why.
    pub drop_reason: Option<DropReason>,
    /// The full comparison, noise marked; `None` for a `candidate_error` (nothing to compare).
    pub verdict: Option<Verdict>,
    /// The record kept for a `mismatch` or `candidate_error` (already in the route's
    /// store); write [`MismatchRecord::to_json_line`] to the `--diff-log` file.
    pub record: Option<Arc<MismatchRecord>>,
}

/// One route's figures for `GET /diffs`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteSummary {
    /// The route's name.
    pub route: String,
    /// Counts by outcome.
    pub counts: Counts,
    /// `match + noise + mismatch + candidate_error`.
    pub comparisons: u64,
    /// `(mismatch + candidate_error) / comparisons`, `None` before any comparison.
    pub mismatch_rate: Option<f64>,
    /// Primary and candidate latency and error figures.
    pub latency: LatencySummary,
    /// Learned non-deterministic fields.
    pub noise: LearnedNoise,
    /// The gate's state, `None` when the route has no gate.
    pub gate: Option<GateReport>,
    /// Records kept now (at most the store's capacity).
    pub records: usize,
}

/// `GET /diffs/{route}`: the summary and the recent records, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    /// The route's figures.
    pub summary: RouteSummary,
    /// Recent mismatch and candidate-error records, newest first.
    #[serde(serialize_with = "serialize_records")]
    pub records: Vec<Arc<MismatchRecord>>,
}

/// `GET /diffs`: every shadowed route's summary, by route name.
#[derive(Debug, Clone, Serialize)]
pub struct DiffsSummary {
    /// One entry per shadowed route, sorted by name.
    pub routes: Vec<RouteSummary>,
}

/// The shadowed routes of the live configuration, by name: where reloads find the state
/// to carry over and where `/diffs` finds the routes.
#[derive(Debug, Default)]
pub struct Verifiers {
    routes: RwLock<BTreeMap<String, RouteVerifier>>,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            rules: CompareRules::default(),
            gate: None,
            records: DEFAULT_RECORDS,
        }
    }
}

impl RouteVerifier {
    /// A verifier with fresh state.
    ///
    /// # Errors
    /// [`RulesError`] when the compare rules do not compile.
    pub fn new(route: &str, config: &VerifyConfig) -> Result<Self, RulesError> {
        Ok(Self {
            route: Arc::from(route),
            configured: Arc::new(config.rules.clone()),
            rules: Arc::new(config.rules.compile()?),
            gate: config.gate,
            state: Arc::new(RouteState {
                noise: NoiseModel::new(),
                store: DiffStore::new(config.records),
                stats: RouteStats::default(),
            }),
        })
    }

    /// A verifier with new settings and this one's state (reload of the same route), or
    /// with fresh state when the compare rules changed: the outcomes so far were judged by
    /// other rules (a field now ignored counted as a mismatch), and a gate fed with them
    /// would judge the candidate by what no longer applies.
    ///
    /// # Errors
    /// [`RulesError`] when the compare rules do not compile.
    pub fn reconfigured(&self, config: &VerifyConfig) -> Result<Self, RulesError> {
        if *self.configured != config.rules {
            let fresh = Self::new(&self.route, config)?;
            tracing::info!(route = %self.route, "compare rules changed: the comparison starts over");
            return Ok(fresh);
        }
        Ok(Self {
            route: Arc::clone(&self.route),
            configured: Arc::clone(&self.configured),
            rules: Arc::clone(&self.rules),
            gate: config.gate,
            state: Arc::clone(&self.state),
        })
    }

    /// The route's name.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// The compiled rules.
    pub fn rules(&self) -> &CompiledRules {
        &self.rules
    }

    /// The gate settings.
    pub fn gate_settings(&self) -> Option<ShadowGate> {
        self.gate
    }

    /// Judge a pair of answers: compare, classify noise, count the outcome, record the
    /// latencies of both sides, and keep a record for a mismatch.
    pub fn judge(
        &self,
        request: &RequestInfo,
        primary: &Observed,
        candidate: &Observed,
    ) -> Judgement {
        let state = &self.state;
        self.record_primary(primary);
        state
            .stats
            .candidate
            .record_answer(candidate.latency, candidate.status);
        let mut verdict = compare::compare(&self.rules, primary, candidate);
        let outcome = state.noise.classify(&mut verdict);
        let drop_reason = (outcome == Outcome::Dropped)
            .then(|| verdict.drop_reason())
            .flatten();
        match drop_reason {
            Some(reason) => state.store.count_drop(reason),
            None => state.store.count(outcome),
        }
        let record = (outcome == Outcome::Mismatch).then(|| {
            self.keep(MismatchRecord::mismatch(
                &self.route,
                &self.rules,
                request,
                primary,
                candidate,
                &verdict,
                SystemTime::now(),
            ))
        });
        Judgement {
            outcome,
            drop_reason,
            verdict: Some(verdict),
            record,
        }
    }

    /// The candidate gave no answer (refused, failed, timed out): count a
    /// `candidate_error`, record both sides' figures, keep a record.
    pub fn candidate_failed(
        &self,
        request: &RequestInfo,
        primary: &Observed,
        failure: &CandidateFailure,
    ) -> Judgement {
        let state = &self.state;
        self.record_primary(primary);
        state
            .stats
            .candidate
            .record_failure(failure.latency, failure.kind);
        state.store.count_candidate_error(failure.kind);
        let record = self.keep(MismatchRecord::candidate_error(
            &self.route,
            &self.rules,
            request,
            primary,
            failure,
            SystemTime::now(),
        ));
        Judgement {
            outcome: Outcome::CandidateError,
            drop_reason: None,
            verdict: None,
            record: Some(record),
        }
    }

    /// The primary's side of a comparison, counted whatever the candidate did.
    fn record_primary(&self, primary: &Observed) {
        self.state
            .stats
            .primary
            .record_answer(primary.latency, primary.status);
    }

    /// Keep `record` among the route's recent records.
    fn keep(&self, record: MismatchRecord) -> Arc<MismatchRecord> {
        let record = Arc::new(record);
        self.state.store.push(Arc::clone(&record));
        record
    }

    /// A shadow that was skipped before there was a pair to compare (over
    /// `max_in_flight`, request body over `max_body`, primary failed, shutdown).
    pub fn dropped(&self, reason: DropReason) {
        self.state.store.count_drop(reason);
    }

    /// Learn noise from the primary's answer and the baseline's answer to the same
    /// request (see [`NoiseModel::learn`]); returns how many fields were new.
    pub fn learn(&self, primary: &Observed, baseline: &Observed) -> usize {
        self.state.noise.learn(&self.rules, primary, baseline)
    }

    /// The noise model.
    pub fn noise(&self) -> &NoiseModel {
        &self.state.noise
    }

    /// The counters and records.
    pub fn store(&self) -> &DiffStore {
        &self.state.store
    }

    /// The latency and error figures.
    pub fn stats(&self) -> &RouteStats {
        &self.state.stats
    }

    /// The gate's state now, `None` when the route has no gate.
    pub fn gate(&self) -> Option<GateReport> {
        self.gate
            .map(|gate| gate.evaluate(&self.state.store.counts()))
    }

    /// The route's figures for `GET /diffs`.
    pub fn summary(&self) -> RouteSummary {
        let counts = self.state.store.counts();
        RouteSummary {
            route: self.route.to_string(),
            comparisons: counts.comparisons(),
            mismatch_rate: counts.mismatch_rate(),
            gate: self.gate.map(|gate| gate.evaluate(&counts)),
            counts,
            latency: self.state.stats.summary(),
            noise: self.state.noise.learned(),
            records: self.state.store.records().len(),
        }
    }

    /// `GET /diffs/{route}` as JSON: summary and recent records.
    pub fn report(&self) -> RouteReport {
        RouteReport {
            summary: self.summary(),
            records: self.state.store.records(),
        }
    }

    /// `GET /diffs/{route}?format=csv`.
    pub fn to_csv(&self) -> String {
        self.state.store.to_csv()
    }

    /// Start over: forget counters, records, figures and learned noise (e.g. after
    /// deploying a new candidate version).
    pub fn reset(&self) {
        self.state.store.clear();
        self.state.stats.clear();
        self.state.noise.clear();
    }
}

impl Verifiers {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier for `route` with `config`, sharing the state of the registered verifier
    /// of the same name if there is one. Does not register it: a reload prepares all its
    /// verifiers, swaps the runtime, then [`commit`](Self::commit)s them, so a reload that
    /// fails halfway changes nothing here.
    ///
    /// # Errors
    /// [`RulesError`] when the compare rules do not compile.
    pub fn prepare(&self, route: &str, config: &VerifyConfig) -> Result<RouteVerifier, RulesError> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        match routes.get(route) {
            Some(existing) => existing.reconfigured(config),
            None => RouteVerifier::new(route, config),
        }
    }

    /// Make `verifiers` the registered set: routes not among them are forgotten (their
    /// state with them), the others replace their namesakes.
    pub fn commit(&self, verifiers: impl IntoIterator<Item = RouteVerifier>) {
        let next: BTreeMap<String, RouteVerifier> = verifiers
            .into_iter()
            .map(|verifier| (verifier.route().to_owned(), verifier))
            .collect();
        *self.routes.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// The registered verifier of `route`.
    pub fn get(&self, route: &str) -> Option<RouteVerifier> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(route)
            .cloned()
    }

    /// Names of the registered routes, sorted.
    pub fn routes(&self) -> Vec<String> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// `GET /diffs`.
    pub fn summary(&self) -> DiffsSummary {
        DiffsSummary {
            routes: self
                .registered()
                .iter()
                .map(RouteVerifier::summary)
                .collect(),
        }
    }

    /// Every registered route's report (its `GET /diffs/{route}`), sorted by route name.
    pub fn reports(&self) -> Vec<RouteReport> {
        self.registered()
            .iter()
            .map(RouteVerifier::report)
            .collect()
    }

    /// The registered verifiers, sorted by route name, taken out of the lock so that their
    /// figures are computed without holding it.
    fn registered(&self) -> Vec<RouteVerifier> {
        self.routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Serialize shared records as plain records (without needing serde's `rc` feature).
fn serialize_records<S: serde::Serializer>(
    records: &[Arc<MismatchRecord>],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(records.iter().map(|record| record.as_ref()))
}

#[cfg(test)]
mod tests;
