//! Budgets of the hook runtime: time per call, memory per state, and the `after_response` bounds.

use std::time::Duration;

/// Budgets and bounds of a [`HookEngine`](crate::HookEngine); static for the life of the
/// process (command-line territory), unlike the hook scripts, which reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// Time one hook call may run before it is cut off with "hook exceeded its time budget"
    /// (default 50 ms: far above any sane hook, which takes microseconds, and low enough
    /// that a runaway script costs one slow request, not an outage). Checked every 10,000
    /// Lua instructions, so a `while true do end` stops well within a millisecond past the
    /// budget; time spent inside one C function (a huge `string.rep`) is only bounded by
    /// the memory limit. For `after_response` it bounds each stretch of Lua between two
    /// callouts.
    pub call_budget: Duration,
    /// Memory limit of each Lua state (default 64 MiB). There is one state per worker thread
    /// plus one for `after_response`, shared by all scripts loaded into it.
    pub memory_limit: usize,
    /// `after_response` jobs (one per exchange whose route has such hooks) that may be queued
    /// or running at once (default 1024); above it, jobs are dropped and counted.
    pub max_pending: usize,
    /// Timeout of an `http.request` callout without its own `timeout` (default 2 s).
    pub callout_timeout: Duration,
    /// Wall-clock limit of one `after_response` job, callouts included (default 10 s).
    pub after_response_timeout: Duration,
}

impl Default for HookConfig {
    fn default() -> Self {
        HookConfig {
            call_budget: Duration::from_millis(50),
            memory_limit: 64 * 1024 * 1024,
            max_pending: 1024,
            callout_timeout: Duration::from_secs(2),
            after_response_timeout: Duration::from_secs(10),
        }
    }
}
