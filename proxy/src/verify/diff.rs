//! The structural walk over two JSON documents that lists where they differ.

use super::compare::{Difference, DifferenceKind, Location};
use super::json::{self, Json};
use super::pointer::{JsonPointer, PatternSet, State, Step};
use super::rules::{CompiledRules, REDACTED};

/// At most this many differences are listed in one verdict; the rest are only counted.
pub const MAX_DIFFERENCES: usize = 1000;

/// Shown values are cut after this many bytes (then `…` is appended).
pub const MAX_VALUE_PREVIEW: usize = 200;

/// Differences found so far, listing at most [`MAX_DIFFERENCES`].
#[derive(Debug, Default)]
pub(crate) struct Found {
    pub(crate) list: Vec<Difference>,
    pub(crate) omitted: usize,
}

struct Walk<'r, 't> {
    rules: &'r CompiledRules,
    found: &'r mut Found,
    path: Vec<Step<'t>>,
    /// Partial matches of the ignore patterns, one contiguous range per path level.
    states: Vec<State>,
}

impl Found {
    pub(crate) fn is_full(&self) -> bool {
        self.list.len() >= MAX_DIFFERENCES
    }

    pub(crate) fn push(&mut self, difference: Difference) {
        if self.is_full() {
            self.omitted += 1;
        } else {
            self.list.push(difference);
        }
    }
}

/// Add the differences between `primary` and `candidate` to `found`, skipping locations
/// the rules ignore and redacting shown values the rules redact.
pub(crate) fn diff_json<'t>(
    rules: &CompiledRules,
    primary: &'t Json<'_>,
    candidate: &'t Json<'_>,
    found: &mut Found,
) {
    let mut walk = Walk {
        rules,
        found,
        path: Vec::new(),
        states: Vec::new(),
    };
    if rules.ignore_json.start(&mut walk.states) {
        return;
    }
    let end = walk.states.len();
    walk.node(primary, candidate, 0, end);
}

/// `value` as compact JSON for display, cut at [`MAX_VALUE_PREVIEW`], with every part
/// that a redaction pattern covers replaced by `"[redacted]"`. `path` is where `value`
/// sits in its document; it is restored before returning.
pub(crate) fn preview<'t>(
    value: &'t Json<'_>,
    path: &mut Vec<Step<'t>>,
    redact: &PatternSet,
) -> String {
    let mut out = String::new();
    if !redact.is_empty() && redact.covers(path) {
        return REDACTED.to_owned();
    }
    write_limited(value, &mut out, path, redact);
    if out.len() > MAX_VALUE_PREVIEW {
        truncate_at_char(&mut out, MAX_VALUE_PREVIEW);
        out.push('…');
    }
    out
}

/// Cut `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate_at_char(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Write until the preview is full; false once it is (the caller stops walking).
fn write_limited<'t>(
    value: &'t Json<'_>,
    out: &mut String,
    path: &mut Vec<Step<'t>>,
    redact: &PatternSet,
) -> bool {
    if out.len() > MAX_VALUE_PREVIEW {
        return false;
    }
    match value {
        Json::String(text) => {
            // A long string is cut before escaping it all.
            let mut end = text.len().min(MAX_VALUE_PREVIEW + 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            json::write_string(text.get(..end).unwrap_or_default(), out);
        }
        Json::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                path.push(Step::Index(index));
                let more = write_child(item, out, path, redact);
                path.pop();
                if !more {
                    return false;
                }
            }
            out.push(']');
        }
        Json::Object(members) => {
            out.push('{');
            for (index, (key, item)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                json::write_string(key, out);
                out.push(':');
                path.push(Step::Key(key));
                let more = write_child(item, out, path, redact);
                path.pop();
                if !more {
                    return false;
                }
            }
            out.push('}');
        }
        scalar => json::write_compact(scalar, out),
    }
    out.len() <= MAX_VALUE_PREVIEW
}

fn write_child<'t>(
    value: &'t Json<'_>,
    out: &mut String,
    path: &mut Vec<Step<'t>>,
    redact: &PatternSet,
) -> bool {
    if !redact.is_empty() && redact.covers(path) {
        json::write_string(REDACTED, out);
        return out.len() <= MAX_VALUE_PREVIEW;
    }
    write_limited(value, out, path, redact)
}

impl<'t> Walk<'_, 't> {
    fn node(&mut self, primary: &'t Json<'_>, candidate: &'t Json<'_>, from: usize, to: usize) {
        match (primary, candidate) {
            (Json::Object(a), Json::Object(b)) => self.object(a, b, from, to),
            (Json::Array(a), Json::Array(b)) => {
                for index in 0..a.len().max(b.len()) {
                    let Some((start, end)) = self.enter(Step::Index(index), from, to) else {
                        continue;
                    };
                    match (a.get(index), b.get(index)) {
                        (Some(x), Some(y)) => self.node(x, y, start, end),
                        (x, y) => self.emit(x, y),
                    }
                    self.leave(start);
                }
            }
            (Json::Number(a), Json::Number(b)) if json::numbers_equal(a, b) => {}
            (Json::String(a), Json::String(b)) if a == b => {}
            (Json::Bool(a), Json::Bool(b)) if a == b => {}
            (Json::Null, Json::Null) => {}
            (a, b) => self.emit(Some(a), Some(b)),
        }
    }

    fn object(
        &mut self,
        a: &'t [(std::borrow::Cow<'_, str>, Json<'_>)],
        b: &'t [(std::borrow::Cow<'_, str>, Json<'_>)],
        from: usize,
        to: usize,
    ) {
        // Both sides are sorted by key: one merge pass.
        let (mut i, mut j) = (0, 0);
        loop {
            let (key, x, y) = match (a.get(i), b.get(j)) {
                (None, None) => break,
                (Some((key, x)), None) => {
                    i += 1;
                    (key, Some(x), None)
                }
                (None, Some((key, y))) => {
                    j += 1;
                    (key, None, Some(y))
                }
                (Some((ka, x)), Some((kb, y))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => {
                        i += 1;
                        (ka, Some(x), None)
                    }
                    std::cmp::Ordering::Greater => {
                        j += 1;
                        (kb, None, Some(y))
                    }
                    std::cmp::Ordering::Equal => {
                        i += 1;
                        j += 1;
                        (ka, Some(x), Some(y))
                    }
                },
            };
            let Some((start, end)) = self.enter(Step::Key(key), from, to) else {
                continue;
            };
            match (x, y) {
                (Some(x), Some(y)) => self.node(x, y, start, end),
                (x, y) => self.emit(x, y),
            }
            self.leave(start);
        }
    }

    /// Step into a child; `None` (and nothing to undo) when the ignore rules cover it.
    fn enter(&mut self, step: Step<'t>, from: usize, to: usize) -> Option<(usize, usize)> {
        let start = self.states.len();
        if from < to
            && self
                .rules
                .ignore_json
                .advance(&mut self.states, from, to, step)
        {
            self.states.truncate(start);
            return None;
        }
        self.path.push(step);
        Some((start, self.states.len()))
    }

    fn leave(&mut self, start: usize) {
        self.states.truncate(start);
        self.path.pop();
    }

    fn emit(&mut self, primary: Option<&'t Json<'_>>, candidate: Option<&'t Json<'_>>) {
        if self.found.is_full() {
            self.found.omitted += 1;
            return;
        }
        let kind = match (primary, candidate) {
            (Some(_), None) => DifferenceKind::Missing,
            (None, Some(_)) => DifferenceKind::Extra,
            _ => DifferenceKind::Changed,
        };
        let rules = self.rules;
        let redact = &rules.redact_json;
        let primary = primary.map(|value| preview(value, &mut self.path, redact));
        let candidate = candidate.map(|value| preview(value, &mut self.path, redact));
        self.found.push(Difference {
            location: Location::Json(JsonPointer::from_steps(&self.path)),
            kind,
            primary,
            candidate,
            noise: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::rules::CompareRules;

    fn diff(rules: &CompareRules, a: &str, b: &str) -> Found {
        let rules = rules.compile().unwrap();
        let a = Json::parse(a.as_bytes()).unwrap();
        let b = Json::parse(b.as_bytes()).unwrap();
        let mut found = Found::default();
        diff_json(&rules, &a, &b, &mut found);
        found
    }

    fn locations(found: &Found) -> Vec<String> {
        found.list.iter().map(|d| d.location.to_string()).collect()
    }

    #[test]
    fn lists_changed_missing_and_extra() {
        let found = diff(
            &CompareRules::default(),
            r#"{"a":1,"b":{"c":[1,2,3]},"gone":true}"#,
            r#"{"new":null,"b":{"c":[1,5]},"a":1.0}"#,
        );
        assert_eq!(
            locations(&found),
            ["json:/b/c/1", "json:/b/c/2", "json:/gone", "json:/new"]
        );
        let kinds: Vec<_> = found.list.iter().map(|d| d.kind).collect();
        assert_eq!(
            kinds,
            [
                DifferenceKind::Changed,
                DifferenceKind::Missing,
                DifferenceKind::Missing,
                DifferenceKind::Extra
            ]
        );
        assert_eq!(found.list[0].primary.as_deref(), Some("2"));
        assert_eq!(found.list[0].candidate.as_deref(), Some("5"));
        assert_eq!(found.list[1].candidate, None);
    }

    #[test]
    fn type_change_is_one_difference_at_the_node() {
        let found = diff(
            &CompareRules::default(),
            r#"{"a":{"deep":[1,2]}}"#,
            r#"{"a":"flat"}"#,
        );
        assert_eq!(locations(&found), ["json:/a"]);
        assert_eq!(found.list[0].primary.as_deref(), Some(r#"{"deep":[1,2]}"#));
        assert_eq!(found.list[0].candidate.as_deref(), Some(r#""flat""#));
    }

    #[test]
    fn ignore_patterns_skip_subtrees() {
        let rules = CompareRules {
            ignore_json: vec!["/items/*/etag".into(), "/meta".into()],
            ..CompareRules::default()
        };
        let found = diff(
            &rules,
            r#"{"items":[{"etag":"a","n":1},{"etag":"b","n":2}],"meta":{"t":1}}"#,
            r#"{"items":[{"etag":"x","n":1},{"etag":"y","n":3}],"meta":{"t":2,"u":0}}"#,
        );
        assert_eq!(locations(&found), ["json:/items/1/n"]);
        let whole = CompareRules {
            ignore_json: vec![String::new()],
            ..CompareRules::default()
        };
        assert!(diff(&whole, "[1]", "[2]").list.is_empty());
    }

    #[test]
    fn redaction_applies_at_and_below_locations() {
        let rules = CompareRules {
            redact_json: vec!["/user/ssn".into(), "/token".into()],
            ..CompareRules::default()
        };
        let found = diff(
            &rules,
            r#"{"user":{"ssn":"123","name":"a"},"token":"t1"}"#,
            r#"{"token":"t2"}"#,
        );
        assert_eq!(locations(&found), ["json:/token", "json:/user"]);
        assert_eq!(found.list[0].primary.as_deref(), Some(REDACTED));
        assert_eq!(found.list[0].candidate.as_deref(), Some(REDACTED));
        assert_eq!(
            found.list[1].primary.as_deref(),
            Some(r#"{"name":"a","ssn":"[redacted]"}"#)
        );
    }

    #[test]
    fn previews_are_bounded() {
        let long = format!(r#"{{"a":"{}"}}"#, "é".repeat(10_000));
        let big_array = format!("[{}]", vec!["1234567890"; 10_000].join(","));
        let found = diff(
            &CompareRules::default(),
            &format!(r#"{{"x":{long},"y":{big_array}}}"#),
            r#"{"x":1,"y":2}"#,
        );
        for difference in &found.list {
            let shown = difference.primary.as_deref().unwrap();
            assert!(shown.len() <= MAX_VALUE_PREVIEW + '…'.len_utf8(), "{shown}");
            assert!(shown.ends_with('…'));
        }
    }

    #[test]
    fn caps_the_list_and_counts_the_rest() {
        let a: Vec<String> = (0..MAX_DIFFERENCES + 10).map(|i| i.to_string()).collect();
        let b: Vec<String> = (0..MAX_DIFFERENCES + 10)
            .map(|i| (i + 1).to_string())
            .collect();
        let found = diff(
            &CompareRules::default(),
            &format!("[{}]", a.join(",")),
            &format!("[{}]", b.join(",")),
        );
        assert_eq!(found.list.len(), MAX_DIFFERENCES);
        assert_eq!(found.omitted, 10);
    }
}
