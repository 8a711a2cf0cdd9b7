//! `http.request{..}` from `after_response`: the Lua side here, the HTTP side in the proxy
//! behind the [`Callouts`] trait.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use mlua::{Function, Lua, LuaString, Table, Value};
use tokio::runtime::Handle;

use crate::bridge::{header_map, header_table};
use crate::shared::Shared;

/// Performs the HTTP calls hooks make with `http.request`; the proxy implements it with its
/// upstream pools, built at reload with the route file's upstreams.
pub trait Callouts: Send + Sync {
    /// Sends `req` to the upstream it names and collects the answer. The implementation
    /// refuses upstreams the route file does not name (`Err` with a short reason, which the
    /// script gets as `nil, err`); the hook engine applies `req.timeout` around the future
    /// too, and aborts it when that runs out.
    fn request(
        &self,
        req: CalloutRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send>>;
}

/// A callout as the script asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct CalloutRequest {
    /// The upstream's name in the route file (`upstream = "loyalty"`).
    pub upstream: String,
    /// `method` (default `GET`).
    pub method: Method,
    /// `path`, with the query if any (default `/`).
    pub path: String,
    /// `headers`.
    pub headers: HeaderMap,
    /// `body` (default empty).
    pub body: Bytes,
    /// `timeout` (default [`HookConfig::callout_timeout`](crate::HookConfig::callout_timeout)).
    pub timeout: Duration,
    /// The route whose hook made the call.
    pub route: Arc<str>,
    /// The request id of the exchange the hook ran for (worth sending as `X-Request-Id`).
    pub request_id: HeaderValue,
}

/// The answer to a callout; the script gets `{ status = .., headers = {..}, body = ".." }`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CalloutResponse {
    /// The status code.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The collected body.
    pub body: Bytes,
}

/// Callouts for a route file without upstreams to call: every callout fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCallouts;

impl Callouts for NoCallouts {
    fn request(
        &self,
        req: CalloutRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send>> {
        Box::pin(std::future::ready(Err(format!(
            "unknown upstream {:?}",
            req.upstream
        ))))
    }
}

/// Aborts the spawned callout when the hook stops waiting for it (timeout, job cut off).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The async `http.request` of the `after_response` state.
///
/// The callout future runs on `spawner` (the runtime the engine was built on: the proxy's),
/// not on the hook thread: the proxy's connection pools and their connection tasks belong
/// to its own runtime, and the hook thread only waits for the answer.
pub(crate) fn http_request(
    lua: &Lua,
    shared: &Arc<Shared>,
    spawner: Option<Handle>,
    default_timeout: Duration,
) -> mlua::Result<Function> {
    let shared = Arc::clone(shared);
    lua.create_async_function(move |lua, spec: Table| {
        // Everything that reads Lua values or the call context happens now, synchronously,
        // while this hook's coroutine is the one running.
        let prepared = prepare(&shared, &spec, default_timeout);
        let spawner = spawner.clone();
        async move {
            let (callouts, req) = prepared?;
            let what = format!("callout to {}", req.upstream);
            let timeout = req.timeout;
            let future = callouts.request(req);
            let task = match &spawner {
                Some(handle) => handle.spawn(future),
                None => tokio::spawn(future),
            };
            let _abort = AbortOnDrop(task.abort_handle());
            let outcome = match tokio::time::timeout(timeout, task).await {
                Err(_) => Err(format!("{what} timed out after {timeout:?}")),
                Ok(Err(join)) => Err(format!("{what} failed: {join}")),
                Ok(Ok(Err(reason))) => Err(format!("{what} failed: {reason}")),
                Ok(Ok(Ok(response))) => Ok(response),
            };
            match outcome {
                Ok(response) => {
                    let table = lua.create_table()?;
                    table.raw_set("status", response.status.as_u16())?;
                    table.raw_set("headers", header_table(&lua, &response.headers)?)?;
                    table.raw_set("body", lua.create_string(&response.body)?)?;
                    Ok((Value::Table(table), Value::Nil))
                }
                Err(message) => Ok((Value::Nil, Value::String(lua.create_string(message)?))),
            }
        }
    })
}

/// Reads the `http.request{..}` table. A malformed table is the script's bug and raises;
/// a failed call is the network's business and returns `nil, err`.
fn prepare(
    shared: &Shared,
    spec: &Table,
    default_timeout: Duration,
) -> mlua::Result<(Arc<dyn Callouts>, CalloutRequest)> {
    let (callouts, request_id, route) =
        shared.with_context(|c| (c.callouts.clone(), c.request_id.clone(), c.route.clone()));
    let Some(callouts) = callouts else {
        return Err(mlua::Error::runtime(
            "http.request is only available in after_response",
        ));
    };
    let bad = |what: &str| mlua::Error::runtime(format!("http.request: {what}"));
    let upstream = match spec.raw_get::<Value>("upstream")? {
        Value::String(s) => s.to_str()?.to_owned(),
        _ => {
            return Err(bad(
                "`upstream` (a string naming a route-file upstream) is required",
            ));
        }
    };
    let method = match spec.raw_get::<Option<LuaString>>("method")? {
        Some(m) => Method::from_bytes(m.to_str()?.to_ascii_uppercase().as_bytes())
            .map_err(|_| bad("invalid `method`"))?,
        None => Method::GET,
    };
    let path = match spec.raw_get::<Option<LuaString>>("path")? {
        Some(p) => p.to_str()?.to_owned(),
        None => "/".to_owned(),
    };
    if !path.starts_with('/') {
        return Err(bad("`path` must start with '/'"));
    }
    let headers = match spec.raw_get::<Option<Table>>("headers")? {
        Some(t) => header_map(&t)?,
        None => HeaderMap::new(),
    };
    let body = match spec.raw_get::<Option<LuaString>>("body")? {
        Some(b) => Bytes::copy_from_slice(&b.as_bytes()),
        None => Bytes::new(),
    };
    let timeout = match spec.raw_get::<Value>("timeout")? {
        Value::Nil => default_timeout,
        Value::String(s) => parse_duration(&s.to_str()?)
            .ok_or_else(|| bad("invalid `timeout`, expected e.g. \"500ms\" or \"2s\""))?,
        Value::Integer(n) if n > 0 => Duration::from_secs(n.unsigned_abs()),
        Value::Number(n) if n > 0.0 && n.is_finite() => Duration::from_secs_f64(n.min(3600.0)),
        _ => return Err(bad("invalid `timeout`, expected e.g. \"500ms\" or \"2s\"")),
    };
    let route = route.unwrap_or_else(|| Arc::from(""));
    Ok((
        callouts,
        CalloutRequest {
            upstream,
            method,
            path,
            headers,
            body,
            timeout,
            route,
            request_id,
        },
    ))
}

/// `250ms`, `2s`, `1.5s`, `1m` (as in the route file).
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        _ => return None,
    };
    (seconds > 0.0 && seconds <= 3600.0).then(|| Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_route_file() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("5h"), None);
    }
}
