//! Noise: where two answers of the old system to the same request differ, a difference means nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use serde::Serialize;

use super::compare::{self, Difference, DifferenceKind, Location, Observed, Verdict};
use super::outcome::Outcome;
use super::pointer::PointerPattern;
use super::rules::CompiledRules;

/// A route stops learning after this many fields: an answer with random keys (ids as
/// object keys) must not grow the model without bound. The model then reports itself
/// saturated.
pub const MAX_NOISE_FIELDS: usize = 256;

/// The non-deterministic locations learned for one route; shared by all its comparisons.
///
/// Reads (classification) take a shared lock only when a verdict has differences; writes
/// happen only when a baseline pair shows a location not seen before.
#[derive(Debug, Default)]
pub struct NoiseModel {
    fields: RwLock<BTreeMap<NoiseField, Variation>>,
    samples: AtomicU64,
    saturated: AtomicBool,
}

/// A location that may be learned as noise: array indices are generalized to `*`, so
/// `/items/3/etag` is learned as `/items/*/etag`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NoiseField {
    /// A response header.
    Header(String),
    /// A JSON location pattern.
    Json(PointerPattern),
    /// A whole non-JSON body.
    Body,
}

/// The learned fields of a route, for `GET /diffs`: the lists can be pasted into the
/// route's `ignore_headers` / `ignore_json` to make them explicit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LearnedNoise {
    /// Baseline pairs learned from.
    pub samples: u64,
    /// Headers whose values vary.
    pub headers: Vec<String>,
    /// JSON pointer patterns whose values vary.
    pub json: Vec<String>,
    /// Whether a whole non-JSON body varies (every byte difference is then noise).
    pub body: bool,
    /// True once [`MAX_NOISE_FIELDS`] were learned and learning stopped.
    pub saturated: bool,
}

/// How a field varied between two answers of the old system.
#[derive(Debug, Clone, Copy, Default)]
struct Variation {
    /// Present in one answer and absent in the other; without this, only a changed
    /// value at the location is noise — a field the candidate drops is still a mismatch.
    presence: bool,
}

impl NoiseModel {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// Learn from two answers of the old system to the same request: `primary` (the
    /// answer the client got) and `baseline` (the copy sent to the `noise.baseline`
    /// upstream). Compares them with `rules` (ignored locations are not learned) and
    /// learns every differing location but the status. A pair whose statuses differ is
    /// not two answers to the same thing and teaches nothing. Returns how many fields
    /// were newly learned.
    pub fn learn(&self, rules: &CompiledRules, primary: &Observed, baseline: &Observed) -> usize {
        if primary.status != baseline.status {
            return 0;
        }
        self.learn_from(&compare::compare(rules, primary, baseline))
    }

    /// Learn from a verdict comparing two answers of the old system (see [`learn`](Self::learn)).
    pub fn learn_from(&self, verdict: &Verdict) -> usize {
        self.samples.fetch_add(1, Ordering::Relaxed);
        if verdict
            .differences
            .iter()
            .any(|d| d.location == Location::Status)
        {
            return 0;
        }
        let wanted: Vec<(NoiseField, bool)> = {
            let fields = self.fields.read().unwrap_or_else(PoisonError::into_inner);
            verdict
                .differences
                .iter()
                .filter_map(|d| {
                    let field = NoiseField::of(&d.location)?;
                    let presence = d.kind != DifferenceKind::Changed;
                    match fields.get(&field) {
                        Some(known) if known.presence || !presence => None,
                        _ => Some((field, presence)),
                    }
                })
                .collect()
        };
        if wanted.is_empty() {
            return 0;
        }
        let mut fields = self.fields.write().unwrap_or_else(PoisonError::into_inner);
        let mut added = 0;
        for (field, presence) in wanted {
            let full = fields.len() >= MAX_NOISE_FIELDS;
            match fields.get_mut(&field) {
                Some(known) => known.presence |= presence,
                None if full => self.saturated.store(true, Ordering::Relaxed),
                None => {
                    fields.insert(field, Variation { presence });
                    added += 1;
                }
            }
        }
        added
    }

    /// Whether `difference` lies at a learned location: a changed value at a learned
    /// field, or a presence difference at a field whose presence was seen to vary.
    pub fn is_noise(&self, difference: &Difference) -> bool {
        let Some(field) = NoiseField::of(&difference.location) else {
            return false;
        };
        let fields = self.fields.read().unwrap_or_else(PoisonError::into_inner);
        fields.get(&field).is_some_and(|variation| {
            variation.presence || difference.kind == DifferenceKind::Changed
        })
    }

    /// Mark each difference of `verdict` that is noise and return the outcome
    /// ([`Verdict::outcome`]): `Noise` only when every difference is learned noise.
    pub fn classify(&self, verdict: &mut Verdict) -> Outcome {
        if !verdict.differences.is_empty() {
            let fields = self.fields.read().unwrap_or_else(PoisonError::into_inner);
            if !fields.is_empty() {
                for difference in &mut verdict.differences {
                    difference.noise = NoiseField::of(&difference.location)
                        .and_then(|field| fields.get(&field))
                        .is_some_and(|variation| {
                            variation.presence || difference.kind == DifferenceKind::Changed
                        });
                }
            }
        }
        verdict.outcome()
    }

    /// The learned fields.
    pub fn learned(&self) -> LearnedNoise {
        let fields = self.fields.read().unwrap_or_else(PoisonError::into_inner);
        let mut learned = LearnedNoise {
            samples: self.samples.load(Ordering::Relaxed),
            saturated: self.saturated.load(Ordering::Relaxed),
            ..LearnedNoise::default()
        };
        for field in fields.keys() {
            match field {
                NoiseField::Header(name) => learned.headers.push(name.clone()),
                NoiseField::Json(pattern) => learned.json.push(pattern.to_string()),
                NoiseField::Body => learned.body = true,
            }
        }
        learned
    }

    /// Forget everything learned.
    pub fn clear(&self) {
        self.fields
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.samples.store(0, Ordering::Relaxed);
        self.saturated.store(false, Ordering::Relaxed);
    }
}

impl NoiseField {
    /// The field a difference at `location` would be learned as; `None` for the status,
    /// which is never noise.
    pub fn of(location: &Location) -> Option<Self> {
        match location {
            Location::Status => None,
            Location::Header(name) => Some(NoiseField::Header(name.clone())),
            Location::Json(pointer) => Some(NoiseField::Json(pointer.generalized())),
            Location::Body => Some(NoiseField::Body),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, StatusCode};

    use super::*;
    use crate::verify::rules::CompareRules;

    fn answer(status: u16, etag: Option<&str>, body: &str) -> Observed {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        if let Some(etag) = etag {
            headers.insert("etag", HeaderValue::from_str(etag).unwrap());
        }
        Observed::new(
            StatusCode::from_u16(status).unwrap(),
            headers,
            Bytes::from(body.to_owned()),
            Duration::from_millis(1),
        )
    }

    fn rules() -> CompiledRules {
        CompareRules::default().compile().unwrap()
    }

    #[test]
    fn learns_generalized_locations() {
        let model = NoiseModel::new();
        let added = model.learn(
            &rules(),
            &answer(200, Some("a"), r#"{"at":1,"items":[{"id":1,"rev":"x"}]}"#),
            &answer(200, Some("b"), r#"{"at":2,"items":[{"id":1,"rev":"y"}]}"#),
        );
        assert_eq!(added, 3);
        let learned = model.learned();
        assert_eq!(learned.headers, ["etag"]);
        assert_eq!(learned.json, ["/at", "/items/*/rev"]);
        assert_eq!(learned.samples, 1);
        assert!(!learned.body);
        // Learning the same again adds nothing.
        let again = model.learn(
            &rules(),
            &answer(200, Some("c"), r#"{"at":3,"items":[]}"#),
            &answer(200, Some("d"), r#"{"at":4,"items":[]}"#),
        );
        assert_eq!(again, 0);
    }

    #[test]
    fn different_statuses_teach_nothing() {
        let model = NoiseModel::new();
        let added = model.learn(
            &rules(),
            &answer(200, None, r#"{"at":1}"#),
            &answer(503, None, r#"{"at":2}"#),
        );
        assert_eq!(added, 0);
        assert!(model.learned().json.is_empty());
    }

    #[test]
    fn classifies_only_learned_differences_as_noise() {
        let model = NoiseModel::new();
        model.learn(
            &rules(),
            &answer(200, None, r#"{"at":1,"items":[{"rev":"x"}]}"#),
            &answer(200, None, r#"{"at":2,"items":[{"rev":"y"}]}"#),
        );
        let primary = answer(200, None, r#"{"at":1,"items":[{"rev":"a"},{"rev":"b"}]}"#);
        let noisy = answer(200, None, r#"{"at":9,"items":[{"rev":"c"},{"rev":"d"}]}"#);
        let mut verdict = compare::compare(&rules(), &primary, &noisy);
        assert_eq!(model.classify(&mut verdict), Outcome::Noise);
        assert!(verdict.differences.iter().all(|d| d.noise));

        let real = answer(
            200,
            None,
            r#"{"at":9,"items":[{"rev":"c"},{"rev":"d","x":1}]}"#,
        );
        let mut verdict = compare::compare(&rules(), &primary, &real);
        assert_eq!(model.classify(&mut verdict), Outcome::Mismatch);
        let marked: Vec<_> = verdict.differences.iter().map(|d| d.noise).collect();
        assert_eq!(marked, [true, true, true, false]);
    }

    #[test]
    fn a_dropped_field_is_not_excused_by_a_varying_value() {
        let model = NoiseModel::new();
        model.learn(
            &rules(),
            &answer(200, None, r#"{"at":1}"#),
            &answer(200, None, r#"{"at":2}"#),
        );
        let mut verdict = compare::compare(
            &rules(),
            &answer(200, None, r#"{"at":1,"n":1}"#),
            &answer(200, None, r#"{"n":1}"#),
        );
        assert_eq!(model.classify(&mut verdict), Outcome::Mismatch);
        // Unless the old system itself sometimes omits it.
        model.learn(
            &rules(),
            &answer(200, None, r#"{"at":1}"#),
            &answer(200, None, r#"{}"#),
        );
        assert_eq!(model.classify(&mut verdict), Outcome::Noise);
    }

    #[test]
    fn status_differences_are_never_noise() {
        let model = NoiseModel::new();
        let mut verdict =
            compare::compare(&rules(), &answer(200, None, "{}"), &answer(500, None, "{}"));
        assert_eq!(model.classify(&mut verdict), Outcome::Mismatch);
        assert!(NoiseField::of(&Location::Status).is_none());
    }

    #[test]
    fn saturates_instead_of_growing() {
        let model = NoiseModel::new();
        for round in 0..3 {
            let keys: Vec<String> = (0..200).map(|i| format!(r#""k{round}_{i}":{i}"#)).collect();
            model.learn(
                &rules(),
                &answer(200, None, &format!("{{{}}}", keys.join(","))),
                &answer(200, None, "{}"),
            );
        }
        let learned = model.learned();
        assert_eq!(learned.json.len(), MAX_NOISE_FIELDS);
        assert!(learned.saturated);
        model.clear();
        assert_eq!(model.learned(), LearnedNoise::default());
    }
}
