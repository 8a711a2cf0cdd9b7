//! after_response: body copy, callouts, budgets and the pending bound.

use super::*;

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
            ..HookResponse::default()
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
            ..HookResponse::default()
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
