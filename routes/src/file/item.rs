//! One item of the file (`default`, an upstream, a route) deserialized on its own, its
//! problem located by serde's path inside it.

use serde::de;
use serde_yaml::Value;

use super::expected::{self, Item};
use super::{RawProblem, scalar_text, strip_location};

/// Deserializes one item of the file (`default`, an upstream, a route) found at `key`.
pub(super) fn item<T: de::DeserializeOwned>(
    key: &str,
    kind: Item,
    value: &Value,
) -> Result<T, RawProblem> {
    serde_path_to_error::deserialize(value).map_err(|err| item_problem(key, kind, value, &err))
}

/// Turns a deserializer error inside one item into a problem at the key it names (the
/// item's `key` plus serde's path inside it), a wrong type said in plain words.
fn item_problem(
    key: &str,
    kind: Item,
    value: &Value,
    err: &serde_path_to_error::Error<serde_yaml::Error>,
) -> RawProblem {
    let steps = path_steps(err.path());
    let mut full_key = key.to_owned();
    for step in &steps {
        match step {
            Step::Key(name) => {
                full_key.push('.');
                full_key.push_str(name);
            }
            Step::Index(index) => full_key.push_str(&format!("[{index}]")),
        }
    }
    let mut message = strip_location(&err.inner().to_string());
    if message.starts_with("invalid type: ") {
        let schema: Vec<&str> = steps.iter().map(Step::schema).collect();
        message = expected::type_message(kind, &schema, node_at(value, &steps), &message);
    }
    // The path already ends at an unknown key; `missing field` names one below it.
    let field = named_field(&message)
        .filter(|field| !matches!(steps.last(), Some(Step::Key(last)) if last == field));
    let route = match kind {
        Item::Route => value.get("name").and_then(scalar_text),
        Item::Default | Item::Upstream => None,
    };
    RawProblem {
        key: full_key,
        route,
        message,
        line: None,
        field,
        fatal: false,
        repeated: false,
    }
}

/// One step of a key path inside an item.
enum Step {
    Key(String),
    Index(usize),
}

impl Step {
    /// The step as the wording table matches it: list indexes are all `[]`.
    fn schema(&self) -> &str {
        match self {
            Step::Key(name) => name,
            Step::Index(_) => "[]",
        }
    }
}

/// serde's path as steps, up to the first step that is not a text key or an index (a
/// non-text key cannot be written as a dotted key).
fn path_steps(path: &serde_path_to_error::Path) -> Vec<Step> {
    use serde_path_to_error::Segment;
    path.iter()
        .map_while(|segment| match segment {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { .. } | Segment::Unknown => None,
        })
        .collect()
}

/// The value at `steps` below `value`, if it is there.
fn node_at<'v>(value: &'v Value, steps: &[Step]) -> Option<&'v Value> {
    steps
        .iter()
        .try_fold(value, |node, step| match (step, node) {
            (Step::Key(name), Value::Mapping(mapping)) => mapping
                .iter()
                .find(|(key, _)| scalar_text(key).as_deref() == Some(name.as_str()))
                .map(|(_, value)| value),
            (Step::Index(index), Value::Sequence(items)) => items.get(*index),
            _ => None,
        })
}

/// The field a serde message names: `unknown field `x``, `missing field `x``.
fn named_field(message: &str) -> Option<String> {
    ["unknown field `", "missing field `", "duplicate field `"]
        .iter()
        .find_map(|marker| {
            let start = message.find(marker)? + marker.len();
            let len = message[start..].find('`')?;
            Some(message[start..start + len].to_owned())
        })
}
