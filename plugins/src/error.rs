//! Errors: a script that cannot be loaded ([`PluginError`]) and a hook run that failed ([`HookError`]).

use std::fmt;
use std::path::PathBuf;

use crate::hooks::{Phase, RunResult};

/// A hook script that cannot be used: unreadable, not valid Lua, or not a hook file.
///
/// Reported by [`HookScript::compile`](crate::HookScript::compile) at reload, so that a bad
/// script fails `strangler check` and the reload like any other validation error.
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {kind}", script.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct PluginError {
    /// The script, as the caller named it.
    pub script: PathBuf,
    /// The line the problem is on, when Lua says.
    pub line: Option<usize>,
    /// What is wrong.
    pub kind: PluginErrorKind,
}

/// What is wrong with a hook script.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginErrorKind {
    /// The file cannot be read.
    #[error("cannot read the script")]
    Io(#[source] std::io::Error),
    /// The file is not valid Lua.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// Running the script's top level (which defines the hooks) failed.
    #[error("error while loading: {0}")]
    Load(String),
    /// The top level ran out of its time budget (a loop outside any hook function).
    #[error("loading exceeded its time budget")]
    Timeout,
    /// A hook name is bound to something that is not a function.
    #[error("`{name}` must be a function, found {found}")]
    NotAFunction {
        /// `on_request`, `on_response` or `after_response`.
        name: &'static str,
        /// The Lua type found instead.
        found: String,
    },
    /// The script defines none of the hook functions, so it would do nothing.
    #[error("defines none of on_request, on_response, after_response")]
    NoHooks,
    /// A Lua state for checking the script could not be created.
    #[error("cannot create a lua state: {0}")]
    State(String),
}

/// One hook run that failed; the caller applies the hook entry's
/// [`OnError`](crate::OnError) (the chain already did, see [`Hooks`](crate::Hooks)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError {
    /// The script, as the caller named it.
    pub script: PathBuf,
    /// The phase that failed.
    pub phase: Phase,
    /// The script line the error was raised on, when known.
    pub line: Option<usize>,
    /// Why the run failed.
    pub kind: HookFailure,
    /// Lua's message, without the location prefix and traceback.
    pub message: String,
}

/// Why a hook run failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HookFailure {
    /// A Lua error: a bug in the script or a bad argument to the hook API.
    Error,
    /// The run exceeded its time budget (per call, or the after_response wall-clock limit).
    Timeout,
    /// The Lua state ran out of its memory limit.
    Memory,
}

impl HookError {
    /// The `result` label of `strangler_hook_runs_total` for this failure.
    pub fn result(&self) -> RunResult {
        match self.kind {
            HookFailure::Timeout => RunResult::Timeout,
            HookFailure::Error | HookFailure::Memory => RunResult::Error,
        }
    }
}

impl fmt::Display for HookError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hook {} {}", self.script.display(), self.phase)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        let what = match self.kind {
            HookFailure::Error => "failed",
            HookFailure::Timeout => "timed out",
            HookFailure::Memory => "ran out of memory",
        };
        write!(f, " {what}: {}", self.message)
    }
}

impl std::error::Error for HookError {}

/// A Lua error reduced to what a user needs: the script line and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LuaFailure {
    pub(crate) line: Option<usize>,
    pub(crate) message: String,
    pub(crate) memory: bool,
}

impl LuaFailure {
    /// Reduces `err`, raised while running the chunk called `chunk`.
    pub(crate) fn from_mlua(err: &mlua::Error, chunk: &str) -> LuaFailure {
        match err {
            mlua::Error::SyntaxError { message, .. } | mlua::Error::RuntimeError(message) => {
                let (mut line, message) = split_location(strip_traceback(message), chunk);
                // Errors raised from host code ("attempt to set an unknown field") have no
                // location prefix, but the appended traceback names the script's frame.
                if line.is_none() {
                    line = traceback_line(message_traceback(err), chunk);
                }
                LuaFailure {
                    line,
                    message,
                    memory: false,
                }
            }
            mlua::Error::MemoryError(_) => LuaFailure {
                line: None,
                message: "not enough memory (the state's memory limit was reached)".into(),
                memory: true,
            },
            mlua::Error::CallbackError { traceback, cause } => {
                let mut inner = LuaFailure::from_mlua(cause, chunk);
                if inner.line.is_none() {
                    inner.line = traceback_line(traceback, chunk);
                }
                inner
            }
            mlua::Error::WithContext { cause, .. } => LuaFailure::from_mlua(cause, chunk),
            other => LuaFailure {
                line: None,
                message: other.to_string(),
                memory: false,
            },
        }
    }
}

/// Lua appends a traceback to runtime errors; the line number is enough for a hook author.
fn strip_traceback(message: &str) -> &str {
    message
        .split("\nstack traceback:")
        .next()
        .unwrap_or(message)
        .trim_end()
}

fn message_traceback(err: &mlua::Error) -> &str {
    match err {
        mlua::Error::RuntimeError(message) => message
            .split_once("\nstack traceback:")
            .map_or("", |(_, tb)| tb),
        _ => "",
    }
}

/// Splits `chunk:12: message` into `(Some(12), "message")`; other messages pass unchanged.
fn split_location(message: &str, chunk: &str) -> (Option<usize>, String) {
    if let Some(rest) = message
        .strip_prefix(chunk)
        .and_then(|r| r.strip_prefix(':'))
    {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0
            && let Some(text) = rest[digits..].strip_prefix(':')
        {
            return (rest[..digits].parse().ok(), text.trim_start().to_string());
        }
    }
    (None, message.to_string())
}

/// The innermost frame of the script in a traceback, e.g. `\tloyalty.lua:7: in function ..`.
fn traceback_line(traceback: &str, chunk: &str) -> Option<usize> {
    traceback.lines().find_map(|frame| {
        let rest = frame.trim_start().strip_prefix(chunk)?.strip_prefix(':')?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        rest[..digits].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_prefix_is_split_off() {
        assert_eq!(
            split_location("a.lua:12: attempt to call a nil value", "a.lua"),
            (Some(12), "attempt to call a nil value".to_string())
        );
        assert_eq!(split_location("boom", "a.lua"), (None, "boom".to_string()));
        assert_eq!(
            split_location("a.lua: x", "a.lua"),
            (None, "a.lua: x".to_string())
        );
    }

    #[test]
    fn traceback_names_the_innermost_script_frame() {
        let tb = "stack traceback:\n\t[C]: in ?\n\ta.lua:7: in function 'on_request'\n\ta.lua:2: in main";
        assert_eq!(traceback_line(tb, "a.lua"), Some(7));
        assert_eq!(traceback_line(tb, "b.lua"), None);
    }
}
