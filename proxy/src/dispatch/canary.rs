//! The `canary` strategy: a weighted, optionally sticky split between the old upstream and
//! new ones, watched by a gate that rolls the route back when the new side misbehaves.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use strangler_routes::{Canary, Sticky, UpstreamId};
use tokio::sync::mpsc;

use crate::random;
use crate::window::{CanaryReport, Side, Window};

/// How often at most a canary's gate is evaluated (it reads every live bucket).
const EVALUATE_EVERY: Duration = Duration::from_millis(50);

/// A failing gate asks for its route to be pinned to `rollback_to`.
#[derive(Debug, Clone)]
pub struct GateTrip {
    /// The route.
    pub route: String,
    /// The route's definition when the gate failed; an edit of the route clears the pin.
    pub fingerprint: String,
    /// Why the gate failed.
    pub reason: String,
}

/// A canary route's state in one runtime: the split and the gate's window.
pub struct CanaryRoute {
    /// The route's `canary:` settings.
    pub spec: Canary,
    name: String,
    fingerprint: String,
    total: u64,
    window: Option<Window>,
    started: Instant,
    last_evaluation_ms: AtomicU64,
    tripped: AtomicBool,
    trips: mpsc::UnboundedSender<GateTrip>,
}

impl CanaryRoute {
    /// The state for route `name` (definition `fingerprint`) with settings `spec`; a failing
    /// gate sends its trip on `trips`.
    pub fn new(
        name: &str,
        fingerprint: &str,
        spec: &Canary,
        trips: mpsc::UnboundedSender<GateTrip>,
    ) -> Self {
        Self {
            spec: spec.clone(),
            name: name.to_string(),
            fingerprint: fingerprint.to_string(),
            total: spec
                .split
                .iter()
                .map(|(_, weight)| u64::from(*weight))
                .sum(),
            window: spec.gate.as_ref().map(|gate| Window::new(gate.window)),
            started: Instant::now(),
            last_evaluation_ms: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            trips,
        }
    }

    /// The upstream for a request with these headers, and its side.
    ///
    /// With `sticky`, the key's hash picks the side, so the same user lands on the same
    /// side on every replica and after reloads (while the weights stay the same); requests
    /// without the key are split at random by weight.
    pub fn choose(&self, headers: &HeaderMap) -> (UpstreamId, Side) {
        let point = match self.sticky_key(headers) {
            Some(key) => stable_hash(self.name.as_bytes(), key) % self.total.max(1),
            None => (random::unit() * self.total as f64) as u64,
        };
        let mut upto = 0;
        let mut chosen = self.spec.baseline;
        for (upstream, weight) in &self.spec.split {
            upto += u64::from(*weight);
            if point < upto {
                chosen = *upstream;
                break;
            }
        }
        let side = if chosen == self.spec.baseline {
            Side::Old
        } else {
            Side::New
        };
        (chosen, side)
    }

    /// Count an answer of `side` and, now and then, judge the gate.
    pub fn record(&self, side: Side, error: bool, latency: Duration) {
        let (Some(window), Some(gate)) = (&self.window, &self.spec.gate) else {
            return;
        };
        window.record(side, error, latency);
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_evaluation_ms.load(Ordering::Relaxed);
        let due = now_ms.saturating_sub(last) >= EVALUATE_EVERY.as_millis() as u64;
        if !due
            || self
                .last_evaluation_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let report = window.evaluate(gate);
        if report.state == crate::verify::GateState::Failing
            && !self.tripped.swap(true, Ordering::AcqRel)
        {
            let _ = self.trips.send(GateTrip {
                route: self.name.clone(),
                fingerprint: self.fingerprint.clone(),
                reason: report.reason,
            });
        }
    }

    /// The gate's current verdict, if the route has a gate.
    pub fn report(&self) -> Option<CanaryReport> {
        Some(self.window.as_ref()?.evaluate(self.spec.gate.as_ref()?))
    }

    fn sticky_key<'h>(&self, headers: &'h HeaderMap) -> Option<&'h [u8]> {
        match self.spec.sticky.as_ref()? {
            Sticky::Header(name) => headers.get(name).map(|v| v.as_bytes()),
            Sticky::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
                .find_map(|pair| {
                    let pair = pair.trim_ascii_start();
                    let rest = pair.strip_prefix(name.as_bytes())?;
                    rest.strip_prefix(b"=")
                }),
        }
    }
}

/// FNV-1a over `scope`, a separator and `key`: the same on every machine and release,
/// unlike the standard library's hasher, so replicas agree on every user's side.
fn stable_hash(scope: &[u8], key: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    scope
        .iter()
        .chain(&[0xff])
        .chain(key)
        .fold(OFFSET, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(PRIME)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strangler_routes::UpstreamId;

    fn canary(sticky: Option<Sticky>) -> CanaryRoute {
        let spec = Canary {
            split: vec![(UpstreamId(0), 90), (UpstreamId(1), 10)],
            baseline: UpstreamId(0),
            sticky,
            gate: None,
        };
        CanaryRoute::new("catalog", "f1", &spec, mpsc::unbounded_channel().0)
    }

    fn cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::COOKIE,
            format!("theme=dark; session={value}").parse().unwrap(),
        );
        headers
    }

    #[test]
    fn the_same_key_lands_on_the_same_side_across_rebuilds() {
        let first = canary(Some(Sticky::Cookie("session".into())));
        let rebuilt = canary(Some(Sticky::Cookie("session".into())));
        for user in 0..500 {
            let headers = cookie(&format!("user-{user}"));
            let side = first.choose(&headers);
            assert_eq!(side, first.choose(&headers));
            assert_eq!(side, rebuilt.choose(&headers), "user-{user}");
        }
    }

    #[test]
    fn sticky_keys_spread_by_weight() {
        let route = canary(Some(Sticky::Header(http::HeaderName::from_static(
            "x-user",
        ))));
        let new = (0..10_000)
            .filter(|user| {
                let mut headers = HeaderMap::new();
                headers.insert("x-user", user.to_string().parse().unwrap());
                route.choose(&headers).1 == Side::New
            })
            .count();
        assert!(
            (800..1_200).contains(&new),
            "{new} of 10000 on the 10% side"
        );
    }

    #[test]
    fn requests_without_a_key_are_split_by_weight() {
        let route = canary(Some(Sticky::Cookie("session".into())));
        let new = (0..10_000)
            .filter(|_| route.choose(&HeaderMap::new()).1 == Side::New)
            .count();
        assert!((800..1_200).contains(&new), "{new}");
    }

    #[test]
    fn the_hash_is_fixed() {
        // Pinned values (FNV-1a 64): replicas of different builds must agree.
        assert_eq!(stable_hash(b"catalog", b"user-1"), 0x6968_84ae_19f7_acf4);
        assert_eq!(stable_hash(b"", b""), 0xaf64_724c_8602_eb6e);
        assert_ne!(stable_hash(b"a", b"b"), stable_hash(b"ab", b""));
    }
}
