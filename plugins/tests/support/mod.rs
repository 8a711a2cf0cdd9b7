//! Helpers of the hook runtime's test binaries: scripts, engines, chains, a request, and
//! observers that record what ran.

pub(crate) use std::future::Future;
pub(crate) use std::net::SocketAddr;
pub(crate) use std::path::Path;
pub(crate) use std::pin::Pin;
pub(crate) use std::sync::{Arc, Mutex};
pub(crate) use std::time::{Duration, Instant};

pub(crate) use bytes::Bytes;
pub(crate) use http::{HeaderMap, HeaderValue, Method, StatusCode};
pub(crate) use strangler_plugins::{
    CalloutRequest, CalloutResponse, Callouts, Exchange, Flow, HookChain, HookConfig, HookEngine,
    HookEntry, HookError, HookFailure, HookObserver, HookRequest, HookResponse, HookScript, Hooks,
    LuaHooks, NoCallouts, OnError, Phase, PluginErrorKind, RunResult, Submission,
};

/// Records every run, as the proxy's metrics would count them.
#[derive(Default)]
pub(crate) struct Runs(pub(crate) Mutex<Vec<(String, Phase, RunResult)>>);

impl HookObserver for Runs {
    fn hook_ran(&self, script: &HookScript, phase: Phase, result: RunResult) {
        self.0
            .lock()
            .unwrap()
            .push((script.name().to_string(), phase, result));
    }
}

impl Runs {
    pub(crate) fn count(&self, phase: Phase, result: RunResult) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, r)| *p == phase && *r == result)
            .count()
    }
}

/// Records callouts and answers 201 with a JSON body; optionally waits first.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) seen: Mutex<Vec<CalloutRequest>>,
    pub(crate) delay: Option<Duration>,
}

impl Callouts for Recorder {
    fn request(
        &self,
        req: CalloutRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CalloutResponse, String>> + Send>> {
        let known = req.upstream == "loyalty" || req.upstream == "audit";
        let upstream = req.upstream.clone();
        self.seen.lock().unwrap().push(req);
        let delay = self.delay;
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if !known {
                return Err(format!("upstream {upstream:?} is not in the route file"));
            }
            let mut headers = HeaderMap::new();
            headers.insert("content-type", HeaderValue::from_static("application/json"));
            Ok(CalloutResponse {
                status: StatusCode::CREATED,
                headers,
                body: Bytes::from_static(b"{\"points\":10}"),
            })
        })
    }
}

pub(crate) fn script(name: &str, source: &str) -> HookScript {
    HookScript::from_source(Path::new(name), source.to_string()).unwrap()
}

pub(crate) fn engine_with(config: HookConfig) -> (HookEngine, Arc<Runs>) {
    let runs = Arc::new(Runs::default());
    (HookEngine::new(config, runs.clone()).unwrap(), runs)
}

pub(crate) fn hooks(
    engine: &HookEngine,
    entries: Vec<(HookScript, OnError)>,
    callouts: Arc<dyn Callouts>,
) -> LuaHooks {
    let entries = entries
        .into_iter()
        .map(|(script, on_error)| HookEntry { script, on_error })
        .collect();
    engine.hooks(HookChain::new("orders", entries), callouts)
}

pub(crate) fn one(engine: &HookEngine, name: &str, source: &str) -> LuaHooks {
    hooks(
        engine,
        vec![(script(name, source), OnError::Fail)],
        Arc::new(NoCallouts),
    )
}

pub(crate) fn request() -> Box<HookRequest> {
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("ada"));
    Box::new(HookRequest {
        method: Method::POST,
        path: "/orders".into(),
        query: Some("a=1".into()),
        headers,
        client: "10.1.2.3:4567".parse::<SocketAddr>().unwrap(),
        request_id: HeaderValue::from_static("req-42"),
    })
}

pub(crate) fn on_request_error(hooks: &LuaHooks) -> HookError {
    let mut req = request();
    hooks.on_request(&mut req).unwrap_err()
}

pub(crate) fn hooks_ok(hooks: &LuaHooks, req: &mut Box<HookRequest>) {
    assert_eq!(hooks.on_request(req).unwrap(), Flow::Continue);
}
