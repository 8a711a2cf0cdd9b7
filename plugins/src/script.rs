//! Hook scripts compiled at reload, and the ordered chain of them that one route runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::{PluginError, PluginErrorKind};
use crate::hooks::{OnError, Phases};
use crate::state::{LoadError, LuaState};

/// Top-level code of a script (which only defines functions, normally) gets this long at
/// compile time; generous, because it runs once per reload, not per request.
const COMPILE_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// A hook script that compiled: its source, and which phases it defines. Cheap to clone.
///
/// Compiling checks the syntax and runs the top level once in a fresh sandboxed state (the
/// top level should only define `on_request`, `on_response` and/or `after_response`). Each
/// worker state loads the script again on first use and keeps its functions, keyed by the
/// content hash, so an unchanged script survives a reload without being loaded again.
#[derive(Debug, Clone)]
pub struct HookScript(pub(crate) Arc<ScriptInner>);

/// One entry of a route's `hooks:` list.
#[derive(Debug, Clone)]
pub struct HookEntry {
    /// The compiled script.
    pub script: HookScript,
    /// What a failure of this hook does (`on_error:`; default [`OnError::Fail`]).
    pub on_error: OnError,
}

/// The hooks of one route, in file order; built at reload, cheap to clone.
#[derive(Debug, Clone)]
pub struct HookChain(Arc<ChainInner>);

#[derive(Debug)]
pub(crate) struct ScriptInner {
    pub(crate) path: PathBuf,
    /// The chunk name Lua reports in messages: the file name.
    pub(crate) chunk: String,
    pub(crate) source: String,
    pub(crate) phases: Phases,
    pub(crate) digest: [u8; 32],
    pub(crate) key: u64,
}

#[derive(Debug)]
struct ChainInner {
    route: Arc<str>,
    entries: Vec<HookEntry>,
    phases: Phases,
}

impl HookScript {
    /// Reads and compiles the script at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not valid Lua, its top level fails or loops, a hook name
    /// is bound to a non-function, or it defines no hook at all. The error names the script
    /// and, when Lua says, the line.
    pub fn compile(path: &Path) -> Result<HookScript, PluginError> {
        let source = std::fs::read_to_string(path).map_err(|e| PluginError {
            script: path.to_path_buf(),
            line: None,
            kind: PluginErrorKind::Io(e),
        })?;
        HookScript::from_source(path, source)
    }

    /// Compiles `source` as if it had been read from `path` (which only names it).
    ///
    /// # Errors
    /// As [`HookScript::compile`], except reading.
    pub fn from_source(path: &Path, source: String) -> Result<HookScript, PluginError> {
        let chunk = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let digest: [u8; 32] = Sha256::new()
            .chain_update(chunk.as_bytes())
            .chain_update([0])
            .chain_update(source.as_bytes())
            .finalize()
            .into();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        let mut inner = ScriptInner {
            path: path.to_path_buf(),
            chunk,
            source,
            phases: Phases::default(),
            digest,
            key: u64::from_le_bytes(key),
        };
        let error = |line, kind| PluginError {
            script: path.to_path_buf(),
            line,
            kind,
        };
        let mut state = LuaState::new_checker()
            .map_err(|e| error(None, PluginErrorKind::State(e.to_string())))?;
        inner.phases = state.check(&inner, COMPILE_BUDGET).map_err(|e| match e {
            LoadError::Syntax(f) => error(f.line, PluginErrorKind::Syntax(f.message)),
            LoadError::Run {
                failure,
                timeout: true,
            } => error(failure.line, PluginErrorKind::Timeout),
            LoadError::Run { failure, .. } => {
                error(failure.line, PluginErrorKind::Load(failure.message))
            }
            LoadError::NotAFunction { name, found } => {
                error(None, PluginErrorKind::NotAFunction { name, found })
            }
        })?;
        if inner.phases.is_empty() {
            return Err(error(None, PluginErrorKind::NoHooks));
        }
        Ok(HookScript(Arc::new(inner)))
    }

    /// The path the script was compiled from.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// The file name, as Lua names the script in messages (a good `hook` metric label when
    /// file names are unique; otherwise label with [`HookScript::path`]).
    pub fn name(&self) -> &str {
        &self.0.chunk
    }

    /// The phases the script defines.
    pub fn phases(&self) -> Phases {
        self.0.phases
    }

    /// The source text.
    pub fn source(&self) -> &str {
        &self.0.source
    }

    /// SHA-256 of the file name and source: equal digests load as the same functions.
    pub fn digest(&self) -> [u8; 32] {
        self.0.digest
    }
}

impl HookChain {
    /// The chain of `route`'s hooks, in the order given (the route file's order).
    pub fn new(route: impl Into<Arc<str>>, entries: Vec<HookEntry>) -> HookChain {
        let phases = entries
            .iter()
            .fold(Phases::default(), |acc, e| acc.union(e.script.phases()));
        HookChain(Arc::new(ChainInner {
            route: route.into(),
            entries,
            phases,
        }))
    }

    /// The route name (`req.route` in Lua).
    pub fn route(&self) -> &Arc<str> {
        &self.0.route
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[HookEntry] {
        &self.0.entries
    }

    /// Phases defined by at least one script of the chain.
    pub fn phases(&self) -> Phases {
        self.0.phases
    }

    /// Whether the chain has no hooks.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }
}
