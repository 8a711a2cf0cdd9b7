//! Raw file → compiled [`RouteTable`], reporting every problem in one pass.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use http::{HeaderName, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::action::{Action, Respond};
use crate::error::{ConfigError, ValidationErrors, Warning};
use crate::file::{self, RawFile, RawProblem, RawRespond, RawRewrite, RawRoute, Scalar};
use crate::index::RouteIndex;
use crate::lint;
use crate::locate::LazyLines;
use crate::normalize::normalize_path;
use crate::table::{Rewrite, Route, RouteTable, UpstreamId};

mod action;
mod body;
mod matcher;
mod scalar;
mod upstream;

#[cfg(test)]
mod tests;

/// The route label value that metrics and logs give requests no route matched
/// (`strangler_requests_total{route="default"}`): no route may be named so.
pub const UNMATCHED_ROUTE: &str = "default";
/// The upstream label value that metrics and logs give answers the proxy gave itself
/// (`respond` routes, errors): no upstream may be named so.
pub const SELF_ANSWER_UPSTREAM: &str = "respond";

const DEFAULT_HOOK_BODY_LIMIT: u64 = 64 << 10;
const DEFAULT_MAX_BODY_MATCH: u64 = 64 << 10;

/// Collects errors and warnings, each located by its dotted key.
pub(crate) struct Ctx<'a> {
    file: &'a Path,
    base_dir: PathBuf,
    lines: LazyLines<'a>,
    errors: Vec<ConfigError>,
    warnings: Vec<Warning>,
}

/// What a route may refer to.
struct Names {
    upstreams: HashMap<String, UpstreamId>,
    default: Option<UpstreamId>,
}

/// Parses and validates `text`, the content of the route file `source`.
pub(crate) fn compile(source: &Path, text: &str) -> Result<RouteTable, ValidationErrors> {
    // A byte order mark, which some editors and generators put first, is not YAML content
    // (the version still hashes the file as it is).
    let yaml = text.strip_prefix('\u{feff}').unwrap_or(text);
    let raw = file::parse(yaml);
    let base_dir = match source.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut ctx = Ctx {
        file: source,
        base_dir,
        lines: LazyLines::new(yaml, raw.routes.len()),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    ctx.raw_problems(&raw);
    let table = build(&mut ctx, raw, source, text);
    if ctx.errors.is_empty()
        && let Some(table) = table
    {
        return Ok(table);
    }
    let mut errors = ctx.errors;
    errors.sort_by_key(|error| error.line.unwrap_or(usize::MAX));
    Err(ValidationErrors { errors })
}

fn build(ctx: &mut Ctx<'_>, raw: RawFile, source: &Path, text: &str) -> Option<RouteTable> {
    if raw
        .problems
        .iter()
        .any(|problem| problem.fatal || problem.key == "file")
    {
        return None;
    }
    let mut names = Names {
        upstreams: HashMap::new(),
        default: None,
    };
    let mut upstreams = Vec::new();
    for (i, (name, raw_upstream)) in raw.upstreams.iter().enumerate() {
        names.upstreams.insert(name.clone(), UpstreamId(i));
        let compiled = raw_upstream
            .as_ref()
            .and_then(|raw_upstream| upstream::compile(ctx, name, raw_upstream));
        upstreams.push(compiled);
    }
    if raw.upstreams.is_empty() {
        ctx.error("upstreams", None, "at least one upstream is required");
    }
    match &raw.default {
        // A `default` of the wrong type is already reported (and so not missing).
        None if raw.problems.iter().any(|problem| problem.key == "default") => {}
        None => ctx.error(
            "default",
            None,
            "missing required key `default` (the upstream for unmatched requests)",
        ),
        Some(name) => names.default = ctx.upstream_ref("default", None, name, &names.upstreams),
    }

    let mut routes = Vec::new();
    let mut matchers = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, raw_route) in raw.routes.iter().enumerate() {
        let Some(raw_route) = raw_route else { continue };
        if let Some((route, matcher)) = compile_route(ctx, index, raw_route, &names, &mut seen) {
            routes.push(route);
            matchers.push(matcher);
        }
    }
    if !ctx.errors.is_empty() {
        return None;
    }
    let upstreams: Vec<_> = upstreams.into_iter().collect::<Option<_>>()?;
    let default = names.default?;
    let index = RouteIndex::build(matchers.iter().map(|m| m.path.as_ref()));
    let mut warnings = std::mem::take(&mut ctx.warnings);
    warnings.extend(lint::unreachable(source, &routes, &matchers, &index));
    warnings.sort_by_key(|warning| warning.line.unwrap_or(usize::MAX));
    let body_predicates = matchers.iter().any(|m| m.has_body_predicates());
    Some(RouteTable {
        body_predicates,
        version: hex_sha256(text.as_bytes()),
        source: source.to_path_buf(),
        loaded_at: SystemTime::now(),
        upstreams,
        upstream_names: names.upstreams,
        default,
        routes,
        matchers,
        index,
        warnings,
    })
}

fn compile_route(
    ctx: &mut Ctx<'_>,
    index: usize,
    raw: &RawRoute,
    names: &Names,
    seen: &mut HashMap<String, usize>,
) -> Option<(Route, crate::matching::RouteMatch)> {
    let key = format!("routes[{index}]");
    let line = ctx.lines.route_line(index);
    let name = raw.name.as_ref().map(|name| name.as_str().to_owned());
    let route = name.as_deref();
    let errors_before = ctx.errors.len();

    match &name {
        None => ctx.error(format!("{key}.name"), None, "missing required key `name`"),
        Some(name) if !is_valid_name(name) => ctx.error(
            format!("{key}.name"),
            route,
            format!("invalid route name `{name}` (use letters, digits, `.`, `_`, `-`)"),
        ),
        Some(name) if name == UNMATCHED_ROUTE => ctx.error(
            format!("{key}.name"),
            route,
            format!(
                "route name `{name}` is reserved: metrics and logs say route=\"{name}\" for requests that no route matched"
            ),
        ),
        Some(name) => {
            if let Some(first) = seen.get(name) {
                let message = format!("duplicate route name `{name}` (first used on line {first})");
                ctx.error(format!("{key}.name"), route, message);
            } else {
                seen.insert(name.clone(), line);
            }
        }
    }

    let matcher = matcher::compile(ctx, &format!("{key}.match"), route, raw.matcher.as_ref());
    let rollback_to = match &raw.rollback_to {
        Some(target) => ctx.upstream_ref(
            &format!("{key}.rollback_to"),
            route,
            target,
            &names.upstreams,
        ),
        None => names.default,
    };
    let action = compile_action(ctx, &key, route, raw, names, rollback_to);
    let kind = action_kind(raw);
    let rewrite = match &raw.rewrite {
        Some(_) if kind == Some("respond") => {
            let message =
                "`rewrite` only applies to `to`, `shadow` and `canary` routes, not `respond`";
            ctx.error(format!("{key}.rewrite"), route, message);
            None
        }
        Some(rewrite) => compile_rewrite(ctx, &format!("{key}.rewrite"), route, rewrite),
        None => None,
    };
    let fallback = compile_fallback(ctx, &key, route, raw, action.as_ref(), names);
    let hooks = match &raw.hooks {
        Some(hooks) => action::compile_hooks(ctx, &format!("{key}.hooks"), route, hooks),
        None => Some(Vec::new()),
    };
    let hook_body_limit = ctx.size(
        &format!("{key}.hook_body_limit"),
        route,
        raw.hook_body_limit.as_ref(),
        DEFAULT_HOOK_BODY_LIMIT,
    );
    let max_body_match = ctx.size(
        &format!("{key}.max_body_match"),
        route,
        raw.max_body_match.as_ref(),
        DEFAULT_MAX_BODY_MATCH,
    );
    if ctx.errors.len() > errors_before {
        return None;
    }
    let matcher = matcher?;
    let route = Route {
        name: name?,
        index,
        line,
        action: action?,
        rewrite,
        fallback,
        rollback_to: rollback_to?,
        match_summary: matcher.summary(),
        hooks: hooks?,
        hook_body_limit: hook_body_limit?,
        max_body_match: max_body_match?,
        // The raw item mirrors the route's YAML subtree exactly (no positions, no
        // comments), so its rendering changes iff the route's definition does.
        fingerprint: hex_sha256(format!("{raw:?}").as_bytes()),
    };
    Some((route, matcher))
}

/// `fallback`, on `to` and `canary` routes only. On a `to` route it must name another
/// upstream than `to`: the replay of a failed request would go to the upstream that just
/// failed it (and repeat a `POST`'s side effects there). A canary's fallback may be one
/// of its split, since it covers the other sides.
fn compile_fallback(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawRoute,
    action: Option<&Action>,
    names: &Names,
) -> Option<UpstreamId> {
    let fallback = raw.fallback.as_ref()?;
    let fallback_key = format!("{key}.fallback");
    if let Some(kind @ ("respond" | "shadow")) = action_kind(raw) {
        let message = format!("`fallback` only applies to `to` and `canary` routes, not `{kind}`");
        ctx.error(&fallback_key, route, message);
        return None;
    }
    let id = ctx.upstream_ref(&fallback_key, route, fallback, &names.upstreams)?;
    if let Some(Action::Forward(to)) = action
        && *to == id
    {
        let message = format!(
            "`fallback` must differ from `to` (both are `{}`): a failed request would be replayed to the upstream that just failed it",
            fallback.as_str()
        );
        ctx.error(&fallback_key, route, message);
        return None;
    }
    Some(id)
}

/// Which action key the route uses, when it uses exactly one.
fn action_kind(raw: &RawRoute) -> Option<&'static str> {
    let mut present = action_keys(raw);
    match (present.next(), present.next()) {
        (Some(kind), None) => Some(kind),
        _ => None,
    }
}

fn action_keys(raw: &RawRoute) -> impl Iterator<Item = &'static str> {
    [
        (raw.to.is_some(), "to"),
        (raw.respond.is_some(), "respond"),
        (raw.shadow.is_some(), "shadow"),
        (raw.canary.is_some(), "canary"),
    ]
    .into_iter()
    .filter_map(|(present, key)| present.then_some(key))
}

/// Compiles the route's one action among `to`, `respond`, `shadow` and `canary`.
fn compile_action(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawRoute,
    names: &Names,
    rollback_to: Option<UpstreamId>,
) -> Option<Action> {
    let present: Vec<&str> = action_keys(raw).collect();
    match present.as_slice() {
        [] => {
            ctx.error(
                key,
                route,
                "missing action: give one of `to: UPSTREAM`, `respond: {...}`, `shadow: {...}` or `canary: {...}`",
            );
            None
        }
        [_] => {
            if let Some(to) = &raw.to {
                return ctx
                    .upstream_ref(&format!("{key}.to"), route, to, &names.upstreams)
                    .map(Action::Forward);
            }
            if let Some(respond) = &raw.respond {
                return compile_respond(ctx, &format!("{key}.respond"), route, respond)
                    .map(Action::Respond);
            }
            if let Some(shadow) = &raw.shadow {
                return action::compile_shadow(ctx, &format!("{key}.shadow"), route, shadow, names)
                    .map(Action::Shadow);
            }
            let canary = raw.canary.as_ref()?;
            action::compile_canary(
                ctx,
                &format!("{key}.canary"),
                route,
                canary,
                names,
                rollback_to,
            )
            .map(Action::Canary)
        }
        [first, rest @ ..] => {
            let given = present
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(" and ");
            let message = format!(
                "{given} are mutually exclusive: give exactly one of `to`, `respond`, `shadow`, `canary`"
            );
            // Located at the second action key: the first one is usually the intended one.
            let at = rest.first().unwrap_or(first);
            ctx.error(format!("{key}.{at}"), route, message);
            None
        }
    }
}

fn compile_respond(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawRespond,
) -> Option<Respond> {
    let status = match &raw.status {
        None => {
            ctx.error(
                format!("{key}.status"),
                route,
                "missing required key `status`",
            );
            None
        }
        Some(status) => {
            let code = status
                .as_str()
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c));
            let code = code.and_then(|c| StatusCode::from_u16(c).ok());
            if code.is_none() {
                // A 1xx is no final answer: a 101 would switch the connection's protocol.
                let message = format!(
                    "invalid status `{}` (expected 200 to 599, a final status)",
                    status.as_str()
                );
                ctx.error(format!("{key}.status"), route, message);
            }
            code
        }
    };
    let headers = ctx.header_map(&format!("{key}.headers"), route, raw.headers.as_ref());
    Some(Respond {
        status: status?,
        body: raw
            .body
            .as_ref()
            .map(|b| b.as_str().to_owned())
            .unwrap_or_default(),
        headers: headers?,
    })
}

fn compile_rewrite(
    ctx: &mut Ctx<'_>,
    key: &str,
    route: Option<&str>,
    raw: &RawRewrite,
) -> Option<Rewrite> {
    let path_field = |ctx: &mut Ctx<'_>, field: &str, value: Option<&Scalar>| {
        let value = value?.as_str();
        match normalize_path(value) {
            Ok(normal) => Some(Some(normal.trim_end_matches('/').to_owned())),
            Err(err) => {
                let message = format!("invalid path `{value}`: {err}");
                ctx.error(format!("{key}.{field}"), route, message);
                None
            }
        }
    };
    let strip_prefix = path_field(ctx, "strip_prefix", raw.strip_prefix.as_ref());
    let prefix = path_field(ctx, "prefix", raw.prefix.as_ref());
    let set_headers = ctx.header_map(
        &format!("{key}.set_headers"),
        route,
        raw.set_headers.as_ref(),
    );
    let mut remove_headers = Vec::new();
    for (i, name) in raw.remove_headers.iter().flatten().enumerate() {
        if let Some(name) =
            ctx.header_name(&format!("{key}.remove_headers[{i}]"), route, name.as_str())
        {
            remove_headers.push(name);
        }
    }
    let strip_ok = raw.strip_prefix.is_none() || strip_prefix.is_some();
    let prefix_ok = raw.prefix.is_none() || prefix.is_some();
    if !(strip_ok && prefix_ok) {
        return None;
    }
    Some(Rewrite {
        strip_prefix: strip_prefix.flatten(),
        prefix: prefix.flatten(),
        set_headers: set_headers?,
        remove_headers,
    })
}

impl Ctx<'_> {
    /// Records an error at `key` (its line is looked up).
    pub(crate) fn error(
        &mut self,
        key: impl Into<String>,
        route: Option<&str>,
        message: impl Into<String>,
    ) {
        let key = key.into();
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: self.lines.line_of(&key),
            route: route.map(str::to_owned),
            key,
            message: message.into(),
        });
    }

    /// Records a warning at `key` (its line is looked up): legal, but probably a mistake.
    pub(crate) fn warn(&mut self, key: String, route: Option<&str>, message: String) {
        self.warnings.push(Warning {
            file: self.file.to_path_buf(),
            line: self.lines.line_of(&key),
            route: route.map(str::to_owned),
            key,
            message,
        });
    }

    /// The directory relative paths in the file resolve against.
    pub(crate) fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    fn raw_problems(&mut self, raw: &RawFile) {
        for problem in &raw.problems {
            if problem.repeated {
                self.repeated_key(problem);
                continue;
            }
            let (key, line) = match &problem.field {
                Some(field) if problem.message.contains("unknown field") => {
                    match self.lines.find_field(&problem.key, field) {
                        Some((key, line)) => (key, Some(line)),
                        None => (format!("{}.{field}", problem.key), None),
                    }
                }
                Some(field) => (format!("{}.{field}", problem.key), None),
                None => (problem.key.clone(), None),
            };
            let line = problem.line.or(line).or_else(|| self.lines.line_of(&key));
            self.errors.push(ConfigError {
                file: self.file.to_path_buf(),
                line,
                route: problem.route.clone(),
                key,
                message: problem.message.clone(),
            });
        }
    }

    /// A key given twice in one mapping, at its second occurrence when that is found
    /// (else where the parser placed it: the mapping's start).
    fn repeated_key(&mut self, problem: &RawProblem) {
        let key = problem.key.clone();
        let (line, message) = match (self.lines.repeat_of(&key), self.lines.line_of(&key)) {
            (Some(again), Some(first)) => {
                let name = key.rsplit('.').next().unwrap_or(&key);
                let message = format!("duplicate key `{name}` (first given on line {first})");
                (Some(again), message)
            }
            _ => (problem.line, problem.message.clone()),
        };
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            route: None,
            key,
            message,
        });
    }

    fn upstream_ref(
        &mut self,
        key: &str,
        route: Option<&str>,
        name: &Scalar,
        upstreams: &HashMap<String, UpstreamId>,
    ) -> Option<UpstreamId> {
        let found = upstreams.get(name.as_str()).copied();
        if found.is_none() {
            let mut known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            known.sort_unstable();
            let message = format!(
                "unknown upstream `{}` (defined: {})",
                name.as_str(),
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            );
            self.error(key, route, message);
        }
        found
    }

    pub(crate) fn header_name(
        &mut self,
        key: &str,
        route: Option<&str>,
        name: &str,
    ) -> Option<HeaderName> {
        let parsed = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok();
        if parsed.is_none() {
            self.error(key, route, format!("invalid header name `{name}`"));
        }
        parsed
    }

    fn header_map(
        &mut self,
        key: &str,
        route: Option<&str>,
        raw: Option<&std::collections::BTreeMap<String, Scalar>>,
    ) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let mut out = Vec::new();
        let mut ok = true;
        for (name, value) in raw.into_iter().flatten() {
            let entry_key = format!("{key}.{name}");
            let name = self.header_name(&entry_key, route, name);
            let value = HeaderValue::from_str(value.as_str()).ok();
            if value.is_none() {
                self.error(&entry_key, route, "invalid header value");
            }
            match (name, value) {
                (Some(name), Some(value)) => out.push((name, value)),
                _ => ok = false,
            }
        }
        ok.then_some(out)
    }
}

/// Route and upstream names: `[A-Za-z0-9._-]+`.
pub(crate) fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Lowercase hex SHA-256, as `sha256sum` prints it (the table's version is the route
/// file's).
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &byte in bytes {
        out.push(char::from(b"0123456789abcdef"[usize::from(byte >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(byte & 0xf)]));
    }
    out
}
