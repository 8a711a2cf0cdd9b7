//! Sliding-window statistics of a canary's two sides, and the gate that judges them.
//!
//! Recording is lock-free (atomics in time buckets), so every request of a canary route
//! can record without contending with the others; evaluating reads the live buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use strangler_routes::CanaryGate;

use crate::verify::{GateState, LatencyHistogram};

/// Time buckets per window: the window slides in steps of `window / BUCKETS`.
const BUCKETS: usize = 10;

/// Which side of a canary an answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The baseline (old) upstream.
    Old,
    /// Any other upstream of the split (the new service).
    New,
}

/// Request counts, errors and latencies of both sides over the last `window`.
pub struct Window {
    started: Instant,
    bucket_len: Duration,
    buckets: Vec<Bucket>,
}

struct Bucket {
    /// Which slice of time (in `bucket_len` units since `started`) the counts belong to.
    epoch: AtomicU64,
    sides: [SideCounts; 2],
}

struct SideCounts {
    requests: AtomicU64,
    errors: AtomicU64,
    latency: LatencyHistogram,
}

/// Figures of one side over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SideFigures {
    /// Answers counted.
    pub requests: u64,
    /// Of which errors (5xx or no answer).
    pub errors: u64,
    /// 99th percentile latency in milliseconds (within ~3 %), if any.
    pub p99_ms: Option<f64>,
}

/// A canary gate's verdict with the figures behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryReport {
    /// The state.
    pub state: GateState,
    /// One human sentence saying why.
    pub reason: String,
    /// The baseline side's figures.
    pub old: SideFigures,
    /// The new side's figures.
    pub new: SideFigures,
}

impl Window {
    /// An empty window covering `window` of time.
    pub fn new(window: Duration) -> Self {
        let bucket_len = (window / BUCKETS as u32).max(Duration::from_millis(1));
        Self {
            started: Instant::now(),
            bucket_len,
            buckets: (0..BUCKETS).map(|_| Bucket::new()).collect(),
        }
    }

    /// Count one answer of `side`.
    pub fn record(&self, side: Side, error: bool, latency: Duration) {
        let epoch = self.epoch();
        let bucket = &self.buckets[(epoch % BUCKETS as u64) as usize];
        let seen = bucket.epoch.load(Ordering::Acquire);
        if seen != epoch
            && bucket
                .epoch
                .compare_exchange(seen, epoch, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            // This bucket last held a slice that left the window: start it afresh. A
            // concurrent record may land before the reset and be lost, which a gate
            // tolerates (it judges rates over many requests).
            bucket.reset();
        }
        let counts = &bucket.sides[side as usize];
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
        counts.latency.record(latency);
    }

    /// The figures of `side` over the live buckets.
    pub fn figures(&self, side: Side) -> SideFigures {
        let now = self.epoch();
        let live: Vec<&SideCounts> = self
            .buckets
            .iter()
            .filter(|bucket| {
                now.saturating_sub(bucket.epoch.load(Ordering::Acquire)) < BUCKETS as u64
            })
            .map(|bucket| &bucket.sides[side as usize])
            .collect();
        let sum = |field: fn(&SideCounts) -> &AtomicU64| {
            live.iter()
                .map(|counts| field(counts).load(Ordering::Relaxed))
                .sum()
        };
        SideFigures {
            requests: sum(|counts| &counts.requests),
            errors: sum(|counts| &counts.errors),
            p99_ms: LatencyHistogram::quantile_across(
                live.iter().map(|counts| &counts.latency),
                0.99,
            )
            .map(|p99| p99.as_secs_f64() * 1000.0),
        }
    }

    /// Judge the window against `gate`.
    pub fn evaluate(&self, gate: &CanaryGate) -> CanaryReport {
        let old = self.figures(Side::Old);
        let new = self.figures(Side::New);
        let report = |state, reason: String| CanaryReport {
            state,
            reason,
            old,
            new,
        };
        if new.requests < gate.min_requests {
            return report(
                GateState::Inconclusive,
                format!(
                    "{} of {} requests on the new side within the window",
                    new.requests, gate.min_requests
                ),
            );
        }
        let error_rate = new.errors as f64 / new.requests as f64;
        if let Some(max) = gate.max_error_rate
            && error_rate > max
        {
            return report(
                GateState::Failing,
                format!(
                    "error rate {:.2}% above max_error_rate {:.2}%",
                    error_rate * 100.0,
                    max * 100.0
                ),
            );
        }
        if let (Some(max), Some(p99)) = (gate.max_p99, new.p99_ms)
            && p99 > max.as_secs_f64() * 1000.0
        {
            return report(
                GateState::Failing,
                format!("p99 {p99:.1}ms above max_p99 {max:?}"),
            );
        }
        if let (Some(max), Some(new_p99), Some(old_p99)) =
            (gate.max_p99_ratio, new.p99_ms, old.p99_ms)
        {
            let ratio = new_p99 / old_p99;
            if ratio > max {
                return report(
                    GateState::Failing,
                    format!(
                        "p99 {new_p99:.1}ms is {ratio:.2}× the baseline's {old_p99:.1}ms (max_p99_ratio {max})"
                    ),
                );
            }
        }
        report(
            GateState::Passing,
            format!(
                "{} requests on the new side, error rate {:.2}%, within every limit",
                new.requests,
                error_rate * 100.0
            ),
        )
    }

    fn epoch(&self) -> u64 {
        let elapsed = self.started.elapsed().as_nanos();
        u64::try_from(elapsed / self.bucket_len.as_nanos().max(1)).unwrap_or(u64::MAX)
    }
}

impl Bucket {
    fn new() -> Self {
        Self {
            epoch: AtomicU64::new(0),
            sides: [SideCounts::new(), SideCounts::new()],
        }
    }

    fn reset(&self) {
        for side in &self.sides {
            side.requests.store(0, Ordering::Relaxed);
            side.errors.store(0, Ordering::Relaxed);
            side.latency.clear();
        }
    }
}

impl SideCounts {
    fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: LatencyHistogram::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> CanaryGate {
        CanaryGate {
            min_requests: 10,
            max_error_rate: Some(0.05),
            max_p99_ratio: Some(2.0),
            max_p99: None,
            window: Duration::from_secs(60),
        }
    }

    #[test]
    fn too_few_requests_are_inconclusive() {
        let window = Window::new(Duration::from_secs(60));
        for _ in 0..9 {
            window.record(Side::New, true, Duration::from_millis(1));
        }
        assert_eq!(window.evaluate(&gate()).state, GateState::Inconclusive);
    }

    #[test]
    fn errors_above_the_limit_fail_and_healthy_traffic_passes() {
        let window = Window::new(Duration::from_secs(60));
        for i in 0..20 {
            window.record(Side::Old, false, Duration::from_millis(5));
            window.record(Side::New, i == 0, Duration::from_millis(5));
        }
        assert_eq!(
            window.evaluate(&gate()).state,
            GateState::Passing,
            "1 error in 20 is 5%"
        );
        window.record(Side::New, true, Duration::from_millis(5));
        let report = window.evaluate(&gate());
        assert_eq!(report.state, GateState::Failing);
        assert!(report.reason.contains("error rate"), "{}", report.reason);
    }

    #[test]
    fn a_slow_new_side_fails_the_p99_ratio() {
        let window = Window::new(Duration::from_secs(60));
        for _ in 0..50 {
            window.record(Side::Old, false, Duration::from_millis(5));
            window.record(Side::New, false, Duration::from_millis(50));
        }
        let report = window.evaluate(&gate());
        assert_eq!(report.state, GateState::Failing);
        assert!(report.reason.contains("p99"), "{}", report.reason);
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let window = Window::new(Duration::from_millis(10));
        window.record(Side::New, true, Duration::from_millis(1));
        assert_eq!(window.figures(Side::New).requests, 1);
        // Time itself is what this test is about: let the window slide past the record.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(window.figures(Side::New).requests, 0);
    }
}
