//! JSON pointers (RFC 6901) and pointer patterns whose `*` segments match any key or index.

use std::fmt;

use serde::{Serialize, Serializer};

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// A member of an object.
    Key(String),
    /// An element of an array.
    Index(usize),
}

/// The path to a value inside a JSON document, e.g. `/items/0/etag`; the root is `""`.
///
/// Displays and serializes as an RFC 6901 pointer (`~` and `/` in keys escaped as `~0`, `~1`).
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonPointer(Vec<Segment>);

/// A JSON pointer whose segments may be `*`, matching any one key or index.
///
/// Grammar: `""` (the whole document) or `/segment/segment...`, each segment an RFC 6901
/// reference token (`~0` for `~`, `~1` for `/`) or exactly `*`. A literal key named `*`
/// cannot be expressed (it is always a wildcard). A numeric segment matches both the array
/// element with that index and the object member with that name, as in RFC 6901.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PointerPattern {
    /// The pattern as written (normalized for generalized pointers); also the sort key.
    text: String,
    segments: Vec<PatternSegment>,
}

/// Why a pointer pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// A non-empty pattern must start with `/`.
    #[error("a JSON pointer must be empty or start with '/'")]
    NoLeadingSlash,
    /// `~` must be followed by `0` or `1`.
    #[error("'~' must be followed by '0' or '1' in a JSON pointer")]
    BadEscape,
}

/// A borrowed path step, used while walking documents without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PatternSegment {
    Any,
    /// A literal token, with its value as an array index when it is one.
    Literal(String, Option<usize>),
}

/// A compiled set of patterns, matched incrementally while a document is walked.
#[derive(Debug, Clone, Default)]
pub(crate) struct PatternSet {
    patterns: Vec<PointerPattern>,
}

/// A partial match: pattern `pattern` has matched its first `position` segments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct State {
    pattern: u32,
    position: u32,
}

impl JsonPointer {
    /// The root of the document (`""`).
    pub fn root() -> Self {
        Self::default()
    }

    /// The pointer's segments, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// This pointer with every array index replaced by `*`: the shape of the location
    /// rather than one position in one answer (`/items/3/etag` → `/items/*/etag`).
    pub fn generalized(&self) -> PointerPattern {
        let segments: Vec<PatternSegment> = self
            .0
            .iter()
            .map(|segment| match segment {
                Segment::Index(_) => PatternSegment::Any,
                Segment::Key(key) => PatternSegment::Literal(key.clone(), parse_index(key)),
            })
            .collect();
        PointerPattern::from_segments(segments)
    }

    pub(crate) fn from_steps(steps: &[Step<'_>]) -> Self {
        Self(
            steps
                .iter()
                .map(|step| match *step {
                    Step::Key(key) => Segment::Key(key.to_owned()),
                    Step::Index(index) => Segment::Index(index),
                })
                .collect(),
        )
    }

    pub(crate) fn steps(&self) -> Vec<Step<'_>> {
        self.0
            .iter()
            .map(|segment| match segment {
                Segment::Key(key) => Step::Key(key),
                Segment::Index(index) => Step::Index(*index),
            })
            .collect()
    }
}

impl fmt::Display for JsonPointer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for segment in &self.0 {
            f.write_str("/")?;
            match segment {
                Segment::Key(key) => write_escaped(f, key)?,
                Segment::Index(index) => write!(f, "{index}")?,
            }
        }
        Ok(())
    }
}

impl Serialize for JsonPointer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl PointerPattern {
    /// Parse a pattern such as `/items/*/etag`.
    ///
    /// # Errors
    /// [`PatternError`] when `text` is not empty and does not start with `/`, or contains
    /// a `~` not followed by `0` or `1`.
    pub fn parse(text: &str) -> Result<Self, PatternError> {
        if text.is_empty() {
            return Ok(Self::from_segments(Vec::new()));
        }
        let rest = text.strip_prefix('/').ok_or(PatternError::NoLeadingSlash)?;
        let segments = rest
            .split('/')
            .map(|token| {
                if token == "*" {
                    return Ok(PatternSegment::Any);
                }
                let key = unescape(token)?;
                let index = parse_index(&key);
                Ok(PatternSegment::Literal(key, index))
            })
            .collect::<Result<Vec<_>, PatternError>>()?;
        Ok(Self::from_segments(segments))
    }

    /// The pattern in its written form.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `pointer` is exactly a location this pattern describes.
    pub fn matches(&self, pointer: &JsonPointer) -> bool {
        self.matches_steps(&pointer.steps(), false)
    }

    /// Whether `pointer` is a location this pattern describes or lies below one
    /// (`/meta` covers `/meta/generated_at`).
    pub fn covers(&self, pointer: &JsonPointer) -> bool {
        self.matches_steps(&pointer.steps(), true)
    }

    pub(crate) fn matches_steps(&self, steps: &[Step<'_>], prefix: bool) -> bool {
        if steps.len() < self.segments.len() || (!prefix && steps.len() != self.segments.len()) {
            return false;
        }
        self.segments
            .iter()
            .zip(steps)
            .all(|(segment, step)| segment.matches(*step))
    }

    fn from_segments(segments: Vec<PatternSegment>) -> Self {
        let mut text = String::new();
        for segment in &segments {
            text.push('/');
            match segment {
                PatternSegment::Any => text.push('*'),
                PatternSegment::Literal(key, _) => {
                    for c in key.chars() {
                        match c {
                            '~' => text.push_str("~0"),
                            '/' => text.push_str("~1"),
                            c => text.push(c),
                        }
                    }
                }
            }
        }
        Self { text, segments }
    }
}

impl fmt::Display for PointerPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for PointerPattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl PatternSegment {
    fn matches(&self, step: Step<'_>) -> bool {
        match (self, step) {
            (PatternSegment::Any, _) => true,
            (PatternSegment::Literal(literal, _), Step::Key(key)) => literal == key,
            (PatternSegment::Literal(_, Some(index)), Step::Index(at)) => *index == at,
            (PatternSegment::Literal(_, None), Step::Index(_)) => false,
        }
    }
}

impl PatternSet {
    pub(crate) fn new(patterns: Vec<PointerPattern>) -> Self {
        Self { patterns }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub(crate) fn patterns(&self) -> &[PointerPattern] {
        &self.patterns
    }

    /// Push the states at the document root onto `states`; true when a pattern is `""`
    /// and so covers the whole document.
    pub(crate) fn start(&self, states: &mut Vec<State>) -> bool {
        let mut complete = false;
        for (index, pattern) in self.patterns.iter().enumerate() {
            if pattern.segments.is_empty() {
                complete = true;
            }
            states.push(State {
                pattern: index as u32,
                position: 0,
            });
        }
        complete
    }

    /// Advance the states `states[from..to]` over `step`, appending the survivors to
    /// `states`; true when a pattern is complete, i.e. covers the new location.
    pub(crate) fn advance(
        &self,
        states: &mut Vec<State>,
        from: usize,
        to: usize,
        step: Step<'_>,
    ) -> bool {
        let mut complete = false;
        for at in from..to {
            let Some(state) = states.get(at).copied() else {
                break;
            };
            let Some(pattern) = self.patterns.get(state.pattern as usize) else {
                continue;
            };
            let position = state.position as usize;
            match pattern.segments.get(position) {
                Some(segment) if segment.matches(step) => {
                    if position + 1 == pattern.segments.len() {
                        complete = true;
                    } else {
                        states.push(State {
                            pattern: state.pattern,
                            position: state.position + 1,
                        });
                    }
                }
                _ => {}
            }
        }
        complete
    }

    /// Whether some pattern covers `steps` (matches it or one of its ancestors).
    pub(crate) fn covers(&self, steps: &[Step<'_>]) -> bool {
        self.patterns
            .iter()
            .any(|pattern| pattern.matches_steps(steps, true))
    }
}

fn parse_index(token: &str) -> Option<usize> {
    // RFC 6901: an array index is "0" or digits without a leading zero.
    let canonical = token == "0" || (!token.starts_with('0') && !token.is_empty());
    if canonical && token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

fn unescape(token: &str) -> Result<String, PatternError> {
    if !token.contains('~') {
        return Ok(token.to_owned());
    }
    let mut out = String::with_capacity(token.len());
    let mut chars = token.chars();
    while let Some(c) = chars.next() {
        if c == '~' {
            match chars.next() {
                Some('0') => out.push('~'),
                Some('1') => out.push('/'),
                _ => return Err(PatternError::BadEscape),
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

fn write_escaped(f: &mut fmt::Formatter<'_>, key: &str) -> fmt::Result {
    if !key.contains(['~', '/']) {
        return f.write_str(key);
    }
    for c in key.chars() {
        match c {
            '~' => f.write_str("~0")?,
            '/' => f.write_str("~1")?,
            c => write!(f, "{c}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pointer(steps: &[Step<'_>]) -> JsonPointer {
        JsonPointer::from_steps(steps)
    }

    #[test]
    fn parses_and_displays_escapes() {
        let pattern = PointerPattern::parse("/a~1b/*/c~0d").unwrap();
        assert_eq!(pattern.as_str(), "/a~1b/*/c~0d");
        let path = pointer(&[Step::Key("a/b"), Step::Index(3), Step::Key("c~d")]);
        assert_eq!(path.to_string(), "/a~1b/3/c~0d");
        assert!(pattern.matches(&path));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert_eq!(
            PointerPattern::parse("items"),
            Err(PatternError::NoLeadingSlash)
        );
        assert_eq!(PointerPattern::parse("/a~2"), Err(PatternError::BadEscape));
        assert_eq!(PointerPattern::parse("/a~"), Err(PatternError::BadEscape));
    }

    #[test]
    fn exact_and_prefix_matching() {
        let pattern = PointerPattern::parse("/items/*/etag").unwrap();
        let etag = pointer(&[Step::Key("items"), Step::Index(7), Step::Key("etag")]);
        let below = pointer(&[
            Step::Key("items"),
            Step::Index(7),
            Step::Key("etag"),
            Step::Key("weak"),
        ]);
        let other = pointer(&[Step::Key("items"), Step::Index(7), Step::Key("price")]);
        assert!(pattern.matches(&etag));
        assert!(!pattern.matches(&below));
        assert!(pattern.covers(&below));
        assert!(!pattern.covers(&other));
        assert!(PointerPattern::parse("").unwrap().covers(&other));
    }

    #[test]
    fn numeric_tokens_match_indices_and_keys() {
        let pattern = PointerPattern::parse("/list/0").unwrap();
        assert!(pattern.matches(&pointer(&[Step::Key("list"), Step::Index(0)])));
        assert!(pattern.matches(&pointer(&[Step::Key("list"), Step::Key("0")])));
        let leading_zero = PointerPattern::parse("/list/01").unwrap();
        assert!(!leading_zero.matches(&pointer(&[Step::Key("list"), Step::Index(1)])));
    }

    #[test]
    fn generalizes_indices_only() {
        let path = pointer(&[Step::Key("items"), Step::Index(3), Step::Key("7")]);
        assert_eq!(path.generalized().as_str(), "/items/*/7");
    }

    #[test]
    fn pattern_set_advances_incrementally() {
        let set = PatternSet::new(vec![
            PointerPattern::parse("/a/*/b").unwrap(),
            PointerPattern::parse("/c").unwrap(),
        ]);
        let mut states = Vec::new();
        assert!(!set.start(&mut states));
        let root = states.len();
        assert!(!set.advance(&mut states, 0, root, Step::Key("a")));
        let a = states.len();
        assert!(!set.advance(&mut states, root, a, Step::Index(1)));
        let any = states.len();
        assert!(set.advance(&mut states, a, any, Step::Key("b")));
        assert!(set.advance(&mut states, 0, root, Step::Key("c")));
    }
}
