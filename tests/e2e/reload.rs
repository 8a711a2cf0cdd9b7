//! Hot reload: every way a route file changes is picked up; an invalid file changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::support::{Proxy, Upstream, admin_get, get, routes_yaml, write_atomically};

fn two_upstreams(monolith: &Upstream, service: &Upstream, routes: &str) -> String {
    routes_yaml(
        &[("monolith", &monolith.url()), ("service", &service.url())],
        "monolith",
        routes,
    )
}

const MOVE_INVOICES: &str =
    "  - name: invoices\n    match: { path_prefix: /invoices }\n    to: service\n";

async fn served_by(proxy: &Proxy, path: &str) -> String {
    get(&proxy.url(path), &[]).await.json()["upstream"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Replace the route file by rename with `text`, and wait for the `nth` reload it causes.
fn swap_routes(proxy: &Proxy, text: &str, nth: usize) {
    write_atomically(&proxy.routes_file(), text);
    proxy.logs.wait_for_count("cause=\"file change\"", nth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_place_write_is_picked_up() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let proxy = Proxy::start(&two_upstreams(&monolith, &service, ""), &[]);
    assert_eq!(served_by(&proxy, "/invoices/1").await, "monolith");
    proxy.rewrite_routes_in_place(&two_upstreams(&monolith, &service, MOVE_INVOICES));
    assert_eq!(served_by(&proxy, "/invoices/1").await, "service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_editor_style_atomic_rename_is_picked_up() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let proxy = Proxy::start(&two_upstreams(&monolith, &service, ""), &[]);
    for round in 0..3 {
        let routes = if round % 2 == 0 { MOVE_INVOICES } else { "" };
        let expected = if round % 2 == 0 {
            "service"
        } else {
            "monolith"
        };
        swap_routes(
            &proxy,
            &two_upstreams(&monolith, &service, routes),
            round + 1,
        );
        assert_eq!(
            served_by(&proxy, "/invoices/1").await,
            expected,
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_configmap_symlink_swap_is_picked_up() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    // The layout the kubelet makes: routes.yaml -> ..data/routes.yaml, ..data -> ..<timestamp>.
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("..2026_11_27_01");
    std::fs::create_dir(&first).unwrap();
    std::fs::write(
        first.join("routes.yaml"),
        two_upstreams(&monolith, &service, ""),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_27_01", dir.path().join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/routes.yaml", dir.path().join("routes.yaml")).unwrap();
    let proxy = Proxy::start_in(dir, "routes.yaml", &[]);
    assert_eq!(served_by(&proxy, "/invoices/1").await, "monolith");

    let root = proxy.dir.path();
    let second = root.join("..2026_11_27_02");
    std::fs::create_dir(&second).unwrap();
    std::fs::write(
        second.join("routes.yaml"),
        two_upstreams(&monolith, &service, MOVE_INVOICES),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_27_02", root.join("..data_tmp")).unwrap();
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
    std::fs::remove_dir_all(root.join("..2026_11_27_01")).unwrap();
    proxy.logs.wait_for("cause=\"file change\"");
    assert_eq!(served_by(&proxy, "/invoices/1").await, "service");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_leaves_the_running_table_serving() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let proxy = Proxy::start(&two_upstreams(&monolith, &service, MOVE_INVOICES), &[]);
    let broken = two_upstreams(
        &monolith,
        &service,
        "  - name: invoices\n    match: { path_prefx: /invoices }\n    to: nowhere\n",
    );
    std::fs::write(proxy.routes_file(), broken).unwrap();
    proxy.logs.wait_for("reload rejected");
    let error = proxy.logs.wait_for("path_prefx");
    assert!(
        error.contains("routes.yaml:"),
        "the error names file and line: {error}"
    );
    assert_eq!(served_by(&proxy, "/invoices/1").await, "service");
    // Fixing the file is picked up as usual.
    proxy.rewrite_routes_in_place(&two_upstreams(&monolith, &service, ""));
    assert_eq!(served_by(&proxy, "/invoices/1").await, "monolith");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let proxy = Proxy::start(&two_upstreams(&monolith, &service, ""), &["--poll", "1h"]);
    proxy.signal("HUP");
    proxy.logs.wait_for("cause=\"SIGHUP\"");
    assert_eq!(served_by(&proxy, "/invoices/1").await, "monolith");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloading_under_load_fails_no_request() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let proxy = Arc::new(Proxy::start(&two_upstreams(&monolith, &service, ""), &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (proxy, stop, ok, failed) = (proxy.clone(), stop.clone(), ok.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let client = crate::support::client();
            while !stop.load(Ordering::SeqCst) {
                let request = http::Request::get(proxy.url("/invoices/9"))
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap();
                match client.request(request).await {
                    Ok(response) if response.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for round in 0..6 {
        let routes = if round % 2 == 0 { MOVE_INVOICES } else { "" };
        swap_routes(
            &proxy,
            &two_upstreams(&monolith, &service, routes),
            round + 1,
        );
    }
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    assert!(ok.load(Ordering::SeqCst) > 0);
    assert!(
        monolith.hit_count() > 0 && service.hit_count() > 0,
        "both tables served"
    );
}

/// A route taken out of the file takes its series out of `/metrics`; the rest keep counting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_routes_series_leave_the_metrics() {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let proxy = Proxy::start(&two_upstreams(&monolith, &service, MOVE_INVOICES), &[]);
    assert_eq!(served_by(&proxy, "/invoices/1").await, "service");
    assert_eq!(served_by(&proxy, "/orders/1").await, "monolith");
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(metrics.contains("route=\"invoices\""), "{metrics}");
    let monolith_answers = |metrics: &str| -> f64 {
        metrics
            .lines()
            .filter(|line| {
                line.starts_with("strangler_requests_total{")
                    && line.contains("upstream=\"monolith\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(monolith_answers(&metrics), 1.0);

    proxy.rewrite_routes_in_place(&two_upstreams(&monolith, &service, ""));
    assert_eq!(served_by(&proxy, "/invoices/1").await, "monolith");
    let metrics = admin_get(&proxy, "/metrics").await.text();
    assert!(!metrics.contains("route=\"invoices\""), "{metrics}");
    assert_eq!(monolith_answers(&metrics), 2.0, "{metrics}");
}

/// An upstream that takes one request, says so on `arrived`, and answers it 200 once
/// `release` fires: a request the test holds in flight for as long as it likes.
async fn held_upstream() -> (String, oneshot::Receiver<()>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (arrived, arrival) = oneshot::channel();
    let (release, released) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the proxy closed before sending its request");
            head.extend_from_slice(&buf[..n]);
        }
        let _ = arrived.send(());
        let _ = released.await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            .await;
    });
    (url, arrival, release)
}

/// A request still in flight when a reload takes its route out of the file finishes, and
/// does not bring the route's series back to `/metrics` when it is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_on_a_removed_route_brings_back_no_series() {
    let monolith = Upstream::start("monolith").await;
    let (held, arrival, release) = held_upstream().await;
    let upstreams = [("monolith", monolith.url()), ("service", held)];
    let upstreams: Vec<_> = upstreams.iter().map(|(n, u)| (*n, u.as_str())).collect();
    let proxy = Proxy::start(&routes_yaml(&upstreams, "monolith", MOVE_INVOICES), &[]);
    let url = proxy.url("/invoices/1");
    let in_flight = tokio::spawn(async move { get(&url, &[]).await });
    arrival
        .await
        .expect("the held upstream never got the request");

    proxy.rewrite_routes_in_place(&routes_yaml(&upstreams, "monolith", ""));
    release.send(()).unwrap();
    assert_eq!(
        in_flight.await.unwrap().text(),
        "ok",
        "the in-flight request was cut"
    );
    // The request is counted when it ends, before the in-flight gauge goes down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        let metrics = admin_get(&proxy, "/metrics").await.text();
        if metrics
            .lines()
            .any(|line| line == "strangler_inflight_requests 0")
        {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!metrics.contains("route=\"invoices\""), "{metrics}");
    // The table now serving counts as before.
    assert_eq!(served_by(&proxy, "/invoices/1").await, "monolith");
}
