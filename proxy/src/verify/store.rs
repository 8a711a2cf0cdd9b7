//! A route's comparison counters and its bounded ring of recent mismatch records.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use super::export;
use super::outcome::{CandidateErrorKind, DropReason, Outcome};
use super::records::MismatchRecord;

/// Records kept per route unless configured otherwise.
pub const DEFAULT_RECORDS: usize = 100;

/// Counters by outcome (lock-free) and the last `capacity` records (one short lock per
/// push or read; the records are `Arc`s, so readers copy pointers, not records).
#[derive(Debug)]
pub struct DiffStore {
    capacity: usize,
    records: Mutex<VecDeque<Arc<MismatchRecord>>>,
    outcomes: [AtomicU64; Outcome::ALL.len()],
    drops: [AtomicU64; DropReason::ALL.len()],
    candidate_errors: [AtomicU64; CandidateErrorKind::ALL.len()],
}

/// A snapshot of a route's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `match` outcomes.
    #[serde(rename = "match")]
    pub matched: u64,
    /// `mismatch` outcomes.
    pub mismatch: u64,
    /// `noise` outcomes.
    pub noise: u64,
    /// `candidate_error` outcomes.
    pub candidate_error: u64,
    /// `dropped` outcomes.
    pub dropped: u64,
    /// `dropped`, by reason (every reason listed, zeros included).
    pub dropped_by_reason: BTreeMap<&'static str, u64>,
    /// `candidate_error`, by kind (every kind listed).
    pub candidate_errors_by_kind: BTreeMap<&'static str, u64>,
}

impl Default for DiffStore {
    fn default() -> Self {
        Self::new(DEFAULT_RECORDS)
    }
}

impl DiffStore {
    /// A store keeping the last `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            records: Mutex::new(VecDeque::with_capacity(capacity.min(DEFAULT_RECORDS))),
            outcomes: Default::default(),
            drops: Default::default(),
            candidate_errors: Default::default(),
        }
    }

    /// How many records are kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Count one outcome. Prefer [`count_drop`](Self::count_drop) and
    /// [`count_candidate_error`](Self::count_candidate_error) for those outcomes, which
    /// also count the reason.
    pub fn count(&self, outcome: Outcome) {
        if let Some(counter) = self.outcomes.get(outcome as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count one `dropped` outcome and its reason.
    pub fn count_drop(&self, reason: DropReason) {
        self.count(Outcome::Dropped);
        if let Some(counter) = self.drops.get(reason as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Count one `candidate_error` outcome and its kind.
    pub fn count_candidate_error(&self, kind: CandidateErrorKind) {
        self.count(Outcome::CandidateError);
        if let Some(counter) = self.candidate_errors.get(kind as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Keep `record`, forgetting the oldest when full.
    pub fn push(&self, record: Arc<MismatchRecord>) {
        if self.capacity == 0 {
            return;
        }
        let mut records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        while records.len() >= self.capacity {
            records.pop_front();
        }
        records.push_back(record);
    }

    /// The kept records, newest first.
    pub fn records(&self) -> Vec<Arc<MismatchRecord>> {
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records.iter().rev().cloned().collect()
    }

    /// The kept records as CSV, newest first (see [`export::to_csv`]).
    pub fn to_csv(&self) -> String {
        let records = self.records();
        export::to_csv(records.iter().map(|r| r.as_ref()))
    }

    /// A snapshot of the counters.
    pub fn counts(&self) -> Counts {
        let load = |counters: &[AtomicU64], index: usize| {
            counters
                .get(index)
                .map(|c| c.load(Ordering::Relaxed))
                .unwrap_or(0)
        };
        Counts {
            matched: load(&self.outcomes, Outcome::Match as usize),
            mismatch: load(&self.outcomes, Outcome::Mismatch as usize),
            noise: load(&self.outcomes, Outcome::Noise as usize),
            candidate_error: load(&self.outcomes, Outcome::CandidateError as usize),
            dropped: load(&self.outcomes, Outcome::Dropped as usize),
            dropped_by_reason: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), load(&self.drops, *r as usize)))
                .collect(),
            candidate_errors_by_kind: CandidateErrorKind::ALL
                .iter()
                .map(|k| (k.as_str(), load(&self.candidate_errors, *k as usize)))
                .collect(),
        }
    }

    /// Forget all records and zero all counters.
    pub fn clear(&self) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for counter in self
            .outcomes
            .iter()
            .chain(&self.drops)
            .chain(&self.candidate_errors)
        {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

impl Counts {
    /// Pairs that reached a verdict on the candidate: `match + noise + mismatch +
    /// candidate_error` (drops say nothing about the candidate).
    pub fn comparisons(&self) -> u64 {
        self.matched + self.noise + self.mismatch + self.candidate_error
    }

    /// Comparisons that count against the candidate: `mismatch + candidate_error` (a
    /// candidate that fails to answer is not ready to serve that request).
    pub fn failed(&self) -> u64 {
        self.mismatch + self.candidate_error
    }

    /// `failed / comparisons`, `None` before any comparison.
    pub fn mismatch_rate(&self) -> Option<f64> {
        let comparisons = self.comparisons();
        (comparisons > 0).then(|| self.failed() as f64 / comparisons as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Arc<MismatchRecord> {
        Arc::new(MismatchRecord {
            time: export::rfc3339_millis(0),
            unix_ms: 0,
            route: "r".into(),
            outcome: Outcome::Mismatch,
            request_id: id.into(),
            method: "GET".into(),
            path: "/x".into(),
            query: None,
            request_headers: Vec::new(),
            primary_status: 200,
            candidate_status: Some(500),
            primary_latency_ms: 1.0,
            candidate_latency_ms: 2.0,
            differences: Vec::new(),
            omitted_differences: 0,
            notes: Vec::new(),
            error: None,
        })
    }

    #[test]
    fn keeps_the_newest_records() {
        let store = DiffStore::new(3);
        for id in ["a", "b", "c", "d", "e"] {
            store.push(record(id));
        }
        let ids: Vec<_> = store
            .records()
            .iter()
            .map(|r| r.request_id.clone())
            .collect();
        assert_eq!(ids, ["e", "d", "c"]);
        let none = DiffStore::new(0);
        none.push(record("a"));
        assert!(none.records().is_empty());
    }

    #[test]
    fn counts_by_outcome_and_reason() {
        let store = DiffStore::default();
        store.count(Outcome::Match);
        store.count(Outcome::Match);
        store.count(Outcome::Noise);
        store.count(Outcome::Mismatch);
        store.count_candidate_error(CandidateErrorKind::Timeout);
        store.count_drop(DropReason::MaxInFlight);
        let counts = store.counts();
        assert_eq!(counts.matched, 2);
        assert_eq!(counts.comparisons(), 5);
        assert_eq!(counts.failed(), 2);
        assert_eq!(counts.mismatch_rate(), Some(0.4));
        assert_eq!(counts.dropped, 1);
        assert_eq!(counts.dropped_by_reason["max_in_flight"], 1);
        assert_eq!(counts.dropped_by_reason["shutdown"], 0);
        assert_eq!(counts.candidate_errors_by_kind["timeout"], 1);
        let json = serde_json::to_value(&counts).unwrap();
        assert_eq!(json["match"], 2);
        store.clear();
        assert_eq!(store.counts().comparisons(), 0);
        assert_eq!(Counts::default().mismatch_rate(), None);
    }

    #[test]
    fn csv_has_a_row_per_difference() {
        use crate::verify::compare::{Difference, DifferenceKind, Location};
        let store = DiffStore::default();
        let mut with_diffs = (*record("a")).clone();
        with_diffs.query = Some("q=1,2".into());
        with_diffs.differences = vec![
            Difference {
                location: Location::Status,
                kind: DifferenceKind::Changed,
                primary: Some("200".into()),
                candidate: Some("500".into()),
                noise: false,
            },
            Difference {
                location: Location::Header("etag".into()),
                kind: DifferenceKind::Missing,
                primary: Some("\"v1\"".into()),
                candidate: None,
                noise: true,
            },
        ];
        store.push(Arc::new(with_diffs));
        let mut failed = (*record("b")).clone();
        failed.outcome = Outcome::CandidateError;
        failed.error = Some("connect: refused".into());
        store.push(Arc::new(failed));
        let csv = store.to_csv();
        let lines: Vec<_> = csv.split("\r\n").collect();
        assert_eq!(lines.len(), 5, "{csv}");
        assert_eq!(lines[0], export::CSV_COLUMNS.join(","));
        assert!(lines[1].contains("candidate_error") && lines[1].ends_with("connect: refused"));
        assert!(
            lines[2].contains(",\"q=1,2\",") && lines[2].contains(",status,changed,200,500,false,")
        );
        assert!(
            lines[3].contains(",header:etag,missing,\"\"\"v1\"\"\",,true,"),
            "{}",
            lines[3]
        );
        assert_eq!(lines[4], "");
        assert!(
            lines[1..4]
                .iter()
                .all(|l| l.split(',').count() >= export::CSV_COLUMNS.len())
        );
    }
}
