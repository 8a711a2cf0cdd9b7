//! The serde mirror of the route file (no logic), and the only module that knows YAML.
//!
//! The file is first read as a generic YAML tree (syntax errors carry their location),
//! then every upstream and every route is deserialized on its own, so that one bad route
//! does not hide the problems of the next. Scalars are kept as text ([`Scalar`]) so that
//! type problems become semantic errors that name their key; a value of the wrong shape
//! (a text where a list goes) is named by its key path and said in plain words
//! ([`expected`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::Value;

use expected::Item;
use item::item;

mod expected;
mod item;

/// A problem found while mirroring the YAML, before any semantic check.
#[derive(Debug, Clone)]
pub(crate) struct RawProblem {
    /// Dotted key of the problem: the value at fault when known, else the item (or
    /// top-level key) it was found in.
    pub key: String,
    /// The name of the route the problem is in, when it has one.
    pub route: Option<String>,
    /// Lowercase message without location.
    pub message: String,
    /// A line reported by the YAML parser itself (syntax errors).
    pub line: Option<usize>,
    /// A field named by the deserializer (`unknown field `x``), to be located under `key`.
    pub field: Option<String>,
    /// The file could not be read as YAML at all, so nothing else was checked.
    pub fatal: bool,
    /// `key` appears twice in its mapping: the problem is at its second occurrence.
    pub repeated: bool,
}

/// The whole file, item by item; items that failed to deserialize are `None` (their
/// problem is in [`RawFile::problems`]).
#[derive(Debug, Default)]
pub(crate) struct RawFile {
    pub upstreams: Vec<(String, Option<RawUpstream>)>,
    pub default: Option<Scalar>,
    pub routes: Vec<Option<RawRoute>>,
    pub problems: Vec<RawProblem>,
}

/// A YAML scalar (string, number or boolean) kept as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scalar(pub String);

/// `upstreams.NAME`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: Option<Scalar>,
    pub connect_timeout: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub idle_timeout: Option<Scalar>,
    pub host: Option<Scalar>,
    pub http2: Option<Scalar>,
    pub tls: Option<RawTls>,
    pub max_connections: Option<Scalar>,
}

/// `upstreams.NAME.tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub ca: Option<Scalar>,
    pub server_name: Option<Scalar>,
}

/// `routes[N]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<Scalar>,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub to: Option<Scalar>,
    pub respond: Option<RawRespond>,
    pub rewrite: Option<RawRewrite>,
    pub fallback: Option<Scalar>,
    pub rollback_to: Option<Scalar>,
    pub shadow: Option<RawShadow>,
    pub canary: Option<RawCanary>,
    pub hooks: Option<Vec<RawHook>>,
    pub hook_body_limit: Option<Scalar>,
    pub max_body_match: Option<Scalar>,
}

/// `routes[N].shadow`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShadow {
    pub primary: Option<Scalar>,
    pub candidate: Option<Scalar>,
    pub sample: Option<Scalar>,
    pub unsafe_methods: Option<Scalar>,
    pub max_in_flight: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub max_body: Option<Scalar>,
    pub compare: Option<RawCompare>,
    pub gate: Option<RawShadowGate>,
}

/// `routes[N].shadow.compare`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCompare {
    pub ignore_headers: Option<Vec<Scalar>>,
    pub ignore_json: Option<Vec<Scalar>>,
    pub redact_headers: Option<Vec<Scalar>>,
    pub redact_json: Option<Vec<Scalar>>,
    pub noise: Option<RawNoise>,
}

/// `routes[N].shadow.compare.noise`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNoise {
    pub baseline: Option<Scalar>,
    pub sample: Option<Scalar>,
}

/// `routes[N].shadow.gate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawShadowGate {
    pub min_comparisons: Option<Scalar>,
    pub max_mismatch_rate: Option<Scalar>,
}

/// `routes[N].canary`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCanary {
    pub split: Option<Entries<Scalar>>,
    pub sticky: Option<RawSticky>,
    pub gate: Option<RawCanaryGate>,
}

/// `routes[N].canary.sticky`: `{ cookie: NAME }` or `{ header: NAME }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSticky {
    pub cookie: Option<Scalar>,
    pub header: Option<Scalar>,
}

/// `routes[N].canary.gate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCanaryGate {
    pub min_requests: Option<Scalar>,
    pub max_error_rate: Option<Scalar>,
    pub max_p99_ratio: Option<Scalar>,
    pub max_p99: Option<Scalar>,
    pub window: Option<Scalar>,
}

/// `routes[N].hooks[M]`: a script path, or `{ script, on_error }`.
#[derive(Debug)]
pub(crate) enum RawHook {
    Path(Scalar),
    Spec(RawHookSpec),
}

/// The map form of a hook entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHookSpec {
    pub script: Option<Scalar>,
    pub on_error: Option<Scalar>,
}

/// A mapping kept in file order (`canary.split`), with keys as text.
#[derive(Debug)]
pub(crate) struct Entries<V>(pub Vec<(String, V)>);

/// A YAML scalar with its type kept (`match.json` values compare by type).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TypedScalar {
    Null,
    Bool(bool),
    /// An integer, as decimal text (exact).
    Integer(String),
    Float(f64),
    Str(String),
    /// A list or mapping, which is not a valid value here: kept so that validation can
    /// name the key (`"a list"` / `"a mapping"`).
    Collection(&'static str),
}

/// `routes[N].match`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub path: Option<Scalar>,
    pub path_prefix: Option<Scalar>,
    pub path_regex: Option<Scalar>,
    pub methods: Option<Vec<Scalar>>,
    pub host: Option<Scalar>,
    pub headers: Option<BTreeMap<String, RawHeaderMatch>>,
    pub query: Option<BTreeMap<String, Scalar>>,
    pub cookie: Option<BTreeMap<String, Scalar>>,
    pub form: Option<BTreeMap<String, Scalar>>,
    pub json: Option<BTreeMap<String, TypedScalar>>,
}

/// `routes[N].match.headers.NAME`: a value, or `{ regex }` / `{ present }`.
#[derive(Debug)]
pub(crate) enum RawHeaderMatch {
    Exact(Scalar),
    Rule(RawHeaderRule),
}

/// The map form of a header predicate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRule {
    pub regex: Option<Scalar>,
    pub present: Option<bool>,
}

/// `routes[N].respond`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRespond {
    pub status: Option<Scalar>,
    pub body: Option<Scalar>,
    pub headers: Option<BTreeMap<String, Scalar>>,
}

/// `routes[N].rewrite`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRewrite {
    pub strip_prefix: Option<Scalar>,
    pub prefix: Option<Scalar>,
    pub set_headers: Option<BTreeMap<String, Scalar>>,
    pub remove_headers: Option<Vec<Scalar>>,
}

/// The whole file in one typed pass (the fast path of [`parse`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FastFile {
    upstreams: Option<OrderedMap<RawUpstream>>,
    default: Option<Scalar>,
    routes: Option<Vec<RawRoute>>,
}

/// A mapping with scalar keys kept in file order; duplicate keys are an error.
struct OrderedMap<T>(Vec<(String, T)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OrderedMap<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MapVisitor<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for MapVisitor<T> {
            type Value = OrderedMap<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, T)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some((key, value)) = map.next_entry::<Scalar, T>()? {
                    if !seen.insert(key.0.clone()) {
                        return Err(de::Error::custom(format!("duplicate key `{}`", key.0)));
                    }
                    entries.push((key.0, value));
                }
                Ok(OrderedMap(entries))
            }
        }
        deserializer.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

const TOP_LEVEL_KEYS: &[&str] = &["upstreams", "default", "routes"];

/// Mirrors `text` item by item, collecting every structural problem.
pub(crate) fn parse(text: &str) -> RawFile {
    // Fast path: a valid file deserializes straight into the typed mirror (no YAML tree,
    // which is a third of the cost of a 10,000-route reload). Any problem at all falls
    // back to the item-by-item path below, which reports every problem.
    if let Ok(fast) = serde_yaml::from_str::<FastFile>(text) {
        return RawFile {
            upstreams: fast
                .upstreams
                .map(|map| map.0.into_iter().map(|(k, v)| (k, Some(v))).collect())
                .unwrap_or_default(),
            default: fast.default,
            routes: fast
                .routes
                .map(|routes| routes.into_iter().map(Some).collect())
                .unwrap_or_default(),
            problems: Vec::new(),
        };
    }
    let mut file = RawFile::default();
    let root: Value = match serde_yaml::from_str(text) {
        Ok(value) => value,
        Err(err) => {
            file.problems.push(syntax_problem(&err));
            return file;
        }
    };
    let Value::Mapping(root) = root else {
        let message = if root.is_null() {
            "the file is empty (it needs at least `upstreams` and `default`)"
        } else {
            "the file must be a mapping with `upstreams`, `default` and `routes`"
        };
        file.problems.push(problem("file", message.into()));
        return file;
    };
    for (key, value) in root {
        let Some(name) = key.as_str() else {
            file.problems
                .push(problem("file", "top-level keys must be strings".into()));
            continue;
        };
        match name {
            "upstreams" => parse_upstreams(value, &mut file),
            "default" => match item::<Option<Scalar>>("default", Item::Default, &value) {
                Ok(scalar) => file.default = scalar,
                Err(problem) => file.problems.push(problem),
            },
            "routes" => parse_routes(value, &mut file),
            other => file.problems.push(problem(
                other,
                format!(
                    "unknown key `{other}` (expected one of: {})",
                    TOP_LEVEL_KEYS.join(", ")
                ),
            )),
        }
    }
    file
}

fn parse_upstreams(value: Value, file: &mut RawFile) {
    let mapping = match value {
        Value::Mapping(mapping) => mapping,
        Value::Null => return,
        _ => {
            let message = "must be a mapping of upstream name to `{ url: ... }`".into();
            file.problems.push(problem("upstreams", message));
            return;
        }
    };
    for (key, value) in mapping {
        let name = match scalar_text(&key) {
            Some(name) => name,
            None => {
                let message = "upstream names must be strings".into();
                file.problems.push(problem("upstreams", message));
                continue;
            }
        };
        let item_key = format!("upstreams.{name}");
        let upstream = match item::<RawUpstream>(&item_key, Item::Upstream, &value) {
            Ok(upstream) => Some(upstream),
            Err(problem) => {
                file.problems.push(problem);
                None
            }
        };
        file.upstreams.push((name, upstream));
    }
}

fn parse_routes(value: Value, file: &mut RawFile) {
    let sequence = match value {
        Value::Sequence(sequence) => sequence,
        Value::Null => return,
        _ => {
            let message = "must be a list of routes (`- name: ...`)".into();
            file.problems.push(problem("routes", message));
            return;
        }
    };
    for (index, value) in sequence.iter().enumerate() {
        let route = match item::<RawRoute>(&format!("routes[{index}]"), Item::Route, value) {
            Ok(route) => Some(route),
            Err(problem) => {
                file.problems.push(problem);
                None
            }
        };
        file.routes.push(route);
    }
}

fn problem(key: &str, message: String) -> RawProblem {
    RawProblem {
        key: key.to_owned(),
        route: None,
        message,
        line: None,
        field: None,
        fatal: false,
        repeated: false,
    }
}

/// A file that does not read as YAML, at the line the parser gives. A duplicate key,
/// which the parser refuses once the whole mapping is read and so places at the
/// mapping's start, is keyed by its path instead, to be located at the duplicate itself.
fn syntax_problem(err: &serde_yaml::Error) -> RawProblem {
    let message = strip_location(&err.to_string());
    let duplicate = duplicate_key(&message);
    RawProblem {
        repeated: duplicate.is_some(),
        key: duplicate.unwrap_or_else(|| "yaml".to_owned()),
        route: None,
        message,
        line: err.location().map(|l| l.line()),
        field: None,
        fatal: true,
    }
}

/// The dotted key of serde_yaml's `PATH: duplicate entry with key "K"` (`PATH.K`).
fn duplicate_key(message: &str) -> Option<String> {
    const MARKER: &str = "duplicate entry with key ";
    let at = message.find(MARKER)?;
    let name = &message[at + MARKER.len()..];
    // Text keys are written quoted (`"to"`), numbers as they are, booleans in backticks.
    let name = match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(quoted) if !quoted.contains('\\') => quoted,
        Some(_) => return None,
        None => name.trim_matches('`'),
    };
    let path = message[..at].strip_suffix(": ").unwrap_or("");
    Some(match path {
        "" => name.to_owned(),
        path => format!("{path}.{name}"),
    })
}

/// serde_yaml appends "at line L column C"; we report the line ourselves.
fn strip_location(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

/// The text of a scalar YAML value (a key or a name).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads a YAML scalar (string, number or boolean) as its text.
struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
        Ok(Scalar(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar(v.to_string()))
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl<'de> Deserialize<'de> for RawHeaderMatch {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Hand-written rather than `untagged`, which buffers the value and loses the key
        // and message of a problem inside the map form (`present: "yes"`).
        struct HeaderVisitor;
        impl<'de> Visitor<'de> for HeaderVisitor {
            type Value = RawHeaderMatch;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, `{ regex: ... }` or `{ present: true|false }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawHeaderMatch, E> {
                ScalarVisitor.visit_str(v).map(RawHeaderMatch::Exact)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawHeaderMatch, E> {
                ScalarVisitor.visit_bool(v).map(RawHeaderMatch::Exact)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawHeaderMatch, E> {
                ScalarVisitor.visit_i64(v).map(RawHeaderMatch::Exact)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawHeaderMatch, E> {
                ScalarVisitor.visit_u64(v).map(RawHeaderMatch::Exact)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RawHeaderMatch, E> {
                ScalarVisitor.visit_f64(v).map(RawHeaderMatch::Exact)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawHeaderMatch, A::Error> {
                RawHeaderRule::deserialize(MapAccessDeserializer::new(map))
                    .map(RawHeaderMatch::Rule)
            }
        }
        deserializer.deserialize_any(HeaderVisitor)
    }
}

impl<'de> Deserialize<'de> for RawHook {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Hand-written rather than `untagged`, so that a typo inside the map form keeps
        // serde's "unknown field" message (and so its line) instead of a generic one.
        struct HookVisitor;
        impl<'de> Visitor<'de> for HookVisitor {
            type Value = RawHook;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a script path or `{ script: PATH, on_error: fail|continue }`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawHook, E> {
                Ok(RawHook::Path(Scalar(v.to_owned())))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawHook, A::Error> {
                RawHookSpec::deserialize(MapAccessDeserializer::new(map)).map(RawHook::Spec)
            }
        }
        deserializer.deserialize_any(HookVisitor)
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Entries<V> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for EntriesVisitor<V> {
            type Value = Entries<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping of name to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some((key, value)) = map.next_entry::<Scalar, V>()? {
                    entries.push((key.0, value));
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor(std::marker::PhantomData))
    }
}

impl<'de> Deserialize<'de> for TypedScalar {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TypedVisitor;
        impl<'de> Visitor<'de> for TypedVisitor {
            type Value = TypedScalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_unit<E: de::Error>(self) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Integer(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Integer(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<TypedScalar, E> {
                Ok(TypedScalar::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TypedScalar, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(TypedScalar::Collection("a list"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TypedScalar, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(TypedScalar::Collection("a mapping"))
            }
        }
        deserializer.deserialize_any(TypedVisitor)
    }
}

impl Scalar {
    /// The text of the scalar.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}
