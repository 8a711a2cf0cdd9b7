//! Lua hooks decorate the monolith: headers on the way in and out, answers without an
//! upstream, and calls to new services after the client has its answer.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use sha2::Digest as _;

use crate::support::{
    Proxy, Reply, Upstream, admin_get, binary, client, get, h2c_client, send, write_atomically,
};

/// A proxy whose route `orders` (prefix /orders) runs `script` (file `hook.lua`).
fn start(monolith: &Upstream, extra_upstreams: &str, script: &str, on_error: &str) -> Proxy {
    start_with(monolith, extra_upstreams, script, on_error, &[])
}

/// [`start`] with more flags for `strangler run`.
fn start_with(
    monolith: &Upstream,
    extra_upstreams: &str,
    script: &str,
    on_error: &str,
    flags: &[&str],
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.lua"), script).unwrap();
    let yaml = format!(
        "upstreams:\n  monolith: {{ url: \"{}\" }}\n{extra_upstreams}default: monolith\nroutes:\n  - name: orders\n    match: {{ path_prefix: /orders }}\n    to: monolith\n    hooks:\n      - {{ script: hook.lua, on_error: {on_error} }}\n",
        monolith.url()
    );
    std::fs::write(dir.path().join("routes.yaml"), yaml).unwrap();
    Proxy::start_in(dir, "routes.yaml", flags)
}

const TAGGING: &str = r#"
function on_request(req)
  if req.headers:get("x-block") then
    return req:respond(403, "blocked by hook", { ["x-why"] = "policy" })
  end
  req.headers:set("x-tagged", "v1")
  req.headers:remove("x-internal")
end
function on_response(req, res)
  res.headers:set("x-route", req.route)
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_set_headers_both_ways_and_can_answer_alone() {
    let monolith = Upstream::start("monolith").await;
    let proxy = start(&monolith, "", TAGGING, "fail");
    let answer = get(&proxy.url("/orders/1"), &[("x-internal", "secret")]).await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    assert_eq!(seen["headers"]["x-tagged"], "v1");
    assert!(seen["headers"].get("x-internal").is_none());
    assert_eq!(answer.headers["x-route"], "orders");

    let blocked = get(&proxy.url("/orders/2"), &[("x-block", "1")]).await;
    assert_eq!(blocked.status, 403);
    assert_eq!(blocked.text(), "blocked by hook");
    assert_eq!(blocked.headers["x-why"], "policy");
    assert_eq!(
        blocked.headers["content-type"], "text/plain; charset=utf-8",
        "typed as a route's respond: is"
    );
    assert_eq!(
        monolith.hit_count(),
        1,
        "the short-circuit never reached the upstream"
    );
    // Routes without hooks are untouched.
    let plain = get(&proxy.url("/other"), &[]).await;
    assert!(plain.json()["headers"].get("x-tagged").is_none());

    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics.contains(
            "strangler_hook_runs_total{hook=\"hook.lua\",phase=\"on_request\",result=\"ok\"} 2"
        ),
        "{metrics}"
    );
    // The hook's own answer is counted as the proxy's, not the upstream's it never reached.
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"403\",route=\"orders\",upstream=\"respond\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"200\",route=\"orders\",upstream=\"monolith\"} 1"
        ),
        "{metrics}"
    );
}

/// A proxy whose route `orders` runs the shipped `deploy/examples/loyalty.lua`, with
/// `loyalty` as its `loyalty` upstream.
fn with_loyalty_example(monolith: &Upstream, loyalty: &Upstream) -> Proxy {
    let script = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/loyalty.lua"
    ))
    .unwrap();
    start(
        monolith,
        &format!("  loyalty: {{ url: \"{}\" }}\n", loyalty.url()),
        &script,
        "continue",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_response_awards_points_without_delaying_the_client() {
    let monolith = Upstream::scripted("monolith", |_| Reply {
        status: 201,
        ..Reply::json(json!({"id": 42, "total": 99.5}))
    })
    .await;
    let loyalty = Upstream::scripted("loyalty", |_| Reply {
        delay: Duration::from_secs(2),
        ..Reply::json(json!({"ok": true}))
    })
    .await;
    let proxy = with_loyalty_example(&monolith, &loyalty);
    let started = Instant::now();
    let request = Request::post(proxy.url("/orders"))
        .header("x-customer-id", "c-7")
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"a\"}")))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 201);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "the client waited for the hook: {:?}",
        started.elapsed()
    );
    loyalty.wait_for_hits(1).await;
    let call = loyalty.hits.lock().unwrap()[0].clone();
    assert_eq!(call["method"], "POST");
    assert_eq!(call["target"], "/points");
    let points: serde_json::Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    assert_eq!(points["order_id"], 42);
    assert_eq!(points["customer"], "c-7");
    assert_eq!(
        call["headers"]["x-request-id"],
        answer.headers["x-request-id"].to_str().unwrap()
    );
}

/// A monolith that compresses its answers: `res.body` is what the hook can read (the JSON,
/// not the gzip), while the client gets the answer as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_response_reads_a_compressed_answer_decoded() {
    use std::io::Write as _;
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gzip.write_all(br#"{"id": 43, "total": 10}"#).unwrap();
    let compressed = gzip.finish().unwrap();
    let sent = compressed.clone();
    let monolith = Upstream::scripted("monolith", move |_| Reply {
        status: 201,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("content-encoding", "gzip".to_string()),
        ],
        body: sent.clone(),
        delay: Duration::ZERO,
    })
    .await;
    let loyalty = Upstream::scripted("loyalty", |_| Reply::json(json!({"ok": true}))).await;
    let proxy = with_loyalty_example(&monolith, &loyalty);
    let request = Request::post(proxy.url("/orders"))
        .header("x-customer-id", "c-8")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 201);
    assert_eq!(answer.headers["content-encoding"], "gzip");
    assert_eq!(answer.body, compressed, "the client's answer is untouched");
    loyalty.wait_for_hits(1).await;
    let call = loyalty.hits.lock().unwrap()[0].clone();
    let points: serde_json::Value = serde_json::from_str(call["body"].as_str().unwrap()).unwrap();
    assert_eq!(points["order_id"], 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_hook_is_cut_off_and_the_proxy_keeps_serving() {
    let monolith = Upstream::start("monolith").await;
    let proxy = start(
        &monolith,
        "",
        "function on_request(req)\n  while true do end\nend\n",
        "fail",
    );
    let started = Instant::now();
    let answer = get(&proxy.url("/orders"), &[]).await;
    assert_eq!(answer.status, 500, "fail closed");
    assert!(answer.text().contains("hook.lua"), "{}", answer.text());
    assert!(answer.headers.contains_key("x-request-id"));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(monolith.hit_count(), 0);
    assert_eq!(
        get(&proxy.url("/other"), &[]).await.status,
        200,
        "the worker is free again"
    );
    let log = proxy.logs.wait_for("hook failed");
    assert!(
        log.contains("line=2") || log.contains("line=Some(2)"),
        "{log}"
    );
    let request_id = answer.headers["x-request-id"].to_str().unwrap();
    assert!(log.contains("route=orders"), "{log}");
    assert!(
        log.contains(&format!("request_id=\"{request_id}\"")),
        "{log}"
    );
}

/// A pattern that backtracks exponentially runs in LuaJIT's C matcher, which the budget's
/// instruction hook never reaches: the string functions are replaced by budgeted ones, so
/// it fails like a runaway loop, and one worker is enough to keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtracking_pattern_is_cut_off_like_a_runaway_loop() {
    let monolith = Upstream::start("monolith").await;
    let script = r#"
function on_request(req)
  local subject = string.rep("a", 30) .. "b"
  if subject:find(string.rep("a*", 30) .. "c") then req.headers:set("x-found", "yes") end
end
"#;
    let proxy = start_with(&monolith, "", script, "fail", &["--workers", "1"]);
    let started = Instant::now();
    let answer = get(&proxy.url("/orders"), &[]).await;
    assert_eq!(answer.status, 500, "{}", answer.text());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        get(&proxy.url("/other"), &[]).await.status,
        200,
        "the one worker is free again"
    );
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics.contains(
            "strangler_hook_runs_total{hook=\"hook.lua\",phase=\"on_request\",result=\"timeout\"} 1"
        ),
        "{metrics}"
    );
}

/// Busy for 30 ms of CPU time, then tags the request; with `x-big`, makes a 4 MiB string
/// instead.
const SLOW_OR_BIG: &str = r#"
function on_request(req)
  if req.headers:get("x-big") then
    local big = string.rep("x", 4 * 1024 * 1024)
    req.headers:set("x-size", tostring(#big))
  else
    local started = os.clock()
    while os.clock() - started < 0.03 do end
  end
  req.headers:set("x-done", "yes")
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_budgets_are_set_with_flags() {
    let monolith = Upstream::start("monolith").await;
    let with_flags = |flags: &[&str]| start_with(&monolith, "", SLOW_OR_BIG, "fail", flags);
    let runs = |metrics: &str, result: &str| {
        let series = format!(
            "strangler_hook_runs_total{{hook=\"hook.lua\",phase=\"on_request\",result=\"{result}\"}} "
        );
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(series.as_str()))
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };

    // 30 ms of Lua under a 5 ms budget is cut off, and the route fails closed.
    let tight = with_flags(&["--hook-budget", "5ms", "--hook-memory", "2MiB"]);
    let answer = get(&tight.url("/orders"), &[]).await;
    assert_eq!(answer.status, 500, "{}", answer.text());
    // A 4 MiB string does not fit a 2 MiB state.
    let answer = get(&tight.url("/orders"), &[("x-big", "1")]).await;
    assert_eq!(answer.status, 500, "{}", answer.text());
    let metrics = admin_get(&tight, "/metrics").await.text();
    assert_eq!(runs(&metrics, "timeout"), 1, "{metrics}");
    assert_eq!(runs(&metrics, "error"), 1, "{metrics}");
    assert_eq!(monolith.hit_count(), 0);

    // The same script passes with room for it.
    let roomy = with_flags(&["--hook-budget", "5s", "--hook-memory", "64MiB"]);
    for headers in [&[][..], &[("x-big", "1")]] {
        let answer = get(&roomy.url("/orders"), headers).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["headers"]["x-done"], "yes");
    }
    assert_eq!(monolith.hit_count(), 2);
}

#[test]
fn hook_budget_flags_refuse_values_that_would_break_every_hook() {
    for (flag, value, why) in [
        ("--hook-budget", "0s", "longer than 0s"),
        ("--hook-memory", "512KiB", "at least 1MiB"),
        ("--hook-max-pending", "0", "at least 1"),
        ("--hook-job-timeout", "0ms", "longer than 0s"),
    ] {
        let out = std::process::Command::new(binary())
            .args(["run", "--routes", "routes.yaml", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag} {value}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag) && stderr.contains(why), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_has_no_os_io_or_require_and_on_error_decides() {
    for (call, marker) in [
        ("os.execute('true')", "os"),
        ("io.open('/etc/passwd')", "io"),
        ("require('socket')", "require"),
    ] {
        let monolith = Upstream::start("monolith").await;
        let script = format!("function on_request(req)\n  {call}\nend\n");
        let closed = start(&monolith, "", &script, "fail");
        let answer = get(&closed.url("/orders"), &[]).await;
        assert_eq!(answer.status, 500, "{marker} must be unavailable");
        let open = start(&monolith, "", &script, "continue");
        assert_eq!(
            get(&open.url("/orders"), &[]).await.status,
            200,
            "on_error: continue fails open"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_edit_reloads_and_a_syntax_error_is_rejected_with_script_and_line() {
    let monolith = Upstream::start("monolith").await;
    let proxy = start(&monolith, "", TAGGING, "fail");
    let script = proxy.dir.path().join("hook.lua");
    // Written as editors do (temporary file, then rename), so no reload sees half a file.
    write_atomically(&script, &TAGGING.replace("v1", "v2"));
    // The watcher does not know which file changed: its log line must not say "route file".
    proxy.logs.wait_for("watched file content changed");
    assert_eq!(proxy.logs.count("route file content changed"), 0);
    // The route file's version stays (it is the file's sha256), but the reload did change
    // what serves, and says so; `/routes` names the script's own sha256.
    let loaded = proxy.logs.wait_for("route table loaded");
    assert!(loaded.contains("changed=true"), "{loaded}");
    assert_eq!(
        get(&proxy.url("/orders"), &[]).await.json()["headers"]["x-tagged"],
        "v2"
    );
    let table = admin_get(&proxy, "/routes").await.json();
    let hook = &table["routes"][0]["hooks"][0];
    assert!(
        hook["script"].as_str().unwrap().ends_with("hook.lua"),
        "{table}"
    );
    let digest = sha2::Sha256::digest(std::fs::read(&script).unwrap());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hook["sha256"], hex.as_str(), "{table}");

    write_atomically(
        &script,
        "function on_request(req)\n  req.headers:set(\"x\", \nend\n",
    );
    proxy.logs.wait_for("reload rejected");
    // The error's own lines follow the "rejected" line; wait for them, not just for it.
    let error = proxy.logs.wait_for("hook.lua:");
    assert!(
        error.contains("hook.lua:3") || error.contains("hook.lua:2"),
        "{error}"
    );
    assert_eq!(
        get(&proxy.url("/orders"), &[]).await.json()["headers"]["x-tagged"],
        "v2",
        "the old hooks keep serving"
    );

    let output = std::process::Command::new(binary())
        .args(["check", proxy.routes_file().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("hook.lua"), "{stderr}");
}

const REWRITING: &str = r#"
function on_request(req)
  if req.path == "/orders/old" then
    req.path = "/orders/new"
    req.query = "from=old"
  elseif req.path == "/orders/query-only" then
    req.query = "x=1"
  elseif req.path == "/orders/bad" then
    req.path = "/orders/%zz"
  end
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_request_can_move_a_request_to_another_path_and_query() {
    let monolith = Upstream::start("monolith").await;
    let proxy = start(&monolith, "", REWRITING, "fail");

    let moved = get(&proxy.url("/orders/old?from=client"), &[]).await;
    assert_eq!(moved.status, 200);
    assert_eq!(moved.json()["target"], "/orders/new?from=old");
    // No hook sees this route's answers, so their heads are relayed as they came, with the
    // proxy's own fields added and the upstream's hop-by-hop ones gone.
    assert_eq!(moved.headers["content-type"], "application/json");
    assert_eq!(moved.headers["via"], "1.1 strangler");
    assert!(moved.headers.contains_key("x-request-id"));
    assert!(!moved.headers.contains_key("keep-alive"));

    let query_only = get(&proxy.url("/orders/query-only"), &[]).await;
    assert_eq!(query_only.json()["target"], "/orders/query-only?x=1");

    let kept = get(&proxy.url("/orders/kept?a=b"), &[]).await;
    assert_eq!(kept.json()["target"], "/orders/kept?a=b");

    // A path that cannot be forwarded fails the hook where it is set, under its on_error:
    // the hook's fault, not a bad request from the client.
    let bad = get(&proxy.url("/orders/bad"), &[]).await;
    assert_eq!(bad.status, 500, "{}", bad.text());
    assert!(
        bad.text().contains("hook.lua on_request failed at line 9"),
        "{}",
        bad.text()
    );
    proxy
        .logs
        .wait_for("req.path: a malformed percent-escape at byte 8");
    assert_eq!(
        monolith.hit_count(),
        3,
        "the bad rewrite never reached the upstream"
    );
}

/// A reload that leaves no route with a hook script takes the script's series out of
/// `/metrics`, as it does a removed route's; a script that comes back counts from zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_taken_out_of_the_file_takes_its_series_out_of_the_metrics() {
    let monolith = Upstream::start("monolith").await;
    let proxy = start(&monolith, "", TAGGING, "fail");
    let hooked = proxy.routes_file();
    let hooked = std::fs::read_to_string(&hooked).unwrap();
    let runs = |metrics: &str| -> Vec<String> {
        metrics
            .lines()
            .filter(|line| line.starts_with("strangler_hook_runs_total{"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(get(&proxy.url("/orders/1"), &[]).await.status, 200);
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert_eq!(runs(&metrics).len(), 2, "{metrics}");

    let (kept, _) = hooked.split_once("    hooks:").unwrap();
    proxy.rewrite_routes_in_place(kept);
    assert_eq!(get(&proxy.url("/orders/2"), &[]).await.status, 200);
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert_eq!(runs(&metrics), Vec::<String>::new(), "{metrics}");
    assert!(
        metrics.contains("strangler_requests_total{code=\"200\",route=\"orders\""),
        "the route stays: {metrics}"
    );

    proxy.rewrite_routes_in_place(&hooked);
    assert_eq!(get(&proxy.url("/orders/3"), &[]).await.status, 200);
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics.contains(
            "strangler_hook_runs_total{hook=\"hook.lua\",phase=\"on_request\",result=\"ok\"} 1"
        ),
        "{metrics}"
    );
}

/// The fields that frame a message are the proxy's: a hook that sets `content-length` over
/// a body it cannot change fails at that line, and the answer goes out framed by the body
/// the client really gets (with `on_error: continue`, untouched), instead of leaving the
/// client waiting for bytes that never come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_cannot_change_how_a_message_is_framed() {
    let monolith = Upstream::start("monolith").await;
    let script = "function on_response(req, res)\n  res.headers:set(\"x-seen\", \"1\")\n  res.headers:set(\"content-length\", \"999\")\nend\n";
    let proxy = start(&monolith, "", script, "continue");
    for _ in 0..2 {
        let answer =
            tokio::time::timeout(Duration::from_secs(10), get(&proxy.url("/orders/1"), &[]))
                .await
                .expect("the answer ends");
        assert_eq!(answer.status, 200);
        assert_eq!(answer.json()["target"], "/orders/1");
        assert_eq!(answer.headers["x-seen"], "1", "edits before the error stay");
        assert_ne!(answer.headers["content-length"], "999");
    }
    let line = proxy
        .logs
        .wait_for("`content-length` is the proxy's to set");
    assert!(line.contains("line=3"), "{line}");
}

/// A hook that turns an answer into a 204 or a 304, or answers 204 itself, gets one without
/// content: no body, and for a 204 no `Content-Length` (RFC 9110, section 8.6). Through both of the proxy's
/// HTTP/1.1 writers and over HTTP/2 (where a body after such a head resets the stream),
/// and the connection serves the next request cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_without_content_set_by_a_hook_goes_without_the_body() {
    let monolith = Upstream::start("monolith").await;
    let script = "function on_request(req)\n  if req.path == \"/orders/told\" then return req:respond(204, \"ignored\") end\nend\nfunction on_response(req, res)\n  if req.path == \"/orders/gone\" then res.status = 204 end\n  if req.path == \"/orders/same\" then res.status = 304 end\nend\n";
    let proxy = start(&monolith, "", script, "fail");
    for (protocol, client) in [("HTTP/1.1", client()), ("HTTP/2", h2c_client())] {
        // A bodiless GET is served by the proxy's own loop, a POST with a body by hyper.
        for (method, body) in [("GET", ""), ("POST", "x")] {
            for (path, status) in [
                ("/orders/gone", 204),
                ("/orders/same", 304),
                ("/orders/told", 204),
            ] {
                let request = Request::builder()
                    .method(method)
                    .uri(proxy.url(path))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap();
                let answer = send(&client, request).await;
                let case = format!("{protocol} {method} {path}");
                assert_eq!(answer.status, status, "{case}");
                assert_eq!(answer.text(), "", "{case}");
                if status == 204 {
                    assert!(
                        !answer.headers.contains_key("content-length"),
                        "{case}: {:?}",
                        answer.headers
                    );
                }
                let after = send(
                    &client,
                    Request::get(proxy.url("/orders/1"))
                        .body(Full::new(Bytes::new()))
                        .unwrap(),
                )
                .await;
                assert_eq!(after.json()["target"], "/orders/1", "after {case}");
            }
        }
    }
}

/// A hook reads the request's host in `host` whatever the client's protocol: an HTTP/2
/// client names it in `:authority`, which the proxy puts in `Host` before hooks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_find_the_host_over_http2_too() {
    let monolith = Upstream::start("monolith").await;
    let script = "function on_request(req)\n  req.headers:set(\"x-seen-host\", req.headers:get(\"host\") or \"none\")\nend\n";
    let proxy = start(&monolith, "", script, "fail");
    let host = proxy.addr.to_string();
    for (protocol, client) in [("HTTP/1.1", client()), ("HTTP/2", h2c_client())] {
        let request = Request::get(proxy.url("/orders/1"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let seen = send(&client, request).await.json();
        assert_eq!(seen["headers"]["x-seen-host"], host.as_str(), "{protocol}");
        assert_eq!(seen["headers"]["host"], host.as_str(), "{protocol}");
    }
}
