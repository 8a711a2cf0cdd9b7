//! The hook engine: runs a route's [`HookChain`] in the synchronous phases on a per-thread Lua
//! state, and hands `after_response` work to its own thread.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;

use crate::bridge::{Proxies, Views};
use crate::callout::Callouts;
use crate::config::HookConfig;
use crate::error::{HookError, HookFailure};
use crate::hooks::{
    Exchange, Flow, HookObserver, HookRequest, HookResponse, Hooks, OnError, Phase, Phases,
    RunResult, Submission,
};
use crate::script::{HookChain, HookEntry, HookScript};
use crate::state::LuaState;
use crate::worker::AfterResponseQueue;

/// Owns the hook runtime: budgets, the metrics observer, and the `after_response` thread.
/// Build one at start-up and keep it across reloads (a reload only builds new
/// [`HookChain`]s); cheap to clone.
///
/// # Lua states and threads
///
/// A Lua state is not thread-safe, and a state shared behind a lock serializes every hook
/// call in the process. So `on_request` and `on_response` run on a state that belongs to
/// the calling thread (a thread-local, created on first use, shared by every engine and
/// chain on that thread): no lock is contended and no request waits for another. Those
/// phases are synchronous (nothing in them can await), so a tokio worker never switches
/// tasks in the middle of a call.
///
/// `after_response` may await callouts, which a synchronous call cannot do (it would have
/// to block the worker). It runs on one dedicated thread with its own state and a
/// single-threaded runtime: each queued exchange becomes a task calling its hooks with
/// `call_async`, so many of them wait for callouts at once while one state serves them all.
/// The callouts themselves run on the runtime the engine was built on (the proxy's).
///
/// Each state loads a script on first use and keeps its functions, keyed by the script's
/// content hash; scripts no live [`HookChain`] holds are forgotten at the next load.
#[derive(Clone)]
pub struct HookEngine(Arc<EngineInner>);

/// One route's hooks bound to the engine: the [`Hooks`] implementation the proxy calls.
#[derive(Clone)]
pub struct LuaHooks {
    engine: HookEngine,
    chain: HookChain,
    callouts: Arc<dyn Callouts>,
}

struct EngineInner {
    config: HookConfig,
    observer: Arc<dyn HookObserver>,
    after: AfterResponseQueue,
}

/// The state of one thread for the synchronous phases, with its reusable `req`/`res`.
struct Local {
    state: LuaState,
    views: Views,
    /// What the hooks get as `req` and `res`.
    proxies: Proxies,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

impl HookEngine {
    /// Starts the engine and its `after_response` thread. Call it inside the proxy's tokio
    /// runtime: callouts are spawned there (outside a runtime they run on the hook thread's).
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn new(config: HookConfig, observer: Arc<dyn HookObserver>) -> std::io::Result<HookEngine> {
        let after = AfterResponseQueue::start(config.clone(), Arc::clone(&observer))?;
        Ok(HookEngine(Arc::new(EngineInner {
            config,
            observer,
            after,
        })))
    }

    /// Binds `chain` to this engine; `callouts` serves its `http.request` calls (built at
    /// reload with the route file's upstreams).
    pub fn hooks(&self, chain: HookChain, callouts: Arc<dyn Callouts>) -> LuaHooks {
        LuaHooks {
            engine: self.clone(),
            chain,
            callouts,
        }
    }

    /// The budgets in force.
    pub fn config(&self) -> &HookConfig {
        &self.0.config
    }

    /// `after_response` jobs queued or running.
    pub fn pending(&self) -> usize {
        self.0.after.pending()
    }

    /// `after_response` jobs dropped over the pending bound since start.
    pub fn dropped(&self) -> u64 {
        self.0.after.dropped()
    }

    /// Resolves once no `after_response` job is queued or running (for draining at
    /// shutdown, under the caller's deadline, and for tests).
    pub async fn idle(&self) {
        self.0.after.idle().await;
    }
}

impl fmt::Debug for HookEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HookEngine")
            .field("config", &self.0.config)
            .field("pending", &self.pending())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for LuaHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LuaHooks")
            .field("chain", &self.chain)
            .finish_non_exhaustive()
    }
}

impl LuaHooks {
    /// The chain these hooks run.
    pub fn chain(&self) -> &HookChain {
        &self.chain
    }

    /// Runs `body` on this thread's state; `Err(reason)` when the state cannot be had (it
    /// could not be created, or the thread is exiting).
    fn with_local<R>(&self, body: impl FnOnce(&mut Local) -> R) -> Result<R, String> {
        let config = &self.engine.0.config;
        let outcome = LOCAL.try_with(|cell| {
            let Ok(mut slot) = cell.try_borrow_mut() else {
                return Err("the hook state of this thread is already in use".to_string());
            };
            if slot.as_ref().is_some_and(|l| l.state.poisoned) {
                *slot = None;
            }
            let local = match &mut *slot {
                Some(local) => local,
                None => slot.insert(Local::new(config.memory_limit).map_err(|e| e.to_string())?),
            };
            local.state.set_memory_limit(config.memory_limit);
            Ok(body(local))
        });
        outcome.unwrap_or_else(|_| Err("the thread is exiting".to_string()))
    }

    /// Every hook of `phase` fails with `reason`, counted and logged each; the first that
    /// must fail closed is the chain's error (`None`: all of them fail open).
    fn unavailable(&self, phase: Phase, request_id: &str, reason: &str) -> Option<HookError> {
        for entry in self.entries(phase) {
            let error = HookError {
                script: entry.script.path().to_path_buf(),
                phase,
                line: None,
                kind: HookFailure::Error,
                message: format!("no lua state: {reason}"),
            };
            self.record(&entry.script, phase, &Err(error.clone()), || {
                request_id.to_string()
            });
            // As in a chain that runs: the first hook that fails closed ends it.
            if entry.on_error == OnError::Fail {
                return Some(error);
            }
        }
        None
    }

    fn entries(&self, phase: Phase) -> impl Iterator<Item = &HookEntry> {
        self.chain
            .entries()
            .iter()
            .filter(move |e| e.script.phases().has(phase))
    }

    fn record(
        &self,
        script: &HookScript,
        phase: Phase,
        result: &Result<(), HookError>,
        request_id: impl FnOnce() -> String,
    ) {
        record(
            &*self.engine.0.observer,
            self.chain.route(),
            script,
            phase,
            result,
            request_id,
        );
    }

    /// Counts one synchronous run and applies its entry's `on_error`: `Some(err)` ends the
    /// chain.
    fn settle(
        &self,
        local: &Local,
        entry: &HookEntry,
        phase: Phase,
        result: Result<(), HookError>,
    ) -> Option<HookError> {
        // The request (and its id) sits in the view during the chain; the id is only needed
        // to log a failure, so it is fetched only then.
        self.record(&entry.script, phase, &result, || {
            local.state.shared.request_id()
        });
        match result {
            Err(e) if entry.on_error == OnError::Fail => Some(e),
            _ => None,
        }
    }
}

impl Hooks for LuaHooks {
    fn phases(&self) -> Phases {
        self.chain.phases()
    }

    fn on_request(&self, req: &mut Box<HookRequest>) -> Result<Flow, HookError> {
        if !self.chain.phases().on_request {
            return Ok(Flow::Continue);
        }
        let budget = self.engine.0.config.call_budget;
        let outcome = self.with_local(|local| {
            local.load(req, None, self.chain.route(), Phase::OnRequest);
            let mut failed = None;
            let mut entries = self.entries(Phase::OnRequest).peekable();
            while let Some(entry) = entries.next() {
                let result =
                    local
                        .state
                        .call(&entry.script, Phase::OnRequest, &local.proxies.req, budget);
                failed = self.settle(local, entry, Phase::OnRequest, result);
                // Whether the hook responded only matters if another one would run next.
                if failed.is_some()
                    || (entries.peek().is_some() && local.views.lock().flow.is_some())
                {
                    break;
                }
            }
            let flow = local.unload(req, None);
            match failed {
                Some(e) => Err(e),
                None => Ok(flow.unwrap_or(Flow::Continue)),
            }
        });
        outcome.unwrap_or_else(|reason| {
            self.unavailable(Phase::OnRequest, req.id_text(), &reason)
                .map_or(Ok(Flow::Continue), Err)
        })
    }

    fn on_response(
        &self,
        req: &mut Box<HookRequest>,
        res: &mut HookResponse,
    ) -> Result<(), HookError> {
        if !self.chain.phases().on_response {
            return Ok(());
        }
        let budget = self.engine.0.config.call_budget;
        let outcome = self.with_local(|local| {
            local.load(req, Some(res), self.chain.route(), Phase::OnResponse);
            let mut failed = None;
            for entry in self.entries(Phase::OnResponse) {
                let args = (&local.proxies.req, &local.proxies.res);
                let result = local
                    .state
                    .call(&entry.script, Phase::OnResponse, args, budget);
                failed = self.settle(local, entry, Phase::OnResponse, result);
                if failed.is_some() {
                    break;
                }
            }
            local.unload(req, Some(res));
            failed.map_or(Ok(()), Err)
        });
        outcome.unwrap_or_else(|reason| {
            self.unavailable(Phase::OnResponse, req.id_text(), &reason)
                .map_or(Ok(()), Err)
        })
    }

    fn after_response(&self, exchange: Exchange) -> Submission {
        if !self.chain.phases().after_response {
            return Submission::Skipped;
        }
        let submission =
            self.engine
                .0
                .after
                .submit(self.chain.clone(), Arc::clone(&self.callouts), exchange);
        if submission == Submission::Dropped {
            for entry in self.entries(Phase::AfterResponse) {
                self.engine.0.observer.hook_ran(
                    &entry.script,
                    Phase::AfterResponse,
                    RunResult::Dropped,
                );
            }
        }
        submission
    }
}

impl Local {
    fn new(memory_limit: usize) -> mlua::Result<Local> {
        let mut state = LuaState::new_checker()?;
        state.lua.set_memory_limit(memory_limit)?;
        state.set_memory_limit(memory_limit);
        let views = Views::create(&state.lua)?;
        let proxies = views.proxies(&state.lua)?;
        Ok(Local {
            state,
            views,
            proxies,
        })
    }

    /// Marks the state as running `route`'s hooks for this request (log fields), and moves
    /// the caller's request (and response, in `on_response`) into the views (no copy);
    /// [`Local::unload`] moves them back. Swapped rather than taken: the slot's empty
    /// placeholders wait in the caller's place, so nothing is built or dropped per call.
    fn load(
        &self,
        req: &mut Box<HookRequest>,
        res: Option<&mut HookResponse>,
        route: &Arc<str>,
        phase: Phase,
    ) {
        self.state.shared.set_call(&req.request_id, route);
        let mut slot = self.views.lock();
        std::mem::swap(&mut slot.req, req);
        if !Arc::ptr_eq(&slot.route, route) {
            slot.route = Arc::clone(route);
        }
        slot.phase = phase;
        slot.flow = None;
        if let Some(res) = res {
            slot.status = res.status;
            std::mem::swap(&mut slot.headers, &mut res.headers);
            std::mem::swap(&mut slot.upstream, &mut res.upstream);
            slot.body = None;
        }
    }

    /// Moves back what [`Local::load`] moved in, with what the hooks made of it; the flow a
    /// hook asked for (`req:respond`), if any.
    fn unload(&self, req: &mut Box<HookRequest>, res: Option<&mut HookResponse>) -> Option<Flow> {
        let mut slot = self.views.lock();
        std::mem::swap(req, &mut slot.req);
        if let Some(res) = res {
            res.status = slot.status;
            std::mem::swap(&mut res.headers, &mut slot.headers);
            std::mem::swap(&mut res.upstream, &mut slot.upstream);
        }
        slot.flow.take()
    }
}

/// Counts one run and logs a failure with everything needed to find it.
pub(crate) fn record(
    observer: &dyn HookObserver,
    route: &str,
    script: &HookScript,
    phase: Phase,
    result: &Result<(), HookError>,
    request_id: impl FnOnce() -> String,
) {
    match result {
        Ok(()) => observer.hook_ran(script, phase, RunResult::Ok),
        Err(e) => {
            observer.hook_ran(script, phase, e.result());
            let request_id = request_id();
            tracing::warn!(
                target: "strangler::hook",
                script = %script.path().display(),
                phase = %phase,
                line = e.line,
                route,
                request_id = %request_id,
                result = %e.result(),
                "{}",
                e.message
            );
        }
    }
}
