//! What a Lua state's host functions share with the code calling into it: the time budget
//! of the running stretch of Lua and whom that Lua works for.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderValue;

use crate::callout::Callouts;
use crate::hooks::id_text;

/// `Shared::deadline` while no Lua is running on the host's behalf.
const UNARMED: u64 = u64::MAX;

/// `Shared::deadline` in a stretch whose clock has not started yet.
const STARTING: u64 = u64::MAX - 1;

/// The message of a run cut off by its time budget.
pub(crate) const BUDGET_MESSAGE: &str = "hook exceeded its time budget";

/// What the host functions of a state (the budget hook, `log.*`, `http.request`) share with
/// the code that calls into the state.
pub(crate) struct Shared {
    epoch: Instant,
    /// Nanoseconds since `epoch`, or [`UNARMED`], or [`STARTING`].
    deadline: AtomicU64,
    /// Nanoseconds the running stretch may take.
    budget: AtomicU64,
    exceeded: AtomicBool,
    context: Mutex<CallContext>,
}

/// Who the Lua code currently running works for; read by `log.*` and `http.request`.
pub(crate) struct CallContext {
    pub(crate) request_id: HeaderValue,
    pub(crate) route: Option<Arc<str>>,
    pub(crate) callouts: Option<Arc<dyn Callouts>>,
}

impl Default for CallContext {
    fn default() -> Self {
        CallContext {
            request_id: HeaderValue::from_static(""),
            route: None,
            callouts: None,
        }
    }
}

impl Shared {
    pub(crate) fn new() -> Shared {
        Shared {
            epoch: Instant::now(),
            deadline: AtomicU64::new(UNARMED),
            budget: AtomicU64::new(0),
            exceeded: AtomicBool::new(false),
            context: Mutex::new(CallContext::default()),
        }
    }

    /// Starts a budgeted stretch of Lua: the budget hook fails it after `budget`.
    ///
    /// The clock starts at the hook's first check in the stretch rather than here: reading
    /// it costs tens of nanoseconds, a good part of a trivial hook call, and most calls end
    /// before the first check
    /// (the stretch gets up to one check interval more than its budget).
    pub(crate) fn arm(&self, budget: Duration) {
        self.exceeded.store(false, Ordering::Relaxed);
        self.budget.store(
            u64::try_from(budget.as_nanos()).unwrap_or(u64::MAX / 2),
            Ordering::Relaxed,
        );
        self.deadline.store(STARTING, Ordering::Relaxed);
    }

    /// Ends a budgeted stretch.
    pub(crate) fn disarm(&self) {
        self.deadline.store(UNARMED, Ordering::Relaxed);
    }

    /// Whether the budget ran out during the last stretch.
    pub(crate) fn exceeded(&self) -> bool {
        self.exceeded.load(Ordering::Relaxed)
    }

    /// Called by the budget hook: whether the running stretch is past its deadline (and
    /// from now on failing).
    pub(crate) fn over_deadline(&self) -> bool {
        let now = || u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX / 2);
        match self.deadline.load(Ordering::Relaxed) {
            UNARMED => false,
            STARTING => {
                let deadline = now().saturating_add(self.budget.load(Ordering::Relaxed));
                self.deadline
                    .store(deadline.min(STARTING - 1), Ordering::Relaxed);
                false
            }
            deadline => {
                let over = now() > deadline;
                if over {
                    self.exceeded.store(true, Ordering::Relaxed);
                }
                over
            }
        }
    }

    /// Runs `f` on the current call context.
    pub(crate) fn with_context<R>(&self, f: impl FnOnce(&mut CallContext) -> R) -> R {
        f(&mut self.context.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The request id of the call running (or last run), as text for a log line.
    pub(crate) fn request_id(&self) -> String {
        self.with_context(|c| id_text(&c.request_id).to_string())
    }

    /// Records whom the call about to run works for (read by `log.*`).
    pub(crate) fn set_call(&self, request_id: &HeaderValue, route: &Arc<str>) {
        self.with_context(|c| {
            c.request_id.clone_from(request_id);
            if !c.route.as_ref().is_some_and(|r| Arc::ptr_eq(r, route)) {
                c.route = Some(Arc::clone(route));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_starts_at_the_first_check_and_stops_at_disarm() {
        let shared = Shared::new();
        assert!(!shared.over_deadline(), "unarmed");
        shared.arm(Duration::from_millis(5));
        assert!(!shared.over_deadline(), "the first check starts the clock");
        assert!(!shared.over_deadline());
        std::thread::sleep(Duration::from_millis(10));
        assert!(shared.over_deadline());
        assert!(shared.exceeded());
        shared.disarm();
        assert!(!shared.over_deadline());
        assert!(shared.exceeded(), "remembered until the next stretch");
        shared.arm(Duration::from_millis(5));
        assert!(!shared.exceeded());
    }
}
