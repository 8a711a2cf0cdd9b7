//! `strangler_hook_runs_total{hook,phase,result}`: the hook engine's observer.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};

use prometheus::{IntCounter, IntCounterVec};
use strangler_plugins::{HookObserver, HookScript, Phase, RunResult};

use super::retired::Retired;

/// Counts hook runs; `hook` is the script's file name, a closed set taken from the route
/// file. When a reload leaves no route with a script of that name, its series leave
/// `/metrics`, as a removed route's do.
pub struct HookRuns {
    counters: IntCounterVec,
    /// Children already resolved, by script, phase and result: a hooked request then costs
    /// a short scan and a comparison of paths instead of hashing three label values.
    resolved: RwLock<Vec<Resolved>>,
    /// Script names no route has any more: jobs of the old table still running are not
    /// counted.
    retired: Retired,
}

/// One child of the counter family, with what it counts.
struct Resolved {
    path: PathBuf,
    phase: Phase,
    result: RunResult,
    counter: IntCounter,
}

impl Resolved {
    /// Whether this counts runs of `phase` by the script at `path` that ended in `result`.
    /// Paths are compared as bytes: `Path`'s own equality compares component by component.
    fn counts(&self, path: &Path, phase: Phase, result: RunResult) -> bool {
        self.phase == phase && self.result == result && self.path.as_os_str() == path.as_os_str()
    }
}

/// The `hook` label of the script at `path`: its file name.
pub(super) fn hook_label(path: &Path) -> Cow<'_, str> {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default()
}

impl HookRuns {
    /// Count hook runs in `counters` (`strangler_hook_runs_total{hook,phase,result}`).
    pub(super) fn new(counters: IntCounterVec) -> Self {
        Self {
            counters,
            resolved: RwLock::new(Vec::new()),
            retired: Retired::default(),
        }
    }

    /// Drops the series of the script named `name` (a [`hook_label`]), which no route of the
    /// table about to serve has; its runs still to come are not counted until
    /// [`HookRuns::serve`] names it again.
    pub(super) fn forget(&self, name: &str) {
        self.retired.retire(name, || {
            super::forget(&self.counters, "hook", name);
            self.resolved
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|r| hook_label(&r.path) != name);
        });
    }

    /// `names` are the scripts of the table about to serve: those a reload removed earlier
    /// count again.
    pub(super) fn serve<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        self.retired.serve(names);
    }

    /// Resolves the child for a run not counted before, and keeps it for the next one; none
    /// for a script a reload removed. Kept under the same lock as the check, so that a
    /// removal cannot slip between them and leave a dead child in the list.
    fn resolve(&self, path: &Path, phase: Phase, result: RunResult) -> Option<IntCounter> {
        let name = hook_label(path);
        self.retired.unless_retired(&name, || {
            let counter =
                self.counters
                    .with_label_values(&[&name, phase.as_str(), result.as_str()]);
            let mut list = self
                .resolved
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if !list.iter().any(|r| r.counts(path, phase, result)) {
                list.push(Resolved {
                    path: path.to_path_buf(),
                    phase,
                    result,
                    counter: counter.clone(),
                });
            }
            counter
        })
    }
}

impl HookObserver for HookRuns {
    fn hook_ran(&self, script: &HookScript, phase: Phase, result: RunResult) {
        let path = script.path();
        if let Ok(list) = self.resolved.read()
            && let Some(resolved) = list.iter().find(|r| r.counts(path, phase, result))
        {
            resolved.counter.inc();
            return;
        }
        if let Some(counter) = self.resolve(path, phase, result) {
            counter.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::Opts;
    use prometheus::core::Collector;

    use super::*;

    fn runs() -> (HookRuns, IntCounterVec) {
        let counters =
            IntCounterVec::new(Opts::new("runs", "hook runs"), &["hook", "phase", "result"])
                .unwrap();
        (HookRuns::new(counters.clone()), counters)
    }

    fn script(dir: &Path, name: &str) -> HookScript {
        let path = dir.join(name);
        std::fs::write(&path, "function on_request(req) end").unwrap();
        HookScript::compile(&path).unwrap()
    }

    fn series(counters: &IntCounterVec) -> Vec<String> {
        let mut series: Vec<String> = counters.collect()[0]
            .get_metric()
            .iter()
            .map(|m| {
                let labels: Vec<&str> = m.get_label().iter().map(|p| p.value()).collect();
                format!("{} {}", labels.join(","), m.get_counter().get_value())
            })
            .collect();
        series.sort();
        series
    }

    #[test]
    fn hook_runs_count_each_script_phase_and_result_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (script(dir.path(), "a.lua"), script(dir.path(), "b.lua"));
        let (runs, counters) = runs();
        for _ in 0..3 {
            runs.hook_ran(&a, Phase::OnRequest, RunResult::Ok);
        }
        runs.hook_ran(&a, Phase::OnRequest, RunResult::Error);
        runs.hook_ran(&b, Phase::OnResponse, RunResult::Ok);
        let count = |labels: &[&str]| counters.with_label_values(labels).get();
        assert_eq!(count(&["a.lua", "on_request", "ok"]), 3);
        assert_eq!(count(&["a.lua", "on_request", "error"]), 1);
        assert_eq!(count(&["b.lua", "on_response", "ok"]), 1);
        assert_eq!(count(&["b.lua", "on_request", "ok"]), 0);
    }

    #[test]
    fn a_forgotten_script_counts_nothing_until_a_table_has_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (script(dir.path(), "a.lua"), script(dir.path(), "b.lua"));
        let (runs, counters) = runs();
        runs.hook_ran(&a, Phase::OnRequest, RunResult::Ok);
        runs.hook_ran(&b, Phase::OnRequest, RunResult::Ok);

        runs.forget("a.lua");
        // A run of the old table that ends after the reload, resolved before or not.
        runs.hook_ran(&a, Phase::OnRequest, RunResult::Ok);
        runs.hook_ran(&a, Phase::AfterResponse, RunResult::Ok);
        runs.hook_ran(&b, Phase::OnRequest, RunResult::Ok);
        assert_eq!(series(&counters), ["b.lua,on_request,ok 2"]);

        runs.serve(["a.lua", "b.lua"]);
        runs.hook_ran(&a, Phase::OnRequest, RunResult::Ok);
        assert_eq!(
            series(&counters),
            ["a.lua,on_request,ok 1", "b.lua,on_request,ok 2"],
            "counts start from zero, as a route's that comes back"
        );
    }
}
