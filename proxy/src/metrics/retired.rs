//! Label values a reload took out of the table, kept so that late work does not bring
//! their series back.

use std::collections::HashSet;
use std::sync::{PoisonError, RwLock};

/// Label values (route names, hook script names) whose series a reload removed.
///
/// Work still in flight on the old table (a request, an `after_response` job) resolves its
/// metric handles by name when it ends, and resolving a handle creates its series: a late
/// one would bring a removed route or script back to `/metrics` for good. Every late
/// resolution asks here first, under the lock held while the series are removed, so a
/// series is either created before the removal (and removed with the rest) or not at all.
#[derive(Default)]
pub(super) struct Retired(RwLock<HashSet<String>>);

impl Retired {
    /// `resolve()`, unless `value` is retired.
    pub(super) fn unless_retired<R>(&self, value: &str, resolve: impl FnOnce() -> R) -> Option<R> {
        let retired = self.0.read().unwrap_or_else(PoisonError::into_inner);
        (!retired.contains(value)).then(resolve)
    }

    /// Retires `value` and runs `drop_series` (which removes its series), with late
    /// resolutions waiting until both are done.
    pub(super) fn retire(&self, value: &str, drop_series: impl FnOnce()) {
        let mut retired = self.0.write().unwrap_or_else(PoisonError::into_inner);
        retired.insert(value.to_string());
        drop_series();
    }

    /// `values` are in the table about to serve: those retired earlier count again.
    pub(super) fn serve<'a>(&self, values: impl IntoIterator<Item = &'a str>) {
        let mut retired = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if retired.is_empty() {
            return;
        }
        for value in values {
            retired.remove(value);
        }
    }
}
