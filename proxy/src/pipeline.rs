//! The request lifecycle, top to bottom: snapshot → normalize → match → dispatch → respond → log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use strangler_plugins::Hooks;
use strangler_routes::{RequestView, Route, normalize::normalize_path};

use crate::body::{self, BoxBody, Buffered, Guarded};
use crate::decorate::{self, Before};
use crate::dispatch::{self, AnsweredBy, Dispatch, Exchange};
use crate::error::{ErrorClass, ProxyError};
use crate::headers;
use crate::metrics::InFlight;
use crate::runtime::{Answerer, DEFAULT_SLOT, RouteSlot, Runtime, RuntimeStore};
use crate::wire::RelayedFields;

/// What the proxy knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'static str,
    /// The client's IP as a header value, made once per connection for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    /// Whether this connection's writer copies `RelayedFields` through: only the plain
    /// HTTP/1.1 loop does, so answers to hyper's connections always carry full header maps.
    pub relays_heads: bool,
}

impl ConnInfo {
    /// What the proxy knows about a connection from `peer` over `proto`.
    pub fn new(peer: SocketAddr, proto: &'static str) -> Self {
        let peer_ip = HeaderValue::try_from(peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        Self {
            peer,
            proto,
            peer_ip,
            relays_heads: false,
        }
    }
}

/// Limits applied to every request before it is routed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes (413 above it); `None` for no limit.
    pub max_body: Option<u64>,
    /// Largest total size of the request headers in bytes (431 above it).
    pub max_header_bytes: u64,
}

/// The request path shared by every connection.
pub struct Pipeline {
    store: Arc<RuntimeStore>,
    limits: Limits,
    access_log: bool,
}

impl Pipeline {
    /// A pipeline serving from `store`.
    pub fn new(store: Arc<RuntimeStore>, limits: Limits, access_log: bool) -> Self {
        Self {
            store,
            limits,
            access_log,
        }
    }

    /// Serve one request. Never fails: every error becomes an answer with the request id.
    pub async fn handle(
        &self,
        mut request: Request<BoxBody>,
        conn: &ConnInfo,
    ) -> Response<BoxBody> {
        let started = Instant::now();
        let inflight = self.store.metrics().start();
        let request_id = headers::request_id(request.headers_mut());
        // One snapshot for the whole exchange: a reload mid-request does not change its rules.
        let runtime = self.store.snapshot();

        let method = request.method().clone();
        // Counted (and logged) as 499 if the client leaves before the answer is ready: the
        // server drops this future then, and the exchange with it.
        let mut finish = Finish {
            runtime: runtime.clone(),
            slot: DEFAULT_SLOT,
            answerer: Answerer::Upstream(runtime.table().default_upstream()),
            status: CLIENT_CLOSED_REQUEST,
            started,
            log: self.access_log.then(|| AccessLine {
                request_id: request_id.clone(),
                method: Some(method.clone()),
                // The path as the client sent it (not the query, which may carry
                // credentials).
                path: Some(request.uri().path().to_owned()),
                client: conn.peer,
            }),
            _inflight: inflight,
        };
        let answered_by = AnsweredBy::default();
        let outcome = match self.prepare(&runtime, request).await {
            Err(err) => Err(err),
            Ok((mut request, path, route)) => 'dispatched: {
                let dispatch = Dispatch::for_route(&runtime, route, &request);
                finish.slot = route.map_or(DEFAULT_SLOT, |r| RouteSlot(r.index));
                finish.answerer = dispatch.answerer();
                let hooks = route.and_then(|r| Some((r, runtime.extras(r)?.hooks.as_ref()?)));
                let exchange = Exchange {
                    runtime: &runtime,
                    conn,
                    request_id: &request_id,
                    limits: self.limits,
                    path,
                    // `after_response` hooks get the answer's head as a header map;
                    // `on_response` hooks read a relayed head in place.
                    relay_heads: conn.relays_heads
                        && hooks.is_none_or(|(_, hooks)| !hooks.phases().after_response),
                    answered_by: &answered_by,
                };
                // Hooks go around the one dispatch below rather than in a future of their
                // own, which would cost a hooked request an allocation and a copy.
                let (mut moved, mut later) = (None, None);
                if let Some((route, hooks)) = hooks {
                    let limit = route.hook_body_limit;
                    match decorate::before(hooks, limit, &exchange, &mut request) {
                        Err(err) => break 'dispatched Err(err),
                        Ok(Before::Answered(response)) => break 'dispatched Ok(response),
                        Ok(Before::Dispatch { moved: m, later: l }) => {
                            (moved, later) = (m, Some(l));
                        }
                    }
                }
                let exchange = moved.as_ref().unwrap_or(&exchange);
                let outcome = dispatch::run(dispatch, exchange, request).await;
                match later {
                    None => outcome,
                    Some(later) => outcome.and_then(|response| later.after(response)),
                }
            }
        };
        if let Some(took_over) = answered_by.get() {
            finish.answerer = took_over;
        }
        let (route_name, upstream_name) = runtime.names(finish.slot, finish.answerer);
        let mut response = outcome.unwrap_or_else(|err| {
            tracing::warn!(request_id = ?request_id, route = route_name, error = %err, "request failed");
            if err.class() == ErrorClass::Upstream {
                self.store.metrics().upstream_error(upstream_name, err.kind());
            }
            err.to_response(&request_id)
        });
        if method == Method::HEAD
            || matches!(
                response.status(),
                StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED
            )
        {
            without_content(&mut response);
        }
        match response.extensions_mut().get_mut::<RelayedFields>() {
            Some(relayed) => {
                relayed.request_id = Some(request_id.clone());
                // Hooks may have added one; the proxy's is the one that counts. (A relayed
                // answer's header map is empty: what hooks add is listed with its fields.)
                relayed.fields.forget_added(&headers::X_REQUEST_ID);
            }
            None => {
                response
                    .headers_mut()
                    .insert(headers::X_REQUEST_ID, request_id.clone());
            }
        }
        finish.status = response.status().as_u16();
        if let Some(line) = finish.log.take() {
            line.write(route_name, upstream_name, finish.status, started);
        }
        // Counted and timed when the body is done (or the client went away), not at the head.
        response.map(|body| body::boxed(Guarded::new(body, finish)))
    }

    /// Admit, normalize and match `request`: the request (its body boxed, and buffered only
    /// when a body predicate must see it), its normalized path and its route.
    async fn prepare<'r>(
        &self,
        runtime: &'r Runtime,
        mut request: Request<BoxBody>,
    ) -> Result<(Request<BoxBody>, String, Option<&'r Route>), ProxyError> {
        // Host is checked as the client sent it (an HTTP/1.1 request needs one, in any
        // form), then the host the request names settles it. An HTTP/1.1 request in origin
        // form, nearly every one, takes the two checks and nothing else.
        self.admit(&request)?;
        if request.version() >= Version::HTTP_2 {
            from_http2(&mut request)?;
        } else if request.uri().authority().is_some() {
            absolute_form(&mut request)?;
        }
        let path = normalized_path(&request)?.into_owned();
        let (parts, mut body) = request.into_parts();
        let table = runtime.table();
        let mut view = RequestView {
            method: &parts.method,
            path: &path,
            query: parts.uri.query(),
            host: host_of_parts(&parts),
            headers: &parts.headers,
            body: None,
        };
        let mut buffered = None;
        if let Some(limit) = table.body_limit(&view) {
            match body::buffer_prefix(body, limit).await {
                Ok(Buffered::Complete(bytes)) => {
                    body = body::full(bytes.clone());
                    buffered = Some(bytes);
                }
                Ok(Buffered::TooLarge(whole)) => {
                    tracing::debug!(
                        limit,
                        "body larger than max_body_match: body predicates do not match"
                    );
                    body = whole;
                }
                Err(err) => {
                    return Err(ProxyError::BadRequest(format!(
                        "cannot read the request body: {err}"
                    )));
                }
            }
        }
        view.body = buffered.as_deref();
        let route = table.find(&view);
        Ok((Request::from_parts(parts, body), path, route))
    }

    /// Refuse requests over the header and declared body limits before any work is done.
    fn admit(&self, request: &Request<BoxBody>) -> Result<(), ProxyError> {
        let (mut size, mut hosts, mut coded) = (0, 0, false);
        for (name, value) in request.headers() {
            size += name.as_str().len() + value.len() + 4;
            if name == header::HOST {
                hosts += 1;
                // RFC 9112, section 3.2: a Host that is no host[:port] is refused, or it
                // would travel on in Host and X-Forwarded-Host to upstreams that build
                // URLs from it (`evil.example/x`, `a b`, `a,b`).
                if !headers::is_host(value.as_bytes()) {
                    return Err(ProxyError::BadRequest(format!(
                        "invalid Host {:?}",
                        String::from_utf8_lossy(value.as_bytes())
                    )));
                }
            }
            coded |= name == header::TRANSFER_ENCODING;
        }
        // RFC 9112, section 3.2: a server must refuse an HTTP/1.1 request without a Host and
        // any request with more than one, which the router and the upstream could each read
        // differently. (HTTP/2 names its authority in the request line.)
        if hosts > 1 || (hosts == 0 && request.version() == Version::HTTP_11) {
            return Err(ProxyError::BadRequest(format!(
                "a request carries at most one Host header field, and HTTP/1.1 needs it \
                 (got {hosts})"
            )));
        }
        // A tunnel to wherever the client names is a forward proxy's job (RFC 9110, section
        // 9.3.6), and a way around the routes.
        if request.method() == Method::CONNECT {
            return Err(ProxyError::NotImplemented(
                "CONNECT: strangler is a reverse proxy, it opens no tunnels".into(),
            ));
        }
        // RFC 9112, section 6.1: a transfer coding the proxy cannot decode gets 501, as
        // nginx answers. (A coding list that does not end in `chunked` never gets here:
        // the server refuses it with 400, section 6.3.)
        if coded && let Some(reason) = headers::foreign_transfer_coding(request.headers()) {
            return Err(ProxyError::NotImplemented(reason));
        }
        if size as u64 > self.limits.max_header_bytes {
            return Err(ProxyError::HeadersTooLarge {
                size,
                limit: self.limits.max_header_bytes,
            });
        }
        if let Some(limit) = self.limits.max_body
            && let Some(declared) = content_length(request)
            && declared > limit
        {
            return Err(ProxyError::BodyTooLarge { limit });
        }
        Ok(())
    }
}

/// nginx's status for a request whose client closed the connection before the answer.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Records a finished exchange in the metrics when the response body is done or dropped,
/// or an aborted one (status 499, and its access log line) when the request is dropped
/// before its answer, or a head refused before it was a request.
struct Finish {
    runtime: Arc<Runtime>,
    slot: RouteSlot,
    answerer: Answerer,
    status: u16,
    started: Instant,
    /// The access log line still to write (when access logging is on): one that still
    /// has it when dropped is written then (an aborted request, a refused head).
    log: Option<AccessLine>,
    _inflight: InFlight,
}

impl Drop for Finish {
    fn drop(&mut self) {
        if let Some(line) = self.log.take() {
            let (route, upstream) = self.runtime.names(self.slot, self.answerer);
            line.write(route, upstream, self.status, self.started);
        }
        self.runtime
            .pair_metrics(self.slot, self.answerer)
            .observe(self.status, self.started);
    }
}

/// What an access log line says of the request (`-` for a method or path a head that
/// could not be read has not).
struct AccessLine {
    request_id: HeaderValue,
    method: Option<Method>,
    path: Option<String>,
    client: SocketAddr,
}

impl AccessLine {
    fn write(&self, route: &str, upstream: &str, status: u16, started: Instant) {
        tracing::info!(
            target: "strangler::access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            method = %self.method.as_ref().map_or("-", Method::as_str),
            path = self.path.as_deref().unwrap_or("-"),
            route = %route,
            upstream = %upstream,
            status,
            // To the microsecond: `1.131`, not `1.1309060000000002`.
            duration_ms = started.elapsed().as_micros() as f64 / 1000.0,
            client = %self.client,
        );
    }
}

/// An answer to HEAD, a 204 or a 304 (the caller checks) has no content (RFC 9110,
/// sections 9.3.2 and 6.4.1), whoever made it: an upstream, a route's `respond:`, a hook
/// that set the status or answered with `req:respond`, an error. A body that has not ended
/// goes (an HTTP/2 stream that sent it after such a head would be reset; the HTTP/1.1
/// writers leave it out anyway). An answer to HEAD keeps the length the same GET would have
/// (from the body it drops, when the head names none), and a 204 says no length (section
/// 8.6).
fn without_content(response: &mut Response<BoxBody>) {
    let body = response.body();
    if !hyper::body::Body::is_end_stream(body) {
        let length = hyper::body::Body::size_hint(body).exact();
        let headers = response.headers();
        if let Some(length) = length
            && !headers.contains_key(header::CONTENT_LENGTH)
            && response.extensions().get::<RelayedFields>().is_none()
        {
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        *response.body_mut() = body::empty();
    }
    if response.status() == StatusCode::NO_CONTENT {
        response.headers_mut().remove(header::CONTENT_LENGTH);
        if let Some(relayed) = response.extensions_mut().get_mut::<RelayedFields>() {
            relayed.fields.set(header::CONTENT_LENGTH, None);
        }
    }
}

/// An HTTP/2 request as an HTTP/1.1 one would come, for routes, hooks and upstreams alike:
/// - its host, named in `:authority`, is copied into `Host` when the client sent none
///   (what RFC 9113, section 8.3.1, asks of an intermediary forwarding over HTTP/1.1), so
///   that a hook reading `host` finds it whatever the protocol. A `Host` naming another
///   host is refused as that section advises: the routes would follow `:authority` and the
///   upstream `Host`, and a route matching on the host could be walked around;
/// - `Cookie` sent as several fields, one crumb each (browsers do, as it compresses
///   better), is joined with `"; "` (section 8.2.3): over HTTP/1.1 many servers read only
///   the first field, and the rest of the session would be lost.
fn from_http2(request: &mut Request<BoxBody>) -> Result<(), ProxyError> {
    if let Some(authority) = request.uri().authority() {
        match request.headers().get(header::HOST) {
            Some(host)
                if !host
                    .as_bytes()
                    .eq_ignore_ascii_case(authority.as_str().as_bytes()) =>
            {
                return Err(ProxyError::BadRequest(format!(
                    "the Host field ({}) names another host than :authority ({authority})",
                    String::from_utf8_lossy(host.as_bytes())
                )));
            }
            Some(_) => {}
            None => {
                if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
        }
    }
    let headers = request.headers_mut();
    if headers.get_all(header::COOKIE).iter().nth(1).is_some() {
        let mut joined = Vec::new();
        for crumb in &headers.get_all(header::COOKIE) {
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(crumb.as_bytes());
        }
        // Field values that were valid one by one are valid joined by "; ".
        if let Ok(joined) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, joined);
        }
    }
    Ok(())
}

/// An HTTP/1.x request in absolute form (`GET http://host/path`): the target's host
/// replaces `Host` (RFC 9112, section 3.2.2), so that the routes and the upstream see the
/// host the request line names (the upstream gets the origin form). A target with userinfo
/// (`http://user@host/`) is refused (RFC 9110, section 4.2.4).
fn absolute_form(request: &mut Request<BoxBody>) -> Result<(), ProxyError> {
    let Some(authority) = request.uri().authority() else {
        return Ok(());
    };
    if authority.as_str().contains('@') {
        return Err(ProxyError::BadRequest(
            "the request target carries userinfo".into(),
        ));
    }
    let host = HeaderValue::from_str(authority.as_str())
        .map_err(|e| ProxyError::BadRequest(format!("the request target's host: {e}")))?;
    request.headers_mut().insert(header::HOST, host);
    Ok(())
}

/// The request's path after normalization: what is matched and what is forwarded.
fn normalized_path(request: &Request<BoxBody>) -> Result<std::borrow::Cow<'_, str>, ProxyError> {
    normalize_path(request.uri().path()).map_err(|e| ProxyError::BadRequest(e.to_string()))
}

/// The host the client asked for: `Host` on HTTP/1, the `:authority` on HTTP/2.
pub fn host_of<B>(request: &Request<B>) -> Option<&str> {
    host_from(request.version(), request.uri(), request.headers())
}

fn host_of_parts(parts: &http::request::Parts) -> Option<&str> {
    host_from(parts.version, &parts.uri, &parts.headers)
}

fn host_from<'a>(
    version: Version,
    uri: &'a http::Uri,
    headers: &'a http::HeaderMap,
) -> Option<&'a str> {
    if version == Version::HTTP_2
        && let Some(authority) = uri.authority()
    {
        return Some(authority.as_str());
    }
    headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
}

/// The request's declared `Content-Length`, if any and valid.
pub fn content_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The value of `Via` for a request that arrived with `version`.
///
/// Static values: cloning one is a pointer copy, where building it would check every byte.
pub fn via_for(version: Version) -> &'static HeaderValue {
    static VIA_10: HeaderValue = HeaderValue::from_static("1.0 strangler");
    static VIA_11: HeaderValue = HeaderValue::from_static("1.1 strangler");
    static VIA_2: HeaderValue = HeaderValue::from_static("2 strangler");
    match version {
        Version::HTTP_10 => &VIA_10,
        Version::HTTP_2 => &VIA_2,
        _ => &VIA_11,
    }
}

/// The `Host` to send upstream when the client's is kept: on HTTP/2 it comes from `:authority`.
pub fn client_host<B>(request: &Request<B>) -> Option<HeaderValue> {
    if request.version() != Version::HTTP_2
        && let Some(host) = request.headers().get(http::header::HOST)
    {
        // The client's own value: a reference-counted clone, no re-validation.
        return Some(host.clone());
    }
    host_of(request).and_then(|h| HeaderValue::from_str(h).ok())
}

impl crate::server::Handler for Pipeline {
    async fn call(&self, request: Request<BoxBody>, conn: &ConnInfo) -> Response<BoxBody> {
        self.handle(request, conn).await
    }

    /// A head that is not HTTP gets the reason and a request id, an access log line and a
    /// count, as any other refused request (for the default route and upstream: it never
    /// got as far as routing), through the same [`Finish`], dropped at once.
    fn refuse(&self, err: ProxyError, conn: &ConnInfo) -> Response<BoxBody> {
        let request_id = headers::new_request_id();
        tracing::warn!(request_id = ?request_id, client = %conn.peer, error = %err, "request refused");
        let runtime = self.store.snapshot();
        let answerer = Answerer::Upstream(runtime.table().default_upstream());
        drop(Finish {
            runtime,
            slot: DEFAULT_SLOT,
            answerer,
            status: err.status().as_u16(),
            started: Instant::now(),
            log: self.access_log.then(|| AccessLine {
                request_id: request_id.clone(),
                method: None,
                path: None,
                client: conn.peer,
            }),
            _inflight: self.store.metrics().start(),
        });
        err.to_response(&request_id)
    }
}
