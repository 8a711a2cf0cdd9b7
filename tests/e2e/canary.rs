//! Canary splits with sticky users, fallback to the monolith, gates that roll back, and
//! routing on request bodies.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use serde_json::json;

use crate::support::{Proxy, Reply, Upstream, admin_get, client, closed_port, get, send};

fn yaml(upstreams: &[(&str, String)], routes: &str) -> String {
    let mut text = String::from("upstreams:\n");
    for (name, url) in upstreams {
        text.push_str(&format!("  {name}: {{ url: \"{url}\", timeout: 2s }}\n"));
    }
    format!("{text}default: monolith\nroutes:\n{routes}")
}

async fn upstream_of(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> String {
    get(&proxy.url(path), headers).await.json()["upstream"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_is_split_by_weight_and_sticky_users_stay_on_their_side() {
    let (monolith, catalog) = (
        Upstream::start("monolith").await,
        Upstream::start("catalog").await,
    );
    let routes = "  - name: catalog\n    match: { path_prefix: /catalog }\n    canary:\n      split: { monolith: 70, catalog: 30 }\n      sticky: { cookie: session }\n  - name: by-header\n    match: { path_prefix: /h }\n    canary:\n      split: { monolith: 50, catalog: 50 }\n      sticky: { header: x-user }\n";
    let proxy = Proxy::start(
        &yaml(
            &[("monolith", monolith.url()), ("catalog", catalog.url())],
            routes,
        ),
        &[],
    );
    let mut new = 0;
    for _ in 0..400 {
        if upstream_of(&proxy, "/catalog/1", &[]).await == "catalog" {
            new += 1;
        }
    }
    assert!((80..160).contains(&new), "{new} of 400 on the 30% side");

    let mut sides = std::collections::HashSet::new();
    for user in 0..30 {
        let cookie = format!("theme=x; session=user-{user}");
        let first = upstream_of(&proxy, "/catalog/1", &[("cookie", &cookie)]).await;
        for _ in 0..5 {
            assert_eq!(
                upstream_of(&proxy, "/catalog/2", &[("cookie", &cookie)]).await,
                first,
                "user-{user}"
            );
        }
        let header = format!("h-{user}");
        let by_header = upstream_of(&proxy, "/h", &[("x-user", &header)]).await;
        assert_eq!(
            upstream_of(&proxy, "/h/x", &[("x-user", &header)]).await,
            by_header
        );
        sides.insert(by_header);
    }
    assert_eq!(sides.len(), 2, "30 users at 50/50 use both sides");
}

async fn post(
    proxy: &Proxy,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> crate::support::Answer {
    let mut builder = Request::builder().method(Method::POST).uri(proxy.url(path));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(
        &client(),
        builder.body(Full::new(Bytes::from(body))).unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_new_service_falls_back_to_the_monolith() {
    let monolith = Upstream::start("monolith").await;
    let failing = Upstream::scripted("invoices", |_| Reply {
        status: 503,
        ..Reply::json(json!({"down": true}))
    })
    .await;
    let slow = Upstream::scripted("slow", |_| Reply {
        delay: Duration::from_secs(3),
        ..Reply::json(json!({}))
    })
    .await;
    let dead = closed_port().await;
    let text = format!(
        "upstreams:\n  monolith: {{ url: \"{}\" }}\n  invoices: {{ url: \"{}\" }}\n  dead: {{ url: \"http://{dead}\" }}\n  slow: {{ url: \"{}\", timeout: 200ms }}\ndefault: monolith\nroutes:\n{}",
        monolith.url(),
        failing.url(),
        slow.url(),
        "  - name: on-503\n    match: { path_prefix: /a }\n    to: invoices\n    fallback: monolith\n  - name: on-refused\n    match: { path_prefix: /b }\n    to: dead\n    fallback: monolith\n  - name: on-timeout\n    match: { path_prefix: /c }\n    to: slow\n    fallback: monolith\n    max_body_match: 1KiB\n",
    );
    let proxy = Proxy::start(&text, &[]);

    let body = br#"{"order": 42, "lines": ["a", "b"]}"#.to_vec();
    let answer = post(
        &proxy,
        "/a/orders",
        body.clone(),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["upstream"], "monolith");
    assert_eq!(
        answer.json()["body"],
        String::from_utf8(body.clone()).unwrap(),
        "the body is replayed byte for byte"
    );
    assert_eq!(
        failing.hits.lock().unwrap()[0]["body"],
        String::from_utf8(body).unwrap()
    );

    assert_eq!(upstream_of(&proxy, "/b/1", &[]).await, "monolith");
    let started = std::time::Instant::now();
    assert_eq!(upstream_of(&proxy, "/c/1", &[]).await, "monolith");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the timeout cut the slow service short"
    );

    // Over the bound the body is not held, so there is no fallback: the client gets the
    // slow service's timeout.
    let big = post(&proxy, "/c/upload", vec![b'x'; 4096], &[]).await;
    assert_eq!(
        big.status,
        504,
        "no fallback without a held body: {}",
        big.text()
    );

    let metrics = admin_get(&proxy, "/metrics").await.text();
    for route in ["on-503", "on-refused", "on-timeout"] {
        assert!(
            metrics.contains(&format!("strangler_fallbacks_total{{route=\"{route}\"}} 1")),
            "{route}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(
            "strangler_fallbacks_skipped_total{reason=\"body_too_large\",route=\"on-timeout\"} 1"
        ),
        "{metrics}"
    );
    // The monolith answered the replays: the request counter says so (the dashboard's
    // migration progress is made of it), and the new services get no 200 they never gave.
    for route in ["on-503", "on-refused", "on-timeout"] {
        assert!(
            metrics.contains(&format!(
                "strangler_requests_total{{code=\"200\",route=\"{route}\",upstream=\"monolith\"}} 1"
            )),
            "{route}:\n{metrics}"
        );
    }
    for (route, upstream) in [
        ("on-503", "invoices"),
        ("on-refused", "dead"),
        ("on-timeout", "slow"),
    ] {
        assert!(
            !metrics.contains(&format!(
                "strangler_requests_total{{code=\"200\",route=\"{route}\",upstream=\"{upstream}\"}}"
            )),
            "{route}:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"504\",route=\"on-timeout\",upstream=\"slow\"} 1"
        ),
        "the skipped fallback's timeout is the slow service's:\n{metrics}"
    );
    // The failures the fallbacks hid are still the new services' errors: a dead service
    // must show as one, not only as fallbacks. (The slow one also timed out for the
    // upload, which nothing hid.)
    for (upstream, kind, count) in [("dead", "connect", 1), ("slow", "timeout", 2)] {
        assert!(
            metrics.contains(&format!(
                "strangler_upstream_errors_total{{kind=\"{kind}\",upstream=\"{upstream}\"}} {count}"
            )),
            "{upstream}:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_gate_rolls_back_and_stays_rolled_back_until_the_route_changes() {
    let monolith = Upstream::start("monolith").await;
    let broken = Upstream::scripted("catalog", |_| Reply {
        status: 500,
        ..Reply::json(json!({"upstream": "catalog"}))
    })
    .await;
    let upstreams = [("monolith", monolith.url()), ("catalog", broken.url())];
    let route = |weight: u32| {
        format!(
            "  - name: catalog\n    match: {{ path_prefix: /catalog }}\n    canary:\n      split: {{ monolith: {}, catalog: {weight} }}\n      gate: {{ min_requests: 20, max_error_rate: 5% }}\n",
            100 - weight
        )
    };
    let proxy = Proxy::start(&yaml(&upstreams, &route(50)), &[]);
    let mut sent = 0;
    while proxy.logs.count("canary rolled back") == 0 {
        get(&proxy.url("/catalog/1"), &[]).await;
        sent += 1;
        assert!(sent < 2000, "the gate never failed");
    }
    for _ in 0..20 {
        assert_eq!(upstream_of(&proxy, "/catalog/1", &[]).await, "monolith");
    }
    let table = admin_get(&proxy, "/routes").await.json();
    let catalog = &table["routes"][0];
    assert!(
        catalog["pin"]["reason"]
            .as_str()
            .unwrap()
            .contains("error rate"),
        "{catalog:#}"
    );
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics.contains("strangler_canary_rollbacks_total{route=\"catalog\"} 1"),
        "{metrics}"
    );

    // A reload that leaves the route as it is keeps it rolled back.
    let extra = "  - name: other\n    match: { path: /other }\n    to: monolith\n";
    proxy.rewrite_routes_in_place(&yaml(&upstreams, &format!("{}{extra}", route(50))));
    assert_eq!(upstream_of(&proxy, "/catalog/1", &[]).await, "monolith");
    assert!(!admin_get(&proxy, "/routes").await.json()["routes"][0]["pin"].is_null());
    // Editing the route clears the automatic rollback.
    proxy.rewrite_routes_in_place(&yaml(&upstreams, &route(100)));
    assert!(admin_get(&proxy, "/routes").await.json()["routes"][0]["pin"].is_null());
    assert_eq!(upstream_of(&proxy, "/catalog/1", &[]).await, "catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_new_side_trips_max_p99_ratio() {
    let monolith = Upstream::start("monolith").await;
    let slow = Upstream::scripted("catalog", |_| Reply {
        delay: Duration::from_millis(40),
        ..Reply::json(json!({"upstream": "catalog"}))
    })
    .await;
    let routes = "  - name: catalog\n    match: { path_prefix: /catalog }\n    canary:\n      split: { monolith: 50, catalog: 50 }\n      gate: { min_requests: 10, max_p99_ratio: 2 }\n";
    let proxy = Proxy::start(
        &yaml(
            &[("monolith", monolith.url()), ("catalog", slow.url())],
            routes,
        ),
        &[],
    );
    let mut sent = 0;
    while proxy.logs.count("canary rolled back") == 0 {
        get(&proxy.url("/catalog/1"), &[]).await;
        sent += 1;
        assert!(sent < 500, "the gate never failed");
    }
    let pin = &admin_get(&proxy, "/routes").await.json()["routes"][0]["pin"];
    assert!(pin["reason"].as_str().unwrap().contains("p99"), "{pin:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_and_json_bodies_pick_routes_and_arrive_intact() {
    let (monolith, payroll) = (
        Upstream::start("monolith").await,
        Upstream::start("payroll").await,
    );
    let routes = "  - name: payroll-form\n    match: { path: /app.do, methods: [POST], form: { action: payroll } }\n    to: payroll\n    max_body_match: 1KiB\n  - name: payroll-json\n    match: { path: /api, json: { \"/type\": payroll, \"/amount\": 10 } }\n    to: payroll\n";
    let proxy = Proxy::start(
        &yaml(
            &[("monolith", monolith.url()), ("payroll", payroll.url())],
            routes,
        ),
        &[],
    );
    let form = "user=ann&action=payroll&note=a%20b";
    let form_type = [("content-type", "application/x-www-form-urlencoded")];
    let answer = post(&proxy, "/app.do", form.as_bytes().to_vec(), &form_type).await;
    assert_eq!(answer.json()["upstream"], "payroll");
    assert_eq!(answer.json()["body"], form, "the body arrives intact");
    let other = post(&proxy, "/app.do", b"action=orders".to_vec(), &form_type).await;
    assert_eq!(other.json()["upstream"], "monolith");

    let json_type = [("content-type", "application/json")];
    let matched = post(
        &proxy,
        "/api",
        br#"{"amount": 10.0, "type": "payroll"}"#.to_vec(),
        &json_type,
    )
    .await;
    assert_eq!(matched.json()["upstream"], "payroll", "10.0 equals 10");
    let broken = post(&proxy, "/api", b"{not json".to_vec(), &json_type).await;
    assert_eq!(broken.status, 200);
    assert_eq!(
        broken.json()["upstream"],
        "monolith",
        "an unparsable body falls through"
    );
    assert_eq!(broken.json()["body"], "{not json");

    let oversized = format!("action=payroll&pad={}", "x".repeat(2048));
    let big = post(
        &proxy,
        "/app.do",
        oversized.clone().into_bytes(),
        &form_type,
    )
    .await;
    assert_eq!(
        big.json()["upstream"],
        "monolith",
        "an oversized body does not match"
    );
    assert_eq!(
        big.json()["body"].as_str().unwrap().len(),
        oversized.len(),
        "and still arrives whole"
    );
}
