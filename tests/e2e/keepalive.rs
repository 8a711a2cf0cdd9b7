//! The client side of HTTP/1.1 as a raw socket sees it: pipelining, a body part-way through
//! a keep-alive connection, `Connection: close`, HEAD, a client too slow with its head, and
//! one that leaves before its answer.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{PATIENCE, Proxy, Upstream, routes_yaml};

/// One response read off a raw connection.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn echo(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// Split `wire` into responses framed by `Content-Length` (`head_only` answers have none).
fn responses(mut wire: &[u8], head_only: &[bool]) -> Vec<Raw> {
    let mut out = Vec::new();
    for &head in head_only {
        let end = wire
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head")
            + 4;
        let text = String::from_utf8_lossy(&wire[..end]).to_string();
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(": "))
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let mut raw = Raw {
            status,
            headers,
            body: Vec::new(),
        };
        assert!(raw.header("transfer-encoding").is_none(), "{text}");
        let length: usize = if head {
            0
        } else {
            raw.header("content-length").unwrap_or("0").parse().unwrap()
        };
        raw.body = wire[end..end + length].to_vec();
        wire = &wire[end + length..];
        out.push(raw);
    }
    assert!(
        wire.is_empty(),
        "unexpected bytes: {}",
        String::from_utf8_lossy(wire)
    );
    out
}

/// A proxy in front of a fresh echo upstream, started with `extra` flags.
async fn proxy_to_monolith(extra: &[&str]) -> (Upstream, Proxy) {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        extra,
    );
    (monolith, proxy)
}

/// A raw connection to `proxy` that has sent `bytes`.
async fn connect_and_send(proxy: &Proxy, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut all))
        .await
        .expect("the proxy closes the connection")
        .unwrap();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_a_body_midway_are_answered_in_order() {
    let (monolith, proxy) = proxy_to_monolith(&[]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /one HTTP/1.1\r\nHost: shop\r\n\r\n\
              HEAD /two HTTP/1.1\r\nHost: shop\r\n\r\n\
              POST /three HTTP/1.1\r\nHost: shop\r\nContent-Length: 5\r\n\r\nhello\
              GET /four HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let wire = read_to_end(&mut stream).await;
    let answers = responses(&wire, &[false, true, false, false]);

    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].echo()["target"], "/one");
    assert!(answers[0].header("x-request-id").is_some());
    assert!(answers[0].header("date").is_some());
    assert_eq!(answers[1].status, 200);
    assert!(answers[1].body.is_empty(), "HEAD has no body");
    let post = answers[2].echo();
    assert_eq!(
        (post["method"].as_str(), post["target"].as_str()),
        (Some("POST"), Some("/three"))
    );
    assert_eq!(post["body"], "hello", "the body reached the upstream whole");
    assert_eq!(answers[3].echo()["target"], "/four");
    assert_eq!(answers[3].header("connection"), Some("close"));
    assert_eq!(monolith.hit_count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_is_answered_then_the_connection_ends() {
    let (monolith, proxy) = proxy_to_monolith(&[]).await;
    let mut stream = connect_and_send(
        &proxy,
        b"GET /bye HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n",
    )
    .await;
    let answers = responses(&read_to_end(&mut stream).await, &[false]);
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].header("connection"), Some("close"));
    assert_eq!(answers[0].echo()["target"], "/bye");
    assert_eq!(monolith.hit_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_too_slow_with_its_head_is_cut_off_after_the_header_timeout() {
    let (monolith, proxy) = proxy_to_monolith(&["--header-timeout", "300ms"]).await;
    // Before connecting: the proxy's clock for this head may start as soon as the
    // handshake completes, before `connect` returns here.
    let started = Instant::now();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(b"GET /slow HTTP/1.1\r\nHo").await.unwrap();
    let wire = read_to_end(&mut stream).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(
        wire.is_empty() || wire.starts_with(b"HTTP/1.1 408"),
        "{wire:?}"
    );
    assert_eq!(monolith.hit_count(), 0);

    // Idle keep-alive time counts too: a connection that never sends is closed as well.
    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    assert!(read_to_end(&mut idle).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_at_shutdown_without_waiting_for_the_grace() {
    let (monolith, mut proxy) = proxy_to_monolith(&["--grace", "60s"]).await;
    let mut stream = connect_and_send(&proxy, b"GET /first HTTP/1.1\r\nHost: shop\r\n\r\n").await;
    // Read the one answer; the connection stays open, idle.
    let mut wire = Vec::new();
    let mut buf = [0u8; 4096];
    while responses_complete(&wire).is_none() {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        wire.extend_from_slice(&buf[..n]);
    }
    assert_eq!(responses(&wire, &[false])[0].status, 200);
    assert_eq!(monolith.hit_count(), 1);

    let signalled = Instant::now();
    proxy.signal("TERM");
    assert!(
        read_to_end(&mut stream).await.is_empty(),
        "nothing more on the idle connection"
    );
    assert_eq!(proxy.wait_exit(), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(30),
        "the drain waited for the idle connection instead of closing it"
    );
}

/// The length of the first complete `Content-Length` response in `wire`, if there is one.
fn responses_complete(wire: &[u8]) -> Option<usize> {
    let end = wire.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&wire[..end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length: "))?
        .trim()
        .parse()
        .ok()?;
    (wire.len() >= end + length).then_some(end + length)
}

/// A client that leaves before its answer aborts the request: the proxy drops the upstream
/// exchange, closing that connection, rather than keep a slow upstream busy for nobody (as
/// nginx does unless told to ignore client aborts, and as Envoy does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_aborts_its_upstream_exchange() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = format!("http://{}", listener.local_addr().unwrap());
    // An upstream timeout far beyond the test's patience: only the abort can end it.
    let proxy = Proxy::start(
        &format!(
            "upstreams:\n  monolith: {{ url: \"{upstream}\", timeout: 10m }}\ndefault: monolith\n"
        ),
        &[],
    );
    let client = connect_and_send(
        &proxy,
        b"GET /slow HTTP/1.1\r\nhost: shop\r\nx-request-id: gave-up-1\r\n\r\n",
    )
    .await;
    let (mut exchange, _) = tokio::time::timeout(PATIENCE, listener.accept())
        .await
        .expect("the request reaches the upstream")
        .unwrap();
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = exchange.read(&mut buf).await.unwrap();
        assert!(n > 0, "the proxy closed before sending the whole request");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(head.starts_with(b"GET /slow HTTP/1.1\r\n"));

    // The upstream never answers; the client gives up.
    drop(client);
    let read = tokio::time::timeout(PATIENCE, exchange.read(&mut buf))
        .await
        .expect("the proxy kept waiting for an answer nobody will read");
    assert_eq!(read.unwrap(), 0, "the upstream connection is closed");
    // Nothing of it is left in flight (the gauge goes down as the exchange is dropped).
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = crate::support::admin_get(&proxy, "/metrics").await.text();
        if metrics
            .lines()
            .any(|line| line == "strangler_inflight_requests 0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Logged and counted as nginx does: 499, client closed request.
    let line = proxy.logs.wait_for("gave-up-1");
    assert!(line.contains("status=499"), "{line}");
    assert!(line.contains("path=\"/slow\""), "{line}");
    let metrics = crate::support::admin_get(&proxy, "/metrics").await.text();
    assert!(
        metrics.contains(
            "strangler_requests_total{code=\"499\",route=\"default\",upstream=\"monolith\"} 1"
        ),
        "{metrics}"
    );
}
