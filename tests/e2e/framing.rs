//! Upstream answers framed every way HTTP/1.1 allows reach the client intact, and the
//! upstream connection is reused exactly when the framing allows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::{Proxy, client, routes_yaml, send};

/// The canned answer for a request line, and whether the connection ends after it.
fn answer_for(method: &str, path: &str) -> (&'static [u8], bool) {
    match (method, path) {
        (_, "/chunked") => (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-framing: chunked\r\n\r\n\
              5;note=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: dropped\r\n\r\n",
            false,
        ),
        ("HEAD", "/length") => (b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n", false),
        (_, "/length") => (
            b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world",
            false,
        ),
        (_, "/nothing") => (b"HTTP/1.1 204 No Content\r\n\r\n", false),
        (_, "/early-hints") => (
            b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n\
              HTTP/1.1 200 Fine Thanks\r\ncontent-length: 2\r\n\r\nok",
            false,
        ),
        (_, "/until-close") => (b"HTTP/1.1 200 OK\r\n\r\nhello world", true),
        _ => (b"SMTP ready\r\n\r\n", true),
    }
}

/// A raw HTTP/1.1 upstream serving [`answer_for`] on keep-alive connections; counts the
/// connections it accepts.
async fn raw_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut pending = Vec::new();
                let mut buf = vec![0u8; 8192];
                loop {
                    let end = loop {
                        if let Some(at) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                            break at + 4;
                        }
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&pending[..end]).to_string();
                    pending.drain(..end);
                    let mut words = head.split_whitespace();
                    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                    let (answer, close) = answer_for(method, path);
                    if stream.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// A proxy whose default upstream is `upstream`.
fn proxy_to(upstream: std::net::SocketAddr) -> Proxy {
    Proxy::start(
        &routes_yaml(
            &[("monolith", &format!("http://{upstream}"))],
            "monolith",
            "",
        ),
        &[],
    )
}

/// `method path` through the proxy, read to the end.
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: &Proxy,
    method: Method,
    path: &str,
) -> crate::support::Answer {
    let request = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .body(Full::new(Bytes::new()))
        .unwrap();
    send(client, request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_framing_arrives_intact_and_keep_alive_is_honoured() {
    let (upstream, accepted) = raw_upstream().await;
    let proxy = proxy_to(upstream);
    let client = client();

    let chunked = call(&client, &proxy, Method::GET, "/chunked").await;
    assert_eq!(chunked.status, 200);
    assert_eq!(chunked.text(), "hello world");
    assert_eq!(chunked.headers["x-framing"], "chunked");
    assert!(!chunked.headers.contains_key("x-trailer"));

    let length = call(&client, &proxy, Method::GET, "/length").await;
    assert_eq!(
        (length.status.as_u16(), length.text().as_str()),
        (200, "hello world")
    );
    assert_eq!(length.headers["content-length"], "11");

    let head = call(&client, &proxy, Method::HEAD, "/length").await;
    assert_eq!(head.status, 200);
    assert_eq!(
        head.headers["content-length"], "11",
        "HEAD keeps the length it announces"
    );
    assert!(head.body.is_empty());

    let nothing = call(&client, &proxy, Method::GET, "/nothing").await;
    assert_eq!(nothing.status, 204);
    assert!(nothing.body.is_empty());

    let hinted = call(&client, &proxy, Method::GET, "/early-hints").await;
    assert_eq!(
        (hinted.status.as_u16(), hinted.text().as_str()),
        (200, "ok")
    );

    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "five answers framed by length, chunks or status share one upstream connection"
    );

    let closing = call(&client, &proxy, Method::GET, "/until-close").await;
    assert_eq!(
        (closing.status.as_u16(), closing.text().as_str()),
        (200, "hello world")
    );
    let again = call(&client, &proxy, Method::GET, "/length").await;
    assert_eq!(again.text(), "hello world");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a body that ends with the connection takes the connection with it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_is_not_http_is_a_502_saying_so() {
    let (upstream, _) = raw_upstream().await;
    let proxy = proxy_to(upstream);
    let answer = call(&client(), &proxy, Method::GET, "/smtp").await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.text().contains("monolith") && answer.text().contains("invalid response"),
        "{}",
        answer.text()
    );
    assert!(answer.headers.contains_key("x-request-id"));
}
