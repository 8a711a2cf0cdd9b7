//! Cost of a Lua hook call as the proxy makes it: a reused request view, one thread-local
//! state, the per-call time budget armed.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, black_box, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use strangler_plugins::{
    HookChain, HookConfig, HookEngine, HookEntry, HookRequest, HookResponse, HookScript, Hooks,
    LuaHooks, NoCallouts, NoObserver, OnError,
};

fn hooks(engine: &HookEngine, source: &str) -> LuaHooks {
    let script = HookScript::from_source(Path::new("bench.lua"), source.to_string()).unwrap();
    let chain = HookChain::new(
        "bench",
        vec![HookEntry {
            script,
            on_error: OnError::Fail,
        }],
    );
    engine.hooks(chain, Arc::new(NoCallouts))
}

fn request() -> Box<HookRequest> {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("example.com"));
    headers.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    headers.insert("accept", HeaderValue::from_static("*/*"));
    Box::new(HookRequest {
        method: Method::GET,
        path: "/orders/7".into(),
        query: Some("a=1".into()),
        headers,
        client: "127.0.0.1:50000".parse().unwrap(),
        request_id: HeaderValue::from_static("0123456789abcdef"),
    })
}

fn hook_call(c: &mut Criterion) {
    let engine = HookEngine::new(HookConfig::default(), Arc::new(NoObserver)).unwrap();
    let trivial = hooks(&engine, "function on_request(req) end");
    let set_request = hooks(
        &engine,
        r#"function on_request(req) req.headers:set("x-hook", "1") end"#,
    );
    let set_response = hooks(
        &engine,
        r#"function on_response(req, res) res.headers:set("x-hook", "1") end"#,
    );
    let read = hooks(
        &engine,
        r#"function on_request(req) if req.path == "/admin" and req.headers:get("x-user") == nil then return req:respond(403) end end"#,
    );

    let mut group = c.benchmark_group("hook_call");
    let mut req = request();
    group.bench_function("on_request_trivial", |b| {
        b.iter(|| trivial.on_request(black_box(&mut req)).unwrap())
    });
    group.bench_function("on_request_set_header", |b| {
        b.iter(|| set_request.on_request(black_box(&mut req)).unwrap())
    });
    group.bench_function("on_request_read_path_and_header", |b| {
        b.iter(|| read.on_request(black_box(&mut req)).unwrap())
    });
    let mut res = HookResponse {
        status: StatusCode::OK,
        ..HookResponse::default()
    };
    group.bench_function("on_response_set_header", |b| {
        b.iter(|| {
            set_response
                .on_response(black_box(&mut req), black_box(&mut res))
                .unwrap()
        })
    });
    // A route whose hooks have no on_request: what the proxy pays for asking.
    group.bench_function("on_request_absent", |b| {
        b.iter(|| set_response.on_request(black_box(&mut req)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, hook_call);
criterion_main!(benches);
