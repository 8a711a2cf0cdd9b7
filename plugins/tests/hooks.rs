//! The hook runtime with real Lua: phases, short-circuit, callouts, budgets, sandbox, bounds.
#![allow(clippy::unwrap_used, missing_docs)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use strangler_plugins::{
    CalloutRequest, CalloutResponse, Callouts, Exchange, Flow, HookChain, HookConfig, HookEngine,
    HookEntry, HookError, HookFailure, HookObserver, HookRequest, HookResponse, HookScript, Hooks,
    LuaHooks, NoCallouts, OnError, Phase, PluginErrorKind, RunResult, Submission,
};

/// Records every run, as the proxy's metrics would count them.
#[derive(Default)]
struct Runs(Mutex<Vec<(String, Phase, RunResult)>>);

impl HookObserver for Runs {
    fn hook_ran(&self, script: &HookScript, phase: Phase, result: RunResult) {
        self.0
            .lock()
            .unwrap()
            .push((script.name().to_string(), phase, result));
    }
}

impl Runs {
    fn count(&self, phase: Phase, result: RunResult) -> usize {
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
struct Recorder {
    seen: Mutex<Vec<CalloutRequest>>,
    delay: Option<Duration>,
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

fn script(name: &str, source: &str) -> HookScript {
    HookScript::from_source(Path::new(name), source.to_string()).unwrap()
}

fn engine_with(config: HookConfig) -> (HookEngine, Arc<Runs>) {
    let runs = Arc::new(Runs::default());
    (HookEngine::new(config, runs.clone()).unwrap(), runs)
}

fn hooks(
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

fn one(engine: &HookEngine, name: &str, source: &str) -> LuaHooks {
    hooks(
        engine,
        vec![(script(name, source), OnError::Fail)],
        Arc::new(NoCallouts),
    )
}

fn request() -> HookRequest {
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("ada"));
    HookRequest {
        method: Method::POST,
        path: "/orders".into(),
        query: Some("a=1".into()),
        headers,
        client: "10.1.2.3:4567".parse::<SocketAddr>().unwrap(),
        request_id: "req-42".into(),
    }
}

fn on_request_error(hooks: &LuaHooks) -> HookError {
    let mut req = request();
    hooks.on_request(&mut req).unwrap_err()
}

#[test]
fn on_request_sees_the_request_and_changes_headers_and_path() {
    let (engine, runs) = engine_with(HookConfig::default());
    let hooks = one(
        &engine,
        "tag.lua",
        r#"
        function on_request(req)
          assert(req.method == "POST" and req.path == "/orders" and req.query == "a=1")
          assert(req.route == "orders" and req.id == "req-42")
          assert(req.client == "10.1.2.3" and req.client_port == 4567)
          req.headers:set("x-greeting", "hello " .. req.headers:get("x-user"))
          req.headers:add("x-multi", "1")
          req.headers:add("x-multi", "2")
          assert(#req.headers:get_all("x-multi") == 2)
          req.headers:remove("x-user")
          assert(req.headers:get("x-user") == nil)
          req.path = "/v2/orders"
          req.query = nil
        end
        "#,
    );
    let mut req = request();
    assert_eq!(hooks.on_request(&mut req).unwrap(), Flow::Continue);
    assert_eq!(req.headers["x-greeting"], "hello ada");
    assert_eq!(req.headers.get_all("x-multi").iter().count(), 2);
    assert!(req.headers.get("x-user").is_none());
    assert_eq!(req.path, "/v2/orders");
    assert_eq!(req.query, None);
    assert_eq!(req.request_id, "req-42");
    // The reused view hands the next request over cleanly.
    let mut second = request();
    hooks.on_request(&mut second).unwrap();
    assert_eq!(second.headers["x-greeting"], "hello ada");
    assert_eq!(runs.count(Phase::OnRequest, RunResult::Ok), 2);
}

#[test]
fn on_response_changes_status_and_headers_but_not_the_request() {
    let (engine, _) = engine_with(HookConfig::default());
    let hooks = one(
        &engine,
        "res.lua",
        r#"
        function on_response(req, res)
          assert(res.status == 201 and res.body == nil)
          res.headers:set("x-route", req.route)
          res.headers:set("server", nil)
          res.status = 202
          local ok, err = pcall(function() req.headers:set("x-late", "1") end)
          assert(not ok and tostring(err):find("read%-only"))
        end
        "#,
    );
    let mut req = request();
    let mut headers = HeaderMap::new();
    headers.insert("server", HeaderValue::from_static("monolith"));
    let mut res = HookResponse {
        status: StatusCode::CREATED,
        headers,
    };
    hooks.on_response(&mut req, &mut res).unwrap();
    assert_eq!(res.status, StatusCode::ACCEPTED);
    assert_eq!(res.headers["x-route"], "orders");
    assert!(res.headers.get("server").is_none());
    assert_eq!(req, request());
}

#[test]
fn respond_short_circuits_the_chain() {
    let (engine, runs) = engine_with(HookConfig::default());
    let guard = script(
        "guard.lua",
        r#"
        function on_request(req)
          if req.headers:get("x-user") == "ada" then
            return req:respond(403, "no orders for you", { ["content-type"] = "text/plain", ["x-why"] = "banned" })
          end
        end
        "#,
    );
    let later = script(
        "later.lua",
        r#"function on_request(req) req.headers:set("x-later", "1") end"#,
    );
    let hooks = hooks(
        &engine,
        vec![(guard, OnError::Fail), (later, OnError::Fail)],
        Arc::new(NoCallouts),
    );
    let mut req = request();
    match hooks.on_request(&mut req).unwrap() {
        Flow::Respond {
            status,
            body,
            headers,
        } => {
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(body, "no orders for you");
            assert_eq!(headers["x-why"], "banned");
        }
        Flow::Continue => panic!("expected a short-circuit"),
    }
    assert!(
        req.headers.get("x-later").is_none(),
        "hooks after respond must not run"
    );
    assert_eq!(runs.count(Phase::OnRequest, RunResult::Ok), 1);
    // Not every request is short-circuited.
    let mut other = request();
    other.headers.remove("x-user");
    assert_eq!(hooks.on_request(&mut other).unwrap(), Flow::Continue);
    assert_eq!(other.headers["x-later"], "1");
}

#[test]
fn fail_stops_the_chain_and_continue_goes_on() {
    let (engine, runs) = engine_with(HookConfig::default());
    let broken = || {
        script(
            "broken.lua",
            "function on_request(req)\n  local x = nil\n  return x.field\nend\n",
        )
    };
    let later = || {
        script(
            "later.lua",
            r#"function on_request(req) req.headers:set("x-later", "1") end"#,
        )
    };

    let closed = hooks(
        &engine,
        vec![(broken(), OnError::Fail), (later(), OnError::Fail)],
        Arc::new(NoCallouts),
    );
    let err = on_request_error(&closed);
    assert_eq!(err.script, Path::new("broken.lua"));
    assert_eq!(err.phase, Phase::OnRequest);
    assert_eq!(err.line, Some(3));
    assert_eq!(err.kind, HookFailure::Error);
    assert!(err.message.contains("attempt to index"), "{err}");
    assert_eq!(err.result(), RunResult::Error);

    let open = hooks(
        &engine,
        vec![(broken(), OnError::Continue), (later(), OnError::Fail)],
        Arc::new(NoCallouts),
    );
    let mut req = request();
    assert_eq!(open.on_request(&mut req).unwrap(), Flow::Continue);
    assert_eq!(req.headers["x-later"], "1");
    assert_eq!(
        req.headers["x-user"], "ada",
        "the request survives a failed hook"
    );
    assert_eq!(runs.count(Phase::OnRequest, RunResult::Error), 2);
}

#[test]
fn runaway_loop_is_cut_off_within_budget_and_the_state_stays_usable() {
    let budget = Duration::from_millis(30);
    let (engine, runs) = engine_with(HookConfig {
        call_budget: budget,
        ..HookConfig::default()
    });
    let spin = one(
        &engine,
        "spin.lua",
        "function on_request(req)\n  while true do end\nend\n",
    );
    let sneaky = one(
        &engine,
        "sneaky.lua",
        "function on_request(req)\n  while true do pcall(function() while true do end end) end\nend\n",
    );
    let fine = one(
        &engine,
        "fine.lua",
        r#"function on_request(req) req.headers:set("x-ok", "1") end"#,
    );
    for hooks in [&spin, &sneaky] {
        let started = Instant::now();
        let err = on_request_error(hooks);
        let took = started.elapsed();
        assert_eq!(err.kind, HookFailure::Timeout, "{err}");
        assert_eq!(err.result(), RunResult::Timeout);
        assert!(
            err.message.contains("hook exceeded its time budget"),
            "{err}"
        );
        assert_eq!(err.line, Some(2), "{err}");
        assert!(took >= budget && took < budget * 4, "took {took:?}");
        let mut req = request();
        hooks_ok(&fine, &mut req);
        assert_eq!(req.headers["x-ok"], "1");
    }
    assert_eq!(runs.count(Phase::OnRequest, RunResult::Timeout), 2);
}

fn hooks_ok(hooks: &LuaHooks, req: &mut HookRequest) {
    assert_eq!(hooks.on_request(req).unwrap(), Flow::Continue);
}

#[test]
fn memory_bomb_is_stopped_and_the_state_stays_usable() {
    // A generous time budget, so that the memory limit is what stops the bomb.
    let config = HookConfig {
        memory_limit: 8 * 1024 * 1024,
        call_budget: Duration::from_secs(5),
        ..HookConfig::default()
    };
    let (engine, _) = engine_with(config);
    let bomb = one(
        &engine,
        "bomb.lua",
        "function on_request(req)\n  local t = {}\n  for i = 1, 1e9 do t[i] = string.rep('x', 64) .. i end\nend\n",
    );
    let keeper = one(
        &engine,
        "keeper.lua",
        "kept = {}\nfunction on_request(req)\n  for i = 1, 1e9 do kept[#kept + 1] = string.rep('y', 64) .. i end\nend\n",
    );
    let fine = one(
        &engine,
        "fine.lua",
        r#"function on_request(req) req.headers:set("x-ok", string.rep("z", 3)) end"#,
    );
    for hooks in [&bomb, &keeper, &bomb] {
        let err = on_request_error(hooks);
        assert_eq!(err.kind, HookFailure::Memory, "{err}");
        assert_eq!(err.result(), RunResult::Error);
        let mut req = request();
        hooks_ok(&fine, &mut req);
        assert_eq!(req.headers["x-ok"], "zzz");
    }
}

#[test]
fn the_sandbox_has_no_way_out() {
    let (engine, _) = engine_with(HookConfig::default());
    for (i, probe) in [
        "os.execute('touch /tmp/strangler-pwned')",
        "io.open('/etc/passwd')",
        "require('os')",
        "load('return 1')()",
        "loadstring('return 1')()",
        "dofile('/etc/passwd')",
        "loadfile('/etc/passwd')",
        "getfenv(0).os.execute('true')",
        "setfenv(1, {})",
        "debug.getregistry()",
        "package.loadlib('x', 'y')",
        "collectgarbage('stop')",
        "string.dump(function() end)",
        "(''):dump()",
        "getmetatable('').__index.dump(print)",
        "coroutine.create(print)",
        "jit.on()",
        "newproxy(true)",
        "module('x')",
    ]
    .into_iter()
    .enumerate()
    {
        let source = format!("function on_request(req)\n  {probe}\nend\n");
        let hooks = one(&engine, &format!("probe{i}.lua"), &source);
        let err = on_request_error(&hooks);
        assert_eq!(err.kind, HookFailure::Error, "{probe}: {err}");
        assert_eq!(err.line, Some(2), "{probe}: {err}");
    }
    assert!(!Path::new("/tmp/strangler-pwned").exists());
    // What is there works.
    let hooks = one(
        &engine,
        "allowed.lua",
        r##"
        function on_request(req)
          local t = { 3, 1, 2 }
          table.sort(t)
          assert(t[1] == 1 and math.max(1, 5) == 5 and string.upper("a") == "A" and ("b"):upper() == "B")
          assert(bit.band(6, 3) == 2 and type(os.time()) == "number" and type(os.clock()) == "number")
          assert(select("#", pcall(error, "x")) == 2 and _G.on_request == on_request)
          local ok, err = pcall(error, "caught")
          assert(not ok and err:find("caught"))
          log.info("hello from", req.id)
          print("print goes to log.info")
          string.upper = nil -- only this script's copy
        end
        "##,
    );
    let mut req = request();
    hooks_ok(&hooks, &mut req);
    let other = one(
        &engine,
        "other.lua",
        r#"function on_request(req) assert(string.upper("a") == "A") end"#,
    );
    hooks_ok(&other, &mut req);
}

#[test]
fn compile_errors_name_the_script_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("loyalty.lua");
    std::fs::write(&path, "function on_request(req)\n  local x = = 1\nend\n").unwrap();
    let err = HookScript::compile(&path).unwrap_err();
    assert_eq!(err.script, path);
    assert_eq!(err.line, Some(2));
    assert!(matches!(err.kind, PluginErrorKind::Syntax(_)), "{err}");
    let shown = err.to_string();
    assert!(shown.contains("loyalty.lua:2: syntax error"), "{shown}");

    let missing = HookScript::compile(&dir.path().join("missing.lua")).unwrap_err();
    assert!(matches!(missing.kind, PluginErrorKind::Io(_)), "{missing}");

    let cases = [
        ("error('top level', 1)\n", "load"),
        ("on_request = 5\n", "not a function"),
        ("local x = 1\n", "no hooks"),
        ("\nwhile true do end\n", "timeout"),
        ("print(os.getenv('HOME'))\n", "load"),
    ];
    for (source, want) in cases {
        let err = HookScript::from_source(Path::new("bad.lua"), source.to_string()).unwrap_err();
        let ok = match want {
            "load" => matches!(err.kind, PluginErrorKind::Load(_)) && err.line == Some(1),
            "not a function" => matches!(
                err.kind,
                PluginErrorKind::NotAFunction {
                    name: "on_request",
                    ..
                }
            ),
            "no hooks" => matches!(err.kind, PluginErrorKind::NoHooks),
            _ => matches!(err.kind, PluginErrorKind::Timeout) && err.line == Some(2),
        };
        assert!(ok, "{source:?}: {err:?}");
    }

    let good = script(
        "all.lua",
        "function on_request() end\nfunction after_response() end\n",
    );
    assert!(good.phases().on_request && !good.phases().on_response && good.phases().after_response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_response_reads_the_body_and_calls_out() {
    let (engine, runs) = engine_with(HookConfig::default());
    let recorder = Arc::new(Recorder::default());
    let loyalty = script(
        "loyalty.lua",
        r#"
        function after_response(req, res)
          if res.status ~= 201 or not res.body then return end
          local order = assert(json.decode(res.body))
          local answer, err = http.request{
            upstream = "loyalty", method = "post", path = "/points",
            headers = { ["content-type"] = "application/json", ["x-request-id"] = req.id },
            body = json.encode({ order = order.id, customer = req.headers:get("x-user") }),
            timeout = "500ms",
          }
          assert(answer, err)
          local points = json.decode(answer.body).points
          local _, missing = http.request{ upstream = "nope" }
          http.request{ upstream = "audit", path = "/seen?status=" .. answer.status .. "&points=" .. points,
                        body = missing }
          local ok, ro = pcall(function() res.headers:set("x", "1") end)
          assert(not ok and tostring(ro):find("read%-only"))
        end
        "#,
    );
    let hooks = hooks(&engine, vec![(loyalty, OnError::Fail)], recorder.clone());
    assert!(hooks.phases().after_response);
    let exchange = Exchange {
        request: request(),
        response: HookResponse {
            status: StatusCode::CREATED,
            headers: HeaderMap::new(),
        },
        body: Some(Bytes::from_static(br#"{"id": 7, "total": 12.5}"#)),
    };
    assert_eq!(hooks.after_response(exchange), Submission::Queued);
    tokio::time::timeout(Duration::from_secs(5), engine.idle())
        .await
        .unwrap();
    assert_eq!(
        runs.count(Phase::AfterResponse, RunResult::Ok),
        1,
        "{:?}",
        runs.0.lock().unwrap()
    );
    let seen = recorder.seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    let points = &seen[0];
    assert_eq!(points.upstream, "loyalty");
    assert_eq!(points.method, Method::POST);
    assert_eq!(points.path, "/points");
    assert_eq!(points.timeout, Duration::from_millis(500));
    assert_eq!(points.headers["x-request-id"], "req-42");
    assert_eq!(points.request_id, "req-42");
    assert_eq!(&*points.route, "orders");
    let body: serde_json::Value = serde_json::from_slice(&points.body).unwrap();
    assert_eq!(body, serde_json::json!({ "order": 7, "customer": "ada" }));
    assert_eq!(seen[1].upstream, "nope");
    assert_eq!(seen[2].path, "/seen?status=201&points=10");
    assert!(
        std::str::from_utf8(&seen[2].body)
            .unwrap()
            .contains("not in the route file")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_response_failures_are_counted_never_raised() {
    let config = HookConfig {
        call_budget: Duration::from_millis(20),
        after_response_timeout: Duration::from_millis(300),
        ..HookConfig::default()
    };
    let (engine, runs) = engine_with(config);
    let slow = Arc::new(Recorder {
        delay: Some(Duration::from_secs(5)),
        ..Recorder::default()
    });
    let spin = script(
        "spin.lua",
        "function after_response(req, res)\n  while true do end\nend\n",
    );
    let waits = script(
        "waits.lua",
        r#"
        function after_response(req, res)
          local answer, err = http.request{ upstream = "loyalty", timeout = "50ms" }
          assert(answer == nil and err:find("timed out"), err)
          http.request{ upstream = "loyalty", timeout = "10s" } -- cut by the job's wall clock
        end
        "#,
    );
    let body_nil = script(
        "nil.lua",
        "function after_response(req, res) assert(res.body == nil) end",
    );
    let last = script("last.lua", "function after_response(req, res) end");
    let entries = vec![
        (body_nil.clone(), OnError::Fail),
        (spin, OnError::Fail),
        (waits, OnError::Fail),
        (last, OnError::Fail),
    ];
    let hooks = hooks(&engine, entries, slow.clone());
    assert_eq!(
        hooks.after_response(Exchange {
            request: request(),
            ..Exchange::default()
        }),
        Submission::Queued
    );
    tokio::time::timeout(Duration::from_secs(5), engine.idle())
        .await
        .unwrap();
    let timeouts: Vec<_> = runs
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, _, r)| *r == RunResult::Timeout)
        .map(|(name, _, _)| name.clone())
        .collect();
    // spin: its budget; waits: the wall clock in its second callout; last: never started.
    assert_eq!(timeouts, ["spin.lua", "waits.lua", "last.lua"]);
    assert_eq!(runs.count(Phase::AfterResponse, RunResult::Ok), 1);
    // The hook thread's state is still good after all that.
    let again = engine.hooks(
        HookChain::new(
            "orders",
            vec![HookEntry {
                script: body_nil,
                on_error: OnError::Fail,
            }],
        ),
        slow,
    );
    assert_eq!(
        again.after_response(Exchange::default()),
        Submission::Queued
    );
    tokio::time::timeout(Duration::from_secs(5), engine.idle())
        .await
        .unwrap();
    assert_eq!(runs.count(Phase::AfterResponse, RunResult::Ok), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_response_over_the_bound_is_dropped_and_counted() {
    let (engine, runs) = engine_with(HookConfig {
        max_pending: 2,
        ..HookConfig::default()
    });
    let slow = Arc::new(Recorder {
        delay: Some(Duration::from_millis(300)),
        ..Recorder::default()
    });
    let call = script(
        "call.lua",
        r#"function after_response(req, res) http.request{ upstream = "loyalty" } end"#,
    );
    let hooks = hooks(&engine, vec![(call, OnError::Fail)], slow.clone());
    let outcomes: Vec<_> = (0..5)
        .map(|_| {
            hooks.after_response(Exchange {
                request: request(),
                ..Exchange::default()
            })
        })
        .collect();
    assert_eq!(
        outcomes
            .iter()
            .filter(|s| **s == Submission::Queued)
            .count(),
        2
    );
    assert_eq!(engine.dropped(), 3);
    assert_eq!(engine.pending(), 2);
    assert_eq!(runs.count(Phase::AfterResponse, RunResult::Dropped), 3);
    tokio::time::timeout(Duration::from_secs(5), engine.idle())
        .await
        .unwrap();
    assert_eq!(engine.pending(), 0);
    assert_eq!(runs.count(Phase::AfterResponse, RunResult::Ok), 2);
    assert_eq!(slow.seen.lock().unwrap().len(), 2);
    // Room again once the pending jobs are done.
    assert_eq!(
        hooks.after_response(Exchange::default()),
        Submission::Queued
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hooks_run_on_many_worker_threads_at_once() {
    let (engine, runs) = engine_with(HookConfig::default());
    let hooks = Arc::new(one(
        &engine,
        "count.lua",
        r#"
        function on_request(req)
          local n = 0
          for i = 1, 2000 do n = n + i end
          req.headers:set("x-sum", tostring(n))
          req.headers:set("x-echo", req.id)
        end
        "#,
    ));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let hooks = Arc::clone(&hooks);
        tasks.push(tokio::spawn(async move {
            let mut threads = std::collections::HashSet::new();
            for i in 0..200 {
                let mut req = request();
                req.request_id = format!("{task}-{i}");
                assert_eq!(hooks.on_request(&mut req).unwrap(), Flow::Continue);
                assert_eq!(req.headers["x-sum"], "2001000");
                assert_eq!(req.headers["x-echo"], req.request_id.as_str());
                threads.insert(std::thread::current().id());
                tokio::task::yield_now().await;
            }
            threads
        }));
    }
    let mut threads = std::collections::HashSet::new();
    for task in tasks {
        threads.extend(task.await.unwrap());
    }
    assert!(
        threads.len() > 1,
        "expected several worker threads, got {}",
        threads.len()
    );
    assert_eq!(runs.count(Phase::OnRequest, RunResult::Ok), 1600);
}

#[test]
fn json_round_trips_and_decode_reports_bad_input() {
    let (engine, _) = engine_with(HookConfig::default());
    let hooks = one(
        &engine,
        "json.lua",
        r#"
        function on_request(req)
          local v = json.decode('{"a":[1,2,{"b":null}],"n":10,"f":1.5,"s":"x"}')
          assert(v.a[2] == 2 and v.a[3].b == json.null and v.n == 10 and v.f == 1.5)
          req.headers:set("x-json", json.encode({ n = v.n, list = v.a, empty = {} }))
          local bad, err = json.decode("{nope")
          assert(bad == nil and err:find("invalid json"))
        end
        "#,
    );
    let mut req = request();
    hooks_ok(&hooks, &mut req);
    let got: serde_json::Value = serde_json::from_slice(req.headers["x-json"].as_bytes()).unwrap();
    assert_eq!(
        got,
        serde_json::json!({ "n": 10, "list": [1, 2, { "b": null }], "empty": {} })
    );
}

#[test]
fn bad_arguments_to_the_api_are_script_errors() {
    let (engine, _) = engine_with(HookConfig::default());
    for (i, probe) in [
        "req:respond(42)",
        "req.headers:set('bad name', 'x')",
        "req.headers:set('x', 'line\\nbreak')",
        "req.path = 'relative'",
        "http.request{ upstream = 'loyalty' }",
        "req.method = 'GET'",
    ]
    .into_iter()
    .enumerate()
    {
        let hooks = one(
            &engine,
            &format!("arg{i}.lua"),
            &format!("function on_request(req)\n  {probe}\nend\n"),
        );
        let err = on_request_error(&hooks);
        assert_eq!(err.kind, HookFailure::Error, "{probe}: {err}");
        assert_eq!(err.line, Some(2), "{probe}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_loyalty_example_awards_points() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/loyalty.lua");
    let loyalty = HookScript::compile(&path).unwrap();
    assert!(loyalty.phases().after_response && !loyalty.phases().on_request);
    let (engine, runs) = engine_with(HookConfig::default());
    let recorder = Arc::new(Recorder::default());
    let hooks = hooks(
        &engine,
        vec![(loyalty, OnError::Continue)],
        recorder.clone(),
    );
    let mut request = request();
    request
        .headers
        .insert("x-customer-id", HeaderValue::from_static("c-9"));
    let created = |body: Option<&'static [u8]>, status| Exchange {
        request: request.clone(),
        response: HookResponse {
            status,
            headers: HeaderMap::new(),
        },
        body: body.map(Bytes::from_static),
    };
    hooks.after_response(created(
        Some(br#"{"id": "o-1", "total": 30}"#),
        StatusCode::CREATED,
    ));
    hooks.after_response(created(
        Some(br#"{"error": "out of stock"}"#),
        StatusCode::CONFLICT,
    ));
    hooks.after_response(created(None, StatusCode::CREATED));
    tokio::time::timeout(Duration::from_secs(5), engine.idle())
        .await
        .unwrap();
    assert_eq!(runs.count(Phase::AfterResponse, RunResult::Ok), 3);
    let seen = recorder.seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "only the created order earns points");
    assert_eq!(
        (seen[0].upstream.as_str(), seen[0].path.as_str()),
        ("loyalty", "/points")
    );
    let body: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "order_id": "o-1", "customer": "c-9", "total": 30 })
    );
}

/// A tracing writer that keeps what is written.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[test]
fn logs_carry_script_route_and_request_id() {
    let (engine, _) = engine_with(HookConfig::default());
    let talk = one(
        &engine,
        "talk.lua",
        "function on_request(req)\n  log.warn('hello', 42, nil)\nend\n",
    );
    let fail = hooks(
        &engine,
        vec![(
            script(
                "oops.lua",
                "function on_request(req)\n\n  error('oops')\nend\n",
            ),
            OnError::Continue,
        )],
        Arc::new(NoCallouts),
    );
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut req = request();
        talk.on_request(&mut req).unwrap();
        fail.on_request(&mut req).unwrap();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for want in [
        "WARN",
        "hello 42 nil",
        "script=talk.lua",
        "route=\"orders\"",
        "request_id=\"req-42\"",
    ] {
        assert!(lines[0].contains(want), "{want} in {}", lines[0]);
    }
    for want in [
        "WARN",
        "oops",
        "script=oops.lua",
        "phase=on_request",
        "line=3",
        "request_id=req-42",
        "result=error",
    ] {
        assert!(lines[1].contains(want), "{want} in {}", lines[1]);
    }
}
