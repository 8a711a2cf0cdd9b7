//! Compiled match predicates of one route, and how a request is checked against them.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use crate::table::strip_segment_prefix;

mod body;
#[cfg(test)]
mod tests;

use body::JsonFailure;
pub(crate) use body::{Decimal, Expected, JsonPredicate, pointer_tokens};

/// The parts of a request that routing looks at. `path` must already be normalized.
#[derive(Clone, Copy, Debug)]
pub struct RequestView<'a> {
    /// Request method.
    pub method: &'a Method,
    /// Normalized path, without the query.
    pub path: &'a str,
    /// Raw query string (without `?`), if any.
    pub query: Option<&'a str>,
    /// Host (from the URI authority or the `Host` header), possibly with a port.
    pub host: Option<&'a str>,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The buffered request body, when the proxy buffered it (see
    /// [`RouteTable::body_limit`](crate::RouteTable::body_limit)); `None` otherwise, and
    /// then every `form`/`json` predicate fails.
    pub body: Option<&'a [u8]>,
}

/// A compiled path predicate.
#[derive(Clone, Debug)]
pub(crate) enum PathMatch {
    /// `path: /exact` (normalized).
    Exact(String),
    /// `path: /payroll/{id}`: one entry per segment of `path[1..]`.
    Template {
        source: String,
        segments: Vec<Segment>,
    },
    /// `path_prefix`: stored without trailing slash (`""` for `/`); `source` as written.
    Prefix { prefix: String, source: String },
    /// `path_regex`, anchored at both ends.
    Regex(Regex),
}

/// One segment of a path template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    /// Must equal the request's segment.
    Literal(String),
    /// `{name}`: any one non-empty segment.
    Param(String),
}

/// A compiled `host` predicate (lowercase, no port).
#[derive(Clone, Debug)]
pub(crate) enum HostMatch {
    /// `api.example.com`.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: one or more labels in front.
    Wildcard(String),
}

/// A compiled `headers.NAME` predicate.
#[derive(Clone, Debug)]
pub(crate) enum HeaderMatch {
    /// Some value of the header equals this.
    Exact(String),
    /// Some value of the header matches this (anchored) regex.
    Regex(Regex),
    /// The header is present (`true`) or absent (`false`).
    Present(bool),
}

/// All predicates of one route; every one must hold.
#[derive(Clone, Debug, Default)]
pub(crate) struct RouteMatch {
    pub path: Option<PathMatch>,
    pub methods: Option<Vec<Method>>,
    pub host: Option<HostMatch>,
    pub headers: Vec<(HeaderName, HeaderMatch)>,
    pub query: Vec<(String, String)>,
    pub cookie: Vec<(String, String)>,
    /// `form` fields (field, value); needs a URL-encoded body.
    pub form: Vec<(String, String)>,
    /// `json` predicates; need a JSON body.
    pub json: Vec<JsonPredicate>,
}

impl PathMatch {
    /// Whether the normalized `path` satisfies this predicate.
    pub(crate) fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix { prefix, .. } => strip_segment_prefix(path, prefix).is_some(),
            PathMatch::Regex(regex) => regex.is_match(path),
            PathMatch::Template { segments, .. } => {
                let mut parts = path.get(1..).unwrap_or("").split('/');
                let all = segments
                    .iter()
                    .all(|segment| match (segment, parts.next()) {
                        (Segment::Literal(literal), Some(part)) => part == literal,
                        (Segment::Param(_), Some(part)) => !part.is_empty(),
                        (_, None) => false,
                    });
                all && parts.next().is_none()
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            PathMatch::Exact(exact) => format!("path {exact}"),
            PathMatch::Template { source, .. } => format!("path template {source}"),
            PathMatch::Prefix { source, .. } => format!("path_prefix {source}"),
            PathMatch::Regex(regex) => format!("path_regex {}", unanchor(regex.as_str())),
        }
    }
}

impl HostMatch {
    fn matches(&self, host: &str) -> bool {
        let host = strip_port(host);
        match self {
            HostMatch::Exact(exact) => host.eq_ignore_ascii_case(exact),
            HostMatch::Wildcard(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            HostMatch::Exact(exact) => exact.clone(),
            HostMatch::Wildcard(suffix) => format!("*{suffix}"),
        }
    }
}

/// The first predicate of a route that a request fails (no allocation; see `reason`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Failure<'m> {
    Path(&'m PathMatch),
    Method(&'m [Method]),
    Host(&'m HostMatch),
    Header(&'m HeaderName, &'m HeaderMatch),
    Query(&'m str, &'m str),
    Cookie(&'m str, &'m str),
    /// The route has `form` fields and the request is not a URL-encoded form.
    FormType,
    /// The route has body predicates and the body was not buffered.
    BodyMissing(&'m RouteMatch),
    Form(&'m str, &'m str),
    JsonUnparsable,
    Json(&'m JsonPredicate),
}

impl RouteMatch {
    /// Every predicate except the path one (which the index has already checked).
    pub(crate) fn matches_except_path(&self, req: &RequestView<'_>) -> bool {
        self.failure_except_path(req).is_none()
    }

    /// Every predicate, independently of any index.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        self.failure(req).is_none()
    }

    /// Whether the route has `form` or `json` predicates.
    pub(crate) fn has_body_predicates(&self) -> bool {
        !self.form.is_empty() || !self.json.is_empty()
    }

    /// Every predicate that does not need the body (path included).
    pub(crate) fn matches_without_body(&self, req: &RequestView<'_>) -> bool {
        if let Some(path) = &self.path
            && !path.matches(req.path)
        {
            return false;
        }
        self.matches_except_path_and_body(req)
    }

    /// Every predicate that needs neither the path nor the body.
    pub(crate) fn matches_except_path_and_body(&self, req: &RequestView<'_>) -> bool {
        self.head_failure(req).is_none()
    }

    /// The first predicate, in a fixed order, that `req` fails.
    pub(crate) fn failure(&self, req: &RequestView<'_>) -> Option<Failure<'_>> {
        if let Some(path) = &self.path
            && !path.matches(req.path)
        {
            return Some(Failure::Path(path));
        }
        self.failure_except_path(req)
    }

    fn failure_except_path(&self, req: &RequestView<'_>) -> Option<Failure<'_>> {
        // The body is looked at last: every cheaper predicate has had its chance to
        // reject the request first.
        self.head_failure(req).or_else(|| self.body_failure(req))
    }

    /// The first failing predicate among those that need neither path nor body.
    fn head_failure(&self, req: &RequestView<'_>) -> Option<Failure<'_>> {
        if let Some(methods) = &self.methods
            && !methods.contains(req.method)
        {
            return Some(Failure::Method(methods));
        }
        if let Some(host) = &self.host
            && !req.host.is_some_and(|actual| host.matches(actual))
        {
            return Some(Failure::Host(host));
        }
        for (name, rule) in &self.headers {
            if !header_holds(req.headers, name, rule) {
                return Some(Failure::Header(name, rule));
            }
        }
        for (key, value) in &self.query {
            if !query_has(req.query.unwrap_or(""), key, value) {
                return Some(Failure::Query(key, value));
            }
        }
        for (name, value) in &self.cookie {
            if !cookie_has(req.headers, name, value) {
                return Some(Failure::Cookie(name, value));
            }
        }
        if !self.form.is_empty() && !body::is_form(req.headers) {
            return Some(Failure::FormType);
        }
        None
    }

    /// The first failing body predicate.
    fn body_failure(&self, req: &RequestView<'_>) -> Option<Failure<'_>> {
        if !self.has_body_predicates() {
            return None;
        }
        let Some(content) = req.body else {
            return Some(Failure::BodyMissing(self));
        };
        if let Some((field, value)) = body::form_failure(content, &self.form) {
            return Some(Failure::Form(field, value));
        }
        if self.json.is_empty() {
            return None;
        }
        body::json_failure(content, &self.json).map(|failure| match failure {
            JsonFailure::Unparsable => Failure::JsonUnparsable,
            JsonFailure::Predicate(predicate) => Failure::Json(predicate),
        })
    }

    /// Human summary, e.g. `GET path_prefix=/invoices header x-beta=true`.
    pub(crate) fn summary(&self) -> String {
        let mut parts = Vec::new();
        if let Some(methods) = &self.methods {
            parts.push(join_methods(methods));
        }
        match &self.path {
            Some(PathMatch::Exact(exact)) => parts.push(format!("path={exact}")),
            Some(PathMatch::Template { source, .. }) => parts.push(format!("path={source}")),
            Some(PathMatch::Prefix { source, .. }) => parts.push(format!("path_prefix={source}")),
            Some(PathMatch::Regex(regex)) => {
                parts.push(format!("path_regex={}", unanchor(regex.as_str())));
            }
            None => {}
        }
        if let Some(host) = &self.host {
            parts.push(format!("host={}", host.describe()));
        }
        for (name, rule) in &self.headers {
            parts.push(match rule {
                HeaderMatch::Exact(value) => format!("header {name}={value}"),
                HeaderMatch::Regex(regex) => {
                    format!("header {name}~{}", unanchor(regex.as_str()))
                }
                HeaderMatch::Present(true) => format!("header {name} present"),
                HeaderMatch::Present(false) => format!("header {name} absent"),
            });
        }
        for (key, value) in &self.query {
            parts.push(format!("query {key}={value}"));
        }
        for (name, value) in &self.cookie {
            parts.push(format!("cookie {name}={value}"));
        }
        for (field, value) in &self.form {
            parts.push(format!("form {field}={value}"));
        }
        for predicate in &self.json {
            parts.push(format!("json {}={}", predicate.pointer, predicate.expected));
        }
        if parts.is_empty() {
            "any request".to_owned()
        } else {
            parts.join(" ")
        }
    }
}

fn header_holds(headers: &HeaderMap, name: &HeaderName, rule: &HeaderMatch) -> bool {
    let mut values = headers.get_all(name).iter();
    match rule {
        HeaderMatch::Present(expected) => values.next().is_some() == *expected,
        HeaderMatch::Exact(expected) => values.any(|value| value.as_bytes() == expected.as_bytes()),
        HeaderMatch::Regex(regex) => {
            values.any(|value| value.to_str().is_ok_and(|text| regex.is_match(text)))
        }
    }
}

impl Failure<'_> {
    /// Why `req` failed this predicate, for humans (`strangler check --explain`).
    pub(crate) fn reason(&self, req: &RequestView<'_>) -> String {
        match self {
            Failure::Path(path) => format!("path {} does not match {}", req.path, path.describe()),
            Failure::Method(methods) => {
                format!("method {} is not {}", req.method, join_methods(methods))
            }
            Failure::Host(host) => match req.host {
                Some(actual) => format!("host {actual} does not match {}", host.describe()),
                None => format!("host missing (expected {})", host.describe()),
            },
            Failure::Header(name, rule) => {
                let value = req
                    .headers
                    .get(*name)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()));
                match (rule, value) {
                    (HeaderMatch::Present(false), _) => {
                        format!("header {name} is present but must be absent")
                    }
                    (_, None) => format!("header {name} missing"),
                    (HeaderMatch::Exact(expected), Some(actual)) => {
                        format!("header {name} is {actual:?}, not {expected:?}")
                    }
                    (HeaderMatch::Regex(regex), Some(actual)) => format!(
                        "header {name} {actual:?} does not match regex {}",
                        unanchor(regex.as_str())
                    ),
                    (HeaderMatch::Present(true), Some(_)) => format!("header {name} missing"),
                }
            }
            Failure::Query(key, value) => format!("query has no {key}={value}"),
            Failure::Cookie(name, value) => format!("cookie {name}={value} missing"),
            Failure::FormType => {
                let actual = req
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()));
                match actual {
                    Some(actual) => format!(
                        "content-type {actual:?} is not a form (application/x-www-form-urlencoded)"
                    ),
                    None => "content-type missing (form predicates need application/x-www-form-urlencoded)"
                        .to_owned(),
                }
            }
            Failure::BodyMissing(matcher) => {
                let needed = matcher
                    .form
                    .iter()
                    .map(|(field, _)| format!("form field {field}"))
                    .chain(matcher.json.iter().map(|p| format!("json {}", p.pointer)))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("body not buffered (needed for {needed})")
            }
            Failure::Form(field, value) => {
                let actual = body::form_values(req.body.unwrap_or_default(), field);
                match actual.as_slice() {
                    [] => format!("form field {field} missing (expected {value})"),
                    [one] => format!("form field {field} is {one}, not {value}"),
                    many => format!("form field {field} is {}, not {value}", many.join(",")),
                }
            }
            Failure::JsonUnparsable => "body unparsable: not valid JSON".to_owned(),
            Failure::Json(predicate) => {
                let pointer = &predicate.pointer;
                let expected = &predicate.expected;
                match body::json_value(req.body.unwrap_or_default(), &predicate.tokens) {
                    Ok(Some(actual)) => {
                        format!("json {pointer} is {}, not {expected}", shorten(&actual))
                    }
                    Ok(None) | Err(()) => format!("json {pointer} missing (expected {expected})"),
                }
            }
        }
    }
}

/// Whether `query` has a parameter `key` whose (form-decoded) value is `value`.
pub(crate) fn query_has(query: &str, key: &str, value: &str) -> bool {
    query.split('&').any(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        decoded_eq(k, key) && decoded_eq(v, value)
    })
}

/// Compares `raw` after `application/x-www-form-urlencoded` decoding with `expected`,
/// without allocating.
fn decoded_eq(raw: &str, expected: &str) -> bool {
    let raw = raw.as_bytes();
    let mut expected = expected.bytes();
    let mut i = 0;
    while i < raw.len() {
        let byte = match raw[i] {
            b'+' => b' ',
            b'%' => match (raw.get(i + 1).and_then(hex), raw.get(i + 2).and_then(hex)) {
                (Some(hi), Some(lo)) => {
                    i += 2;
                    hi << 4 | lo
                }
                _ => b'%',
            },
            other => other,
        };
        if expected.next() != Some(byte) {
            return false;
        }
        i += 1;
    }
    expected.next().is_none()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// Whether some `Cookie` header has `name=value`.
fn cookie_has(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .any(|pair| {
            pair.trim()
                .split_once('=')
                .is_some_and(|(k, v)| k.trim() == name && v.trim() == value)
        })
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub(crate) fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

fn join_methods(methods: &[Method]) -> String {
    let mut out = String::new();
    for (i, method) in methods.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{method}");
    }
    out
}

/// At most 60 characters of `text`, for messages.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(60) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// The regex as the user wrote it (we wrap it as `^(?:...)$`).
pub(crate) fn unanchor(regex: &str) -> &str {
    regex
        .strip_prefix("^(?:")
        .and_then(|rest| rest.strip_suffix(")$"))
        .unwrap_or(regex)
}
