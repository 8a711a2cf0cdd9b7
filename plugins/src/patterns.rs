//! Lua's string patterns — `string.find`, `match`, `gmatch` and `gsub` — under the hook's
//! time budget.
//!
//! LuaJIT matches patterns in C, where the budget's instruction hook never runs, and a
//! pattern that backtracks takes time exponential in its quantifiers:
//! `string.rep("a*", 30) .. "c"` against 31 bytes runs for hours, holding the worker
//! thread, and a few such requests stop the proxy. These functions match the same way
//! (Lua 5.1's backtracking matcher, with LuaJIT's character classes and limits), count
//! their steps, and ask the budget every few thousand: a runaway match fails like a
//! runaway loop, at its line, as a `timeout`. Plain searches need no budget: they use a
//! linear-time substring search.

use std::sync::Arc;

use mlua::{Lua, LuaString, MultiValue, Table, Value};

use crate::shared::{BUDGET_MESSAGE, Shared};

/// LuaJIT's limit on captures in one pattern.
const MAX_CAPTURES: usize = 32;
/// LuaJIT's limit on the matcher's recursion ("pattern too complex").
const MAX_DEPTH: usize = 200;
/// Matcher steps between two looks at the clock (a step is a few nanoseconds).
const STEPS_PER_CHECK: u32 = 4096;
/// The pattern escape character.
const ESC: u8 = b'%';
/// Characters that make a `find` pattern more than a plain string.
const SPECIALS: &[u8] = b"^$*+?.([%-";

/// Replaces `find`, `match`, `gmatch` and `gsub` in `string` (the table the string
/// metatable's `__index` is, so that `s:find(..)` gets them too) with budgeted ones.
pub(crate) fn install(lua: &Lua, string: &Table, shared: &Arc<Shared>) -> mlua::Result<()> {
    for (name, find) in [("find", true), ("match", false)] {
        let shared = Arc::clone(shared);
        let function = lua.create_function(
            move |lua, (s, p, init, plain): (LuaString, LuaString, Option<i64>, Value)| {
                let over = || shared.over_deadline();
                let plain = find && !matches!(plain, Value::Nil | Value::Boolean(false));
                search(lua, &s.as_bytes(), &p.as_bytes(), init, plain, find, &over)
            },
        )?;
        string.raw_set(name, function)?;
    }
    let budget = Arc::clone(shared);
    let gmatch = lua.create_function(move |lua, (s, p): (LuaString, LuaString)| {
        let (src, pat) = (s.as_bytes().to_vec(), p.as_bytes().to_vec());
        let shared = Arc::clone(&budget);
        let mut next = 0;
        lua.create_function_mut(move |lua, ()| {
            let over = || shared.over_deadline();
            gmatch_next(lua, &src, &pat, &mut next, &over)
        })
    })?;
    string.raw_set("gmatch", gmatch)?;
    let budget = Arc::clone(shared);
    let gsub = lua.create_function(
        move |lua, (s, p, repl, max): (LuaString, LuaString, Value, Option<i64>)| {
            let over = || budget.over_deadline();
            gsub(lua, &s.as_bytes(), &p.as_bytes(), &repl, max, &over)
        },
    )?;
    string.raw_set("gsub", gsub)
}

/// `string.find` (`find`) or `string.match`: LuaJIT's rules for `init`, then a plain search
/// or a pattern match at each position from there (only the first with `^`).
fn search(
    lua: &Lua,
    src: &[u8],
    pat: &[u8],
    init: Option<i64>,
    plain: bool,
    find: bool,
    over: &dyn Fn() -> bool,
) -> mlua::Result<MultiValue> {
    let start = start_at(init.unwrap_or(1), src.len());
    if find && (plain || !pat.iter().any(|c| SPECIALS.contains(c))) {
        return Ok(match memchr::memmem::find(&src[start..], pat) {
            Some(at) => MultiValue::from_vec(vec![
                position(start + at + 1),
                position(start + at + pat.len()),
            ]),
            None => MultiValue::from_vec(vec![Value::Nil]),
        });
    }
    let (pat, anchored) = anchor(pattern_text(pat));
    let mut matcher = Matcher::new(src, pat, over);
    let mut at = start;
    loop {
        matcher.reset();
        if let Some(end) = matcher.run(at, 0).map_err(error)? {
            return if find {
                let mut values = vec![position(at + 1), position(end)];
                values.extend(matcher.captures(lua, None)?);
                Ok(MultiValue::from_vec(values))
            } else {
                Ok(MultiValue::from_vec(
                    matcher.captures(lua, Some((at, end)))?,
                ))
            };
        }
        at += 1;
        if anchored || at > src.len() {
            return Ok(MultiValue::from_vec(vec![Value::Nil]));
        }
    }
}

/// The next match of a `string.gmatch` iterator from `next`, which moves past it (one byte
/// further after an empty match, so the iteration ends). `^` is no anchor here.
fn gmatch_next(
    lua: &Lua,
    src: &[u8],
    pat: &[u8],
    next: &mut usize,
    over: &dyn Fn() -> bool,
) -> mlua::Result<MultiValue> {
    let pat = pattern_text(pat);
    let mut matcher = Matcher::new(src, pat, over);
    let mut at = *next;
    while at <= src.len() {
        matcher.reset();
        if let Some(end) = matcher.run(at, 0).map_err(error)? {
            *next = if end == at { end + 1 } else { end };
            return Ok(MultiValue::from_vec(
                matcher.captures(lua, Some((at, end)))?,
            ));
        }
        at += 1;
    }
    *next = at;
    Ok(MultiValue::new())
}

/// `string.gsub`: each match (up to `max`) replaced by `repl` — a string with `%0`–`%9`, a
/// table looked up with the first capture, or a function called with the captures; a
/// `false` or `nil` replacement keeps the match. The text and the number of matches.
fn gsub(
    lua: &Lua,
    src: &[u8],
    pat: &[u8],
    repl: &Value,
    max: Option<i64>,
    over: &dyn Fn() -> bool,
) -> mlua::Result<(LuaString, i64)> {
    if !matches!(
        repl,
        Value::String(_)
            | Value::Integer(_)
            | Value::Number(_)
            | Value::Table(_)
            | Value::Function(_)
    ) {
        return Err(mlua::Error::runtime(
            "bad argument #3 to 'gsub' (string/function/table expected)",
        ));
    }
    let template = match repl {
        Value::String(_) | Value::Integer(_) | Value::Number(_) => lua
            .coerce_string(repl.clone())?
            .map(|s| s.as_bytes().to_vec()),
        _ => None,
    };
    let max = max.unwrap_or(i64::MAX);
    let (pat, anchored) = anchor(pattern_text(pat));
    let mut matcher = Matcher::new(src, pat, over);
    let mut out = Vec::with_capacity(src.len());
    let (mut at, mut count) = (0, 0);
    while count < max {
        matcher.reset();
        let end = matcher.run(at, 0).map_err(error)?;
        if let Some(end) = end {
            count += 1;
            match &template {
                Some(template) => expand(lua, &matcher, template, at, end, &mut out)?,
                None => {
                    let value = match repl {
                        Value::Table(table) => {
                            let key = matcher.capture(lua, 0, at, end)?;
                            table.get::<Value>(key)?
                        }
                        Value::Function(function) => function.call::<Value>(
                            MultiValue::from_vec(matcher.captures(lua, Some((at, end)))?),
                        )?,
                        _ => Value::Nil,
                    };
                    replacement(lua, value, &src[at..end], &mut out)?;
                }
            }
        }
        match end {
            Some(end) if end > at => at = end,
            _ if at < src.len() => {
                out.push(src[at]);
                at += 1;
            }
            _ => break,
        }
        if anchored {
            break;
        }
    }
    out.extend_from_slice(&src[at..]);
    Ok((lua.create_string(&out)?, count))
}

/// Appends `template` with `%0` (the match), `%1`–`%9` (captures) and `%%` expanded.
fn expand(
    lua: &Lua,
    matcher: &Matcher<'_>,
    template: &[u8],
    start: usize,
    end: usize,
    out: &mut Vec<u8>,
) -> mlua::Result<()> {
    let mut bytes = template.iter().copied();
    while let Some(c) = bytes.next() {
        if c != ESC {
            out.push(c);
            continue;
        }
        match bytes.next() {
            Some(b'0') => out.extend_from_slice(&matcher.src[start..end]),
            Some(digit @ b'1'..=b'9') => {
                let value = matcher.capture(lua, usize::from(digit - b'1'), start, end)?;
                replacement(lua, value, &[], out)?;
            }
            // LuaJIT keeps the character after a `%` that names no capture (`%%` is `%`).
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(())
}

/// Appends a replacement value: a string or number as text, the match itself for `false`
/// or `nil`.
fn replacement(lua: &Lua, value: Value, matched: &[u8], out: &mut Vec<u8>) -> mlua::Result<()> {
    match value {
        Value::Nil | Value::Boolean(false) => out.extend_from_slice(matched),
        Value::String(_) | Value::Integer(_) | Value::Number(_) => {
            if let Some(text) = lua.coerce_string(value)? {
                out.extend_from_slice(&text.as_bytes());
            }
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "invalid replacement value (a {})",
                other.type_name()
            )));
        }
    }
    Ok(())
}

/// Where a search starts for Lua's `init` (1-based, negative from the end), clamped to the
/// subject as LuaJIT does.
fn start_at(init: i64, len: usize) -> usize {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let start = if init < 0 { len + init } else { init - 1 };
    usize::try_from(start.clamp(0, len)).unwrap_or(0)
}

/// The pattern as LuaJIT reads it: up to its first NUL byte.
fn pattern_text(pat: &[u8]) -> &[u8] {
    pat.iter()
        .position(|&c| c == 0)
        .map_or(pat, |nul| &pat[..nul])
}

/// The pattern without a leading `^`, and whether it had one.
fn anchor(pat: &[u8]) -> (&[u8], bool) {
    match pat.strip_prefix(b"^") {
        Some(rest) => (rest, true),
        None => (pat, false),
    }
}

/// A 1-based position as Lua sees it.
fn position(at: usize) -> Value {
    Value::Integer(i64::try_from(at).unwrap_or(i64::MAX))
}

fn error(stop: Stop) -> mlua::Error {
    match stop {
        Stop::Budget => mlua::Error::runtime(BUDGET_MESSAGE),
        Stop::Pattern(message) => mlua::Error::runtime(message),
    }
}

/// Why a match ended without an answer.
#[derive(Debug, PartialEq)]
enum Stop {
    /// The hook's time budget ran out.
    Budget,
    /// The pattern is malformed or too complex (LuaJIT's message).
    Pattern(&'static str),
}

/// What a capture holds so far.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Held {
    /// `(` seen, `)` not yet.
    Open,
    /// `()`: the position.
    Position,
    /// This many bytes.
    Bytes(usize),
}

/// One match attempt of `pat` on `src` (Lua 5.1's backtracking matcher).
struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    /// Each capture's start in `src` and what it holds.
    captures: Vec<(usize, Held)>,
    depth: usize,
    steps: u32,
    over: &'a dyn Fn() -> bool,
}

impl<'a> Matcher<'a> {
    fn new(src: &'a [u8], pat: &'a [u8], over: &'a dyn Fn() -> bool) -> Self {
        Self {
            src,
            pat,
            captures: Vec::new(),
            depth: 0,
            steps: 0,
            over,
        }
    }

    /// Forgets the captures of the last attempt.
    fn reset(&mut self) {
        self.captures.clear();
        self.depth = 0;
    }

    /// Counts a step; every few thousand, whether the budget has run out.
    fn step(&mut self) -> Result<(), Stop> {
        self.steps = self.steps.wrapping_add(1);
        if self.steps.is_multiple_of(STEPS_PER_CHECK) && (self.over)() {
            return Err(Stop::Budget);
        }
        Ok(())
    }

    /// Where a match of `pat[p..]` at `src[s..]` ends, if there is one.
    fn run(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Stop::Pattern("pattern too complex"));
        }
        let result = self.items(s, p);
        self.depth -= 1;
        result
    }

    /// Matches item after item, recursing only where backtracking needs it.
    fn items(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, Stop> {
        loop {
            self.step()?;
            let Some(&c) = self.pat.get(p) else {
                return Ok(Some(s));
            };
            let next = self.pat.get(p + 1).copied();
            match (c, next) {
                (b'(', Some(b')')) => return self.open(s, p + 2, Held::Position),
                (b'(', _) => return self.open(s, p + 1, Held::Open),
                (b')', _) => return self.close(s, p + 1),
                (b'$', None) => return Ok((s == self.src.len()).then_some(s)),
                (ESC, Some(b'b')) => match self.balanced(s, p + 2)? {
                    Some(end) => (s, p) = (end, p + 4),
                    None => return Ok(None),
                },
                (ESC, Some(b'f')) => {
                    p += 2;
                    if self.pat.get(p) != Some(&b'[') {
                        return Err(Stop::Pattern("missing '[' after '%f' in pattern"));
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    let current = self.src.get(s).copied().unwrap_or(0);
                    if self.in_set(previous, p, ep - 1) || !self.in_set(current, p, ep - 1) {
                        return Ok(None);
                    }
                    p = ep;
                }
                (ESC, Some(digit)) if digit.is_ascii_digit() => {
                    match self.back_reference(s, digit)? {
                        Some(end) => (s, p) = (end, p + 2),
                        None => return Ok(None),
                    }
                }
                _ => {
                    let ep = self.class_end(p)?;
                    let here = s < self.src.len() && self.single(self.src[s], p, ep);
                    match self.pat.get(ep) {
                        Some(b'?') => {
                            if here && let Some(end) = self.run(s + 1, ep + 1)? {
                                return Ok(Some(end));
                            }
                            p = ep + 1;
                        }
                        Some(b'*') => return self.longest(s, p, ep),
                        Some(b'+') if here => return self.longest(s + 1, p, ep),
                        Some(b'+') => return Ok(None),
                        Some(b'-') => return self.shortest(s, p, ep),
                        _ if here => (s, p) = (s + 1, ep),
                        _ => return Ok(None),
                    }
                }
            }
        }
    }

    /// `*` and `+`: as many repetitions as match, then fewer until the rest matches.
    fn longest(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        let mut count = 0;
        while s + count < self.src.len() && self.single(self.src[s + count], p, ep) {
            self.step()?;
            count += 1;
        }
        loop {
            if let Some(end) = self.run(s + count, ep + 1)? {
                return Ok(Some(end));
            }
            if count == 0 {
                return Ok(None);
            }
            count -= 1;
        }
    }

    /// `-`: as few repetitions as let the rest match.
    fn shortest(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, Stop> {
        loop {
            if let Some(end) = self.run(s, ep + 1)? {
                return Ok(Some(end));
            }
            if s < self.src.len() && self.single(self.src[s], p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    /// `(`: a capture opens at `s`; closed again if the rest does not match.
    fn open(&mut self, s: usize, p: usize, held: Held) -> Result<Option<usize>, Stop> {
        if self.captures.len() >= MAX_CAPTURES {
            return Err(Stop::Pattern("too many captures"));
        }
        self.captures.push((s, held));
        let end = self.run(s, p)?;
        if end.is_none() {
            self.captures.pop();
        }
        Ok(end)
    }

    /// `)`: the innermost open capture ends at `s`; open again if the rest does not match.
    fn close(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        let Some(index) = self
            .captures
            .iter()
            .rposition(|&(_, held)| held == Held::Open)
        else {
            return Err(Stop::Pattern("invalid pattern capture"));
        };
        let start = self.captures[index].0;
        self.captures[index].1 = Held::Bytes(s - start);
        let end = self.run(s, p)?;
        if end.is_none() {
            self.captures[index].1 = Held::Open;
        }
        Ok(end)
    }

    /// `%bxy`: where a balanced `x`…`y` run starting at `s` ends.
    fn balanced(&mut self, s: usize, p: usize) -> Result<Option<usize>, Stop> {
        let (Some(&open), Some(&shut)) = (self.pat.get(p), self.pat.get(p + 1)) else {
            return Err(Stop::Pattern("unbalanced pattern"));
        };
        if self.src.get(s) != Some(&open) {
            return Ok(None);
        }
        let mut depth = 1;
        for at in s + 1..self.src.len() {
            self.step()?;
            let c = self.src[at];
            if c == shut {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(at + 1));
                }
            } else if c == open {
                depth += 1;
            }
        }
        Ok(None)
    }

    /// `%1`–`%9`: the text of an earlier capture again, at `s`.
    fn back_reference(&mut self, s: usize, digit: u8) -> Result<Option<usize>, Stop> {
        let index = usize::from(digit).wrapping_sub(usize::from(b'1'));
        match self.captures.get(index) {
            Some(&(start, Held::Bytes(len))) => {
                let wanted = &self.src[start..start + len];
                Ok(self.src[s..].starts_with(wanted).then_some(s + len))
            }
            // A position has no text: nothing matches it.
            Some(&(_, Held::Position)) => Ok(None),
            _ => Err(Stop::Pattern("invalid capture index")),
        }
    }

    /// Where the single-character class at `p` ends (`%x`, `[set]`, or one character).
    fn class_end(&self, p: usize) -> Result<usize, Stop> {
        let mut at = p + 1;
        match self.pat[p] {
            ESC if at >= self.pat.len() => Err(Stop::Pattern("malformed pattern (ends with '%')")),
            ESC => Ok(at + 1),
            b'[' => {
                if self.pat.get(at) == Some(&b'^') {
                    at += 1;
                }
                // The first character of a set is never its end: `[]]` is a set of `]`.
                loop {
                    let Some(&c) = self.pat.get(at) else {
                        return Err(Stop::Pattern("malformed pattern (missing ']')"));
                    };
                    at += 1;
                    if c == ESC && at < self.pat.len() {
                        at += 1;
                    }
                    if self.pat.get(at) == Some(&b']') {
                        return Ok(at + 1);
                    }
                }
            }
            _ => Ok(at),
        }
    }

    /// Whether `c` matches the single-character class `pat[p..ep]`.
    fn single(&self, c: u8, p: usize, ep: usize) -> bool {
        match self.pat[p] {
            b'.' => true,
            ESC => in_class(c, self.pat[p + 1]),
            b'[' => self.in_set(c, p, ep - 1),
            literal => literal == c,
        }
    }

    /// Whether `c` is in the set `pat[p..=end]` (`[` … `]`).
    fn in_set(&self, c: u8, p: usize, end: usize) -> bool {
        let (mut at, wanted) = match self.pat.get(p + 1) {
            Some(b'^') => (p + 2, false),
            _ => (p + 1, true),
        };
        while at < end {
            let item = self.pat[at];
            if item == ESC {
                at += 1;
                if in_class(c, self.pat[at]) {
                    return wanted;
                }
            } else if self.pat.get(at + 1) == Some(&b'-') && at + 2 < end {
                if item <= c && c <= self.pat[at + 2] {
                    return wanted;
                }
                at += 2;
            } else if item == c {
                return wanted;
            }
            at += 1;
        }
        !wanted
    }

    /// The captures of the last match as Lua values; with no capture in the pattern, the
    /// whole match `whole` (if given: `find` returns positions instead).
    fn captures(&self, lua: &Lua, whole: Option<(usize, usize)>) -> mlua::Result<Vec<Value>> {
        match whole {
            Some((start, end)) if self.captures.is_empty() => Ok(vec![Value::String(
                lua.create_string(&self.src[start..end])?,
            )]),
            _ => (0..self.captures.len())
                .map(|index| self.capture(lua, index, 0, 0))
                .collect(),
        }
    }

    /// Capture `index` as a Lua value; the match `start..end` for index 0 of a pattern
    /// without captures.
    fn capture(&self, lua: &Lua, index: usize, start: usize, end: usize) -> mlua::Result<Value> {
        match self.captures.get(index) {
            None if index == 0 => Ok(Value::String(lua.create_string(&self.src[start..end])?)),
            None => Err(mlua::Error::runtime("invalid capture index")),
            Some((_, Held::Open)) => Err(mlua::Error::runtime("unfinished capture")),
            Some(&(at, Held::Position)) => Ok(position(at + 1)),
            Some(&(at, Held::Bytes(len))) => {
                Ok(Value::String(lua.create_string(&self.src[at..at + len])?))
            }
        }
    }
}

/// Whether `c` is in the class `%cl` (`%a`, `%d`, …; upper case for the complement; any
/// other character stands for itself), by ASCII as LuaJIT classifies.
fn in_class(c: u8, cl: u8) -> bool {
    let member = match cl.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        b's' => c == b' ' || (b'\t'..=b'\r').contains(&c),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        b'z' => c == 0,
        _ => return cl == c,
    };
    member != cl.is_ascii_uppercase()
}

#[cfg(test)]
mod tests;
