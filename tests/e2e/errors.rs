//! Errors are answers: each failure gets its status, a reason and the request id.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{
    Proxy, Upstream, admin_get, client, closed_port, get, monolith_and_service, routes_yaml, send,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upstream_is_a_502_with_a_reason() {
    let dead = closed_port().await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &format!("http://{dead}"))], "monolith", ""),
        &[],
    );
    let answer = get(&proxy.url("/x"), &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.text().contains("monolith") && answer.text().contains("refused"),
        "{}",
        answer.text()
    );
    assert!(answer.headers.contains_key("x-request-id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_504_after_its_timeout() {
    let monolith = Upstream::start("monolith").await;
    let yaml = format!(
        "upstreams:\n  monolith: {{ url: \"{}\", timeout: 300ms }}\ndefault: monolith\n",
        monolith.url()
    );
    let proxy = Proxy::start(&yaml, &[]);
    let started = std::time::Instant::now();
    let answer = get(&proxy.url("/slow"), &[("x-test-delay-ms", "5000")]).await;
    assert_eq!(answer.status, 504);
    assert!(
        answer.text().contains("did not answer within 300ms"),
        "{}",
        answer.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout did not cut the wait short"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &["--max-header-bytes", "4KiB"],
    );
    let big = "a".repeat(6000);
    let answer = get(&proxy.url("/"), &[("x-big", &big)]).await;
    assert_eq!(answer.status, 431);
    assert!(answer.text().contains("limit is 4096"), "{}", answer.text());
    assert_eq!(monolith.hit_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &["--max-body", "1KiB"],
    );
    let request = Request::post(proxy.url("/upload"))
        .body(Full::new(Bytes::from(vec![b'x'; 2048])))
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, 413);
    assert!(answer.text().contains("1024"));
    assert_eq!(
        monolith.hit_count(),
        0,
        "a declared oversized body never reaches the upstream"
    );

    // Chunked: the size is only known while streaming.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let chunk = "x".repeat(800);
    let raw = format!(
        "POST /upload HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n320\r\n{chunk}\r\n320\r\n{chunk}\r\n0\r\n\r\n"
    );
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    let within = Request::post(proxy.url("/upload"))
        .body(Full::new(Bytes::from(vec![b'x'; 1000])))
        .unwrap();
    assert_eq!(send(&client(), within).await.status, 200);
}

/// The status line and the rest of the answer to `request`, sent raw on a fresh connection.
async fn raw_answer(proxy: &Proxy, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// A `Host` that is no host[:port] is refused (RFC 9112, section 3.2), rather than passed
/// on in Host and X-Forwarded-Host to upstreams that build URLs from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_host_is_a_400() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    for host in ["evil.example/x", "a b", "user@a", "a,b", "a:99999"] {
        let request = format!("GET / HTTP/1.1\r\nhost: {host}\r\n\r\n");
        let response = raw_answer(&proxy, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{host}: {response}");
        assert!(response.contains("invalid Host"), "{host}: {response}");
    }
    assert_eq!(monolith.hit_count(), 0);
    let fine = raw_answer(&proxy, b"GET / HTTP/1.1\r\nhost: shop.example:8080\r\n\r\n").await;
    assert!(fine.starts_with("HTTP/1.1 200"), "{fine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_path_is_a_400() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let response = raw_answer(&proxy, b"GET /a/%zz HTTP/1.1\r\nhost: a\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 400"), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("x-request-id"),
        "{response}"
    );
    assert_eq!(monolith.hit_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_repeated_host_is_a_400() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    for request in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
        b"GET http://a/ HTTP/1.1\r\n\r\n",
    ] {
        let answer = raw_answer(&proxy, request).await;
        assert_eq!(answer.split_whitespace().nth(1), Some("400"), "{answer}");
        assert!(answer.contains("Host header field"), "{answer}");
        assert!(
            answer.to_ascii_lowercase().contains("x-request-id"),
            "{answer}"
        );
    }
    assert_eq!(monolith.hit_count(), 0);
    // HTTP/1.0 may go without one.
    let answer = raw_answer(&proxy, b"GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(answer.split_whitespace().nth(1), Some("200"), "{answer}");
    assert_eq!(monolith.hit_count(), 1);
}

/// A request in absolute form is routed and forwarded by the host its target names, not by
/// its `Host` field (RFC 9112, section 3.2.2); a target with userinfo is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_form_target_names_the_host() {
    let (monolith, service, proxy) = monolith_and_service(
        "  - name: new\n    match: { host: new.example }\n    to: service\n",
        &[],
    )
    .await;
    let answer = raw_answer(
        &proxy,
        b"GET http://new.example/x HTTP/1.1\r\nHost: old.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.split_whitespace().nth(1), Some("200"), "{answer}");
    assert!(answer.contains("\"upstream\":\"service\""), "{answer}");
    assert!(answer.contains("\"host\":\"new.example\""), "{answer}");
    assert!(answer.contains("\"target\":\"/x\""), "{answer}");

    let answer = raw_answer(
        &proxy,
        b"GET http://user@new.example/x HTTP/1.1\r\nHost: new.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.split_whitespace().nth(1), Some("400"), "{answer}");
    assert!(answer.contains("userinfo"), "{answer}");
    assert_eq!(service.hit_count(), 1);
    assert_eq!(monolith.hit_count(), 0);
}

/// What the proxy does not implement is refused, not passed on: a request body under a
/// transfer coding it cannot decode (which would go on still coded under a field that says
/// nothing of it; RFC 9112, sections 6.1 and 6.3), and CONNECT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_proxy_does_not_implement_is_refused_not_passed_on() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let post = |coding: &str| {
        format!(
            "POST /orders HTTP/1.1\r\nhost: a\r\ntransfer-encoding: {coding}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
    };
    for (coding, status) in [
        ("gzip, chunked", "501"),
        ("gzip", "400"),
        ("identity", "400"),
    ] {
        let answer = raw_answer(&proxy, post(coding).as_bytes()).await;
        assert_eq!(
            answer.split_whitespace().nth(1),
            Some(status),
            "{coding}: {answer}"
        );
    }
    // The 400s are hyper's, which cannot frame the body at all; the 501 is the proxy's.
    let answer = raw_answer(&proxy, post("gzip, chunked").as_bytes()).await;
    assert!(
        answer.contains("transfer coding \"gzip\": only chunked is supported"),
        "{answer}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id"),
        "{answer}"
    );
    assert_eq!(
        monolith.hit_count(),
        0,
        "no coded body reached the upstream"
    );
    // Nor does the proxy open tunnels.
    let answer = raw_answer(
        &proxy,
        b"CONNECT db.internal:5432 HTTP/1.1\r\nhost: db.internal:5432\r\n\r\n",
    )
    .await;
    assert_eq!(answer.split_whitespace().nth(1), Some("501"), "{answer}");
    assert!(answer.contains("opens no tunnels"), "{answer}");
    assert_eq!(monolith.hit_count(), 0);
    // The one coding the proxy decodes goes through.
    let answer = raw_answer(&proxy, post("chunked").as_bytes()).await;
    assert_eq!(answer.split_whitespace().nth(1), Some("200"), "{answer}");
    assert_eq!(monolith.hit_count(), 1);
}

/// A request body the client breaks off is the client's fault: 400 with the reason, not a
/// 502 blamed on (and counted against) the upstream it was streaming to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_the_client_breaks_off_is_a_400_not_an_upstream_error() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let broken_chunk =
        b"POST /orders HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";
    let answer = raw_answer(&proxy, broken_chunk).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad request: request body: "), "{answer}");

    // The client stops sending half-way through the length it declared.
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"POST /orders HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nhalf")
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad request: request body: "), "{answer}");

    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(upstream_errors(&metrics) == 0, "{metrics}");
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"400\",route=\"default\",upstream=\"monolith\"} 2"
        ),
        "{metrics}"
    );
}

/// An upstream that answers each request with keep-alive, then closes the connection anyway,
/// the way a server with a short keep-alive timeout races a client reusing the connection.
async fn closing_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                // Closed without `Connection: close`: the proxy's pooled connection goes stale.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pooled_connection_is_retried_for_idempotent_requests() {
    let upstream = closing_upstream().await;
    let proxy = Proxy::start(
        &routes_yaml(
            &[("monolith", &format!("http://{upstream}"))],
            "monolith",
            "",
        ),
        &[],
    );
    let client = client();
    for i in 0..30 {
        let request = Request::get(proxy.url("/"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, 200, "request {i}: {}", answer.text());
    }
}

/// The upstream's `timeout` is its time to answer: it starts once the client's body is in,
/// so an upload slower than it is served, not a 504 blamed on the upstream. A body that
/// stops arriving for `--header-timeout` is the client's 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_no_upstream_timeout_and_a_stalled_one_is_a_408() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &format!(
            "upstreams:\n  monolith: {{ url: \"{}\", timeout: 300ms }}\ndefault: monolith\n",
            monolith.url()
        ),
        &["--header-timeout", "1s"],
    );
    // 12 bytes over some 1.2 s: four times the upstream's timeout, never a second idle.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"PUT /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 12\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        slow.write_all(b"x").await.unwrap();
    }
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("xxxxxxxxxxxx"),
        "the echo has the body: {answer}"
    );

    // Part of the body, then nothing.
    let stalled = raw_answer(
        &proxy,
        b"PUT /upload HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\nonly this",
    )
    .await;
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(stalled.contains("no data from the client"), "{stalled}");
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        upstream_errors(&metrics) == 0,
        "neither is the upstream's fault:\n{metrics}"
    );
}

/// A head that is not HTTP (a malformed field name, a bad version, a target with raw
/// quotes, too many fields) gets the reason and a request id, and is logged and counted,
/// where the HTTP library's own answer was an empty 400 no log or metric saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_head_is_answered_with_its_reason_logged_and_counted() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let many: String = (0..120).map(|i| format!("x-{i}: y\r\n")).collect();
    let cases: [(String, &str, &str); 4] = [
        (
            "GET / HTTP/1.1\r\nhost: a\r\nbad name: x\r\n\r\n".into(),
            "400",
            "invalid header name",
        ),
        (
            "GET / HTTP/1.2\r\nhost: a\r\n\r\n".into(),
            "400",
            "invalid HTTP version",
        ),
        (
            "GET /?q=\"x\" HTTP/1.1\r\nhost: a\r\n\r\n".into(),
            "400",
            "invalid request target",
        ),
        (
            format!("GET / HTTP/1.1\r\nhost: a\r\n{many}\r\n"),
            "431",
            "more than 100 header fields",
        ),
    ];
    for (request, status, reason) in &cases {
        let answer = raw_answer(&proxy, request.as_bytes()).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
        assert!(answer.contains(reason), "{answer}");
        let id_line = answer
            .lines()
            .find(|line| line.to_ascii_lowercase().starts_with("x-request-id: "))
            .unwrap_or_else(|| panic!("no request id: {answer}"));
        let id = &id_line["x-request-id: ".len()..];
        let logged = proxy
            .logs
            .wait_for(&format!("request_id=\"{id}\" method=-"));
        assert!(logged.contains(&format!("status={status}")), "{logged}");
    }
    assert_eq!(monolith.hit_count(), 0);
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"400\",route=\"default\",upstream=\"monolith\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"431\",route=\"default\",upstream=\"monolith\"} 1"
        ),
        "{metrics}"
    );
}

/// The sum of `strangler_upstream_errors_total` over its series (each upstream has its
/// series from the start, at zero).
fn upstream_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("strangler_upstream_errors_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
