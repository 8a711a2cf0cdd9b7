//! The globals a hook script sees: a safe subset of the standard library plus `json`, `log`
//! and `http`, one environment per script.
//!
//! Left out on purpose: `io`, `os` (except `os.time` and `os.clock`, which only read clocks),
//! `require`/`package`/`module`, `load`/`loadstring`/`loadfile`/`dofile` (they would compile
//! code outside the checked script, and bytecode can crash the VM), `debug`, `ffi`, `jit`,
//! `getfenv`/`setfenv` (they reach the real globals), `collectgarbage`/`gcinfo` (a script
//! must not stop the collector the memory limit relies on), `newproxy` (finalizers would run
//! outside any budget), `coroutine` (a resume would swallow the budget error, see below)
//! and `string.dump`. `string.find`, `match`, `gmatch` and `gsub` are replaced by ones
//! the time budget reaches (see [`patterns`]).

use std::borrow::Cow;
use std::sync::Arc;

use mlua::{Function, Lua, LuaSerdeExt, MultiValue, Table, Value};

use crate::hooks::id_text;
use crate::patterns;
use crate::shared::Shared;

/// Base-library functions that cannot reach outside the script.
const BASE: &[&str] = &[
    "assert",
    "error",
    "ipairs",
    "next",
    "pairs",
    "select",
    "tonumber",
    "tostring",
    "type",
    "unpack",
    "rawequal",
    "rawget",
    "rawset",
    "setmetatable",
    "getmetatable",
    "_VERSION",
];

/// Library tables each script gets its own shallow copy of, so that one script replacing
/// `string.format` does not change it for the other scripts in the same state.
const LIBRARIES: &[&str] = &["string", "table", "math", "bit"];

/// `pcall`/`xpcall` that let the budget error through: with the plain ones,
/// `while true do pcall(function() while true do end end) end` would catch every cut-off
/// and never end.
const PCALL_WRAPPERS: &str = r#"
local raw_pcall, raw_xpcall, exceeded, raise = ...
local function pass(ok, ...)
  if not ok and exceeded() then raise((...), 0) end
  return ok, ...
end
local function pcall(f, ...) return pass(raw_pcall(f, ...)) end
local function xpcall(f, handler, ...) return pass(raw_xpcall(f, handler, ...)) end
return pcall, xpcall
"#;

/// Builds the table every script environment is copied from; `http_request` is the state's
/// `http.request`.
pub(crate) fn template(
    lua: &Lua,
    shared: &Arc<Shared>,
    http_request: Function,
) -> mlua::Result<Table> {
    // `getmetatable("").__index` is the real string table, shared by all scripts of the state.
    lua.load("getmetatable('').__metatable = false; string.dump = nil")
        .set_name("=strangler")
        .exec()?;
    let globals = lua.globals();
    // LuaJIT matches patterns in C, out of the budget's reach: these are budgeted.
    patterns::install(lua, &globals.raw_get::<Table>("string")?, shared)?;
    let template = lua.create_table()?;
    for name in BASE {
        let value: Value = globals.raw_get(*name)?;
        if !value.is_nil() {
            template.raw_set(*name, value)?;
        }
    }
    let exceeded = {
        let shared = Arc::clone(shared);
        lua.create_function(move |_, ()| Ok(shared.exceeded()))?
    };
    let wrap = lua
        .load(PCALL_WRAPPERS)
        .set_name("=strangler")
        .into_function()?;
    let (pcall, xpcall): (Function, Function) = wrap.call((
        globals.raw_get::<Value>("pcall")?,
        globals.raw_get::<Value>("xpcall")?,
        exceeded,
        globals.raw_get::<Value>("error")?,
    ))?;
    template.raw_set("pcall", pcall)?;
    template.raw_set("xpcall", xpcall)?;
    for name in LIBRARIES {
        template.raw_set(*name, globals.raw_get::<Value>(*name)?)?;
    }
    let real_os: Table = globals.raw_get("os")?;
    let os = lua.create_table()?;
    os.raw_set("time", real_os.raw_get::<Value>("time")?)?;
    os.raw_set("clock", real_os.raw_get::<Value>("clock")?)?;
    template.raw_set("os", os)?;
    template.raw_set("json", json(lua)?)?;
    let http = lua.create_table()?;
    http.raw_set("request", http_request)?;
    template.raw_set("http", http)?;
    Ok(template)
}

/// A fresh environment for the script named `chunk`.
pub(crate) fn script_env(
    lua: &Lua,
    template: &Table,
    shared: &Arc<Shared>,
    chunk: &str,
) -> mlua::Result<Table> {
    let env = lua.create_table()?;
    for pair in template.pairs::<Value, Value>() {
        let (key, value) = pair?;
        match value {
            Value::Table(library) => {
                let copy = lua.create_table()?;
                for entry in library.pairs::<Value, Value>() {
                    let (k, v) = entry?;
                    copy.raw_set(k, v)?;
                }
                env.raw_set(key, copy)?;
            }
            other => env.raw_set(key, other)?,
        }
    }
    env.raw_set("_G", env.clone())?;
    let log = log(lua, shared, chunk)?;
    env.raw_set("print", log.raw_get::<Function>("info")?)?;
    env.raw_set("log", log)?;
    Ok(env)
}

/// `json.encode(value)` (see [`to_json`]; raises on functions, NaN and cycles), `json.decode(text)` (returns
/// `nil, err` on invalid JSON, as a body from another service may be anything), `json.null`.
fn json(lua: &Lua) -> mlua::Result<Table> {
    let json = lua.create_table()?;
    json.raw_set(
        "encode",
        lua.create_function(|lua, value: Value| {
            let value = to_json(lua, &value, 0)?;
            serde_json::to_string(&value).map_err(mlua::Error::external)
        })?,
    )?;
    json.raw_set(
        "decode",
        lua.create_function(|lua, text: mlua::LuaString| {
            match serde_json::from_slice::<serde_json::Value>(&text.as_bytes()) {
                Ok(value) => Ok((lua.to_value(&value)?, Value::Nil)),
                Err(e) => Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!("invalid json: {e}"))?),
                )),
            }
        })?,
    )?;
    json.raw_set("null", lua.null())?;
    Ok(json)
}

/// How deep `json.encode` follows nested tables (a table that contains itself would
/// otherwise never end).
const MAX_JSON_DEPTH: usize = 128;

/// A Lua value as JSON, losing nothing. A table is an array when its keys are exactly
/// `1..n` (or it came from `json.decode` as one, empty or not); any other table is an
/// object, its number keys written as text: `{[1]=1,[3]=3}` is `{"1":1,"3":3}`, not the
/// `[1]` a sequence reader would make of it, and `{1,2,x=3}` keeps its `x`.
fn to_json(lua: &Lua, value: &Value, depth: usize) -> mlua::Result<serde_json::Value> {
    use serde_json::Value as Json;
    if depth > MAX_JSON_DEPTH {
        return Err(mlua::Error::runtime(
            "cannot encode: tables nested too deep (or a table that contains itself)",
        ));
    }
    Ok(match value {
        Value::Nil => Json::Null,
        Value::LightUserData(null) if null.0.is_null() => Json::Null,
        Value::Boolean(b) => Json::Bool(*b),
        Value::Integer(n) => Json::from(*n),
        Value::Number(n) => match serde_json::Number::from_f64(*n) {
            Some(number) => Json::Number(number),
            None => {
                return Err(mlua::Error::runtime(format!(
                    "cannot encode the number {n}"
                )));
            }
        },
        Value::String(s) => Json::String(s.to_str()?.to_owned()),
        Value::Table(table) => {
            let mut pairs = Vec::new();
            for pair in table.pairs::<Value, Value>() {
                pairs.push(pair?);
            }
            let is_array = table.metatable().is_some_and(|m| m == lua.array_metatable())
                || (!pairs.is_empty()
                    && pairs.iter().all(|(key, _)| {
                        matches!(key, Value::Integer(i) if *i >= 1 && usize::try_from(*i).is_ok_and(|i| i <= pairs.len()))
                    }));
            if is_array {
                let mut items = vec![Json::Null; pairs.len()];
                for (key, item) in &pairs {
                    if let Value::Integer(i) = key
                        && let Some(slot) =
                            usize::try_from(*i - 1).ok().and_then(|i| items.get_mut(i))
                    {
                        *slot = to_json(lua, item, depth + 1)?;
                    }
                }
                Json::Array(items)
            } else {
                let mut object = serde_json::Map::new();
                for (key, item) in &pairs {
                    let key = match key {
                        Value::String(s) => s.to_str()?.to_owned(),
                        Value::Integer(_) | Value::Number(_) => lua
                            .coerce_string(key.clone())?
                            .map(|s| s.to_string_lossy())
                            .unwrap_or_default(),
                        other => {
                            return Err(mlua::Error::runtime(format!(
                                "cannot encode a table key of type {}",
                                other.type_name()
                            )));
                        }
                    };
                    object.insert(key, to_json(lua, item, depth + 1)?);
                }
                Json::Object(object)
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "cannot encode a {}",
                other.type_name()
            )));
        }
    })
}

/// `log.info/warn/error(...)`: the arguments joined by spaces, as a tracing event with the
/// script name and the request id.
fn log(lua: &Lua, shared: &Arc<Shared>, chunk: &str) -> mlua::Result<Table> {
    let log = lua.create_table()?;
    let script: Arc<str> = Arc::from(chunk);
    for level in ["info", "warn", "error"] {
        let shared = Arc::clone(shared);
        let script = Arc::clone(&script);
        let function = lua.create_function(move |_, args: MultiValue| {
            let message = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| v.type_name().to_string()))
                .collect::<Vec<_>>()
                .join(" ");
            let message = one_line(&message);
            shared.with_context(|c| {
                let request_id = id_text(&c.request_id);
                let route = c.route.as_deref().unwrap_or("-");
                match level {
                    "warn" => tracing::warn!(target: "strangler::hook", script = %script, route, request_id, "{message}"),
                    "error" => tracing::error!(target: "strangler::hook", script = %script, route, request_id, "{message}"),
                    _ => tracing::info!(target: "strangler::hook", script = %script, route, request_id, "{message}"),
                }
            });
            Ok(())
        })?;
        log.raw_set(level, function)?;
    }
    Ok(log)
}

/// `text` with line breaks and other control characters escaped (`\n`, `\r`, `\u{1b}`; a
/// tab stays): a hook that logs what a client sent must not be able to forge log lines.
fn one_line(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut line = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if escaped(c) {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    Cow::Owned(line)
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn log_messages_stay_on_one_line() {
        assert_eq!(one_line("plain\ttext"), "plain\ttext");
        assert_eq!(
            one_line("x\n\u{1b}[31mred\r\nfake line"),
            "x\\n\\u{1b}[31mred\\r\\nfake line"
        );
    }
}
