//! Sliding-window statistics of a canary's two sides, and the gate that judges them.
//!
//! Recording is lock-free (atomics in time buckets), so every request of a canary route
//! can record without contending with the others; evaluating reads the live buckets.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use strangler_routes::CanaryGate;

use crate::verify::GateState;

/// Time buckets per window: the window slides in steps of `window / BUCKETS`.
const BUCKETS: usize = 10;
/// Latency histogram: bucket `i` holds latencies below `LATENCY_BASE_US * 2^(i/2)`.
const LATENCY_BUCKETS: usize = 48;
const LATENCY_BASE_US: f64 = 100.0;

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
    latency: Vec<AtomicU64>,
}

/// Figures of one side over the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct SideFigures {
    /// Answers counted.
    pub requests: u64,
    /// Of which errors (5xx or no answer).
    pub errors: u64,
    /// 99th percentile latency in milliseconds (upper bound of its bucket), if any.
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
        counts.latency[latency_bucket(latency)].fetch_add(1, Ordering::Relaxed);
    }

    /// The figures of `side` over the live buckets.
    pub fn figures(&self, side: Side) -> SideFigures {
        let now = self.epoch();
        let mut requests = 0;
        let mut errors = 0;
        let mut latency = [0u64; LATENCY_BUCKETS];
        for bucket in &self.buckets {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if now.saturating_sub(epoch) >= BUCKETS as u64 {
                continue;
            }
            let counts = &bucket.sides[side as usize];
            requests += counts.requests.load(Ordering::Relaxed);
            errors += counts.errors.load(Ordering::Relaxed);
            for (sum, count) in latency.iter_mut().zip(&counts.latency) {
                *sum += count.load(Ordering::Relaxed);
            }
        }
        SideFigures {
            requests,
            errors,
            p99_ms: percentile(&latency, 0.99),
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
            for count in &side.latency {
                count.store(0, Ordering::Relaxed);
            }
        }
    }
}

impl SideCounts {
    fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: (0..LATENCY_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// Index of the latency bucket for `latency` (√2 steps from 100 µs; the last is open).
fn latency_bucket(latency: Duration) -> usize {
    let us = latency.as_secs_f64() * 1e6;
    if us <= LATENCY_BASE_US {
        return 0;
    }
    let steps = ((us / LATENCY_BASE_US).log2() * 2.0).ceil();
    (steps as usize).min(LATENCY_BUCKETS - 1)
}

/// Upper bound of bucket `i` in milliseconds.
fn bucket_upper_ms(i: usize) -> f64 {
    LATENCY_BASE_US * 2f64.powf(i as f64 / 2.0) / 1000.0
}

fn percentile(histogram: &[u64; LATENCY_BUCKETS], q: f64) -> Option<f64> {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = (q * total as f64).ceil() as u64;
    let mut seen = 0;
    for (i, count) in histogram.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bucket_upper_ms(i));
        }
    }
    Some(bucket_upper_ms(LATENCY_BUCKETS - 1))
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
    fn latency_buckets_are_ordered_and_bounded() {
        assert_eq!(latency_bucket(Duration::from_micros(50)), 0);
        let a = latency_bucket(Duration::from_millis(5));
        let b = latency_bucket(Duration::from_millis(50));
        assert!(a < b);
        assert!(bucket_upper_ms(a) >= 5.0 && bucket_upper_ms(a) < 7.1);
        assert_eq!(
            latency_bucket(Duration::from_secs(3600)),
            LATENCY_BUCKETS - 1
        );
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
