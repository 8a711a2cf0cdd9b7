//! The decorate step: a route's Lua hooks around its dispatch — `on_request` before,
//! `on_response` on the head, `after_response` once the client has its answer.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Uri};
use strangler_plugins::{
    CalloutRequest, CalloutResponse, Callouts, Exchange as HookExchange, Flow, HookChain,
    HookEngine, HookEntry, HookRequest, HookResponse, HookScript, Hooks, LuaHooks, OnError,
    PluginError,
};
use strangler_routes::{Route, normalize_path};

use crate::body::{self, BoxBody, Tee};
use crate::dispatch::Exchange;
use crate::error::ProxyError;
use crate::headers::{TEXT_PLAIN, X_REQUEST_ID};
use crate::runtime::Answerer;
use crate::upstream::UpstreamPool;
use crate::verify::{self, Decoded};
use crate::wire::RelayedFields;

/// The largest callout answer a hook gets to see.
const MAX_CALLOUT_BODY: usize = 1024 * 1024;

/// Compile `route`'s hook scripts and bind them to the engine; `None` for a route without
/// hooks.
///
/// # Errors
/// [`PluginError`] naming the script and line of a syntax error (the reload fails).
pub fn route_hooks(
    engine: &HookEngine,
    route: &Route,
    pools: &[(String, Arc<UpstreamPool>)],
) -> Result<Option<LuaHooks>, PluginError> {
    if route.hooks.is_empty() {
        return Ok(None);
    }
    let entries = route
        .hooks
        .iter()
        .map(|hook| {
            Ok(HookEntry {
                script: HookScript::compile(&hook.script)?,
                on_error: match hook.on_error {
                    strangler_routes::OnError::Fail => OnError::Fail,
                    strangler_routes::OnError::Continue => OnError::Continue,
                },
            })
        })
        .collect::<Result<Vec<_>, PluginError>>()?;
    let callouts = PoolCallouts {
        pools: pools.iter().cloned().collect(),
    };
    Ok(Some(engine.hooks(
        HookChain::new(route.name.as_str(), entries),
        Arc::new(callouts),
    )))
}

/// What the `on_request` hooks left to do.
pub enum Before<'a> {
    /// A hook answered (`req:respond`): no upstream is called.
    Answered(Response<BoxBody>),
    /// Dispatch the request as the hooks left it, then hand its answer to
    /// [`Later::after`].
    Dispatch {
        /// The exchange with the path the hooks moved the request to, if they did.
        moved: Option<Exchange<'a>>,
        /// The later phases.
        later: Later<'a>,
    },
}

/// The later phases of a route's hooks, with the request as the hooks forwarded it.
pub struct Later<'a> {
    hooks: &'a LuaHooks,
    hook_body_limit: u64,
    view: Box<HookRequest>,
}

/// Runs the `on_request` hooks on `request`, which is left as they made it. The request
/// path calls this, dispatches, and calls [`Later::after`]: straight through, so a hooked
/// request takes no future or allocation of its own around the dispatch.
/// `hook_body_limit` bounds the body copy `after_response` hooks get.
///
/// # Errors
/// A failing hook whose entry says `on_error: fail` (500), or a path or query the hooks
/// left that cannot be forwarded (500 too: the hooks' fault, not the client's; the views
/// refuse such values as they are assigned, so this is a last check).
pub fn before<'a>(
    hooks: &'a LuaHooks,
    hook_body_limit: u64,
    exchange: &Exchange<'a>,
    request: &mut Request<BoxBody>,
) -> Result<Before<'a>, ProxyError> {
    let phases = hooks.phases();
    // Boxed: the hook engine moves it in and out of its Lua views by the pointer.
    let mut view = Box::new(HookRequest {
        method: request.method().clone(),
        path: exchange.path.clone(),
        query: request.uri().query().map(str::to_string),
        headers: std::mem::take(request.headers_mut()),
        client: exchange.conn.peer,
        request_id: exchange.request_id.clone(),
    });
    if let Flow::Respond {
        status,
        body,
        headers,
    } = hooks
        .on_request(&mut view)
        .map_err(|err| hook_failed(hooks, &view, err))?
    {
        exchange.answered_by.set(Answerer::Respond);
        let has_body = !body.is_empty();
        let mut response = Response::new(body::full(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        // As a route's `respond:` says when its file gives no type.
        if has_body {
            response
                .headers_mut()
                .entry(http::header::CONTENT_TYPE)
                .or_insert(TEXT_PLAIN);
        }
        return Ok(Before::Answered(response));
    }
    // The forwarded request is what the hooks left; later phases see it too. The map
    // itself goes upstream, since it has room for the headers the proxy adds; the later
    // phases read a copy.
    *request.headers_mut() = if phases.see_the_answer() {
        let copy = view.headers.clone();
        std::mem::replace(&mut view.headers, copy)
    } else {
        std::mem::take(&mut view.headers)
    };
    let moved = rewrite(exchange, &view, request.uri_mut())?;
    Ok(Before::Dispatch {
        moved,
        later: Later {
            hooks,
            hook_body_limit,
            view,
        },
    })
}

impl Later<'_> {
    /// Runs the `on_response` hooks on the head of `response`, and queues the
    /// `after_response` ones, which get a copy of the body when it is within the route's
    /// `hook_body_limit`.
    ///
    /// # Errors
    /// A failing `on_response` hook whose entry says `on_error: fail` (500).
    pub fn after(self, response: Response<BoxBody>) -> Result<Response<BoxBody>, ProxyError> {
        let Later {
            hooks,
            hook_body_limit,
            mut view,
        } = self;
        let phases = hooks.phases();
        let (mut head, body) = response.into_parts();
        if phases.on_response {
            answer_hooks(hooks, &mut view, &mut head)?;
        }
        if !phases.after_response {
            return Ok(Response::from_parts(head, body));
        }
        // The client's body streams on untouched; the hook gets a copy when it was small enough.
        let limit = usize::try_from(hook_body_limit).unwrap_or(usize::MAX);
        let (tee, copy) = Tee::new(body, limit);
        let response = HookResponse {
            status: head.status,
            headers: head.headers.clone(),
            upstream: None,
        };
        let hooks = hooks.clone();
        tokio::spawn(async move {
            let body = copy
                .await
                .ok()
                .and_then(Result::ok)
                .and_then(|raw| decoded(&response.headers, raw, limit));
            hooks.after_response(HookExchange {
                request: view,
                response,
                body,
            });
        });
        Ok(Response::from_parts(head, body::boxed(tee)))
    }
}

/// `res.body` for `after_response` hooks: the body with its content codings (gzip,
/// deflate, br) undone, since a hook reads JSON, not gzip; none when decoded it is over
/// the route's `hook_body_limit`; as it came when its coding is unknown or it is corrupt.
fn decoded(headers: &HeaderMap, raw: Bytes, limit: usize) -> Option<Bytes> {
    match verify::decode(headers, &raw, limit) {
        Decoded::Body(Cow::Borrowed(_)) | Decoded::Raw(..) => Some(raw),
        Decoded::Body(Cow::Owned(body)) => Some(Bytes::from(body)),
        Decoded::TooLarge => None,
    }
}

/// Runs the `on_response` hooks on `head`. A head relayed as the upstream sent it stays so:
/// the hooks read its fields (and the proxy's `Via` after them) in place, what they set or
/// add is listed beside them, and the writer leaves out what they hid.
///
/// # Errors
/// A failing hook whose entry says `on_error: fail` (500).
fn answer_hooks(
    hooks: &LuaHooks,
    view: &mut Box<HookRequest>,
    head: &mut http::response::Parts,
) -> Result<(), ProxyError> {
    let mut relayed = head.extensions.get_mut::<RelayedFields>();
    let upstream = relayed
        .as_mut()
        .map(|relayed| std::mem::take(&mut relayed.fields));
    let mut res = HookResponse {
        status: head.status,
        headers: std::mem::take(&mut head.headers),
        upstream,
    };
    let outcome = hooks
        .on_response(view, &mut res)
        .map_err(|err| hook_failed(hooks, view, err));
    head.status = res.status;
    head.headers = res.headers;
    if let (Some(relayed), Some(fields)) = (relayed, res.upstream) {
        relayed.restore(fields);
    }
    outcome
}

/// Applies the path and query the `on_request` hooks left in `view`: the exchange with the
/// new path, or `None` when they kept it (the common case, which then costs no copy).
///
/// # Errors
/// A hook set a path that does not normalize, or a query that makes no valid URI (500).
fn rewrite<'a>(
    exchange: &Exchange<'a>,
    view: &HookRequest,
    uri: &mut Uri,
) -> Result<Option<Exchange<'a>>, ProxyError> {
    let path = if view.path == exchange.path {
        None
    } else {
        let normalized = normalize_path(&view.path)
            .map_err(|e| ProxyError::Hook(format!("a hook set an invalid path: {e}")))?;
        Some(normalized.into_owned())
    };
    if view.query.as_deref() != uri.query() {
        let path = path.as_deref().unwrap_or(&exchange.path);
        let target = match &view.query {
            Some(query) => format!("{path}?{query}"),
            None => path.to_string(),
        };
        *uri = Uri::try_from(target)
            .map_err(|e| ProxyError::Hook(format!("a hook set an invalid query: {e}")))?;
    }
    Ok(path.map(|path| Exchange { path, ..*exchange }))
}

/// The 500 for a hook that failed closed, logged with what an operator needs to find it:
/// the script, phase, line, route and request id.
fn hook_failed(
    hooks: &LuaHooks,
    view: &HookRequest,
    err: strangler_plugins::HookError,
) -> ProxyError {
    tracing::error!(
        script = %err.script.display(),
        phase = err.phase.as_str(),
        line = err.line,
        route = %hooks.chain().route(),
        request_id = view.id_text(),
        "hook failed: {}",
        err.message
    );
    ProxyError::Hook(format!(
        "{} {} failed{}",
        err.script.display(),
        err.phase.as_str(),
        err.line
            .map(|l| format!(" at line {l}"))
            .unwrap_or_default()
    ))
}

/// `http.request{..}` from hooks, served by the route file's upstream pools.
struct PoolCallouts {
    pools: HashMap<String, Arc<UpstreamPool>>,
}

impl Callouts for PoolCallouts {
    fn request(
        &self,
        req: CalloutRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send>> {
        let Some(pool) = self.pools.get(&req.upstream).cloned() else {
            let reason = format!("upstream {:?} is not in the route file", req.upstream);
            return Box::pin(async move { Err(reason) });
        };
        Box::pin(async move {
            let uri = pool.uri(&req.path).map_err(|e| e.to_string())?;
            let mut request = Request::new(body::full(req.body));
            *request.method_mut() = req.method;
            *request.uri_mut() = uri;
            *request.headers_mut() = req.headers;
            request
                .headers_mut()
                .entry(X_REQUEST_ID)
                .or_insert(req.request_id);
            let response = pool.send(request).await.map_err(|e| e.to_string())?;
            let (head, body) = response.into_parts();
            let (body, truncated) = body::collect_bounded(body, MAX_CALLOUT_BODY)
                .await
                .map_err(|e| e.to_string())?;
            if truncated {
                return Err(format!("answer larger than {MAX_CALLOUT_BODY} bytes"));
            }
            Ok(CalloutResponse {
                status: head.status,
                headers: head.headers,
                body,
            })
        })
    }
}
