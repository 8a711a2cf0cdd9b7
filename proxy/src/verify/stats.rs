//! Latency and error figures of primary and candidate, side by side, with lock-free recording.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

use super::outcome::CandidateErrorKind;

/// Sub-buckets per power of two: quantiles are within about 1/32 of the true value.
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Latencies are recorded in microseconds up to 2^40 µs (about 12.7 days), then clamped.
const MAX_EXPONENT: u32 = 40;
const BUCKETS: usize = ((MAX_EXPONENT - SUB_BITS + 2) as usize) * SUB as usize;

/// A log-scale latency histogram on atomics: `record` is a few relaxed increments, no lock.
///
/// Values are microseconds; below 16 µs each value has its own bucket, above that each
/// power of two is split into 16 buckets, so a quantile is off by at most about 3%.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

/// One side (primary or candidate) of a shadowed route.
#[derive(Debug, Default)]
pub struct RoleStats {
    latency: LatencyHistogram,
    answers: AtomicU64,
    server_errors: AtomicU64,
    failures: [AtomicU64; CandidateErrorKind::ALL.len()],
}

/// Primary and candidate figures of one route, from the same shadowed requests.
#[derive(Debug, Default)]
pub struct RouteStats {
    /// The source of truth.
    pub primary: RoleStats,
    /// The new service.
    pub candidate: RoleStats,
}

/// A snapshot of one side, for `GET /diffs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RoleSummary {
    /// Exchanges recorded (answers and failures).
    pub requests: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
    /// Exchanges that failed without an answer (timeouts included).
    pub failures: u64,
    /// Of those, the ones that timed out.
    pub timeouts: u64,
    /// `(server_errors + failures) / requests`, `None` before any request.
    pub error_rate: Option<f64>,
    /// Median latency in milliseconds.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: Option<f64>,
    /// Mean latency in milliseconds.
    pub mean_ms: Option<f64>,
}

/// Both sides of a route, with the candidate's latency as a ratio of the primary's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// The primary's figures.
    pub primary: RoleSummary,
    /// The candidate's figures.
    pub candidate: RoleSummary,
    /// Candidate p50 / primary p50.
    pub p50_ratio: Option<f64>,
    /// Candidate p99 / primary p99.
    pub p99_ratio: Option<f64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (about 5 KiB).
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Count one latency.
    pub fn record(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        if let Some(bucket) = self.buckets.get(bucket_of(micros)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// Latencies recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// The `q` quantile (0.0 ..= 1.0), `None` when empty. Reported as the middle of the
    /// bucket holding it.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        Self::quantile_across([self], q)
    }

    /// The `q` quantile of the samples of several histograms together (e.g. the time
    /// slices of a sliding window), `None` when all are empty.
    pub fn quantile_across<'a>(
        histograms: impl IntoIterator<Item = &'a LatencyHistogram>,
        q: f64,
    ) -> Option<Duration> {
        let mut counts = vec![0u64; BUCKETS];
        for histogram in histograms {
            for (sum, bucket) in counts.iter_mut().zip(histogram.buckets.iter()) {
                *sum += bucket.load(Ordering::Relaxed);
            }
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the q-quantile, 1-based: at least the first sample.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = bounds_of(index);
                return Some(Duration::from_micros(low + (high - low) / 2));
            }
        }
        None
    }

    /// The mean latency, `None` when empty.
    pub fn mean(&self) -> Option<Duration> {
        let count = self.count();
        (count > 0).then(|| Duration::from_micros(self.sum_micros.load(Ordering::Relaxed) / count))
    }

    /// Forget every sample.
    pub fn clear(&self) {
        for bucket in self.buckets.iter() {
            bucket.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
    }
}

impl RoleStats {
    /// Count an answer (any status; 5xx counts as a server error).
    pub fn record_answer(&self, latency: Duration, status: StatusCode) {
        self.latency.record(latency);
        self.answers.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count an exchange that produced no answer; its latency is recorded too (a timeout
    /// is a very slow exchange).
    pub fn record_failure(&self, latency: Duration, kind: CandidateErrorKind) {
        self.latency.record(latency);
        if let Some(counter) = self.failures.get(kind as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The latency histogram.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// A snapshot.
    pub fn summary(&self) -> RoleSummary {
        let failures_by_kind: Vec<u64> = self
            .failures
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let failures: u64 = failures_by_kind.iter().sum();
        let timeouts = failures_by_kind
            .get(CandidateErrorKind::Timeout as usize)
            .copied()
            .unwrap_or(0);
        let server_errors = self.server_errors.load(Ordering::Relaxed);
        let requests = self.answers.load(Ordering::Relaxed) + failures;
        RoleSummary {
            requests,
            server_errors,
            failures,
            timeouts,
            error_rate: (requests > 0).then(|| (server_errors + failures) as f64 / requests as f64),
            p50_ms: self.latency.quantile(0.5).map(millis),
            p99_ms: self.latency.quantile(0.99).map(millis),
            mean_ms: self.latency.mean().map(millis),
        }
    }

    /// Forget every sample.
    pub fn clear(&self) {
        self.latency.clear();
        self.answers.store(0, Ordering::Relaxed);
        self.server_errors.store(0, Ordering::Relaxed);
        for counter in &self.failures {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

impl RouteStats {
    /// A snapshot of both sides.
    pub fn summary(&self) -> LatencySummary {
        let primary = self.primary.summary();
        let candidate = self.candidate.summary();
        let ratio = |c: Option<f64>, p: Option<f64>| match (c, p) {
            (Some(c), Some(p)) if p > 0.0 => Some(c / p),
            _ => None,
        };
        LatencySummary {
            p50_ratio: ratio(candidate.p50_ms, primary.p50_ms),
            p99_ratio: ratio(candidate.p99_ms, primary.p99_ms),
            primary,
            candidate,
        }
    }

    /// Forget every sample.
    pub fn clear(&self) {
        self.primary.clear();
        self.candidate.clear();
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn bucket_of(micros: u64) -> usize {
    let micros = micros.min((1 << (MAX_EXPONENT + 1)) - 1);
    if micros < SUB {
        return micros as usize;
    }
    let exponent = 63 - micros.leading_zeros();
    let mantissa = (micros >> (exponent - SUB_BITS)) & (SUB - 1);
    ((exponent - SUB_BITS + 1) as u64 * SUB + mantissa) as usize
}

/// `[low, high)` of bucket `index`, in microseconds.
fn bounds_of(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index + 1);
    }
    let exponent = (index / SUB) as u32 + SUB_BITS - 1;
    let mantissa = index % SUB;
    let width = 1 << (exponent - SUB_BITS);
    let low = (SUB + mantissa) << (exponent - SUB_BITS);
    (low, low + width)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_their_values() {
        let mut previous_high = 0;
        for index in 0..BUCKETS {
            let (low, high) = bounds_of(index);
            assert_eq!(low, previous_high, "bucket {index}");
            assert!(high > low);
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(high - 1), index);
            previous_high = high;
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_close() {
        let histogram = LatencyHistogram::new();
        assert_eq!(histogram.quantile(0.5), None);
        for ms in 1..=1000 {
            histogram.record(Duration::from_millis(ms));
        }
        let p50 = histogram.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = histogram.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((p50 - 500.0).abs() / 500.0 < 0.04, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 < 0.04, "{p99}");
        assert_eq!(histogram.count(), 1000);
        let mean = histogram.mean().unwrap().as_secs_f64() * 1000.0;
        assert!((mean - 500.5).abs() < 0.01, "{mean}");
        histogram.clear();
        assert_eq!(histogram.count(), 0);
    }

    #[test]
    fn summarizes_errors_and_ratios() {
        let stats = RouteStats::default();
        for _ in 0..9 {
            stats
                .primary
                .record_answer(Duration::from_millis(10), StatusCode::OK);
            stats
                .candidate
                .record_answer(Duration::from_millis(20), StatusCode::OK);
        }
        stats
            .primary
            .record_answer(Duration::from_millis(10), StatusCode::OK);
        stats
            .candidate
            .record_failure(Duration::from_secs(5), CandidateErrorKind::Timeout);
        let summary = stats.summary();
        assert_eq!(summary.primary.requests, 10);
        assert_eq!(summary.primary.error_rate, Some(0.0));
        assert_eq!(summary.candidate.requests, 10);
        assert_eq!(summary.candidate.timeouts, 1);
        assert_eq!(summary.candidate.failures, 1);
        assert_eq!(summary.candidate.error_rate, Some(0.1));
        let ratio = summary.p50_ratio.unwrap();
        assert!((ratio - 2.0).abs() < 0.1, "{ratio}");
        let candidate_p99 = summary.candidate.p99_ms.unwrap();
        assert!(candidate_p99 > 4800.0, "{candidate_p99}");
        stats.clear();
        assert_eq!(stats.summary().candidate.requests, 0);
    }
}
