use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{Lua, Table};

use super::install;
use crate::shared::{BUDGET_MESSAGE, Shared};

/// A state with LuaJIT's own string functions and, in the global `ours`, these.
fn both() -> (Lua, Arc<Shared>) {
    let lua = Lua::new();
    let shared = Arc::new(Shared::new());
    let ours = lua.create_table().unwrap();
    install(&lua, &ours, &shared).unwrap();
    lua.globals().set("ours", ours).unwrap();
    (lua, shared)
}

/// Runs every case through LuaJIT's functions and ours; the cases where the results (or
/// whether it raised an error) differ.
const DIFFERENTIAL: &str = r##"
local subjects, patterns = ...
local function run(f, ...)
  local out = { pcall(f, ...) }
  if not out[1] then return "error" end
  for i = 1, #out do out[i] = tostring(out[i]) end
  return table.concat(out, "|", 2)
end
local function all(gmatch, s, p)
  local ok, it = pcall(gmatch, s, p)
  if not ok then return "error" end
  local parts, n = {}, 0
  while n < 50 do
    local got = { pcall(it) }
    if not got[1] then parts[#parts + 1] = "error"; break end
    if got[2] == nil then break end
    for i = 2, #got do parts[#parts + 1] = tostring(got[i]) end
    parts[#parts + 1] = ";"
    n = n + 1
  end
  return table.concat(parts, ",")
end
local lookup = setmetatable({}, { __index = function(_, k) return "<" .. tostring(k) .. ">" end })
local function upper(...) return select("#", ...) > 1 and (...) .. "+" or string.upper((...)) end
local differ = {}
for _, s in ipairs(subjects) do
  for _, p in ipairs(patterns) do
    local checks = {
      { "find", run(string.find, s, p), run(ours.find, s, p) },
      { "find init 3", run(string.find, s, p, 3), run(ours.find, s, p, 3) },
      { "find init -2", run(string.find, s, p, -2), run(ours.find, s, p, -2) },
      { "find plain", run(string.find, s, p, 1, true), run(ours.find, s, p, 1, true) },
      { "match", run(string.match, s, p), run(ours.match, s, p) },
      { "match init 2", run(string.match, s, p, 2), run(ours.match, s, p, 2) },
      { "gmatch", all(string.gmatch, s, p), all(ours.gmatch, s, p) },
      { "gsub", run(string.gsub, s, p, "[%0|%1]"), run(ours.gsub, s, p, "[%0|%1]") },
      { "gsub 2", run(string.gsub, s, p, "<%0>", 2), run(ours.gsub, s, p, "<%0>", 2) },
      { "gsub table", run(string.gsub, s, p, lookup), run(ours.gsub, s, p, lookup) },
      { "gsub function", run(string.gsub, s, p, upper), run(ours.gsub, s, p, upper) },
    }
    for _, c in ipairs(checks) do
      if c[2] ~= c[3] then
        differ[#differ + 1] = string.format("%s %q %q: luajit %s, ours %s", c[1], s, p, c[2], c[3])
      end
    end
  end
end
return differ
"##;

#[test]
fn the_functions_answer_as_luajits_own() {
    let (lua, _) = both();
    let subjects = [
        "",
        "hello world",
        "key=value; other = 42",
        "  trim me  ",
        "THE (quick) [brown] {fox}",
        "a,b,,c",
        "x = f(a(b)c) + g((d))",
        "THE END",
        "aaab",
        "/api/v1/orders/123?expand=items&x=%20",
        "tab\there\nnew line",
        "caf\u{e9} \u{2603}",
        "1234567890abcdefABCDEF",
        "\0bin\0ary",
    ];
    let patterns = [
        "",
        "o",
        "l+",
        "l*",
        "l-",
        "l?",
        ".",
        ".-",
        "^h",
        "^",
        "$",
        "d$",
        "^$",
        "%a+",
        "%A+",
        "%d+",
        "%D",
        "%s+",
        "%S+",
        "%w+",
        "%W",
        "%p",
        "%l",
        "%u+",
        "%x+",
        "%c",
        "%g+",
        "%z",
        "[aeiou]",
        "[^aeiou]+",
        "[a-f]+",
        "[%a_][%w_]*",
        "[]]",
        "[^]]+",
        "[%]]",
        "[a-]",
        "[-a]",
        "(%w+)=(%w+)",
        "(%w+)%s*=%s*(%w+)",
        "()ll()",
        "(h)(e)(l)",
        "((a)(b))",
        "(a*(.)%w(%s*))",
        "%b()",
        "%b[]",
        "%b{}",
        "%f[%w]%w+",
        "%f[%W]",
        "%f[%a]%a+%f[%A]",
        "(l)%1",
        "(.)%1",
        "(o).-%1",
        "%%",
        "%.",
        "a.-b",
        "^(%s*)(.-)(%s*)$",
        "[%d%.]+",
        "=%s*(%d+)",
        "/(%w+)/",
        "%?(.*)",
        "([^&=?]+)=([^&=?]*)",
        "x*",
        "(",
        ")",
        "%",
        "[a",
        "%b",
        "%f",
        "%1",
        "(()",
        "(a)%2",
        "%f[",
        "[%",
        "a%",
    ];
    let subjects_table: Table = lua.create_sequence_from(subjects).unwrap();
    let patterns_table: Table = lua.create_sequence_from(patterns).unwrap();
    let differ: Vec<String> = lua
        .load(DIFFERENTIAL)
        .call((subjects_table, patterns_table))
        .unwrap();
    assert!(
        differ.is_empty(),
        "{} differences:\n{}",
        differ.len(),
        differ.join("\n")
    );
}

#[test]
fn a_backtracking_pattern_is_cut_off_by_the_budget() {
    let (lua, shared) = both();
    shared.arm(Duration::from_millis(50));
    let started = Instant::now();
    let err = lua
        .load(r#"return ours.find(string.rep("a", 30) .. "b", string.rep("a*", 30) .. "c")"#)
        .exec()
        .unwrap_err();
    shared.disarm();
    assert!(err.to_string().contains(BUDGET_MESSAGE), "{err}");
    assert!(shared.exceeded());
    // Exponential without the budget (hours); cut off within a few check intervals.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn a_long_plain_search_is_linear() {
    let (lua, shared) = both();
    shared.arm(Duration::from_millis(50));
    let found: Option<i64> = lua
        .load(r#"return (ours.find(string.rep("a", 1000000) .. "b", string.rep("a", 5000) .. "b", 1, true))"#)
        .eval()
        .unwrap();
    shared.disarm();
    assert_eq!(found, Some(995_001));
    assert!(!shared.exceeded());
}
