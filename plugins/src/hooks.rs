//! The hook contract the proxy programs against: phases, views, [`Flow`] and the [`Hooks`] trait.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

use crate::error::HookError;
use crate::script::HookScript;

/// What a route's hooks do around one exchange. Every phase defaults to doing nothing, so a
/// route without hooks can use [`NoHooks`] and the proxy never sees a Lua type.
///
/// Order in the request path: `on_request` (after matching, before dispatch) →
/// dispatch → `on_response` (before the response head goes to the client) → respond →
/// `after_response` (after the client has its answer, off the hot path).
///
/// `on_request` and `on_response` are synchronous and short (bounded by the per-call time
/// budget): call them directly on the worker thread that handles the request, never from
/// `spawn_blocking`. They return `Err` only when a hook whose entry says
/// [`OnError::Fail`] failed: answer 500 with the request id. Failures of
/// [`OnError::Continue`] entries are logged and counted, and the chain goes on.
pub trait Hooks: Send + Sync {
    /// Which phases have at least one hook, so that the proxy builds views (and keeps a body
    /// copy) only when something will look at them.
    fn phases(&self) -> Phases {
        Phases::default()
    }

    /// Runs the `on_request` hooks in order. They may change `req.headers`, `req.path` and
    /// `req.query` (a changed path is as the script wrote it: normalize it again before
    /// forwarding); the first hook that calls `req:respond(..)` ends the phase with
    /// [`Flow::Respond`], and the proxy answers with it instead of dispatching.
    ///
    /// Keep `req` afterwards when [`Hooks::phases`] has `on_response` or `after_response`:
    /// it is their `req` (hand them the headers as forwarded, a clone if the forwarded
    /// request took them). It is boxed so that an implementation can move it where the
    /// hooks see it and back by the pointer: a copy of it costs as much as a trivial hook.
    ///
    /// # Errors
    /// A hook with [`OnError::Fail`] failed or ran out of budget.
    fn on_request(&self, req: &mut Box<HookRequest>) -> Result<Flow, HookError> {
        let _ = req;
        Ok(Flow::Continue)
    }

    /// Runs the `on_response` hooks in order, before the response head is sent; they may
    /// change `res.status` and `res.headers` (never the body, which streams untouched).
    /// `req` is read-only to the hooks (`&mut` lets the implementation move it where the
    /// hooks see it; it is handed back unchanged).
    ///
    /// # Errors
    /// A hook with [`OnError::Fail`] failed or ran out of budget.
    fn on_response(
        &self,
        req: &mut Box<HookRequest>,
        res: &mut HookResponse,
    ) -> Result<(), HookError> {
        let _ = (req, res);
        Ok(())
    }

    /// Queues the `after_response` hooks for this exchange and returns at once; they run
    /// later on the hook engine's own thread and can never affect the client.
    fn after_response(&self, exchange: Exchange) -> Submission {
        let _ = exchange;
        Submission::Skipped
    }
}

/// A route without hooks.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

/// The request as hooks see it; the proxy fills it, runs `on_request`, and forwards what the
/// hooks left in it.
#[derive(Debug, Clone, PartialEq)]
pub struct HookRequest {
    /// The request method (`req.method`).
    pub method: Method,
    /// The normalized path (`req.path`; assignable in `on_request`).
    pub path: String,
    /// The query string without `?` (`req.query`, nil when absent; assignable in `on_request`).
    pub query: Option<String>,
    /// The request headers (`req.headers`; mutable in `on_request`).
    pub headers: HeaderMap,
    /// The client's address (`req.client` is its IP, `req.client_port` its port).
    pub client: SocketAddr,
    /// The `X-Request-Id` of the exchange (`req.id`; also in every hook log line). A header
    /// value, so that the view shares the proxy's instead of copying it.
    pub request_id: HeaderValue,
}

impl HookRequest {
    /// The request id as text for log lines (`-` when it is not text).
    pub fn id_text(&self) -> &str {
        id_text(&self.request_id)
    }
}

/// A request id as text for log lines (`-` when it is empty or not text).
pub(crate) fn id_text(id: &HeaderValue) -> &str {
    match id.to_str() {
        Ok(id) if !id.is_empty() => id,
        _ => "-",
    }
}

impl Default for HookRequest {
    fn default() -> Self {
        HookRequest {
            method: Method::GET,
            path: String::new(),
            query: None,
            headers: HeaderMap::new(),
            client: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            request_id: HeaderValue::from_static(""),
        }
    }
}

/// The response head as hooks see it (`res.status`, `res.headers`; mutable in `on_response`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HookResponse {
    /// The status code.
    pub status: StatusCode,
    /// The response headers; empty with [`HookResponse::upstream`], which then holds what
    /// hooks set or add too.
    pub headers: HeaderMap,
    /// The answer's fields as the upstream sent them, for a proxy that relays them without
    /// building a header map. `res.headers` reads them before `headers`, and never changes
    /// their bytes: what hooks set, add or remove is recorded beside them (see
    /// [`UpstreamFields::edits`]).
    pub upstream: Option<UpstreamFields>,
}

/// Header fields kept as the bytes they arrived in: the head, and where each field sits in
/// it. Building a header map costs more than a trivial hook, and an answer whose hooks
/// only add a field or two can then be relayed as it came.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpstreamFields {
    /// The bytes the fields are in.
    pub head: Bytes,
    /// Each field's name and value, as ranges of `head`.
    pub fields: Vec<(Range<usize>, Range<usize>)>,
    /// What hooks did to the fields, in order. A name without a value hides the fields of
    /// that name that came (a hook set or removed it): they no longer count, and whoever
    /// writes the answer leaves them out. A name with a value is a field hooks set or added,
    /// written after the others with the rules of a header map's fields (a map would cost
    /// more to build than the rest of the head).
    pub edits: Vec<(HeaderName, Option<HeaderValue>)>,
    /// The proxy's `Via`, one more field after the upstream's: hooks see it with them, and
    /// hiding `via` leaves it out too. Kept apart so that adding it builds no header map.
    pub via: Option<&'static HeaderValue>,
}

impl UpstreamFields {
    /// The fields as they came that are not hidden, then the proxy's `Via`: name, value.
    /// (What hooks added is in [`UpstreamFields::added`].)
    pub fn lines(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.all().filter(|(name, _)| !self.is_hidden(name))
    }

    /// The fields hooks set or added, in order.
    pub fn added(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        self.edits
            .iter()
            .filter_map(|(name, value)| Some((name, value.as_ref()?)))
    }

    /// The values of the fields named `name` (ASCII case-insensitive), in order: those that
    /// came and are not hidden, then those hooks added.
    pub fn values<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let added = self
            .added()
            .filter(move |(added, _)| *added == name)
            .map(|(_, value)| value.as_bytes());
        self.kept(name).chain(added)
    }

    /// Whether the fields that came named `name` (any case) are hidden.
    pub fn is_hidden(&self, name: &[u8]) -> bool {
        self.edits.iter().any(|(hidden, value)| {
            value.is_none() && hidden.as_str().as_bytes().eq_ignore_ascii_case(name)
        })
    }

    /// `headers:set`: the fields named `name`, as they came or added, give way to `value`
    /// (none: they are removed).
    pub fn set(&mut self, name: HeaderName, value: Option<HeaderValue>) {
        // A name none of the fields that came has needs no hiding: the list stays short
        // when hooks only add fields.
        if self.kept(&name).next().is_some() {
            self.edits.push((name.clone(), None));
        }
        self.forget_added(&name);
        if let Some(value) = value {
            self.edits.push((name, Some(value)));
        }
    }

    /// `headers:add`: one more field named `name`, after the others.
    pub fn add(&mut self, name: HeaderName, value: HeaderValue) {
        self.edits.push((name, Some(value)));
    }

    /// Forget the fields named `name` that hooks added.
    pub fn forget_added(&mut self, name: &HeaderName) {
        // Called for every relayed answer, nearly always with nothing to look through.
        if !self.edits.is_empty() {
            self.edits
                .retain(|(added, value)| value.is_none() || added != name);
        }
    }

    /// The values of the fields named `name` that came (the proxy's `Via` among them) and
    /// are not hidden.
    fn kept<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a [u8]> + 'a {
        let wanted = name.as_str().as_bytes();
        // Names are hidden as a whole: one look at the list instead of one per field.
        let hidden = self.is_hidden(wanted);
        self.all()
            .filter(move |(field, _)| !hidden && field.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value)
    }

    /// Every field that came, hidden or not: the upstream's, then the proxy's `Via`.
    fn all(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let via = self.via.map(|via| (&b"via"[..], via.as_bytes()));
        self.fields
            .iter()
            .map(|(name, value)| (&self.head[name.clone()], &self.head[value.clone()]))
            .chain(via)
    }
}

/// Everything `after_response` hooks see: a snapshot of the request and the response.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Exchange {
    /// The request as it was forwarded (after `on_request`).
    pub request: Box<HookRequest>,
    /// The response as the client got it (after `on_response`).
    pub response: HookResponse,
    /// A copy of the response body when it was within the route's `hook_body_limit`; `None`
    /// otherwise (`res.body` is nil). Keep a copy only when [`Phases::after_response`] is set.
    pub body: Option<Bytes>,
}

/// What the proxy does after `on_request`.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    /// Dispatch the request as usual.
    Continue,
    /// Answer with this instead of calling an upstream (`req:respond(status, body, headers)`).
    Respond {
        /// The status code.
        status: StatusCode,
        /// The body (empty when the script gave none).
        body: Bytes,
        /// The headers the script gave.
        headers: HeaderMap,
    },
}

/// What happened to an `after_response` submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submission {
    /// Queued; it runs on the hook engine's thread.
    Queued,
    /// Over the pending bound: not run, counted as `dropped`.
    Dropped,
    /// No hook of the route has an `after_response` phase.
    Skipped,
}

/// A hook phase; `Display` gives the Lua function name, used as the `phase` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// `on_request(req)`.
    OnRequest,
    /// `on_response(req, res)`.
    OnResponse,
    /// `after_response(req, res)`.
    AfterResponse,
}

/// Which phases a script (or a chain of scripts) defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phases {
    /// Defines `on_request`.
    pub on_request: bool,
    /// Defines `on_response`.
    pub on_response: bool,
    /// Defines `after_response`.
    pub after_response: bool,
}

/// What a hook entry does when its hook fails in `on_request` or `on_response`
/// (`on_error:` in the route file). `after_response` failures never reach the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Fail closed: the chain stops and returns the error; the proxy answers 500 with the
    /// request id. A hook that guards a route must not silently stop guarding it.
    #[default]
    Fail,
    /// Fail open: log, count, and go on with the next hook as if this one did nothing
    /// (changes it made to the request or response before failing are kept).
    Continue,
}

/// The `result` label of `strangler_hook_runs_total{hook,phase,result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunResult {
    /// The hook returned normally.
    Ok,
    /// The hook raised an error or ran out of memory.
    Error,
    /// The hook ran out of its time budget.
    Timeout,
    /// The `after_response` job was over the pending bound and did not run.
    Dropped,
}

/// Receives one event per hook run, so the proxy can count
/// `strangler_hook_runs_total{hook,phase,result}` without this crate knowing prometheus.
///
/// Called on the thread that ran the hook (a request worker, or the `after_response`
/// thread); keep it cheap and non-blocking.
pub trait HookObserver: Send + Sync {
    /// One run of `script`'s `phase` ended with `result`.
    fn hook_ran(&self, script: &HookScript, phase: Phase, result: RunResult);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl HookObserver for NoObserver {
    fn hook_ran(&self, _: &HookScript, _: Phase, _: RunResult) {}
}

impl Phase {
    /// The Lua function name, e.g. `on_request`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::OnRequest => "on_request",
            Phase::OnResponse => "on_response",
            Phase::AfterResponse => "after_response",
        }
    }

    /// All phases, in request order.
    pub const ALL: [Phase; 3] = [Phase::OnRequest, Phase::OnResponse, Phase::AfterResponse];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Phases {
    /// Whether `phase` is defined.
    pub fn has(self, phase: Phase) -> bool {
        match phase {
            Phase::OnRequest => self.on_request,
            Phase::OnResponse => self.on_response,
            Phase::AfterResponse => self.after_response,
        }
    }

    /// Whether a phase after the upstream's answer is defined (`on_response` or
    /// `after_response`): the hooks then see the answer's head and the request as it went
    /// upstream.
    pub fn see_the_answer(self) -> bool {
        self.on_response || self.after_response
    }

    /// Whether no phase is defined.
    pub fn is_empty(self) -> bool {
        !(self.on_request || self.on_response || self.after_response)
    }

    pub(crate) fn set(&mut self, phase: Phase) {
        match phase {
            Phase::OnRequest => self.on_request = true,
            Phase::OnResponse => self.on_response = true,
            Phase::AfterResponse => self.after_response = true,
        }
    }

    pub(crate) fn union(self, other: Phases) -> Phases {
        Phases {
            on_request: self.on_request || other.on_request,
            on_response: self.on_response || other.on_response,
            after_response: self.after_response || other.after_response,
        }
    }
}

impl RunResult {
    /// The metric label value: `ok`, `error`, `timeout` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Error => "error",
            RunResult::Timeout => "timeout",
            RunResult::Dropped => "dropped",
        }
    }
}

impl fmt::Display for RunResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
