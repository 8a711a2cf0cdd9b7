//! The one snapshot a request needs (route table, pools, pins, metric handles), and its swaps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use strangler_routes::{
    Action, Reloader, Route, RouteTable, SELF_ANSWER_UPSTREAM, Shadow, UNMATCHED_ROUTE, UpstreamId,
    ValidationErrors,
};

use strangler_plugins::{HookEngine, LuaHooks, PluginError};

use crate::cpu::SpareCpu;
use crate::decorate;
use crate::difflog::DiffLog;
use crate::dispatch::{CanaryRoute, GateTrip, ShadowRoute};
use crate::metrics::{FallbackMetrics, Metrics, PairMetrics};
use crate::upstream::{PoolError, UpstreamPool};
use crate::verify::{CompareRules, RulesError, ShadowGate, Verifiers, VerifyConfig};

/// What lives as long as the process and every runtime shares: metrics, the comparison
/// state of shadowed routes, the diff log.
pub struct Shared {
    /// The metrics registry and families.
    pub metrics: Arc<Metrics>,
    /// Shadowed routes' judges by name (state carried across reloads, read by `/diffs`).
    pub verifiers: Verifiers,
    /// `--diff-log` writer, if configured.
    pub diff_log: Option<Arc<DiffLog>>,
    /// Where failing canary gates ask for a rollback (the store's gate task listens).
    pub trips: tokio::sync::mpsc::UnboundedSender<GateTrip>,
    /// The Lua hook engine (states per worker thread, the after_response queue).
    pub hooks: HookEngine,
    /// Whether the CPUs have time to spare for shadow copies (`--shadow-spare-cpu`).
    pub spare_cpu: Arc<SpareCpu>,
}

/// What a route needs beyond its compiled definition, built once per table.
#[derive(Default)]
pub struct RouteExtras {
    /// The shadow state of a `shadow:` route.
    pub shadow: Option<Arc<ShadowRoute>>,
    /// The split and gate of a `canary:` route.
    pub canary: Option<Arc<CanaryRoute>>,
    /// The counters of a route with `fallback:`.
    pub fallback: Option<FallbackMetrics>,
    /// The compiled hooks of a route with `hooks:`.
    pub hooks: Option<LuaHooks>,
}

/// Everything a request needs, immutable once built. A request loads it once and keeps it
/// until its exchange ends, so neither a reload nor a pin changes the rules under a request.
pub struct Runtime {
    table: Arc<RouteTable>,
    pools: Vec<Arc<UpstreamPool>>,
    /// `pinned[route.index]`: the route is rolled back to its `rollback_to` upstream.
    pinned: Vec<bool>,
    pins: BTreeMap<String, Pin>,
    cells: Arc<MetricCells>,
    /// `extras[route.index]`: shadow, canary and fallback state of each route.
    extras: Arc<Vec<RouteExtras>>,
}

/// A rollback pin: the route's traffic goes to its `rollback_to` upstream until cleared.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Pin {
    /// Why the route was pinned (operator call, failing gate).
    pub reason: String,
    /// When, as seconds since the Unix epoch.
    pub since_unix: u64,
    /// For a pin set by a failing gate: the route's definition then. Editing the route
    /// clears such a pin; an operator's pin (`None`) stays until cleared.
    pub fingerprint: Option<String>,
}

/// Lazily resolved metric handles per (route slot, upstream slot) of one table.
struct MetricCells {
    metrics: Arc<Metrics>,
    /// Number of upstream slots per route slot: the upstreams plus `respond`.
    width: usize,
    cells: Box<[OnceLock<PairMetrics>]>,
}

/// Why a new runtime could not be built; the running one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The route file is invalid.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// An upstream's pool could not be built.
    #[error("{0}")]
    Pool(#[from] PoolError),
    /// A hook script does not compile.
    #[error("{0}")]
    Hook(#[from] PluginError),
    /// A shadow route's compare rules do not compile.
    #[error("route {route}: shadow.compare: {source}")]
    Compare {
        /// The route.
        route: String,
        /// What is wrong.
        #[source]
        source: RulesError,
    },
}

impl ReloadError {
    /// One line per problem, for the admin API.
    pub fn lines(&self) -> Vec<String> {
        match self {
            Self::Invalid(errors) => errors.errors.iter().map(ToString::to_string).collect(),
            Self::Pool(_) | Self::Hook(_) | Self::Compare { .. } => vec![self.to_string()],
        }
    }
}

/// The route slot used for requests that no route matched (the default upstream).
pub const DEFAULT_SLOT: RouteSlot = RouteSlot(usize::MAX);

/// A route's position for metrics: its index, or [`DEFAULT_SLOT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSlot(pub usize);

/// Who answers, for metrics: an upstream of the table, or the proxy itself (`respond`: a
/// `respond:` route or a hook that answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    /// An upstream.
    Upstream(UpstreamId),
    /// A `respond:` route, or a hook's `req:respond`.
    Respond,
}

impl Runtime {
    /// The compiled route table.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The pool of an upstream of this table.
    pub fn pool(&self, id: UpstreamId) -> &Arc<UpstreamPool> {
        &self.pools[id.0]
    }

    /// Whether `route` is pinned to its `rollback_to` upstream.
    pub fn is_pinned(&self, route: &Route) -> bool {
        self.pinned.get(route.index).copied().unwrap_or(false)
    }

    /// The active pins by route name.
    pub fn pins(&self) -> &BTreeMap<String, Pin> {
        &self.pins
    }

    /// The shadow state of a `shadow:` route.
    pub fn shadow(&self, route: &Route) -> Option<&Arc<ShadowRoute>> {
        self.extras(route)?.shadow.as_ref()
    }

    /// Shadow, canary and fallback state of `route`.
    pub fn extras(&self, route: &Route) -> Option<&RouteExtras> {
        self.extras.get(route.index)
    }

    /// The metric handles for answers to `route` given by `answerer`.
    pub fn pair_metrics(&self, route: RouteSlot, answerer: Answerer) -> &PairMetrics {
        let cells = &self.cells;
        let row = if route == DEFAULT_SLOT {
            self.table.routes().len()
        } else {
            route.0
        };
        let column = match answerer {
            Answerer::Upstream(id) => id.0,
            Answerer::Respond => cells.width - 1,
        };
        cells.cells[row * cells.width + column].get_or_init(|| {
            let (route_name, upstream_name) = self.names(route, answerer);
            cells.metrics.pair(route_name, upstream_name)
        })
    }

    /// Counts a failed exchange with `upstream` (`strangler_upstream_errors_total`) that
    /// the client never saw, as when a fallback answered in its place.
    pub fn upstream_error(&self, upstream: UpstreamId, kind: &str) {
        let name = &self.table.upstream(upstream).name;
        self.cells.metrics.upstream_error(name, kind);
    }

    /// Whether this runtime serves anything else than `old`: another route file, another
    /// hook script (which the file's version does not cover) or an upstream pool built
    /// anew (a changed `tls.ca` bundle, say).
    pub fn differs_from(&self, old: &Runtime) -> bool {
        self.table.version() != old.table.version()
            || self.script_digests().ne(old.script_digests())
            || self
                .pools
                .iter()
                .any(|pool| !old.pools.iter().any(|kept| Arc::ptr_eq(pool, kept)))
    }

    /// The content digests of the hook scripts in force, route by route, in order.
    fn script_digests(&self) -> impl Iterator<Item = [u8; 32]> + '_ {
        self.extras
            .iter()
            .filter_map(|extras| extras.hooks.as_ref())
            .flat_map(|hooks| hooks.chain().entries())
            .map(|entry| entry.script.digest())
    }

    /// The route and upstream names that logs and metrics use: `default` for unmatched
    /// requests, `respond` for answers the proxy gave itself.
    pub fn names(&self, route: RouteSlot, answerer: Answerer) -> (&str, &str) {
        let route_name = match self.table.routes().get(route.0) {
            Some(route) => route.name.as_str(),
            None => UNMATCHED_ROUTE,
        };
        let upstream_name = match answerer {
            Answerer::Upstream(id) => self.table.upstream(id).name.as_str(),
            Answerer::Respond => SELF_ANSWER_UPSTREAM,
        };
        (route_name, upstream_name)
    }

    fn build(
        table: Arc<RouteTable>,
        previous: Option<&Runtime>,
        pins: &BTreeMap<String, Pin>,
        shared: &Shared,
    ) -> Result<Self, ReloadError> {
        let metrics = &shared.metrics;
        let pools = table
            .upstreams()
            .iter()
            .map(|spec| {
                let reused = previous
                    .and_then(|old| old.pools.iter().find(|pool| pool.serves(spec)))
                    .cloned();
                match reused {
                    Some(pool) => Ok(pool),
                    None => UpstreamPool::new(spec).map(Arc::new),
                }
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        let same_table = previous.filter(|old| Arc::ptr_eq(&old.table, &table));
        let extras = match same_table {
            Some(old) => old.extras.clone(),
            None => Arc::new(route_extras(&table, &pools, previous, shared)?),
        };
        let cells = match same_table {
            Some(old) => old.cells.clone(),
            None => {
                let width = table.upstreams().len() + 1;
                let rows = table.routes().len() + 1;
                Arc::new(MetricCells {
                    metrics: metrics.clone(),
                    width,
                    cells: (0..width * rows).map(|_| OnceLock::new()).collect(),
                })
            }
        };
        // Pins survive reloads by route name; pins of routes that no longer exist are inert.
        let pinned = table
            .routes()
            .iter()
            .map(|route| pins.contains_key(&route.name))
            .collect();
        let pins = pins
            .iter()
            .filter(|(name, _)| table.route(name).is_some())
            .map(|(name, pin)| (name.clone(), pin.clone()))
            .collect();
        Ok(Self {
            table,
            pools,
            pinned,
            pins,
            cells,
            extras,
        })
    }

    /// Tell the registry which shadowed routes are live now (after the swap).
    fn commit_verifiers(&self, shared: &Shared) {
        shared.verifiers.commit(
            self.extras
                .iter()
                .filter_map(|extras| extras.shadow.as_ref())
                .map(|shadow| shadow.verifier.clone()),
        );
    }
}

/// The extra state of every route of `table`, indexed by route; `previous` is the runtime
/// being replaced, whose shadow bounds carry over to routes of the same name.
fn route_extras(
    table: &RouteTable,
    pools: &[Arc<UpstreamPool>],
    previous: Option<&Runtime>,
    shared: &Shared,
) -> Result<Vec<RouteExtras>, ReloadError> {
    let named: Vec<(String, Arc<UpstreamPool>)> = table
        .upstreams()
        .iter()
        .zip(pools)
        .map(|(spec, pool)| (spec.name.clone(), pool.clone()))
        .collect();
    table
        .routes()
        .iter()
        .map(|route| {
            let mut extras = RouteExtras {
                fallback: route.fallback.map(|_| shared.metrics.fallback(&route.name)),
                hooks: decorate::route_hooks(&shared.hooks, route, &named)?,
                ..RouteExtras::default()
            };
            match &route.action {
                Action::Shadow(spec) => {
                    let verifier = shared
                        .verifiers
                        .prepare(&route.name, &verify_config(spec))
                        .map_err(|source| ReloadError::Compare {
                            route: route.name.clone(),
                            source,
                        })?;
                    let before = previous.and_then(|old| {
                        let route = old.table.route(&route.name)?;
                        old.extras(route)?.shadow.as_deref()
                    });
                    extras.shadow = Some(Arc::new(ShadowRoute::new(
                        spec.clone(),
                        verifier,
                        shared
                            .metrics
                            .shadow(&route.name, &table.upstream(spec.candidate).name),
                        shared.diff_log.clone(),
                        shared.spare_cpu.clone(),
                        before,
                    )));
                }
                Action::Canary(spec) => {
                    extras.canary = Some(Arc::new(CanaryRoute::new(
                        &route.name,
                        &route.fingerprint,
                        spec,
                        shared.trips.clone(),
                    )));
                }
                Action::Forward(_) | Action::Respond(_) => {}
            }
            Ok(extras)
        })
        .collect()
}

fn verify_config(spec: &Shadow) -> VerifyConfig {
    let compare = &spec.compare;
    VerifyConfig {
        rules: CompareRules {
            ignore_headers: compare.ignore_headers.clone(),
            ignore_json: compare.ignore_json.clone(),
            redact_headers: compare.redact_headers.clone(),
            redact_json: compare.redact_json.clone(),
            redact_query: Vec::new(),
            max_decoded_body: usize::try_from(spec.max_body.saturating_mul(8))
                .unwrap_or(usize::MAX),
        },
        gate: spec.gate.as_ref().map(|gate| ShadowGate {
            min_comparisons: gate.min_comparisons,
            max_mismatch_rate: gate.max_mismatch_rate,
        }),
        ..VerifyConfig::default()
    }
}

/// The last reload that failed, for the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadFailure {
    /// When, as seconds since the Unix epoch.
    pub at_unix: u64,
    /// What triggered it (file change, SIGHUP, admin).
    pub cause: String,
    /// Every problem, one per line.
    pub errors: Vec<String>,
}

/// A route name that is not in the active table.
#[derive(Debug, thiserror::Error)]
#[error("no route named {0:?}")]
pub struct UnknownRoute(pub String);

/// The swappable home of the current [`Runtime`].
pub struct RuntimeStore {
    current: ArcSwap<Runtime>,
    routes_file: PathBuf,
    shared: Arc<Shared>,
    /// Rollback pins by route name: the source of truth that every rebuilt runtime copies.
    pins: Mutex<BTreeMap<String, Pin>>,
    last_failure: Mutex<Option<ReloadFailure>>,
    /// Serializes swaps so reloads and pin changes never lose each other's update.
    swap_lock: tokio::sync::Mutex<()>,
    /// The file watcher, once started (see [`RuntimeStore::watch_with`]).
    watcher: OnceLock<Reloader>,
}

impl RuntimeStore {
    /// Load `routes_file` and build the first runtime.
    ///
    /// # Errors
    /// [`ReloadError`] when the file is invalid or a pool cannot be built.
    pub fn open(routes_file: &Path, shared: Arc<Shared>) -> Result<Self, ReloadError> {
        let table = Arc::new(strangler_routes::load_file(routes_file)?);
        let runtime = Runtime::build(table, None, &BTreeMap::new(), &shared)?;
        runtime.commit_verifiers(&shared);
        shared.metrics.serve(runtime.table());
        shared.metrics.set_version(runtime.table().version());
        Ok(Self {
            current: ArcSwap::from_pointee(runtime),
            routes_file: routes_file.to_path_buf(),
            shared,
            pins: Mutex::new(BTreeMap::new()),
            last_failure: Mutex::new(None),
            swap_lock: tokio::sync::Mutex::new(()),
            watcher: OnceLock::new(),
        })
    }

    /// Keep `watcher` watching the files the live table names (the route file, hook scripts,
    /// CA bundles): every successful reload, whoever asked for it (the watcher itself,
    /// SIGHUP, `POST /reload`), hands it the new table's set. Set once, at start.
    pub fn watch_with(&self, watcher: Reloader) {
        let _ = self.watcher.set(watcher);
    }

    /// The runtime to serve one request with; keep the `Arc` for the whole exchange.
    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// The route file this store loads.
    pub fn routes_file(&self) -> &Path {
        &self.routes_file
    }

    /// The shared metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// The shadowed routes' judges, for `/diffs`.
    pub fn verifiers(&self) -> &Verifiers {
        &self.shared.verifiers
    }

    /// The last failed reload, if the latest attempt failed.
    pub fn last_failure(&self) -> Option<ReloadFailure> {
        self.last_failure.lock().ok().and_then(|f| f.clone())
    }

    /// Re-read the route file, build a complete new runtime beside the running one and swap
    /// it in. On any error nothing changes.
    ///
    /// # Errors
    /// [`ReloadError`] with every validation problem of the file.
    pub async fn reload(&self, cause: &str) -> Result<Arc<Runtime>, ReloadError> {
        let _one_at_a_time = self.swap_lock.lock().await;
        let old = self.snapshot();
        let built = strangler_routes::load_file(&self.routes_file)
            .map_err(ReloadError::from)
            .and_then(|table| {
                let pins = self.pins_for(&table);
                Runtime::build(Arc::new(table), Some(&old), &pins, &self.shared)
            });
        match built {
            Ok(runtime) => {
                let runtime = Arc::new(runtime);
                let changed = runtime.differs_from(&old);
                self.shared.metrics.serve(runtime.table());
                self.current.store(runtime.clone());
                runtime.commit_verifiers(&self.shared);
                if let Some(watcher) = self.watcher.get() {
                    watcher.set_files(runtime.table().watched_files());
                }
                self.shared
                    .metrics
                    .forget_removed(old.table(), runtime.table());
                self.shared
                    .metrics
                    .reloaded(true, runtime.table().version());
                if let Ok(mut failure) = self.last_failure.lock() {
                    *failure = None;
                }
                tracing::info!(
                    cause,
                    version = runtime.table().version(),
                    changed,
                    routes = runtime.table().routes().len(),
                    "route table loaded"
                );
                Ok(runtime)
            }
            Err(err) => {
                self.shared.metrics.reloaded(false, "");
                if let Ok(mut failure) = self.last_failure.lock() {
                    *failure = Some(ReloadFailure {
                        at_unix: unix_now(),
                        cause: cause.to_string(),
                        errors: err.lines(),
                    });
                }
                tracing::error!(cause, file = %self.routes_file.display(), "reload rejected, the running table keeps serving:\n{err}");
                Err(err)
            }
        }
    }

    /// Pin `route` to its `rollback_to` upstream (operator call or failing gate).
    /// Returns false when it was already pinned.
    ///
    /// # Errors
    /// [`UnknownRoute`] when the active table has no such route.
    pub async fn pin(&self, route: &str, reason: &str) -> Result<bool, UnknownRoute> {
        self.change_pin(route, Some((reason, None))).await
    }

    /// Pin `route` because its gate failed while its definition was `fingerprint`.
    /// Returns false when it was already pinned.
    ///
    /// # Errors
    /// [`UnknownRoute`] when the active table has no such route.
    pub async fn pin_by_gate(&self, trip: &GateTrip) -> Result<bool, UnknownRoute> {
        let reason = format!("canary gate failed: {}", trip.reason);
        self.change_pin(&trip.route, Some((&reason, Some(&trip.fingerprint))))
            .await
    }

    /// Clear the pin of `route`. Returns false when it was not pinned.
    ///
    /// # Errors
    /// [`UnknownRoute`] when the active table has no such route.
    pub async fn unpin(&self, route: &str) -> Result<bool, UnknownRoute> {
        self.change_pin(route, None).await
    }

    async fn change_pin(
        &self,
        route: &str,
        reason: Option<(&str, Option<&str>)>,
    ) -> Result<bool, UnknownRoute> {
        let _one_at_a_time = self.swap_lock.lock().await;
        let old = self.snapshot();
        if old.table().route(route).is_none() {
            return Err(UnknownRoute(route.to_string()));
        }
        let changed = {
            let Ok(mut pins) = self.pins.lock() else {
                return Ok(false);
            };
            match reason {
                Some((reason, fingerprint)) if !pins.contains_key(route) => {
                    pins.insert(
                        route.to_string(),
                        Pin {
                            reason: reason.to_string(),
                            since_unix: unix_now(),
                            fingerprint: fingerprint.map(str::to_string),
                        },
                    );
                    true
                }
                None => pins.remove(route).is_some(),
                Some(_) => false,
            }
        };
        if changed {
            let pins = self.pins_now();
            // Same table, same pools: only the pins differ, so this cannot fail.
            if let Ok(runtime) = Runtime::build(old.table.clone(), Some(&old), &pins, &self.shared)
            {
                self.current.store(Arc::new(runtime));
            }
            match reason {
                Some((reason, _)) => {
                    tracing::warn!(route, reason, "route pinned to its rollback upstream")
                }
                None => tracing::info!(route, "rollback pin cleared"),
            }
        }
        Ok(changed)
    }

    /// The pins that apply to `table`: a gate's pin ends when its route was edited.
    fn pins_for(&self, table: &RouteTable) -> BTreeMap<String, Pin> {
        let Ok(mut pins) = self.pins.lock() else {
            return BTreeMap::new();
        };
        pins.retain(|name, pin| {
            let edited = match (&pin.fingerprint, table.route(name)) {
                (Some(then), Some(route)) => *then != route.fingerprint,
                _ => false,
            };
            if edited {
                tracing::info!(route = %name, "route edited: its gate rollback is cleared");
            }
            !edited
        });
        pins.clone()
    }

    fn pins_now(&self) -> BTreeMap<String, Pin> {
        self.pins.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use strangler_plugins::HookConfig;

    fn shared() -> Arc<Shared> {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let runs = metrics.hook_runs();
        Arc::new(Shared {
            hooks: HookEngine::new(HookConfig::default(), runs).expect("hook engine"),
            metrics,
            verifiers: Verifiers::new(),
            diff_log: None,
            trips: tokio::sync::mpsc::unbounded_channel().0,
            spare_cpu: SpareCpu::new(0.0),
        })
    }

    /// `POST /reload` (like SIGHUP) reloads through the store, not the watcher: the hook
    /// script a new table names must be watched from then on all the same.
    #[tokio::test]
    async fn any_reload_makes_the_watcher_follow_the_new_tables_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let routes = dir.path().join("routes.yaml");
        let hook = dir.path().join("hook.lua");
        let upstreams = "upstreams:\n  app: { url: \"http://127.0.0.1:9\" }\ndefault: app\n";
        std::fs::write(&routes, format!("{upstreams}routes: []\n")).expect("write");
        std::fs::write(&hook, "function on_request(req) end\n").expect("write");
        let store = RuntimeStore::open(&routes, shared()).expect("open");
        let files = store.snapshot().table().watched_files();
        let (_changes, watcher) =
            strangler_routes::spawn_watcher_files(files, Duration::from_secs(3600))
                .expect("watcher");
        store.watch_with(watcher.clone());
        assert!(!watcher.files().contains(&hook));

        std::fs::write(
            &routes,
            format!(
                "{upstreams}routes:\n  - name: r\n    match: {{ path_prefix: / }}\n    to: app\n    hooks: [hook.lua]\n"
            ),
        )
        .expect("write");
        store.reload("admin").await.expect("reload");
        let watched = watcher.files();
        assert!(watched.contains(&hook), "{watched:?}");
        assert_eq!(watched, store.snapshot().table().watched_files());
    }
}
