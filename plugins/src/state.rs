//! One sandboxed Lua state: its time budget, memory limit, and the scripts loaded into it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;

use mlua::chunk::ChunkMode;
use mlua::{Function, HookTriggers, IntoLuaMulti, Lua, LuaOptions, StdLib, Value, VmState};

use crate::error::{HookError, HookFailure, LuaFailure};
use crate::hooks::{Phase, Phases};
use crate::sandbox;
use crate::script::{HookScript, ScriptInner};
use crate::shared::{BUDGET_MESSAGE, Shared};

/// How often (in VM instructions) the budget hook looks at the clock. The interpreter runs
/// a few hundred million instructions a second, so a runaway loop is cut off within tens of
/// microseconds past its deadline, and a call shorter than this never reads the clock.
const INSTRUCTIONS_PER_CHECK: u32 = 10_000;

/// A Lua state with the hook sandbox installed.
///
/// Not thread-safe by design: the owner (a thread-local slot, or the `after_response`
/// thread) is the only one that ever touches it, so mlua's internal lock is never contended.
pub(crate) struct LuaState {
    pub(crate) lua: Lua,
    pub(crate) shared: Arc<Shared>,
    template: mlua::Table,
    scripts: HashMap<u64, Loaded, BuildHasherDefault<KeyHasher>>,
    memory_limit: usize,
    /// Set when the state should not be used again (a full collection failed, or scripts
    /// keep the heap near its limit); the owner replaces it before the next call.
    pub(crate) poisoned: bool,
}

/// Why a script could not be loaded into a state.
pub(crate) enum LoadError {
    Syntax(LuaFailure),
    Run { failure: LuaFailure, timeout: bool },
    NotAFunction { name: &'static str, found: String },
}

/// A script's hook functions in one state.
struct Loaded {
    digest: [u8; 32],
    /// Lets a state forget scripts that no route table uses any more.
    owner: Weak<ScriptInner>,
    functions: [Option<Function>; 3],
}

/// Script keys are already the leading bytes of a SHA-256; hashing them again is wasted work
/// on the per-call path.
#[derive(Default)]
struct KeyHasher(u64);

impl LuaState {
    /// A state for checking scripts at compile time, or for the synchronous phases, where
    /// `http.request` is not available.
    pub(crate) fn new_checker() -> mlua::Result<LuaState> {
        LuaState::build(|lua, _| {
            lua.create_function(|_, _: mlua::MultiValue| -> mlua::Result<()> {
                Err(mlua::Error::runtime(
                    "http.request is only available in after_response",
                ))
            })
        })
    }

    /// A state whose `http.request` is made by `make_http` (the `after_response` thread's).
    pub(crate) fn build(
        make_http: impl FnOnce(&Lua, &Arc<Shared>) -> mlua::Result<Function>,
    ) -> mlua::Result<LuaState> {
        // No JIT library: instruction-count hooks never fire inside compiled traces, so with
        // the JIT on a `while true do end` could not be stopped (and the JIT is off unless
        // `luaopen_jit` turns it on). No io, os, package, debug, ffi either.
        let libs = StdLib::STRING | StdLib::TABLE | StdLib::MATH | StdLib::BIT | StdLib::OS;
        let lua = Lua::new_with(libs, LuaOptions::new())?;
        let shared = Arc::new(Shared::new());
        let budget = Arc::clone(&shared);
        lua.set_global_hook(
            HookTriggers::new().every_nth_instruction(INSTRUCTIONS_PER_CHECK),
            move |_, debug| {
                if !budget.over_deadline() {
                    return Ok(VmState::Continue);
                }
                // An error raised from a hook carries no location; add the script's, in
                // Lua's own `chunk:line:` form, so that the report names the looping line.
                let source = debug.source();
                match (
                    source.source.as_deref(),
                    source.short_src,
                    debug.current_line(),
                ) {
                    (Some(s), Some(short), Some(line)) if s != "=strangler" => Err(
                        mlua::Error::runtime(format!("{short}:{line}: {BUDGET_MESSAGE}")),
                    ),
                    _ => Err(mlua::Error::runtime(BUDGET_MESSAGE)),
                }
            },
        )?;
        let http_request = make_http(&lua, &shared)?;
        let template = sandbox::template(&lua, &shared, http_request)?;
        Ok(LuaState {
            lua,
            shared,
            template,
            scripts: HashMap::default(),
            memory_limit: 0,
            poisoned: false,
        })
    }

    /// Sets the memory limit (bytes) if it differs from the current one.
    pub(crate) fn set_memory_limit(&mut self, limit: usize) {
        if self.memory_limit != limit {
            match self.lua.set_memory_limit(limit) {
                Ok(_) => self.memory_limit = limit,
                // Without memory control a state could grow without bound: do not keep it.
                Err(_) => self.poisoned = true,
            }
        }
    }

    /// Loads `script` into this fresh state and tells which phases it defines.
    pub(crate) fn check(
        &mut self,
        script: &ScriptInner,
        budget: Duration,
    ) -> Result<Phases, LoadError> {
        let functions = self.load_functions(script, budget)?;
        let mut phases = Phases::default();
        for (phase, function) in Phase::ALL.into_iter().zip(&functions) {
            if function.is_some() {
                phases.set(phase);
            }
        }
        Ok(phases)
    }

    /// Calls `script`'s `phase` function with `args` under the time budget, loading the script
    /// into this state first if needed. A script without that phase is not called.
    pub(crate) fn call(
        &mut self,
        script: &HookScript,
        phase: Phase,
        args: impl IntoLuaMulti,
        budget: Duration,
    ) -> Result<(), HookError> {
        let inner = &script.0;
        let loaded = match self.scripts.get(&inner.key) {
            Some(loaded) if loaded.digest == inner.digest && loaded.owner.strong_count() > 0 => {
                loaded
            }
            // First use in this state, or a reload: the slow path loads and refreshes.
            _ => {
                self.function(script, phase, budget)?;
                match self.scripts.get(&inner.key) {
                    Some(loaded) => loaded,
                    None => return Ok(()),
                }
            }
        };
        // Borrowed, not cloned: cloning a function is a round trip through the Lua stack.
        let Some(function) = &loaded.functions[phase_index(phase)] else {
            return Ok(());
        };
        self.shared.arm(budget);
        let result = function.call::<()>(args);
        self.shared.disarm();
        result.map_err(|e| self.failure(&e, script, phase))
    }

    /// `script`'s `phase` function in this state, loading the script on first use.
    pub(crate) fn function(
        &mut self,
        script: &HookScript,
        phase: Phase,
        budget: Duration,
    ) -> Result<Option<Function>, HookError> {
        let inner = &script.0;
        let index = phase_index(phase);
        if let Some(loaded) = self.scripts.get_mut(&inner.key)
            && loaded.digest == inner.digest
        {
            if loaded.owner.strong_count() == 0 {
                loaded.owner = Arc::downgrade(inner);
            }
            return Ok(loaded.functions[index].clone());
        }
        // A miss happens after a reload: forget scripts that no live route table holds.
        self.scripts.retain(|_, l| l.owner.strong_count() > 0);
        let functions = self.load_functions(inner, budget).map_err(|e| {
            let (failure, kind) = match e {
                LoadError::Syntax(f) => (f, HookFailure::Error),
                LoadError::Run { failure, timeout } => {
                    let kind = if timeout {
                        HookFailure::Timeout
                    } else if failure.memory {
                        HookFailure::Memory
                    } else {
                        HookFailure::Error
                    };
                    (failure, kind)
                }
                LoadError::NotAFunction { name, found } => (
                    LuaFailure {
                        line: None,
                        message: format!("`{name}` must be a function, found {found}"),
                        memory: false,
                    },
                    HookFailure::Error,
                ),
            };
            HookError {
                script: inner.path.clone(),
                phase,
                line: failure.line,
                kind,
                message: format!("cannot load the script: {}", failure.message),
            }
        })?;
        let function = functions[index].clone();
        self.scripts.insert(
            inner.key,
            Loaded {
                digest: inner.digest,
                owner: Arc::downgrade(inner),
                functions,
            },
        );
        Ok(function)
    }

    /// Turns an error of a call into a [`HookError`], and makes the state usable again.
    pub(crate) fn failure(
        &mut self,
        err: &mlua::Error,
        script: &HookScript,
        phase: Phase,
    ) -> HookError {
        self.failure_with(err, script, phase, self.shared.exceeded())
    }

    /// As [`LuaState::failure`], with whether the budget ran out known by the caller.
    pub(crate) fn failure_with(
        &mut self,
        err: &mlua::Error,
        script: &HookScript,
        phase: Phase,
        timed_out: bool,
    ) -> HookError {
        let failure = LuaFailure::from_mlua(err, &script.0.chunk);
        self.recover(failure.memory);
        let kind = if timed_out {
            HookFailure::Timeout
        } else if failure.memory {
            HookFailure::Memory
        } else {
            HookFailure::Error
        };
        HookError {
            script: script.0.path.clone(),
            phase,
            line: failure.line,
            kind,
            message: failure.message,
        }
    }

    fn load_functions(
        &mut self,
        script: &ScriptInner,
        budget: Duration,
    ) -> Result<[Option<Function>; 3], LoadError> {
        let run_failure = |state: &mut LuaState, e: &mlua::Error| {
            let failure = LuaFailure::from_mlua(e, &script.chunk);
            state.recover(failure.memory);
            LoadError::Run {
                failure,
                timeout: state.shared.exceeded(),
            }
        };
        let env = sandbox::script_env(&self.lua, &self.template, &self.shared, &script.chunk)
            .map_err(|e| run_failure(self, &e))?;
        let chunk = self
            .lua
            .load(script.source.as_str())
            .set_name(format!("={}", script.chunk))
            // Bytecode can crash the VM: only source text is accepted.
            .set_mode(ChunkMode::Text)
            .set_environment(env.clone())
            .into_function()
            .map_err(|e| LoadError::Syntax(LuaFailure::from_mlua(&e, &script.chunk)))?;
        self.shared.arm(budget);
        let result = chunk.call::<()>(());
        self.shared.disarm();
        result.map_err(|e| run_failure(self, &e))?;
        let mut functions: [Option<Function>; 3] = [None, None, None];
        for (phase, slot) in Phase::ALL.into_iter().zip(functions.iter_mut()) {
            match env
                .raw_get::<Value>(phase.as_str())
                .map_err(|e| run_failure(self, &e))?
            {
                Value::Nil => {}
                Value::Function(f) => *slot = Some(f),
                other => {
                    return Err(LoadError::NotAFunction {
                        name: phase.as_str(),
                        found: other.type_name().to_string(),
                    });
                }
            }
        }
        Ok(functions)
    }

    /// After an out-of-memory error LuaJIT keeps failing until a full collection has run.
    fn recover(&mut self, memory: bool) {
        if !memory {
            return;
        }
        if self.lua.gc_collect().is_err() {
            self.poisoned = true;
            return;
        }
        // Still nearly full after a full collection: scripts keep garbage alive across calls
        // (a global table that grows), and every later call would fail. Start over.
        if self.memory_limit > 0 && self.lua.used_memory() > self.memory_limit / 10 * 9 {
            self.poisoned = true;
        }
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn phase_index(phase: Phase) -> usize {
    match phase {
        Phase::OnRequest => 0,
        Phase::OnResponse => 1,
        Phase::AfterResponse => 2,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn script(name: &str, source: &str) -> HookScript {
        HookScript::from_source(Path::new(name), source.to_string()).unwrap()
    }

    #[test]
    fn a_state_keeps_scripts_by_content_and_forgets_unused_ones() {
        let budget = Duration::from_millis(50);
        let mut state = LuaState::new_checker().unwrap();
        let a = script("a.lua", "function on_request() end");
        assert!(
            state
                .function(&a, Phase::OnRequest, budget)
                .unwrap()
                .is_some()
        );
        assert!(
            state
                .function(&a, Phase::OnResponse, budget)
                .unwrap()
                .is_none()
        );
        // A reload compiles the same file again: same content, same functions, no new load.
        let again = script("a.lua", "function on_request() end");
        let before = state.lua.used_memory();
        state.function(&again, Phase::OnRequest, budget).unwrap();
        assert_eq!(state.lua.used_memory(), before);
        assert_eq!(state.scripts.len(), 1);
        // Once no chain holds a script, the next load forgets it.
        drop((a, again));
        let b = script("b.lua", "function on_response() end");
        state.function(&b, Phase::OnResponse, budget).unwrap();
        assert_eq!(state.scripts.len(), 1);
        assert!(state.scripts.contains_key(&b.0.key));
    }
}
