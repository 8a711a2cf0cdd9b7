//! The shadow gate: is the candidate ready to promote, judged from the route's counters.

use serde::Serialize;

use super::store::Counts;

/// A route's `shadow.gate`: promote when at least `min_comparisons` were made and at most
/// `max_mismatch_rate` of them failed.
///
/// A comparison is `match`, `noise`, `mismatch` or `candidate_error`; a failed one is a
/// `mismatch` or a `candidate_error` (a candidate that cannot answer is not ready to
/// serve). `noise` is not a failure; `dropped` is not a comparison at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShadowGate {
    /// Comparisons needed before the gate can pass or fail.
    pub min_comparisons: u64,
    /// The highest acceptable share of failed comparisons, as a fraction (`0.5%` is `0.005`).
    pub max_mismatch_rate: f64,
}

/// The three states of a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateState {
    /// Too few comparisons to say.
    Inconclusive,
    /// Enough comparisons, and the mismatch rate is within the limit: ready to promote.
    Passing,
    /// Enough comparisons, and the mismatch rate is above the limit.
    Failing,
}

/// A gate's state with the figures behind it, for `/routes`, `/diffs` and logs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateReport {
    /// The state.
    pub state: GateState,
    /// One human sentence saying why.
    pub reason: String,
    /// Comparisons so far.
    pub comparisons: u64,
    /// Failed comparisons so far (`mismatch + candidate_error`).
    pub failed: u64,
    /// `failed / comparisons`, `None` before any comparison.
    pub mismatch_rate: Option<f64>,
    /// The gate's settings.
    pub min_comparisons: u64,
    /// The gate's settings.
    pub max_mismatch_rate: f64,
}

impl ShadowGate {
    /// Judge `counts`.
    pub fn evaluate(&self, counts: &Counts) -> GateReport {
        let comparisons = counts.comparisons();
        let failed = counts.failed();
        let rate = counts.mismatch_rate();
        let shown = rate.unwrap_or(0.0);
        let (state, reason) = if comparisons < self.min_comparisons.max(1) {
            (
                GateState::Inconclusive,
                format!(
                    "{comparisons} of {} comparisons needed so far ({failed} failed)",
                    self.min_comparisons.max(1)
                ),
            )
        } else if shown <= self.max_mismatch_rate {
            (
                GateState::Passing,
                format!(
                    "mismatch rate {} over {comparisons} comparisons is within {}",
                    percent(shown),
                    percent(self.max_mismatch_rate)
                ),
            )
        } else {
            (
                GateState::Failing,
                format!(
                    "mismatch rate {} over {comparisons} comparisons exceeds {} \
                     ({} mismatches, {} candidate errors)",
                    percent(shown),
                    percent(self.max_mismatch_rate),
                    counts.mismatch,
                    counts.candidate_error
                ),
            )
        };
        GateReport {
            state,
            reason,
            comparisons,
            failed,
            mismatch_rate: rate,
            min_comparisons: self.min_comparisons,
            max_mismatch_rate: self.max_mismatch_rate,
        }
    }
}

impl GateState {
    /// The label (`inconclusive`, `passing`, `failing`).
    pub fn as_str(self) -> &'static str {
        match self {
            GateState::Inconclusive => "inconclusive",
            GateState::Passing => "passing",
            GateState::Failing => "failing",
        }
    }
}

fn percent(fraction: f64) -> String {
    let text = format!("{:.3}", fraction * 100.0);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        matched: u64,
        noise: u64,
        mismatch: u64,
        candidate_error: u64,
        dropped: u64,
    ) -> Counts {
        Counts {
            matched,
            noise,
            mismatch,
            candidate_error,
            dropped,
            ..Counts::default()
        }
    }

    const GATE: ShadowGate = ShadowGate {
        min_comparisons: 500,
        max_mismatch_rate: 0.005,
    };

    #[test]
    fn inconclusive_until_enough_comparisons() {
        // Drops do not count towards the minimum.
        let report = GATE.evaluate(&counts(400, 50, 0, 0, 10_000));
        assert_eq!(report.state, GateState::Inconclusive);
        assert_eq!(
            report.reason,
            "450 of 500 comparisons needed so far (0 failed)"
        );
        assert_eq!(report.mismatch_rate, Some(0.0));
    }

    #[test]
    fn noise_is_not_a_failure() {
        let report = GATE.evaluate(&counts(100, 900, 5, 0, 0));
        assert_eq!(report.state, GateState::Passing, "{}", report.reason);
        assert_eq!(
            report.reason,
            "mismatch rate 0.498% over 1005 comparisons is within 0.5%"
        );
    }

    #[test]
    fn candidate_errors_are_failures() {
        let report = GATE.evaluate(&counts(995, 0, 3, 3, 0));
        assert_eq!(report.state, GateState::Failing);
        assert_eq!(report.failed, 6);
        assert!(report.reason.contains("exceeds 0.5%"), "{}", report.reason);
        assert!(
            report.reason.contains("3 candidate errors"),
            "{}",
            report.reason
        );
    }

    #[test]
    fn zero_minimum_still_needs_one_comparison() {
        let gate = ShadowGate {
            min_comparisons: 0,
            max_mismatch_rate: 0.0,
        };
        assert_eq!(
            gate.evaluate(&Counts::default()).state,
            GateState::Inconclusive
        );
        assert_eq!(
            gate.evaluate(&counts(1, 0, 0, 0, 0)).state,
            GateState::Passing
        );
        assert_eq!(
            gate.evaluate(&counts(1, 0, 1, 0, 0)).state,
            GateState::Failing
        );
        let json = serde_json::to_value(gate.evaluate(&counts(1, 0, 0, 0, 0))).unwrap();
        assert_eq!(json["state"], "passing");
    }
}
