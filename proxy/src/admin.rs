//! The admin endpoint: probes, metrics, the active table, reload, rollback pins, explain,
//! and the dashboard.

mod dashboard;
mod token;

pub use token::AdminToken;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use serde_json::{Value, json};
use strangler_routes::{Action, RequestView, hex_sha256, normalize_path};

use crate::body::{self, BoxBody};
use crate::pipeline::ConnInfo;
use crate::runtime::{Runtime, RuntimeStore};
use crate::server::Handler;
use crate::verify::{GateReport, GateState};
use crate::window::CanaryReport;

/// Whether the proxy should receive traffic: false while starting and while draining.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    /// Mark the proxy ready (listeners bound, first table loaded) or not (draining).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the proxy is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why the admin endpoint refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum AdminConfigError {
    /// The token file cannot be read or is empty.
    #[error("admin token file {file}: {reason}")]
    Token {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// A non-loopback address without a token.
    #[error(
        "refusing to expose the admin endpoint on {0} without --admin-token-file \
         (pass --admin-insecure if the network is trusted, e.g. a Kubernetes pod for probes)"
    )]
    Exposed(SocketAddr),
}

/// Refuse a non-loopback admin address unless a token guards it or the operator insists.
///
/// # Errors
/// [`AdminConfigError::Exposed`] for a non-loopback address without token or override.
pub fn check_exposure(
    addr: SocketAddr,
    token: bool,
    insecure: bool,
) -> Result<(), AdminConfigError> {
    if addr.ip().is_loopback() || token || insecure {
        Ok(())
    } else {
        Err(AdminConfigError::Exposed(addr))
    }
}

/// The admin endpoint's request handler.
pub struct Admin {
    store: Arc<RuntimeStore>,
    readiness: Arc<Readiness>,
    token: Option<AdminToken>,
}

impl Admin {
    /// An admin endpoint over `store`; with `token`, all but the probe paths need it.
    pub fn new(
        store: Arc<RuntimeStore>,
        readiness: Arc<Readiness>,
        token: Option<AdminToken>,
    ) -> Self {
        Self {
            store,
            readiness,
            token,
        }
    }

    async fn answer(&self, request: Request<BoxBody>) -> Response<BoxBody> {
        // HEAD is GET without the body (which the connection's writer leaves out), for every
        // page: load balancers probe with it.
        let method = match request.method() {
            &Method::HEAD => Method::GET,
            method => method.clone(),
        };
        let path = request.uri().path().to_string();
        // `/routes/` is `/routes`, and so on: leading and trailing slashes do not count.
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // Probes and scrapes stay open: kubelets and Prometheus carry no token.
        match (&method, segments.as_slice()) {
            (&Method::GET, ["healthz"]) => return text(StatusCode::OK, "ok\n"),
            (&Method::GET, ["readyz"]) => {
                return if self.readiness.get() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                };
            }
            (&Method::GET, ["metrics"]) => {
                let mut response = Response::new(body::full(self.store.metrics().render()));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                return response;
            }
            _ => {}
        }
        if let Some(token) = &self.token
            && !token.accepts(request.headers())
        {
            let mut response = text(StatusCode::UNAUTHORIZED, "a bearer token is required\n");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
        match (&method, segments.as_slice()) {
            (&Method::GET, [""]) => self.dashboard(),
            (&Method::GET, ["routes"]) => json_response(StatusCode::OK, &self.routes_json()),
            (&Method::POST, ["reload"]) => match self.store.reload("admin").await {
                Ok(runtime) => json_response(
                    StatusCode::OK,
                    &json!({ "version": runtime.table().version() }),
                ),
                Err(err) => json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({ "errors": err.lines() }),
                ),
            },
            (&Method::POST, ["routes", name, "rollback"]) => {
                match self
                    .store
                    .pin(name, "pinned by an operator (admin API)")
                    .await
                {
                    Ok(changed) => json_response(
                        StatusCode::OK,
                        &json!({ "route": name, "pinned": true, "changed": changed }),
                    ),
                    Err(err) => {
                        json_response(StatusCode::NOT_FOUND, &json!({ "error": err.to_string() }))
                    }
                }
            }
            (&Method::DELETE, ["routes", name, "rollback"]) => match self.store.unpin(name).await {
                Ok(changed) => json_response(
                    StatusCode::OK,
                    &json!({ "route": name, "pinned": false, "changed": changed }),
                ),
                Err(err) => {
                    json_response(StatusCode::NOT_FOUND, &json!({ "error": err.to_string() }))
                }
            },
            (&Method::GET, ["explain"]) => self.explain(request.uri().query().unwrap_or("")),
            (&Method::GET, ["diffs"]) => match diff_format(request.uri().query().unwrap_or("")) {
                Ok(false) => json_response(
                    StatusCode::OK,
                    &serde_json::to_value(self.store.verifiers().summary()).unwrap_or_default(),
                ),
                Ok(true) => text(
                    StatusCode::BAD_REQUEST,
                    "the summary is JSON only: format=csv is for /diffs/{route}\n",
                ),
                Err(message) => text(StatusCode::BAD_REQUEST, &message),
            },
            (&Method::DELETE, ["diffs", name]) => match self.store.verifiers().get(name) {
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({ "error": format!("no shadowed route named {name:?}") }),
                ),
                Some(verifier) => {
                    verifier.reset();
                    let runtime = self.store.snapshot();
                    if let Some(shadow) =
                        runtime.table().route(name).and_then(|r| runtime.shadow(r))
                    {
                        shadow.publish_gate();
                    }
                    tracing::info!(route = %name, "parallel-run results reset (admin API)");
                    json_response(StatusCode::OK, &json!({ "route": name, "reset": true }))
                }
            },
            (&Method::GET, ["diffs", name]) => {
                let csv = match diff_format(request.uri().query().unwrap_or("")) {
                    Ok(csv) => csv,
                    Err(message) => return text(StatusCode::BAD_REQUEST, &message),
                };
                match self.store.verifiers().get(name) {
                    None => json_response(
                        StatusCode::NOT_FOUND,
                        &json!({ "error": format!("no shadowed route named {name:?}") }),
                    ),
                    Some(verifier) if csv => {
                        let mut response = Response::new(body::full(verifier.to_csv()));
                        response.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("text/csv; charset=utf-8"),
                        );
                        response
                    }
                    Some(verifier) => json_response(
                        StatusCode::OK,
                        &serde_json::to_value(verifier.report()).unwrap_or_default(),
                    ),
                }
            }
            _ => match allowed_methods(&segments) {
                Some(allowed) => {
                    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
                    response
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static(allowed));
                    response
                }
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }

    /// `GET /`: the HTML dashboard.
    fn dashboard(&self) -> Response<BoxBody> {
        let runtime = self.store.snapshot();
        let reports = self.store.verifiers().reports();
        let gates = runtime
            .table()
            .routes()
            .iter()
            .filter_map(|route| {
                let gate = RouteGate::of(&runtime, route)?;
                Some((
                    route.name.clone(),
                    (gate.state().as_str(), gate.reason().to_string()),
                ))
            })
            .collect();
        let page = dashboard::render(&dashboard::Snapshot {
            runtime: &runtime,
            answered: self.store.metrics().answered(),
            reports,
            last_failure: self.store.last_failure(),
            gates,
        });
        let mut response = Response::new(body::full(page));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }

    fn routes_json(&self) -> Value {
        let runtime = self.store.snapshot();
        let table = runtime.table();
        let routes: Vec<Value> = table
            .routes()
            .iter()
            .map(|route| route_json(&runtime, route))
            .collect();
        let loaded_at = table
            .loaded_at()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let loaded_at_ms = u64::try_from(loaded_at.as_millis()).unwrap_or(u64::MAX);
        json!({
            "version": table.version(),
            "loaded_at": crate::verify::rfc3339_millis(loaded_at_ms),
            "loaded_at_unix": loaded_at.as_secs(),
            "source": table.source().display().to_string(),
            "default": table.upstream(table.default_upstream()).name,
            "routes": routes,
            "warnings": table.warnings().iter().map(ToString::to_string).collect::<Vec<_>>(),
            "last_reload_error": self.store.last_failure(),
        })
    }

    fn explain(&self, query: &str) -> Response<BoxBody> {
        let mut method = Method::GET;
        let mut path = String::from("/");
        let mut headers = HeaderMap::new();
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "method" => match Method::from_bytes(value.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => method = m,
                    Err(_) => return text(StatusCode::BAD_REQUEST, "invalid method\n"),
                },
                "path" => path = value.into_owned(),
                "header" => {
                    let parsed = value.split_once(':').and_then(|(k, v)| {
                        Some((
                            HeaderName::from_bytes(k.trim().as_bytes()).ok()?,
                            HeaderValue::from_str(v.trim()).ok()?,
                        ))
                    });
                    match parsed {
                        Some((k, v)) => {
                            headers.append(k, v);
                        }
                        None => {
                            return text(StatusCode::BAD_REQUEST, "header must be name:value\n");
                        }
                    }
                }
                _ => {}
            }
        }
        let (raw_path, query) = match path.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path.clone(), None),
        };
        let normalized = match normalize_path(&raw_path) {
            Ok(p) => p.into_owned(),
            Err(err) => return text(StatusCode::BAD_REQUEST, &format!("{err}\n")),
        };
        let runtime = self.store.snapshot();
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let view = RequestView {
            method: &method,
            path: &normalized,
            query: query.as_deref(),
            host,
            headers: &headers,
            body: None,
        };
        let table = runtime.table();
        let mut explanation = table.explain(&view);
        let pinned = explanation
            .chosen
            .as_deref()
            .and_then(|name| Some((runtime.pins().get(name)?, table.route(name)?)));
        // A pinned route of any kind is served by its `rollback_to`: say what traffic does.
        let pinned = pinned.map(|(pin, route)| {
            explanation.upstream = table.upstream(route.rollback_to).name.clone();
            pin
        });
        let mut text = explanation.to_string();
        if let Some(pin) = pinned {
            text.push_str(&format!(
                "\npinned to `{}`: {}",
                explanation.upstream, pin.reason
            ));
        }
        json_response(
            StatusCode::OK,
            &json!({
                "request": { "method": method.as_str(), "path": normalized, "query": query },
                "route": explanation.chosen,
                "upstream": explanation.upstream,
                "pinned": pinned,
                "steps": explanation.steps,
                "text": text,
            }),
        )
    }
}

fn route_json(runtime: &Runtime, route: &strangler_routes::Route) -> Value {
    let table = runtime.table();
    let name_of = |id| table.upstream(id).name.clone();
    let mode = match &route.action {
        Action::Forward(_) => "forward",
        Action::Respond(_) => "respond",
        Action::Shadow(_) => "shadow",
        Action::Canary(_) => "canary",
    };
    let upstreams: Vec<String> = route.action.upstreams().into_iter().map(name_of).collect();
    let gate = RouteGate::of(runtime, route).and_then(|gate| gate.to_json());
    // The scripts' digests: the table's version covers the route file, not the scripts, so
    // this is where replicas can be compared for the hooks they run.
    let hooks: Vec<Value> = runtime
        .extras(route)
        .and_then(|extras| extras.hooks.as_ref())
        .map(|hooks| {
            hooks
                .chain()
                .entries()
                .iter()
                .map(|entry| {
                    json!({
                        "script": entry.script.path().display().to_string(),
                        "sha256": hex_sha256(entry.script.source().as_bytes()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "name": route.name,
        "line": route.line,
        "match": route.match_summary,
        "mode": mode,
        "upstreams": upstreams,
        "rewrite": route.rewrite.is_some(),
        "fallback": route.fallback.map(name_of),
        "rollback_to": name_of(route.rollback_to),
        "pin": runtime.pins().get(&route.name),
        "gate": gate,
        "hooks": hooks,
    })
}

/// The gate of a route that has one: a shadow gate (comparisons) or a canary gate (error
/// rate and latency of both sides).
enum RouteGate {
    Shadow(GateReport),
    Canary(CanaryReport),
}

impl RouteGate {
    fn of(runtime: &Runtime, route: &strangler_routes::Route) -> Option<Self> {
        let extras = runtime.extras(route)?;
        if let Some(report) = extras
            .shadow
            .as_ref()
            .and_then(|shadow| shadow.verifier.gate())
        {
            return Some(Self::Shadow(report));
        }
        extras
            .canary
            .as_ref()
            .and_then(|canary| canary.report())
            .map(Self::Canary)
    }

    fn state(&self) -> GateState {
        match self {
            Self::Shadow(report) => report.state,
            Self::Canary(report) => report.state,
        }
    }

    fn reason(&self) -> &str {
        match self {
            Self::Shadow(report) => &report.reason,
            Self::Canary(report) => &report.reason,
        }
    }

    fn to_json(&self) -> Option<Value> {
        match self {
            Self::Shadow(report) => serde_json::to_value(report).ok(),
            Self::Canary(report) => serde_json::to_value(report).ok(),
        }
    }
}

impl Handler for Admin {
    async fn call(&self, request: Request<BoxBody>, _conn: &ConnInfo) -> Response<BoxBody> {
        self.answer(request).await
    }
}

/// The methods a path of the endpoint answers, for the `Allow` of a 405 (RFC 9110, section
/// 15.5.6); none for a path it does not have.
fn allowed_methods(segments: &[&str]) -> Option<&'static str> {
    match segments {
        [""] | ["healthz" | "readyz" | "metrics" | "routes" | "explain" | "diffs"] => {
            Some("GET, HEAD")
        }
        ["diffs", _] => Some("GET, HEAD, DELETE"),
        ["reload"] => Some("POST"),
        ["routes", _, "rollback"] => Some("POST, DELETE"),
        _ => None,
    }
}

/// Whether `GET /diffs/{route}` is asked for CSV (`?format=csv`) rather than JSON (no
/// `format`, or `format=json`); a message naming the choices for any other format, so that
/// a typo is not answered with the wrong one.
fn diff_format(query: &str) -> Result<bool, String> {
    match form_urlencoded::parse(query.as_bytes()).find(|(key, _)| key == "format") {
        None => Ok(false),
        Some((_, format)) => match format.as_ref() {
            "json" => Ok(false),
            "csv" => Ok(true),
            other => Err(format!(
                "unknown format {other:?}: format=json (the default) or format=csv\n"
            )),
        },
    }
}

fn text(status: StatusCode, body: &str) -> Response<BoxBody> {
    let mut response = Response::new(body::full(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, crate::headers::TEXT_PLAIN);
    response
}

fn json_response(status: StatusCode, value: &Value) -> Response<BoxBody> {
    let mut response = Response::new(body::full(format!("{value:#}\n")));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
