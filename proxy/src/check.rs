//! `strangler check`: validate a route file like `nginx -t`, and explain routing decisions.

use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use strangler_plugins::HookScript;
use strangler_routes::{RequestView, normalize::normalize_path};

/// Validate `file`; with `explain`, also say which route takes that request.
///
/// Returns the process exit code: 0 when valid, 1 when invalid, 2 when the explain request
/// itself cannot be understood.
pub fn check(file: &Path, explain: Option<&str>, headers: &[String]) -> i32 {
    let table = match strangler_routes::load_file(file) {
        Ok(table) => table,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: invalid ({})",
                file.display(),
                counted(errors.errors.len(), "problem")
            );
            return 1;
        }
    };
    // Hook scripts compile like they would at reload: a syntax error is a validation error.
    let broken: Vec<String> = table
        .routes()
        .iter()
        .flat_map(|route| &route.hooks)
        .filter_map(|hook| HookScript::compile(&hook.script).err())
        .map(|err| err.to_string())
        .collect();
    if !broken.is_empty() {
        for error in &broken {
            eprintln!("{error}");
        }
        eprintln!(
            "{}: invalid ({})",
            file.display(),
            counted(broken.len(), "problem")
        );
        return 1;
    }
    for warning in table.warnings() {
        eprintln!("{warning}");
    }
    println!(
        "{}: ok ({}, {}, version {})",
        file.display(),
        counted(table.routes().len(), "route"),
        counted(table.upstreams().len(), "upstream"),
        &table.version()[..12.min(table.version().len())]
    );
    let Some(line) = explain else { return 0 };
    match parse_request(line, headers) {
        Ok((method, target, header_map)) => {
            let (raw_path, query) = match target.split_once('?') {
                Some((path, query)) => (path, Some(query)),
                None => (target.as_str(), None),
            };
            let path = match normalize_path(raw_path) {
                Ok(path) => path,
                Err(err) => {
                    eprintln!("cannot explain {line:?}: {err}");
                    return 2;
                }
            };
            let host = header_map
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok());
            let view = RequestView {
                method: &method,
                path: &path,
                query,
                host,
                headers: &header_map,
                body: None,
            };
            println!("{}", table.explain(&view));
            0
        }
        Err(message) => {
            eprintln!("cannot explain {line:?}: {message}");
            2
        }
    }
}

/// "1 problem", "3 problems": `count` of `noun` (a noun whose plural takes an "s").
fn counted(count: usize, noun: &str) -> String {
    match count {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// Parse `"GET /path?q"` and `-H "name: value"` pairs.
fn parse_request(line: &str, headers: &[String]) -> Result<(Method, String, HeaderMap), String> {
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), None) = (words.next(), words.next(), words.next()) else {
        return Err("expected \"METHOD /path\"".into());
    };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("invalid method {method:?}"))?;
    if !target.starts_with('/') {
        return Err(format!("the path must start with '/': {target:?}"));
    }
    let mut map = HeaderMap::new();
    for header in headers {
        let (name, value) = header
            .split_once(':')
            .ok_or_else(|| format!("header {header:?} is not \"name: value\""))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("invalid header name in {header:?}"))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("invalid header value in {header:?}"))?;
        map.append(name, value);
    }
    Ok((method, target.to_string(), map))
}
