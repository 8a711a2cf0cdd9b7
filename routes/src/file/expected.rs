//! Plain words for a value of the wrong type: what the key takes, with an example.
//!
//! serde says `invalid type: string "GET", expected a sequence` or `expected struct
//! RawMatch`: Rust names a route file's author never wrote. The mirror knows which key
//! the value was at, so the message can say what that key takes instead.

use serde_yaml::Value;

/// Which kind of item of the file a value belongs to (the root of its key path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Item {
    /// The top-level `default`.
    Default,
    /// `upstreams.NAME`.
    Upstream,
    /// `routes[N]`.
    Route,
}

const UPSTREAM_NAME: &str = "expected an upstream name, like monolith";
const DURATION: &str = "expected a duration, like 5s or 250ms";
const SIZE: &str = "expected a size, like 64KiB";
const PERCENTAGE: &str = "expected a percentage, like 5%";
const COUNT: &str = "expected a whole number, like 100";
const FLAG: &str = "expected true or false";
const PATH: &str = "expected a path, like /invoices";
const HEADER_NAME: &str = "expected a header name, like x-request-id";
const HEADER_NAMES: &str = "expected a list of header names, like [date, x-request-id]";
const HEADER_VALUE: &str = "expected a header value, like \"text/plain\"";
const HEADER_VALUES: &str =
    "expected a mapping of header name to value, like { content-type: \"text/plain\" }";
const POINTERS: &str = "expected a list of JSON pointers, like [/generated_at]";

/// The message for a value of the wrong type at `steps` (map keys, `[]` for list items)
/// under an `item`, saying what was found when `found` is known. `serde_message` is the
/// fallback for a key this table does not know, with Rust type names replaced.
pub(crate) fn type_message(
    item: Item,
    steps: &[&str],
    found: Option<&Value>,
    serde_message: &str,
) -> String {
    let expected = expectation(item, steps)
        .map(str::to_owned)
        .unwrap_or_else(|| generic(serde_message));
    match found.and_then(describe) {
        Some(found) => format!("{expected} (found {found})"),
        None => expected,
    }
}

/// What the key at `steps` takes, when it is not just its type.
fn expectation(item: Item, steps: &[&str]) -> Option<&'static str> {
    let text = match (item, steps) {
        (Item::Default, []) => UPSTREAM_NAME,
        (Item::Upstream, []) => "expected a mapping with url, like { url: \"http://host:port\" }",
        (Item::Upstream, ["url"]) => "expected a url, like \"http://host:port\"",
        (Item::Upstream, ["host"]) => "expected `preserve` or `rewrite`",
        (Item::Upstream, ["tls"]) => "expected a mapping, like { ca: ca.pem, server_name: host }",
        (Item::Upstream, ["tls", "ca"]) => "expected a file path, like ca.pem",
        (Item::Upstream, ["tls", "server_name"]) => "expected a host name, like svc.internal",
        (Item::Upstream, ["max_connections"]) => COUNT,
        (Item::Route, rest) => route_expectation(rest)?,
        (_, [.., last]) => by_name(last)?,
    };
    Some(text)
}

/// [`expectation`] under `routes[N]`.
fn route_expectation(steps: &[&str]) -> Option<&'static str> {
    let text = match steps {
        [] => {
            "expected a route, like { name: invoices, match: { path_prefix: /invoices }, to: invoices }"
        }
        ["name"] => "expected a route name, like invoices",
        ["match"] => "expected a mapping of predicates, like { path_prefix: /invoices }",
        ["match", "path" | "path_prefix"] | ["rewrite", "strip_prefix" | "prefix"] => PATH,
        ["match", "path_regex"] => "expected a regex, like \"/v[0-9]+/.*\"",
        ["match", "methods"] => "expected a list of methods, like [GET, POST]",
        ["match", "methods", _] => "expected a method, like GET",
        ["match", "host"] => "expected a host, like api.example.com",
        ["match", "headers"] => {
            "expected a mapping of header name to value, like { x-beta: \"true\" }"
        }
        ["match", "headers", _] => {
            "expected a header value like \"true\", { regex: ... } or { present: true|false }"
        }
        ["match", "headers", _, "regex"] => "expected a regex, like \".*Mobile.*\"",
        ["match", "query" | "cookie" | "form"] => {
            "expected a mapping of name to value, like { v: \"2\" }"
        }
        ["match", "query" | "cookie" | "form", _] => {
            "expected a single value (text, a number or true/false), like \"2\""
        }
        ["match", "json"] => {
            "expected a mapping of JSON pointer to value, like { /order/type: express }"
        }
        ["respond"] => "expected a mapping, like { status: 200, body: \"...\" }",
        ["respond", "status"] => "expected a status code, like 200",
        ["respond", "body"] => "expected the body as text, like \"gone\"",
        ["respond", "headers"] | ["rewrite", "set_headers"] => HEADER_VALUES,
        ["respond", "headers", _] | ["rewrite", "set_headers", _] => HEADER_VALUE,
        ["rewrite"] => "expected a mapping, like { strip_prefix: /api }",
        ["rewrite", "remove_headers"] => HEADER_NAMES,
        ["rewrite", "remove_headers", _] => HEADER_NAME,
        ["shadow"] => "expected a mapping, like { primary: monolith, candidate: invoices }",
        ["shadow", "compare"] => "expected a mapping, like { ignore_headers: [date] }",
        ["shadow", "compare", "ignore_headers" | "redact_headers"] => HEADER_NAMES,
        ["shadow", "compare", "ignore_headers" | "redact_headers", _] => HEADER_NAME,
        ["shadow", "compare", "ignore_json" | "redact_json"] => POINTERS,
        ["shadow", "compare", "ignore_json" | "redact_json", _] => {
            "expected a JSON pointer, like /generated_at"
        }
        ["shadow", "compare", "noise"] => "expected a mapping, like { baseline: monolith }",
        ["shadow", "gate"] => "expected a mapping, like { max_mismatch_rate: 0.5% }",
        ["canary"] => "expected a mapping, like { split: { monolith: 90, invoices: 10 } }",
        ["canary", "split"] => {
            "expected a mapping of upstream to weight, like { monolith: 90, invoices: 10 }"
        }
        ["canary", "split", _] => "expected a weight, like 10",
        ["canary", "sticky"] => "expected { cookie: NAME } or { header: NAME }",
        ["canary", "sticky", "cookie"] => "expected a cookie name, like session",
        ["canary", "sticky", "header"] => HEADER_NAME,
        ["canary", "gate"] => "expected a mapping, like { max_error_rate: 1% }",
        ["canary", "gate", "max_p99_ratio"] => "expected a number, like 1.5",
        ["hooks"] => "expected a list of hooks, like [plugins/auth.lua]",
        ["hooks", _] => "expected a script path or { script: PATH, on_error: fail|continue }",
        ["hooks", _, "script"] => "expected a script path, like plugins/auth.lua",
        ["hooks", _, "on_error"] => "expected `fail` or `continue`",
        [.., last] => by_name(last)?,
    };
    Some(text)
}

/// Keys whose meaning does not depend on where they are.
fn by_name(name: &str) -> Option<&'static str> {
    let text = match name {
        "to" | "fallback" | "rollback_to" | "primary" | "candidate" | "baseline" => UPSTREAM_NAME,
        "timeout" | "connect_timeout" | "idle_timeout" | "window" | "max_p99" => DURATION,
        "hook_body_limit" | "max_body_match" | "max_body" => SIZE,
        "sample" | "max_error_rate" | "max_mismatch_rate" => PERCENTAGE,
        "max_in_flight" | "min_comparisons" | "min_requests" => COUNT,
        "unsafe_methods" | "http2" | "present" => FLAG,
        _ => return None,
    };
    Some(text)
}

/// serde's own expectation with its Rust names turned into YAML words.
fn generic(serde_message: &str) -> String {
    let expected = serde_message
        .split_once(", expected ")
        .map_or(serde_message, |(_, expected)| expected);
    let words = if expected.starts_with("struct ") || expected.starts_with("a map") {
        "a mapping"
    } else if expected == "a sequence" {
        "a list"
    } else if expected == "a boolean" {
        "true or false"
    } else if expected == "a string, number or boolean" {
        "a single value (text, a number or true/false)"
    } else {
        expected
    };
    format!("expected {words}")
}

/// How the value found reads in a message: `` `GET` ``, `a list`, `a mapping`.
fn describe(value: &Value) -> Option<String> {
    let text = match value {
        Value::Null => "an empty value".to_owned(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("`{n}`"),
        Value::String(s) => format!("`{s}`"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => return describe(&tagged.value),
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_outside_the_table_still_get_yaml_words() {
        let words = |message| type_message(Item::Route, &["nope"], None, message);
        assert_eq!(
            words("invalid type: string \"x\", expected struct RawTls"),
            "expected a mapping"
        );
        assert_eq!(
            words("invalid type: map, expected a sequence"),
            "expected a list"
        );
        let found = Value::String("GET".into());
        assert_eq!(
            type_message(Item::Route, &["match", "methods"], Some(&found), ""),
            "expected a list of methods, like [GET, POST] (found `GET`)"
        );
    }
}
