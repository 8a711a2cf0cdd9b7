//! on_request / on_response: what hooks see and change, short-circuits, on_error, helpers.

use super::*;

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
        upstream: None,
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

/// Tables that are not plain sequences keep every entry (a reader of sequences would drop
/// what follows a hole, or the named keys of a mixed table); what JSON cannot say is an
/// error rather than a silent `null`.
#[test]
fn json_encode_loses_nothing() {
    let (engine, _) = engine_with(HookConfig::default());
    let hooks = one(
        &engine,
        "encode.lua",
        r#"
        function on_request(req)
          req.headers:set("x-sparse", json.encode({ [1] = 1, [3] = 3 }))
          req.headers:set("x-mixed", json.encode({ 1, 2, x = 3 }))
          req.headers:set("x-array", json.encode({ "a", "b" }))
          req.headers:set("x-decoded", json.encode(json.decode("[]")))
          assert(not pcall(json.encode, { n = 0 / 0 }))
          assert(not pcall(json.encode, { f = print }))
          local loop = {}
          loop.self = loop
          assert(not pcall(json.encode, loop))
        end
        "#,
    );
    let mut req = request();
    hooks_ok(&hooks, &mut req);
    let header = |name: &str| -> serde_json::Value {
        serde_json::from_slice(req.headers[name].as_bytes()).unwrap()
    };
    assert_eq!(header("x-sparse"), serde_json::json!({ "1": 1, "3": 3 }));
    assert_eq!(
        header("x-mixed"),
        serde_json::json!({ "1": 1, "2": 2, "x": 3 })
    );
    assert_eq!(header("x-array"), serde_json::json!(["a", "b"]));
    assert_eq!(header("x-decoded"), serde_json::json!([]));
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
                req.request_id = HeaderValue::try_from(format!("{task}-{i}")).unwrap();
                assert_eq!(hooks.on_request(&mut req).unwrap(), Flow::Continue);
                assert_eq!(req.headers["x-sum"], "2001000");
                assert_eq!(req.headers["x-echo"], req.request_id);
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
