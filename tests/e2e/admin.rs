//! The admin endpoint: the table, reload, rollback pins, explain, metrics, and its guard.

use std::process::Command;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{
    Answer, Proxy, Upstream, binary, client, get, monolith_and_service, routes_yaml, send,
    write_atomically,
};

const ROUTES: &str = "  - name: invoices\n    match: { path_prefix: /invoices }\n    to: service\n  - name: reports\n    match: { path_prefix: /reports }\n    respond: { status: 501, body: moving }\n";

async fn call(proxy: &Proxy, method: Method, path: &str, token: Option<&str>) -> Answer {
    let mut builder = Request::builder()
        .method(method)
        .uri(format!("http://{}{path}", proxy.admin));
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    send(&client(), builder.body(Full::new(Bytes::new())).unwrap()).await
}

fn sha256_of(path: &std::path::Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_like_get_without_a_body() {
    let (_m, _s, proxy) = monolith_and_service(ROUTES, &[]).await;
    for path in ["/healthz", "/readyz", "/metrics", "/routes", "/diffs", "/"] {
        let got = call(&proxy, Method::GET, path, None).await;
        let head = call(&proxy, Method::HEAD, path, None).await;
        assert_eq!(got.status, 200, "GET {path}");
        assert_eq!(head.status, 200, "HEAD {path}");
        assert!(head.body.is_empty(), "HEAD {path} has a body");
        assert_eq!(
            head.headers.get("content-type"),
            got.headers.get("content-type"),
            "{path}"
        );
    }
    assert_eq!(call(&proxy, Method::HEAD, "/nope", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_shows_the_active_table() {
    let (_m, _s, proxy) = monolith_and_service(ROUTES, &[]).await;
    let answer = call(&proxy, Method::GET, "/routes", None).await;
    assert_eq!(answer.status, 200);
    let table = answer.json();
    assert_eq!(table["version"], sha256_of(&proxy.routes_file()));
    assert!(table["source"].as_str().unwrap().ends_with("routes.yaml"));
    let loaded_at_unix = table["loaded_at_unix"].as_u64().unwrap();
    assert!(loaded_at_unix > 0);
    // RFC 3339 in UTC with milliseconds, the same second as `loaded_at_unix`.
    let loaded_at = table["loaded_at"].as_str().unwrap();
    assert_eq!(
        loaded_at.len(),
        "2026-11-27T13:20:40.200Z".len(),
        "{loaded_at}"
    );
    assert!(
        loaded_at.ends_with('Z') && loaded_at.as_bytes()[10] == b'T',
        "{loaded_at}"
    );
    let seconds_of_day = loaded_at_unix % 86_400;
    assert_eq!(
        &loaded_at[11..19],
        format!(
            "{:02}:{:02}:{:02}",
            seconds_of_day / 3600,
            seconds_of_day % 3600 / 60,
            seconds_of_day % 60
        ),
        "{loaded_at} vs {loaded_at_unix}"
    );
    assert_eq!(table["default"], "monolith");
    let routes = table["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(routes[0]["name"], "invoices");
    assert_eq!(routes[0]["mode"], "forward");
    assert_eq!(routes[0]["upstreams"], serde_json::json!(["service"]));
    assert_eq!(routes[0]["rollback_to"], "monolith");
    assert!(routes[0]["pin"].is_null());
    assert_eq!(routes[1]["mode"], "respond");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_a_422_and_the_old_version_keeps_serving() {
    let (_m, _s, proxy) = monolith_and_service(ROUTES, &["--poll", "1h"]).await;
    let before = call(&proxy, Method::GET, "/routes", None).await.json()["version"].clone();
    std::fs::write(
        proxy.routes_file(),
        "upstreams: {}\ndefault: nowhere\nroutes:\n  - name: x\n    bogus: 1\n",
    )
    .unwrap();
    let answer = call(&proxy, Method::POST, "/reload", None).await;
    assert_eq!(answer.status, 422);
    let errors = answer.json()["errors"].as_array().unwrap().clone();
    assert!(
        errors
            .iter()
            .any(|e| e.as_str().unwrap().contains("routes.yaml:5")
                && e.as_str().unwrap().contains("bogus")),
        "{errors:?}"
    );
    let table = call(&proxy, Method::GET, "/routes", None).await.json();
    assert_eq!(table["version"], before);
    assert!(
        !table["last_reload_error"]["errors"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        get(&proxy.url("/invoices/1"), &[]).await.json()["upstream"],
        "service"
    );
    let metrics = scrape(&proxy).await;
    assert_eq!(
        sample(
            &metrics,
            "strangler_config_reloads_total",
            &[("result", "failure")]
        ),
        Some(1.0)
    );

    std::fs::write(
        proxy.routes_file(),
        routes_yaml(&[("monolith", &_m.url())], "monolith", ""),
    )
    .unwrap();
    let answer = call(&proxy, Method::POST, "/reload", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["version"], sha256_of(&proxy.routes_file()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_pin_survives_reloads_until_cleared() {
    let (monolith, service, proxy) = monolith_and_service(ROUTES, &[]).await;
    assert_eq!(
        get(&proxy.url("/invoices/1"), &[]).await.json()["upstream"],
        "service"
    );
    let pinned = call(&proxy, Method::POST, "/routes/invoices/rollback", None).await;
    assert_eq!(pinned.status, 200);
    assert_eq!(
        get(&proxy.url("/invoices/1"), &[]).await.json()["upstream"],
        "monolith"
    );
    // Explain says where traffic goes now, not where the route file would send it.
    let explained = call(&proxy, Method::GET, "/explain?path=/invoices/1", None)
        .await
        .json();
    assert_eq!(explained["route"], "invoices");
    assert_eq!(explained["upstream"], "monolith", "{explained}");
    let text = explained["text"].as_str().unwrap();
    assert!(
        text.starts_with("route `invoices` → upstream `monolith`"),
        "{text}"
    );
    assert!(text.contains("pinned to `monolith`: "), "{text}");

    let yaml = routes_yaml(
        &[("monolith", &monolith.url()), ("service", &service.url())],
        "monolith",
        &format!("{ROUTES}  - name: extra\n    match: {{ path: /extra }}\n    to: service\n"),
    );
    proxy.rewrite_routes_in_place(&yaml);
    assert_eq!(
        get(&proxy.url("/invoices/1"), &[]).await.json()["upstream"],
        "monolith",
        "the pin survives a reload"
    );
    let table = call(&proxy, Method::GET, "/routes", None).await.json();
    assert!(
        table["routes"][0]["pin"]["reason"]
            .as_str()
            .unwrap()
            .contains("operator")
    );

    assert_eq!(
        call(&proxy, Method::DELETE, "/routes/invoices/rollback", None)
            .await
            .status,
        200
    );
    assert_eq!(
        get(&proxy.url("/invoices/1"), &[]).await.json()["upstream"],
        "service"
    );
    assert_eq!(
        call(&proxy, Method::POST, "/routes/nope/rollback", None)
            .await
            .status,
        404
    );
    assert_eq!(
        call(&proxy, Method::GET, "/routes/invoices/rollback", None)
            .await
            .status,
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_which_route_takes_a_request() {
    let (_m, _s, proxy) = monolith_and_service(ROUTES, &[]).await;
    let matched = call(
        &proxy,
        Method::GET,
        "/explain?method=GET&path=/invoices/7",
        None,
    )
    .await
    .json();
    assert_eq!(matched["route"], "invoices");
    assert_eq!(matched["upstream"], "service");
    let unmatched = call(
        &proxy,
        Method::GET,
        "/explain?method=POST&path=/orders&header=x-beta:true",
        None,
    )
    .await
    .json();
    assert!(unmatched["route"].is_null());
    assert_eq!(unmatched["upstream"], "monolith");
    let steps = unmatched["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert!(
        steps.iter().all(
            |s| s["matched"] == Value::Bool(false) && !s["reason"].as_str().unwrap().is_empty()
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_guards_everything_but_probes_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let (_m, _s, proxy) = monolith_and_service(
        ROUTES,
        &["--admin-token-file", token_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(call(&proxy, Method::GET, "/routes", None).await.status, 401);
    assert_eq!(
        call(&proxy, Method::GET, "/routes", Some("wrong"))
            .await
            .status,
        401
    );
    assert_eq!(
        call(&proxy, Method::POST, "/routes/invoices/rollback", None)
            .await
            .status,
        401
    );
    assert_eq!(
        call(&proxy, Method::GET, "/routes", Some("s3cret-token"))
            .await
            .status,
        200
    );
    // A trailing slash is the same page, open or guarded.
    for open in ["/healthz", "/readyz", "/metrics", "/healthz/", "/metrics/"] {
        assert_eq!(
            call(&proxy, Method::GET, open, None).await.status,
            200,
            "{open}"
        );
    }
    assert_eq!(
        call(&proxy, Method::GET, "/routes/", None).await.status,
        401
    );
}

/// `GET /routes` with `authorization` as the whole header value: the status.
async fn routes_with(proxy: &Proxy, authorization: &str) -> u16 {
    let request = Request::get(format!("http://{}/routes", proxy.admin))
        .header("authorization", authorization)
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(&client(), request).await.status.as_u16()
}

/// A rotated token file (a Kubernetes Secret swaps its files) takes effect without a
/// restart; a rotation that leaves no token keeps the last one rather than opening the
/// endpoint or locking the operator out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_takes_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "first-token\n").unwrap();
    let (_m, _s, proxy) = monolith_and_service(
        ROUTES,
        &["--admin-token-file", token_file.to_str().unwrap()],
    )
    .await;
    assert_eq!(routes_with(&proxy, "Bearer first-token").await, 200);
    assert_eq!(
        routes_with(&proxy, "bearer first-token").await,
        200,
        "the scheme is case-insensitive"
    );
    assert_eq!(routes_with(&proxy, "Basic first-token").await, 401);

    write_atomically(&token_file, "second-token\n");
    assert_eq!(routes_with(&proxy, "Bearer first-token").await, 401);
    assert_eq!(routes_with(&proxy, "Bearer second-token").await, 200);
    proxy.logs.wait_for("the new token is in force");

    write_atomically(&token_file, "\n");
    assert_eq!(routes_with(&proxy, "Bearer second-token").await, 200);
    assert_eq!(routes_with(&proxy, "Bearer ").await, 401);
    proxy.logs.wait_for("the previous token stays in force");
}

#[test]
fn a_non_loopback_admin_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("routes.yaml");
    std::fs::write(
        &file,
        "upstreams:\n  m: { url: \"http://127.0.0.1:1\" }\ndefault: m\n",
    )
    .unwrap();
    let output = Command::new(binary())
        .args([
            "run",
            "--routes",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "0.0.0.0:0",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--admin-token-file") && stderr.contains("--admin-insecure"),
        "{stderr}"
    );

    // STRANGLER_ADMIN_INSECURE takes the spellings environments use. Past the check, the
    // start fails on the missing route file instead (so the run ends either way).
    for (value, allowed) in [("1", true), ("yes", true), ("true", true), ("0", false)] {
        let output = Command::new(binary())
            .args(["run", "--routes", "/nonexistent/routes.yaml"])
            .args(["--listen", "127.0.0.1:0", "--admin", "0.0.0.0:0"])
            .env("STRANGLER_ADMIN_INSECURE", value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{value}: {stderr}");
        assert_eq!(
            stderr.contains("refusing to expose"),
            !allowed,
            "{value}: {stderr}"
        );
        assert_eq!(
            stderr.contains("/nonexistent/routes.yaml"),
            allowed,
            "{value}: {stderr}"
        );
    }
}

async fn scrape(proxy: &Proxy) -> prometheus_parse::Scrape {
    let answer = call(proxy, Method::GET, "/metrics", None).await;
    assert_eq!(answer.status, 200);
    let text = answer.text();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// Each upstream's error series exist from the start, at zero, so that `rate()` and
/// alerts work before the first failure; an upstream the route file drops loses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_error_series_exist_from_the_start_and_leave_with_their_upstream() {
    let (monolith, service, proxy) = monolith_and_service(ROUTES, &[]).await;
    let scraped = scrape(&proxy).await;
    for upstream in ["monolith", "service"] {
        for kind in ["connect", "timeout", "broken"] {
            assert_eq!(
                sample(
                    &scraped,
                    "strangler_upstream_errors_total",
                    &[("upstream", upstream), ("kind", kind)]
                ),
                Some(0.0),
                "{upstream} {kind}"
            );
        }
    }
    drop(service);
    proxy.rewrite_routes_in_place(&routes_yaml(
        &[("monolith", &monolith.url())],
        "monolith",
        "",
    ));
    let scraped = scrape(&proxy).await;
    assert_eq!(
        sample(
            &scraped,
            "strangler_upstream_errors_total",
            &[("upstream", "service"), ("kind", "connect")]
        ),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let dead = crate::support::closed_port().await;
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let yaml = routes_yaml(
        &[
            ("monolith", &monolith.url()),
            ("service", &service.url()),
            ("dead", &format!("http://{dead}")),
        ],
        "monolith",
        &format!("{ROUTES}  - name: broken\n    match: {{ path_prefix: /broken }}\n    to: dead\n"),
    );
    let proxy = Proxy::start(&yaml, &[]);
    for _ in 0..3 {
        get(&proxy.url("/invoices/1"), &[]).await;
    }
    for _ in 0..2 {
        get(&proxy.url("/reports"), &[]).await;
    }
    get(&proxy.url("/anything"), &[("x-test-status", "404")]).await;
    get(&proxy.url("/broken"), &[]).await;
    let metrics = scrape(&proxy).await;
    let requests = |route, upstream, code| {
        sample(
            &metrics,
            "strangler_requests_total",
            &[("route", route), ("upstream", upstream), ("code", code)],
        )
    };
    assert_eq!(requests("invoices", "service", "200"), Some(3.0));
    assert_eq!(requests("reports", "respond", "501"), Some(2.0));
    assert_eq!(requests("default", "monolith", "404"), Some(1.0));
    assert_eq!(requests("broken", "dead", "502"), Some(1.0));
    assert_eq!(
        sample(
            &metrics,
            "strangler_request_duration_seconds",
            &[("route", "invoices"), ("upstream", "service")]
        ),
        Some(3.0),
        "three observations in the histogram"
    );
    assert_eq!(
        sample(
            &metrics,
            "strangler_upstream_errors_total",
            &[("upstream", "dead"), ("kind", "connect")]
        ),
        Some(1.0)
    );
    let version = sha256_of(&proxy.routes_file());
    assert_eq!(
        sample(&metrics, "strangler_config_info", &[("version", &version)]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "strangler_inflight_requests", &[]),
        Some(0.0)
    );
    assert!(
        metrics
            .samples
            .iter()
            .all(|s| !s.labels.values().any(|v| v.contains("/invoices"))),
        "no raw paths in labels"
    );
}

/// Another method on a path the endpoint has is a 405 that says which methods it takes
/// (RFC 9110, section 15.5.6); a path it does not have is a 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_a_405_naming_the_right_ones() {
    let (_m, _s, proxy) = monolith_and_service(ROUTES, &[]).await;
    for (method, path, allowed) in [
        (Method::POST, "/healthz", "GET, HEAD"),
        (Method::DELETE, "/metrics", "GET, HEAD"),
        (Method::PUT, "/routes", "GET, HEAD"),
        (Method::GET, "/reload", "POST"),
        (Method::PUT, "/routes/invoices/rollback", "POST, DELETE"),
        (Method::POST, "/diffs/invoices", "GET, HEAD, DELETE"),
    ] {
        let answer = call(&proxy, method.clone(), path, None).await;
        assert_eq!(answer.status, 405, "{method} {path}");
        assert_eq!(answer.headers["allow"], allowed, "{method} {path}");
    }
    for path in ["/nope", "/diffs/a/b", "/routes/invoices"] {
        assert_eq!(
            call(&proxy, Method::GET, path, None).await.status,
            404,
            "{path}"
        );
    }
}
