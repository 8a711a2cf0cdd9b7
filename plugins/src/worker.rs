//! The `after_response` thread: a bounded queue of exchanges, one Lua state, one task per
//! exchange, callouts awaited without blocking anything.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::HeaderValue;
use mlua::AnyUserData;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::bridge::Views;
use crate::callout::{self, Callouts};
use crate::config::HookConfig;
use crate::engine::record;
use crate::error::{HookError, HookFailure};
use crate::hooks::{Exchange, HookObserver, Phase, Submission, id_text};
use crate::script::{HookChain, HookScript};
use crate::state::LuaState;

/// The submitting side, held by the engine. Dropping it lets the thread finish the queued
/// jobs (each bounded by its wall-clock limit) and exit.
pub(crate) struct AfterResponseQueue {
    jobs: mpsc::UnboundedSender<Job>,
    /// One permit per job queued or running: the bound. The channel itself is unbounded
    /// because a job can only be sent while holding a permit.
    permits: Arc<Semaphore>,
    max: u32,
    dropped: AtomicU64,
}

struct Job {
    chain: HookChain,
    callouts: Arc<dyn Callouts>,
    exchange: Exchange,
    _permit: OwnedSemaphorePermit,
}

/// What every job task shares on the hook thread.
struct Worker {
    config: HookConfig,
    observer: Arc<dyn HookObserver>,
    spawner: Option<Handle>,
}

/// The hook thread's state; replaced when poisoned, while jobs still running on the old
/// one keep it alive through their `Rc`.
type StateCell = Rc<RefCell<LuaState>>;

impl AfterResponseQueue {
    /// Spawns the hook thread.
    pub(crate) fn start(
        config: HookConfig,
        observer: Arc<dyn HookObserver>,
    ) -> std::io::Result<Self> {
        let max =
            u32::try_from(config.max_pending.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        let permits = Arc::new(Semaphore::new(max as usize));
        let (jobs, queue) = mpsc::unbounded_channel();
        let worker = Worker {
            config,
            observer,
            spawner: Handle::try_current().ok(),
        };
        let drain = Arc::clone(&permits);
        std::thread::Builder::new()
            .name("strangler-hooks".into())
            .spawn(move || worker.run(queue, drain, max))?;
        Ok(AfterResponseQueue {
            jobs,
            permits,
            max,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues the exchange, or drops it when `max_pending` jobs are already pending.
    pub(crate) fn submit(
        &self,
        chain: HookChain,
        callouts: Arc<dyn Callouts>,
        exchange: Exchange,
    ) -> Submission {
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Submission::Dropped;
        };
        match self.jobs.send(Job {
            chain,
            callouts,
            exchange,
            _permit: permit,
        }) {
            Ok(()) => Submission::Queued,
            // The hook thread is gone (its runtime could not start): count as dropped.
            Err(_) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                Submission::Dropped
            }
        }
    }

    pub(crate) fn pending(&self) -> usize {
        (self.max as usize).saturating_sub(self.permits.available_permits())
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) async fn idle(&self) {
        // Holding every permit at once means nothing is pending; they go back at once.
        let _all = self.permits.acquire_many(self.max).await;
    }
}

impl Worker {
    fn run(self, mut queue: mpsc::UnboundedReceiver<Job>, drain: Arc<Semaphore>, max: u32) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the after_response hook runtime; after_response hooks are dropped");
                return;
            }
        };
        let worker = Rc::new(self);
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async move {
            let mut current: Option<StateCell> = None;
            while let Some(job) = queue.recv().await {
                let state = match current
                    .take()
                    .filter(|s| s.try_borrow().is_ok_and(|s| !s.poisoned))
                {
                    Some(state) => state,
                    None => match worker.new_state() {
                        Ok(state) => Rc::new(RefCell::new(state)),
                        Err(e) => {
                            let reason = format!("cannot create a lua state: {e}");
                            worker.fail_job(&job.chain, job.exchange.request.id_text(), &reason);
                            continue;
                        }
                    },
                };
                current = Some(Rc::clone(&state));
                tokio::task::spawn_local(Rc::clone(&worker).run_job(state, job));
            }
            // The engine is gone: finish what was queued, then let the thread end.
            let _all = drain.acquire_many(max).await;
        });
    }

    fn new_state(&self) -> mlua::Result<LuaState> {
        let spawner = self.spawner.clone();
        let timeout = self.config.callout_timeout;
        let mut state =
            LuaState::build(|lua, shared| callout::http_request(lua, shared, spawner, timeout))?;
        state.lua.set_memory_limit(self.config.memory_limit)?;
        state.set_memory_limit(self.config.memory_limit);
        Ok(state)
    }

    fn fail_job(&self, chain: &HookChain, request_id: &str, message: &str) {
        for entry in chain
            .entries()
            .iter()
            .filter(|e| e.script.phases().after_response)
        {
            let error = HookError {
                script: entry.script.path().to_path_buf(),
                phase: Phase::AfterResponse,
                line: None,
                kind: HookFailure::Error,
                message: message.to_string(),
            };
            let id = || request_id.to_string();
            record(
                &*self.observer,
                chain.route(),
                &entry.script,
                Phase::AfterResponse,
                &Err(error),
                id,
            );
        }
    }

    /// Runs the chain's `after_response` hooks for one exchange, in order; a failure is
    /// counted and logged and the next hook still runs (nothing here can reach the client).
    async fn run_job(self: Rc<Self>, state: StateCell, job: Job) {
        let Job {
            chain,
            callouts,
            exchange,
            _permit,
        } = job;
        let request_id = exchange.request.request_id.clone();
        let views = {
            let state = state.borrow();
            job_views(&state.lua, &chain, exchange)
        };
        let (req, res) = match views {
            Ok(views) => views,
            Err(e) => {
                let reason = format!("cannot build req/res: {e}");
                return self.fail_job(&chain, id_text(&request_id), &reason);
            }
        };
        let deadline = tokio::time::Instant::now() + self.config.after_response_timeout;
        for entry in chain
            .entries()
            .iter()
            .filter(|e| e.script.phases().after_response)
        {
            // Past the wall clock nothing more of this job runs, not even a hook that would
            // finish at its first poll.
            let result = if tokio::time::Instant::now() >= deadline {
                Err(self.wall_clock_exceeded(&entry.script))
            } else {
                let call = Call {
                    state: &state,
                    script: &entry.script,
                    route: chain.route(),
                    callouts: &callouts,
                    request_id: &request_id,
                };
                match tokio::time::timeout_at(deadline, self.call(call, &req, &res)).await {
                    Ok(result) => result,
                    Err(_) => Err(self.wall_clock_exceeded(&entry.script)),
                }
            };
            let id = || id_text(&request_id).to_string();
            record(
                &*self.observer,
                chain.route(),
                &entry.script,
                Phase::AfterResponse,
                &result,
                id,
            );
        }
    }

    fn wall_clock_exceeded(&self, script: &HookScript) -> HookError {
        HookError {
            script: script.path().to_path_buf(),
            phase: Phase::AfterResponse,
            line: None,
            kind: HookFailure::Timeout,
            message: format!(
                "after_response exceeded its wall-clock limit of {:?}",
                self.config.after_response_timeout
            ),
        }
    }

    /// One hook call. Each poll of the Lua coroutine is one stretch of Lua between two
    /// awaits: it gets the full per-call budget, and the call context is set for it, since
    /// other jobs' coroutines run in the same state in between.
    async fn call(
        &self,
        call: Call<'_>,
        req: &AnyUserData,
        res: &AnyUserData,
    ) -> Result<(), HookError> {
        let budget = self.config.call_budget;
        let function =
            call.state
                .borrow_mut()
                .function(call.script, Phase::AfterResponse, budget)?;
        let Some(function) = function else {
            return Ok(());
        };
        let shared = Arc::clone(&call.state.borrow().shared);
        let mut running = std::pin::pin!(function.call_async::<()>((req, res)));
        let (result, timed_out) = std::future::poll_fn(|cx| {
            shared.arm(budget);
            shared.with_context(|c| {
                c.request_id.clone_from(call.request_id);
                c.route = Some(Arc::clone(call.route));
                c.callouts = Some(Arc::clone(call.callouts));
            });
            let poll = running.as_mut().poll(cx);
            shared.disarm();
            shared.with_context(|c| c.callouts = None);
            poll.map(|result| (result, shared.exceeded()))
        })
        .await;
        result.map_err(|e| {
            call.state
                .borrow_mut()
                .failure_with(&e, call.script, Phase::AfterResponse, timed_out)
        })
    }
}

/// What one hook call needs besides the views.
struct Call<'a> {
    state: &'a StateCell,
    script: &'a HookScript,
    route: &'a Arc<str>,
    callouts: &'a Arc<dyn Callouts>,
    request_id: &'a HeaderValue,
}

/// Fresh `req` and `res` for one job: jobs interleave in the state, so they cannot share
/// the reusable views of the synchronous phases.
fn job_views(
    lua: &mlua::Lua,
    chain: &HookChain,
    exchange: Exchange,
) -> mlua::Result<(AnyUserData, AnyUserData)> {
    let views = Views::create(lua)?;
    {
        let mut slot = views.lock();
        slot.req = exchange.request;
        slot.route = Arc::clone(chain.route());
        slot.phase = Phase::AfterResponse;
        slot.status = exchange.response.status;
        slot.headers = exchange.response.headers;
        slot.upstream = exchange.response.upstream;
        slot.body = exchange.body;
    }
    Ok((views.req, views.res))
}
