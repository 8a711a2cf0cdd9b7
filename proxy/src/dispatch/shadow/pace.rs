//! Pacing of shadow copies: admissions spread evenly over the time a copy holds its slot.
//!
//! `max_in_flight` alone lets copies start in bursts: every free slot is taken by the next
//! requests, and a candidate with a steady latency then answers the whole burst at once.
//! Judging a burst of answers back to back stalls the primary traffic that shares the
//! worker, which shows in its tail latency. Spacing admissions by the average hold time
//! divided by the number of slots starts copies at the rate the slots free up anyway, one at
//! a time, so their answers (and comparisons) arrive spread out too.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Below this spacing a copy holds its slot so briefly that bursts cannot build up: no
/// clock is read and every admission passes.
const MIN_SPACING: Duration = Duration::from_micros(20);

/// The most copies that may start back to back, making up turns that no request came for.
/// Requests do not arrive evenly (a client's timer tick, a page's burst of calls): without
/// this, a clump of requests took one turn and the turns between clumps were lost, so the
/// route got far fewer copies than its slots allow (~820 a second of ~1,280 at 256 slots
/// and 200 ms, measured with a load generator whose requests come on 1 ms ticks). Four
/// copies in a row come back as a group of four, not as a wave.
const BURST: u64 = 4;

/// The weight of a new hold time in the running average (1/8, as TCP's smoothed RTT).
const AVERAGE_SHIFT: u32 = 3;

/// Spaces the admissions of one shadowed route.
pub(super) struct Pace {
    origin: Instant,
    /// Nanoseconds after `origin` before which no copy may start.
    next: AtomicU64,
    /// Average time a copy held its slot, in nanoseconds; 0 until one was seen.
    held: AtomicU64,
    slots: u64,
}

impl Pace {
    /// Pacing for `slots` (the route's `max_in_flight`) concurrent copies.
    pub(super) fn new(slots: usize) -> Self {
        Self {
            origin: Instant::now(),
            next: AtomicU64::new(0),
            held: AtomicU64::new(0),
            slots: u64::try_from(slots.max(1)).unwrap_or(u64::MAX),
        }
    }

    /// Whether a copy may start now. A copy that may takes the current turn: the next one
    /// may start a slot's share of the average hold time later. Turns keep to their grid
    /// when requests come late for them, so that the gaps between requests do not slow the
    /// pace: up to [`BURST`] missed turns are taken back to back; after a longer pause the
    /// grid starts again from there.
    pub(super) fn admit(&self) -> bool {
        let spacing = self.held.load(Relaxed) / self.slots;
        if spacing < nanos(MIN_SPACING) {
            return true;
        }
        let now = nanos(self.origin.elapsed());
        let next = self.next.load(Relaxed);
        // Two workers racing for one turn: one of them starts a copy.
        now >= next
            && self
                .next
                .compare_exchange(
                    next,
                    next.max(now.saturating_sub((BURST - 1) * spacing)) + spacing,
                    Relaxed,
                    Relaxed,
                )
                .is_ok()
    }

    /// A copy held its slot for `held` (from admission to the end of its comparison).
    pub(super) fn held(&self, held: Duration) {
        let sample = nanos(held).max(1);
        let average = self.held.load(Relaxed);
        let updated = if average == 0 {
            sample
        } else {
            average - (average >> AVERAGE_SHIFT) + (sample >> AVERAGE_SHIFT)
        };
        // Concurrent updates may lose a sample; an average does not need every one.
        self.held.store(updated, Relaxed);
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_spaced_before_a_hold_time_is_known() {
        let pace = Pace::new(4);
        assert!((0..100).all(|_| pace.admit()));
    }

    #[test]
    fn admissions_are_spaced_by_the_hold_time_shared_among_the_slots() {
        let pace = Pace::new(4);
        // 400 s over 4 slots: one copy may start every 100 s.
        pace.held(Duration::from_secs(400));
        assert!(pace.admit(), "the first turn is free");
        assert!(!pace.admit(), "the next one is 100 s away");
        assert!(!pace.admit());
    }

    #[test]
    fn missed_turns_are_made_up_a_few_at_a_time() {
        // A pace whose grid began 10 s ago, spacing 1 s, and no request since.
        let pace = Pace {
            origin: Instant::now() - Duration::from_secs(10),
            ..Pace::new(4)
        };
        pace.held(Duration::from_secs(4));
        let admitted = (0..10).take_while(|_| pace.admit()).count();
        assert_eq!(admitted, 4, "a clump takes at most BURST missed turns");
        assert!(!pace.admit(), "then the next turn is a second away");
    }

    #[test]
    fn short_holds_are_not_paced() {
        let pace = Pace::new(256);
        pace.held(Duration::from_millis(2));
        assert!(
            (0..100).all(|_| pace.admit()),
            "8 µs spacing is below the minimum"
        );
    }

    #[test]
    fn the_average_follows_the_hold_times() {
        let pace = Pace::new(1);
        pace.held(Duration::from_millis(800));
        for _ in 0..64 {
            pace.held(Duration::from_millis(200));
        }
        let average = Duration::from_nanos(pace.held.load(Relaxed));
        assert!(
            average > Duration::from_millis(199) && average < Duration::from_millis(201),
            "{average:?}"
        );
    }
}
