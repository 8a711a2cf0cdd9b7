//! Protocols: HTTP/2 without TLS (h2c) and `Upgrade` tunnels such as WebSockets.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{
    Proxy, Upstream, h2c_client, monolith_and_service, routes_yaml, send, write_atomically,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served_and_forwarded_as_http1() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let request = Request::post(proxy.url("/h2?x=1"))
        .body(Full::new(Bytes::from_static(b"over h2")))
        .unwrap();
    let answer = send(&h2c_client(), request).await;
    assert_eq!(answer.status, 200);
    let seen = answer.json();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["target"], "/h2?x=1");
    assert_eq!(seen["body"], "over h2");
    assert_eq!(
        seen["headers"]["host"],
        proxy.addr.to_string(),
        "the :authority becomes Host"
    );
    assert_eq!(seen["headers"]["via"], "2 strangler");
}

/// HTTP/2 clients (browsers) may send `Cookie` as several crumbs; an HTTP/1.1 upstream,
/// which may read only the first `Cookie` field, gets them joined into one (RFC 9113,
/// section 8.2.3), and a route matching on a cookie finds it in any crumb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_crumbs_of_an_h2_client_reach_the_upstream_as_one_field() {
    let (_monolith, _service, proxy) = monolith_and_service(
        "  - name: gold\n    match: { path_prefix: /account, cookie: { tier: gold } }\n    to: service\n",
        &[],
    )
    .await;
    let request = Request::get(proxy.url("/account"))
        .header("cookie", "session=abc")
        .header("cookie", "tier=gold")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let seen = send(&h2c_client(), request).await.json();
    assert_eq!(seen["upstream"], "service", "{seen}");
    assert_eq!(
        seen["headers"]["cookie"], "session=abc; tier=gold",
        "{seen}"
    );
}

/// An HTTP/2 request whose `Host` names another host than its `:authority` is refused
/// (RFC 9113, section 8.3.1): the routes follow `:authority`, the upstream would follow
/// `Host`, and a route matching on the host could be walked around.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_host_field_that_contradicts_the_authority_is_refused() {
    let (monolith, admin, proxy) = monolith_and_service(
        "  - name: admin\n    match: { host: admin.example }\n    to: service\n",
        &[],
    )
    .await;
    let request = Request::get(proxy.url("/users"))
        .header("host", "admin.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(&h2c_client(), request).await;
    assert_eq!(answer.status, 400, "{}", answer.text());
    assert!(answer.text().contains("names another host than :authority"));
    assert_eq!(monolith.hit_count() + admin.hit_count(), 0);
    // The same host in both is fine.
    let request = Request::get(proxy.url("/users"))
        .header("host", proxy.addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&h2c_client(), request).await.status, 200);
}

/// An HTTP/2 connection from which nothing is read for the header timeout is closed
/// (slowloris: part of the preface, or the preface and silence, would hold it for good),
/// while a live client, which answers the proxy's pings, keeps its connection through a
/// request longer than that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_http2_connection_is_closed_and_a_live_one_is_not() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &["--header-timeout", "1s"],
    );
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    for sent in [&preface[..18], preface] {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(sent).await.unwrap();
        let mut buf = [0u8; 1024];
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "a quiet connection ({} bytes) stayed open",
            sent.len()
        );
    }
    let request = Request::get(proxy.url("/long"))
        .header("x-test-delay-ms", "1500")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = send(&h2c_client(), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_speaks_h2c_to_the_proxy() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let url = proxy.url("/curl");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
                &url,
            ])
            .output()
            .expect("curl is installed (.ci/run installs it)")
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2 200",
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn open_tunnel(proxy: &Proxy) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nhost: chat\r\nconnection: Upgrade\r\nupgrade: echo-protocol\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo-protocol"), "{head}");
    stream
}

async fn round_trip(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).await.unwrap();
    let mut echoed = vec![0u8; message.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_requests_become_tunnels_that_survive_a_reload() {
    let monolith = Upstream::start("monolith").await;
    let yaml = routes_yaml(&[("monolith", &monolith.url())], "monolith", "");
    let proxy = Proxy::start(&yaml, &[]);
    let mut tunnel = open_tunnel(&proxy).await;
    round_trip(&mut tunnel, b"hello through the tunnel").await;

    write_atomically(&proxy.routes_file(), &format!("{yaml}# touched\n"));
    proxy.logs.wait_for("cause=\"file change\"");
    round_trip(&mut tunnel, b"still open after the reload").await;
}
