//! Cheap per-thread randomness for sampling and weighted splits (no shared state, no locks).

use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<u64> = Cell::new(seed());
}

/// A random 64-bit number from this thread's xorshift64* generator.
///
/// Not for secrets: it decides which requests are sampled or split and makes request ids
/// unique per process, where speed and independence between threads matter and
/// predictability does not.
pub fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// A random number in `[0, 1)`.
pub fn unit() -> f64 {
    // The top 53 bits make an exactly representable fraction.
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether an event with probability `fraction` happens this time.
pub fn sampled(fraction: f64) -> bool {
    fraction >= 1.0 || (fraction > 0.0 && unit() < fraction)
}

fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    // xorshift must not start at zero.
    hasher.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_values_lie_in_the_unit_interval_and_spread() {
        let draws: Vec<f64> = (0..10_000).map(|_| unit()).collect();
        assert!(draws.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = draws.iter().filter(|x| **x < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
    }

    #[test]
    fn sampling_respects_its_bounds() {
        assert!((0..1000).all(|_| sampled(1.0)));
        assert!((0..1000).all(|_| !sampled(0.0)));
        let hits = (0..10_000).filter(|_| sampled(0.1)).count();
        assert!((800..1_200).contains(&hits), "{hits}");
    }
}
