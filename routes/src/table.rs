//! The compiled, immutable, versioned route table and the types the proxy reads from it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use http::uri::Authority;
use http::{HeaderName, HeaderValue};

use crate::action::{Action, Hook};
use crate::error::Warning;
use crate::index::RouteIndex;
use crate::matching::{RequestView, RouteMatch};
use crate::validate::SELF_ANSWER_UPSTREAM;

/// Index of an upstream in [`RouteTable::upstreams`]; only meaningful for the table that
/// produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UpstreamId(pub usize);

/// The scheme used to talk to an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plain HTTP (`http://`).
    Http,
    /// HTTP over TLS (`https://`).
    Https,
}

/// An upstream server, as declared under `upstreams:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// The name used in the route file, metrics and the admin API.
    pub name: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host[:port]` (no default port is filled in).
    pub authority: Authority,
    /// Path prepended to every forwarded path: `""` or e.g. `"/base"` (no trailing slash).
    pub base_path: String,
    /// Deadline for establishing a connection (default 1 s).
    pub connect_timeout: Duration,
    /// Deadline for the whole response head (default 30 s).
    pub timeout: Duration,
    /// How long a pooled connection may stay idle (default 50 s, below the usual 60 s
    /// upstream keep-alive so that we close first).
    pub idle_timeout: Duration,
    /// `host: rewrite`: send the upstream's authority as `Host` instead of the client's.
    pub host_rewrite: bool,
    /// Speak HTTP/2 to this upstream (prior knowledge or ALPN).
    pub http2: bool,
    /// TLS settings for `https` upstreams, when given.
    pub tls: Option<UpstreamTls>,
    /// Maximum concurrent connections to this upstream (default 1024).
    pub max_connections: usize,
}

/// `upstreams.NAME.tls`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTls {
    /// CA bundle (PEM) to trust instead of the system roots; absolute, resolved against
    /// the route file's directory, and known to exist at load time.
    pub ca: Option<PathBuf>,
    /// Name to send as SNI and to verify, instead of the URL's host.
    pub server_name: Option<String>,
}

/// A compiled route.
#[derive(Clone, Debug)]
pub struct Route {
    /// Unique name (`[A-Za-z0-9._-]+`), used in metrics and the admin API.
    pub name: String,
    /// Position in the file (0-based); earlier routes win.
    pub index: usize,
    /// 1-based line of the route's `- ` item in the route file (0 if unknown).
    pub line: usize,
    /// What to do with a matching request.
    pub action: Action,
    /// Path and header changes for the new service's side (`to` upstream, shadow
    /// candidate, canary sides other than the baseline); never on `respond` routes.
    pub rewrite: Option<Rewrite>,
    /// Upstream to retry on when the route's upstream fails (`to` and `canary` routes
    /// only).
    pub fallback: Option<UpstreamId>,
    /// Where a rolled-back route sends its traffic (default: the file's `default`).
    pub rollback_to: UpstreamId,
    /// Human summary of the match predicates, e.g. `GET path_prefix=/invoices`.
    pub match_summary: String,
    /// Lua hooks, in the order they run (`hooks`; default none).
    pub hooks: Vec<Hook>,
    /// Largest response body handed to `after_response` hooks, in bytes
    /// (`hook_body_limit`; default 64 KiB).
    pub hook_body_limit: u64,
    /// Most request-body bytes buffered to evaluate this route's `form`/`json`
    /// predicates (`max_body_match`; default 64 KiB); a larger body does not match them.
    /// Only meaningful when the route has body predicates; see [`RouteTable::body_limit`].
    pub max_body_match: u64,
    /// Lowercase hex SHA-256 of a canonical rendering of this route's definition in the
    /// file: equal across reloads while the route's own text is unchanged (comments,
    /// layout and other routes do not count), different as soon as it is edited. Only
    /// comparable between tables built by the same binary.
    pub fingerprint: String,
}

/// Changes applied to a forwarded request (`rewrite:`).
#[derive(Clone, Debug, Default)]
pub struct Rewrite {
    /// Leading path segments to remove (segment-aware; no trailing slash).
    pub strip_prefix: Option<String>,
    /// Path to put in front of the (stripped) path (no trailing slash).
    pub prefix: Option<String>,
    /// Headers set on the upstream request (replacing any value the client sent).
    pub set_headers: Vec<(HeaderName, HeaderValue)>,
    /// Headers removed from the upstream request.
    pub remove_headers: Vec<HeaderName>,
}

/// The validated route file, ready to match requests. Immutable: a reload builds a new one.
#[derive(Debug)]
pub struct RouteTable {
    pub(crate) version: String,
    pub(crate) source: PathBuf,
    pub(crate) loaded_at: SystemTime,
    pub(crate) upstreams: Vec<Upstream>,
    pub(crate) upstream_names: HashMap<String, UpstreamId>,
    pub(crate) default: UpstreamId,
    pub(crate) routes: Vec<Route>,
    pub(crate) matchers: Vec<RouteMatch>,
    pub(crate) index: RouteIndex,
    pub(crate) warnings: Vec<Warning>,
    /// Whether any route has a `form` or `json` predicate (else no body is ever needed).
    pub(crate) body_predicates: bool,
}

impl RouteTable {
    /// Hex SHA-256 of the route file's bytes.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The route file this table was loaded from, as given.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// When this table was built.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// All upstreams, in file order; `UpstreamId(i)` is `upstreams()[i]`.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// The upstream with this id. Ids come from this table, so they are always in range.
    pub fn upstream(&self, id: UpstreamId) -> &Upstream {
        &self.upstreams[id.0]
    }

    /// The id of the upstream with this name.
    pub fn upstream_id(&self, name: &str) -> Option<UpstreamId> {
        self.upstream_names.get(name).copied()
    }

    /// Where requests that match no route go (`default:`).
    pub fn default_upstream(&self) -> UpstreamId {
        self.default
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route with this name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.name == name)
    }

    /// Things that are legal but probably mistakes (e.g. unreachable routes).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The first route, in file order, that matches `req`; `None` means the default
    /// upstream. `req.path` must already be normalized
    /// ([`normalize_path`](crate::normalize::normalize_path)).
    ///
    /// Cost grows with the path's length, not the number of routes (except routes with
    /// no path predicate or a `path_regex`, which are always candidates).
    pub fn find(&self, req: &RequestView<'_>) -> Option<&Route> {
        let index = self.index.first_match(req.path, |i, path_checked| {
            let matcher = &self.matchers[i];
            if path_checked {
                matcher.matches_except_path(req)
            } else {
                matcher.matches(req)
            }
        })?;
        self.routes.get(index)
    }

    /// How many request-body bytes the proxy should buffer before calling
    /// [`find`](Self::find), or `None` when the body cannot change the decision and must
    /// stream untouched.
    ///
    /// Walks the candidates `find` would walk, in the same order, looking only at the
    /// predicates that do not need the body (a `form` predicate's `Content-Type` check
    /// counts as one of those). It returns `Some(limit)` when at least one route that
    /// satisfies those has a `form` or `json` predicate and comes before the first route
    /// that fully matches without needing the body; `limit` is the largest
    /// `max_body_match` among those routes. A body larger than the limit should be
    /// treated as unavailable (`body: None`), so that its body predicates do not match.
    pub fn body_limit(&self, req: &RequestView<'_>) -> Option<u64> {
        if !self.body_predicates {
            return None;
        }
        let mut limit: Option<u64> = None;
        self.index.first_match(req.path, |i, path_checked| {
            let matcher = &self.matchers[i];
            let holds = if path_checked {
                matcher.matches_except_path_and_body(req)
            } else {
                matcher.matches_without_body(req)
            };
            if !holds {
                return false;
            }
            if !matcher.has_body_predicates() {
                return true;
            }
            let route_limit = self.routes.get(i).map_or(0, |route| route.max_body_match);
            limit = Some(limit.map_or(route_limit, |l| l.max(route_limit)));
            false
        });
        limit
    }

    /// Files whose change should trigger a reload: the route file, the TLS CA files and
    /// every hook script, without duplicates.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.source.clone()];
        let cas = self
            .upstreams
            .iter()
            .filter_map(|upstream| upstream.tls.as_ref().and_then(|tls| tls.ca.as_ref()));
        let scripts = self
            .routes
            .iter()
            .flat_map(|route| route.hooks.iter().map(|hook| &hook.script));
        for file in cas.chain(scripts) {
            if !files.contains(file) {
                files.push(file.clone());
            }
        }
        files
    }

    /// The compiled predicates of route `index` (for explain and tests).
    pub(crate) fn matcher(&self, index: usize) -> &RouteMatch {
        &self.matchers[index]
    }
}

impl Upstream {
    /// Name of the action's target for display: the upstream that answers, `respond`,
    /// or a canary's split (`monolith 90 / catalog 10`).
    pub(crate) fn name_of(table: &RouteTable, action: &Action) -> String {
        match action {
            Action::Forward(id) => table.upstream(*id).name.clone(),
            Action::Respond(_) => SELF_ANSWER_UPSTREAM.to_owned(),
            Action::Shadow(shadow) => table.upstream(shadow.primary).name.clone(),
            Action::Canary(canary) => canary
                .split
                .iter()
                .map(|(id, weight)| format!("{} {weight}", table.upstream(*id).name))
                .collect::<Vec<_>>()
                .join(" / "),
        }
    }
}

impl Rewrite {
    /// The path to forward: `strip_prefix` removed (only on a segment boundary, and only
    /// if the path starts with it), then `prefix` put in front. The result always starts
    /// with `/`. With `strip_prefix: /search, prefix: /v2/search`: `/search/x` →
    /// `/v2/search/x`, `/search` → `/v2/search`, `/other` → `/v2/search/other`.
    pub fn apply_path(&self, path: &str) -> String {
        let rest = match &self.strip_prefix {
            Some(strip) => strip_segment_prefix(path, strip).unwrap_or(path),
            None => path,
        };
        let prefix = self.prefix.as_deref().unwrap_or("");
        let mut out = String::with_capacity(prefix.len() + rest.len() + 1);
        out.push_str(prefix);
        if !rest.is_empty() && !rest.starts_with('/') {
            out.push('/');
        }
        out.push_str(rest);
        if !out.starts_with('/') {
            out.insert(0, '/');
        }
        out
    }
}

/// `path` without the segment-aligned `prefix` (`""` or starting with `/`), if it has it.
pub(crate) fn strip_segment_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let prefix = prefix.trim_end_matches('/');
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_paths() {
        let rewrite = Rewrite {
            strip_prefix: Some("/search".into()),
            prefix: Some("/v2/search".into()),
            ..Rewrite::default()
        };
        let cases = [
            ("/search/x", "/v2/search/x"),
            ("/search", "/v2/search"),
            ("/search/", "/v2/search/"),
            ("/searchx", "/v2/search/searchx"),
            ("/other", "/v2/search/other"),
        ];
        for (input, output) in cases {
            assert_eq!(rewrite.apply_path(input), output, "{input}");
        }
        let strip_only = Rewrite {
            strip_prefix: Some("/api".into()),
            ..Rewrite::default()
        };
        assert_eq!(strip_only.apply_path("/api"), "/");
        assert_eq!(strip_only.apply_path("/api/v1"), "/v1");
        let prefix_only = Rewrite {
            prefix: Some("/base".into()),
            ..Rewrite::default()
        };
        assert_eq!(prefix_only.apply_path("/"), "/base/");
        assert_eq!(prefix_only.apply_path("/x"), "/base/x");
        assert_eq!(Rewrite::default().apply_path("/x"), "/x");
    }
}
