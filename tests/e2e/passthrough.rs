//! Step 1 of a migration: everything passes through unchanged; routes move single paths.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{Proxy, Upstream, client, get, h2c_client, routes_yaml, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_passes_through_with_forwarding_headers_added() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let request = Request::post(proxy.url("/orders/new?x=1&y=%20z"))
        .header("host", "shop.example")
        .header("x-custom", "kept")
        .header("connection", "x-secret")
        .header("x-secret", "hop-by-hop")
        .header("x-forwarded-for", "10.1.2.3")
        .body(Full::new(Bytes::from_static(b"{\"qty\":2}")))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    assert_eq!(seen["upstream"], "monolith");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["target"], "/orders/new?x=1&y=%20z");
    assert_eq!(seen["body"], "{\"qty\":2}");
    let headers = &seen["headers"];
    assert_eq!(headers["host"], "shop.example");
    assert_eq!(headers["x-custom"], "kept");
    assert!(
        headers.get("x-secret").is_none(),
        "header named in Connection leaked: {headers}"
    );
    assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.example");
    assert_eq!(headers["via"], "1.1 strangler");
    let id = headers["x-request-id"].as_str().unwrap();
    assert!(!id.is_empty());
    assert_eq!(
        answer.headers["x-request-id"], id,
        "the client sees the id the upstream saw"
    );
    assert!(
        answer.headers.get("x-hop").is_none(),
        "response hop-by-hop header leaked"
    );
    assert!(answer.headers.get("keep-alive").is_none());
    assert_eq!(answer.headers["via"], "1.1 strangler");
    let log = proxy.logs.wait_for(id);
    assert!(
        log.contains("route=default")
            && log.contains("upstream=monolith")
            && log.contains("status=200"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_request_id_is_kept() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let answer = get(&proxy.url("/"), &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(answer.json()["headers"]["x-request-id"], "trace-abc-123");
    assert_eq!(answer.headers["x-request-id"], "trace-abc-123");
    // Naming it in Connection (hop-by-hop) does not take it from the upstream.
    let answer = get(
        &proxy.url("/"),
        &[
            ("x-request-id", "trace-hop"),
            ("connection", "x-request-id"),
        ],
    )
    .await;
    assert_eq!(answer.json()["headers"]["x-request-id"], "trace-hop");
}

/// Each request writes one access log line with what an operator looks for, and the
/// query, which may carry credentials, stays out of it; `--access-log off` writes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_writes_one_access_log_line() {
    let monolith = Upstream::start("monolith").await;
    let routes = routes_yaml(&[("monolith", &monolith.url())], "monolith", "");
    let proxy = Proxy::start(&routes, &[]);
    let answer = get(
        &proxy.url("/orders/7?token=s3cret"),
        &[("x-request-id", "trace-log-1")],
    )
    .await;
    assert_eq!(answer.status, 200);
    let line = proxy.logs.wait_for("trace-log-1");
    for field in [
        "strangler::access",
        "method=GET",
        "path=\"/orders/7\"",
        "route=default",
        "upstream=monolith",
        "status=200",
        "duration_ms=",
        "client=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(!line.contains("s3cret"), "{line}");

    let quiet = Proxy::start(&routes, &["--access-log", "off"]);
    get(&quiet.url("/"), &[("x-request-id", "trace-log-2")]).await;
    // Lines are read in order: once the reload's line is in, an access line would be too.
    quiet.rewrite_routes_in_place(&format!("{routes}# touched\n"));
    assert_eq!(quiet.logs.count("trace-log-2"), 0, "{}", quiet.logs.all());
}

const MOVES: &str = r#"
  - name: invoices
    match: { path_prefix: /invoices }
    to: invoices
  - name: payroll
    match: { path: "/payroll/{id}", methods: [GET] }
    to: invoices
  - name: beta
    match: { path_prefix: /catalog, headers: { x-beta: "true" } }
    to: invoices
  - name: search-v2
    match: { path_prefix: /search, query: { v: "2" } }
    to: invoices
    rewrite: { strip_prefix: /search, prefix: /v2/search, set_headers: { x-migrated: "1" }, remove_headers: [x-legacy] }
  - name: cookie-users
    match: { path: /account, cookie: { tier: gold } }
    to: invoices
  - name: reports
    match: { path_prefix: /reports }
    respond: { status: 501, body: "reports are moving", headers: { x-why: migrating } }
  - name: retired
    match: { path_prefix: /retired }
    respond: { status: 204, body: "never sent" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_send_matching_requests_to_new_services() {
    let monolith = Upstream::start("monolith").await;
    let invoices = Upstream::start("invoices").await;
    let yaml = routes_yaml(
        &[("monolith", &monolith.url()), ("invoices", &invoices.url())],
        "monolith",
        MOVES,
    );
    let proxy = Proxy::start(&yaml, &[]);
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        ("/invoices", &[], "invoices"),
        ("/invoices/7", &[], "invoices"),
        ("/invoicesX", &[], "monolith"),
        ("/payroll/42", &[], "invoices"),
        ("/payroll/42/slips", &[], "monolith"),
        ("/catalog/1", &[("x-beta", "true")], "invoices"),
        ("/catalog/1", &[("x-beta", "false")], "monolith"),
        ("/catalog/1", &[], "monolith"),
        ("/search/books?v=2", &[], "invoices"),
        ("/search/books?v=1", &[], "monolith"),
        ("/account", &[("cookie", "a=b; tier=gold")], "invoices"),
        ("/account", &[("cookie", "tier=silver")], "monolith"),
        ("/", &[], "monolith"),
    ];
    for (path, headers, expected) in cases {
        let answer = get(&proxy.url(path), headers).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.json()["upstream"], *expected, "{path} {headers:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewrite_and_respond_change_what_the_route_says() {
    let monolith = Upstream::start("monolith").await;
    let invoices = Upstream::start("invoices").await;
    let yaml = routes_yaml(
        &[("monolith", &monolith.url()), ("invoices", &invoices.url())],
        "monolith",
        MOVES,
    );
    let proxy = Proxy::start(&yaml, &[]);

    let answer = get(&proxy.url("/search/books?v=2"), &[("x-legacy", "1")]).await;
    let seen = answer.json();
    assert_eq!(seen["target"], "/v2/search/books?v=2");
    assert_eq!(seen["headers"]["x-migrated"], "1");
    assert!(seen["headers"].get("x-legacy").is_none());

    let answer = get(&proxy.url("/reports/q3"), &[]).await;
    assert_eq!(answer.status, 501);
    assert_eq!(answer.text(), "reports are moving");
    assert_eq!(answer.headers["x-why"], "migrating");
    assert!(answer.headers.contains_key("x-request-id"));
    assert_eq!(
        monolith.hit_count() + invoices.hit_count(),
        1,
        "respond must not call an upstream"
    );
    // A status without content goes without the body, over HTTP/2 too (where content
    // after such a head resets the stream).
    for client in [client(), h2c_client()] {
        let request = Request::get(proxy.url("/retired"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, 204);
        assert_eq!(answer.text(), "");
        // HEAD gets the head a GET would, with its length and without the body.
        let request = Request::head(proxy.url("/reports/q3"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, 501);
        assert_eq!(answer.headers["content-length"], "18");
        assert_eq!(answer.headers["x-why"], "migrating");
        assert_eq!(answer.text(), "");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_path_is_normalized_before_matching_and_forwarding() {
    let monolith = Upstream::start("monolith").await;
    let invoices = Upstream::start("invoices").await;
    let yaml = routes_yaml(
        &[("monolith", &monolith.url()), ("invoices", &invoices.url())],
        "monolith",
        MOVES,
    );
    let proxy = Proxy::start(&yaml, &[]);
    // A dot-segment must not smuggle a request past the router.
    let answer = get(&proxy.url("/invoices/../orders//%7E1?q"), &[]).await;
    let seen = answer.json();
    assert_eq!(seen["upstream"], "monolith");
    assert_eq!(seen["target"], "/orders/~1?q");
    let answer = get(&proxy.url("//invoices/./7"), &[]).await;
    assert_eq!(answer.json()["upstream"], "invoices");
    assert_eq!(answer.json()["target"], "/invoices/7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_both_ways() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let body = "x".repeat(4 * 1024 * 1024);
    let request = Request::put(proxy.url("/upload"))
        .body(Full::new(Bytes::from(body.clone())))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["body"].as_str().unwrap().len(), body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_pooled_and_reused() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    for _ in 0..20 {
        assert_eq!(get(&proxy.url("/"), &[]).await.status, 200);
    }
    assert_eq!(monolith.hit_count(), 20);
    assert_eq!(
        monolith
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}
