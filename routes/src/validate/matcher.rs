//! `routes[N].match` → [`RouteMatch`].

use http::Method;
use regex::Regex;

use super::Ctx;
use crate::file::{RawHeaderMatch, RawMatch, Scalar};
use crate::matching::{HeaderMatch, HostMatch, PathMatch, RouteMatch, Segment, strip_port};
use crate::normalize::normalize_path;

/// Compiles the predicates (an absent `match` matches every request); `None` on error.
pub(super) fn compile(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: Option<&RawMatch>,
) -> Option<RouteMatch> {
    let Some(raw) = raw else {
        return Some(RouteMatch::default());
    };
    let errors_before = ctx.errors.len();
    let mut compiled = RouteMatch {
        form: pairs(raw.form.as_ref()),
        ..RouteMatch::default()
    };
    if let Some(json) = &raw.json {
        compiled.json = super::body::compile_json(ctx, &format!("{key}.json"), route, json);
    }

    let paths = [
        ("path", raw.path.as_ref()),
        ("path_prefix", raw.path_prefix.as_ref()),
        ("path_regex", raw.path_regex.as_ref()),
    ];
    let mut first: Option<&str> = None;
    for (field, value) in paths {
        let Some(value) = value else { continue };
        let field_key = format!("{key}.{field}");
        if let Some(first) = first {
            let message = format!("`{field}` and `{first}` are mutually exclusive");
            ctx.error(field_key, route, message);
            continue;
        }
        first = Some(field);
        compiled.path = match field {
            "path" => compile_path(ctx, &field_key, route, value.as_str()),
            "path_prefix" => compile_prefix(ctx, &field_key, route, value.as_str()),
            _ => compile_regex(ctx, &field_key, route, value.as_str()).map(PathMatch::Regex),
        };
    }

    if let Some(methods) = &raw.methods {
        if methods.is_empty() {
            ctx.error(format!("{key}.methods"), route, "must not be empty");
        }
        let mut list = Vec::new();
        for (i, method) in methods.iter().enumerate() {
            let upper = method.as_str().to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(method) if !list.contains(&method) => {
                    warn_nonstandard(ctx, &format!("{key}.methods[{i}]"), route, &method);
                    list.push(method);
                }
                Ok(_) => {}
                Err(_) => {
                    let message = format!("invalid method `{}`", method.as_str());
                    ctx.error(format!("{key}.methods[{i}]"), route, message);
                }
            }
        }
        compiled.methods = Some(list);
    }

    if raw.form.as_ref().is_some_and(|form| form.is_empty()) {
        ctx.error(format!("{key}.form"), route, "must not be empty");
    }

    if let Some(host) = &raw.host {
        compiled.host = compile_host(ctx, &format!("{key}.host"), route, host.as_str());
    }

    for (name, rule) in raw.headers.iter().flatten() {
        let header_key = format!("{key}.headers.{name}");
        let Some(header) = ctx.header_name(&header_key, route, name) else {
            continue;
        };
        let rule = match rule {
            RawHeaderMatch::Exact(value) => Some(HeaderMatch::Exact(value.as_str().to_owned())),
            RawHeaderMatch::Rule(rule) => match (&rule.regex, rule.present) {
                (Some(regex), None) => {
                    compile_regex(ctx, &format!("{header_key}.regex"), route, regex.as_str())
                        .map(HeaderMatch::Regex)
                }
                (None, Some(present)) => Some(HeaderMatch::Present(present)),
                _ => {
                    let message = "give exactly one of `regex` or `present`";
                    ctx.error(header_key, route, message);
                    None
                }
            },
        };
        if let Some(rule) = rule {
            compiled.headers.push((header, rule));
        }
    }
    compiled.query = pairs(raw.query.as_ref());
    compiled.cookie = pairs(raw.cookie.as_ref());
    (ctx.errors.len() == errors_before).then_some(compiled)
}

/// The methods of RFC 9110 and RFC 5789 (`PATCH`).
const STANDARD_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Warns about a method outside [`STANDARD_METHODS`]: extension methods are legal HTTP
/// (WebDAV's `PROPFIND`), so not an error, but a typo (`GETT`) would never match.
fn warn_nonstandard(ctx: &mut Ctx<'_>, key: &str, route: Option<&str>, method: &Method) {
    if !STANDARD_METHODS.contains(&method.as_str()) {
        let message = format!(
            "method `{method}` is not a standard method; a typo would never match (standard: {})",
            STANDARD_METHODS.join(", ")
        );
        ctx.warn(key.to_owned(), route, message);
    }
}

fn pairs(map: Option<&std::collections::BTreeMap<String, Scalar>>) -> Vec<(String, String)> {
    map.into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
        .collect()
}

/// `path`: exact, or a template with `{name}` segments.
fn compile_path(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    path: &str,
) -> Option<PathMatch> {
    if !path.starts_with('/') {
        ctx.error(key, route, format!("path `{path}` must start with '/'"));
        return None;
    }
    if !path.contains('{') && !path.contains('}') {
        return match normalize_path(path) {
            Ok(normal) => Some(PathMatch::Exact(normal.into_owned())),
            Err(err) => {
                ctx.error(key, route, format!("invalid path `{path}`: {err}"));
                None
            }
        };
    }
    let mut segments = Vec::new();
    let parts: Vec<&str> = path[1..].split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                ctx.error(
                    key,
                    route,
                    format!("invalid template parameter `{{{name}}}` in `{path}`"),
                );
                return None;
            }
            if segments.contains(&Segment::Param(name.to_owned())) {
                ctx.error(
                    key,
                    route,
                    format!("template parameter `{{{name}}}` appears twice in `{path}`"),
                );
                return None;
            }
            segments.push(Segment::Param(name.to_owned()));
            continue;
        }
        if part.contains('{') || part.contains('}') {
            let message =
                format!("in `{path}`, a template parameter must be a whole segment like `/{{id}}`");
            ctx.error(key, route, message);
            return None;
        }
        if *part == "." || *part == ".." {
            let message = format!("path `{path}` has a `.` or `..` segment");
            ctx.error(key, route, message);
            return None;
        }
        let single = format!("/{part}");
        let normal = normalize_path(&single);
        match normal {
            Ok(normal) if normal.len() > 1 || last => {
                segments.push(Segment::Literal(normal[1..].to_owned()));
            }
            Ok(_) => {
                let message = format!("path `{path}` has an empty, `.` or `..` segment");
                ctx.error(key, route, message);
                return None;
            }
            Err(err) => {
                ctx.error(key, route, format!("invalid path `{path}`: {err}"));
                return None;
            }
        }
    }
    Some(PathMatch::Template {
        source: path.to_owned(),
        segments,
    })
}

fn compile_prefix(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    prefix: &str,
) -> Option<PathMatch> {
    if !prefix.starts_with('/') {
        ctx.error(
            key,
            route,
            format!("path_prefix `{prefix}` must start with '/'"),
        );
        return None;
    }
    match normalize_path(prefix) {
        Ok(normal) => Some(PathMatch::Prefix {
            prefix: normal.trim_end_matches('/').to_owned(),
            source: prefix.to_owned(),
        }),
        Err(err) => {
            ctx.error(key, route, format!("invalid path_prefix `{prefix}`: {err}"));
            None
        }
    }
}

/// Compiles `pattern` anchored at both ends (the whole value must match).
fn compile_regex(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    pattern: &str,
) -> Option<Regex> {
    match Regex::new(&format!("^(?:{pattern})$")) {
        Ok(regex) => Some(regex),
        Err(err) => {
            // The regex crate's message spans several lines with a caret diagram of our
            // wrapped pattern; its last line is the one that says what is wrong.
            let text = err.to_string();
            let reason = text
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .trim_start_matches("error: ");
            ctx.error(key, route, format!("invalid regex `{pattern}`: {reason}"));
            None
        }
    }
}

fn compile_host(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    host: &str,
) -> Option<HostMatch> {
    let lower = strip_port(host.trim()).to_ascii_lowercase();
    if let Some(suffix) = lower.strip_prefix("*.") {
        if !suffix.is_empty() && !suffix.contains('*') {
            return Some(HostMatch::Wildcard(format!(".{suffix}")));
        }
    } else if !lower.is_empty() && !lower.contains('*') {
        return Some(HostMatch::Exact(lower));
    }
    ctx.error(
        key,
        route,
        format!("invalid host `{host}` (expected `api.example.com` or `*.example.com`)"),
    );
    None
}
