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

use crate::support::{Proxy, client, h2c_client, routes_yaml, send};

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
        // Hop-by-hop fields, a repeated length and a custom field, in mixed case.
        (_, "/hop") => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=5\r\n\
              Connection: keep-alive\r\nProxy-Connection: keep-alive\r\nX-Kept: yes\r\n\
              Content-Length: 2\r\ncontent-length: 2\r\nUpgrade: h2c\r\n\r\nok",
            false,
        ),
        // Fields the proxy's header rules handle: its id replaces the upstream's, its `Via`
        // joins the upstream's, a name listed in `Connection` goes.
        (_, "/rules") => (
            b"HTTP/1.1 200 OK\r\nX-Request-Id: upstream-id\r\nVia: 1.0 cache\r\n\
              Connection: x-private\r\nX-Private: secret\r\nX-Kept: yes\r\n\
              Date: Tue, 01 Dec 2026 10:00:00 GMT\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        // Framed both ways: the chunked coding wins, and the length must not go on.
        (_, "/coded-and-long") => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n\
              2\r\nok\r\n0\r\n\r\n",
            false,
        ),
        // A coding the proxy cannot decode (gzip under chunked): a 502, never coded bytes
        // under a name that no longer says so.
        (_, "/gzip-coded") => (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nzz\r\n0\r\n\r\n",
            false,
        ),
        // For `on_response` hooks to read and edit.
        (_, "/hooked") => (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Replace: old\r\nX-Drop: gone\r\n\
              X-Multi: a\r\nx-multi: b\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        // An HTTP/1.0 server: it closes after each answer.
        (_, "/http10") => (b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok", true),
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

/// An HTTP/1.0 upstream's answer reaches an HTTP/1.1 client as HTTP/1.1: the version is
/// the proxy's, and the client's connection stays open. Through both of the proxy's
/// HTTP/1.1 servers: its own loop (bodiless requests) and hyper (a request with a body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http10_upstream_answers_http11_clients_in_http11() {
    let (upstream, _) = raw_upstream().await;
    let proxy = proxy_to(upstream);
    let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for request in [
        &b"GET /http10 HTTP/1.1\r\nhost: a\r\n\r\n"[..],
        b"POST /http10 HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\n\r\nx",
        b"GET /http10 HTTP/1.1\r\nhost: a\r\n\r\n",
    ] {
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !answer.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("an answer")
                .unwrap();
            assert!(
                n > 0,
                "the connection closed: {}",
                String::from_utf8_lossy(&answer)
            );
            answer.extend_from_slice(&buf[..n]);
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    }
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

/// The header fields of `answer` a client may compare across protocols (not `date`, which
/// the proxy adds when the upstream has none, nor the per-request id); a field repeated
/// with the same value counts once.
fn comparable(answer: &crate::support::Answer) -> Vec<(String, String)> {
    let mut fields: Vec<_> = answer
        .headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
        .collect();
    fields.sort();
    fields.dedup();
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_length_beside_a_transfer_coding_never_reaches_the_client() {
    let (upstream, _) = raw_upstream().await;
    let proxy = proxy_to(upstream);
    // HTTP/1.1 (relayed head) and h2c (header map): the client would wait for 5 bytes.
    for client in [client(), h2c_client()] {
        let answer = call(&client, &proxy, Method::GET, "/coded-and-long").await;
        assert_eq!(
            (answer.status.as_u16(), answer.text().as_str()),
            (200, "ok")
        );
        assert!(
            answer
                .headers
                .get("content-length")
                .is_none_or(|length| length == "2"),
            "{:?}",
            answer.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_coding_the_proxy_cannot_decode_is_a_502() {
    let (upstream, _) = raw_upstream().await;
    let proxy = proxy_to(upstream);
    // GET takes the inline exchange, POST hyper's client: both refuse the answer.
    for (client, method) in [
        (client(), Method::GET),
        (h2c_client(), Method::GET),
        (client(), Method::POST),
    ] {
        let answer = call(&client, &proxy, method.clone(), "/gzip-coded").await;
        assert_eq!(answer.status, 502, "{method}: {}", answer.text());
        assert!(
            answer.text().contains("transfer coding \"gzip\""),
            "{method}: {}",
            answer.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_heads_lose_hop_by_hop_fields_exactly_as_rebuilt_ones_do() {
    let (upstream, _) = raw_upstream().await;
    let proxy = proxy_to(upstream);
    let (http1, http2) = (client(), h2c_client());

    // HTTP/1.1 answers are relayed from the upstream's bytes; h2c answers are rebuilt from
    // a header map by hyper. Both must carry the same fields.
    let relayed = call(&http1, &proxy, Method::GET, "/hop").await;
    let rebuilt = call(&http2, &proxy, Method::GET, "/hop").await;
    assert_eq!(
        (relayed.status.as_u16(), relayed.text().as_str()),
        (200, "ok")
    );
    let expected = |via: &str| {
        [
            ("content-length", "2"),
            ("content-type", "text/plain"),
            ("via", via),
            ("x-kept", "yes"),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .to_vec()
    };
    assert_eq!(comparable(&relayed), expected("1.1 strangler"));
    assert_eq!(comparable(&rebuilt), expected("2 strangler"));
    assert_eq!(relayed.headers.get_all("date").iter().count(), 1);
    // The upstream repeated its length; an HTTP/2 client must get it once (curl resets a
    // stream that has it twice).
    for answer in [&relayed, &rebuilt] {
        assert_eq!(answer.headers.get_all("content-length").iter().count(), 1);
    }

    for answer in [
        call(&http1, &proxy, Method::GET, "/rules").await,
        call(&http2, &proxy, Method::GET, "/rules").await,
    ] {
        assert_eq!(answer.text(), "ok");
        let ids: Vec<_> = answer.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "one id, the proxy's: {ids:?}");
        assert_ne!(ids[0], "upstream-id");
        assert!(
            answer.headers["via"]
                .to_str()
                .unwrap()
                .starts_with("1.0 cache, ")
        );
        assert!(!answer.headers.contains_key("x-private"));
        assert!(!answer.headers.contains_key("connection"));
        assert_eq!(answer.headers["x-kept"], "yes");
        assert_eq!(answer.headers["date"], "Tue, 01 Dec 2026 10:00:00 GMT");
    }
}

/// Reads, replaces, removes and adds fields of the answer, and writes down what it read.
const EDITING_HOOK: &str = r#"
function on_response(req, res)
  local h = res.headers
  if req.path == "/length" then
    h:set("date", "Tue, 01 Dec 2026 10:00:00 GMT")
    return
  end
  h:set("x-seen-type", h:get("content-type"))
  h:set("x-seen-multi", table.concat(h:get_all("x-multi"), "+"))
  h:set("x-seen-via", h:get("via") or "none")
  h:set("x-replace", "new")
  h:remove("x-drop")
  h:add("x-multi", "c")
  h:set("x-after", tostring(h:get("x-drop")) .. "/" .. h:get("x-replace"))
  h:set("x-request-id", "from-hook")
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_response_hooks_edit_relayed_heads_exactly_as_rebuilt_ones() {
    let (upstream, _) = raw_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("edit.lua"), EDITING_HOOK).unwrap();
    let route = "  - name: edited\n    match: { path_prefix: / }\n    to: monolith\n    hooks: [edit.lua]\n";
    let yaml = routes_yaml(
        &[("monolith", &format!("http://{upstream}"))],
        "monolith",
        route,
    );
    std::fs::write(dir.path().join("routes.yaml"), yaml).unwrap();
    let proxy = Proxy::start_in(dir, "routes.yaml", &[]);
    let (http1, http2) = (client(), h2c_client());

    // HTTP/1.1 answers keep the upstream's bytes and the hook reads them in place; h2c
    // answers are header maps. The hook must see and leave the same fields in both.
    let relayed = call(&http1, &proxy, Method::GET, "/hooked").await;
    let rebuilt = call(&http2, &proxy, Method::GET, "/hooked").await;
    let expected = |via: &str| {
        [
            ("content-length", "2"),
            ("content-type", "text/plain"),
            ("via", via),
            ("x-after", "nil/new"),
            ("x-multi", "a"),
            ("x-multi", "b"),
            ("x-multi", "c"),
            ("x-replace", "new"),
            ("x-seen-multi", "a+b"),
            ("x-seen-type", "text/plain"),
            ("x-seen-via", via),
        ]
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .to_vec()
    };
    for (answer, via) in [(&relayed, "1.1 strangler"), (&rebuilt, "2 strangler")] {
        assert_eq!(
            (answer.status.as_u16(), answer.text().as_str()),
            (200, "ok")
        );
        assert_eq!(comparable(answer), expected(via));
        let ids: Vec<_> = answer.headers.get_all("x-request-id").iter().collect();
        assert_eq!(ids.len(), 1, "one id, the proxy's: {ids:?}");
        assert_ne!(ids[0], "from-hook");
    }
    let order: Vec<_> = relayed.headers.get_all("x-multi").iter().collect();
    assert_eq!(order, ["a", "b", "c"]);

    // A date the hook set replaces the proxy's. (The length is the proxy's: see
    // `a_hook_cannot_change_how_a_message_is_framed`.)
    for client in [&http1, &http2] {
        let answer = call(client, &proxy, Method::GET, "/length").await;
        assert_eq!(answer.text(), "hello world");
        assert_eq!(answer.headers.get_all("date").iter().count(), 1);
        assert_eq!(answer.headers["date"], "Tue, 01 Dec 2026 10:00:00 GMT");
        assert_eq!(answer.headers.get_all("content-length").iter().count(), 1);
    }
}
