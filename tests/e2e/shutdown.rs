//! SIGTERM: readiness off, keep accepting for --shutdown-delay, stop accepting, let
//! in-flight requests finish, exit 0.

use crate::support::{Proxy, Upstream, get, routes_yaml};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let monolith = Upstream::start("monolith").await;
    let mut proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url, &[("x-test-delay-ms", "1500")]).await });
    // The request is in flight once the upstream has it.
    monolith.wait_for_hits(1).await;
    proxy.signal("TERM");
    proxy.logs.wait_for("stopped accepting");
    let ready = get(&format!("http://{}/readyz", proxy.admin), &[]).await;
    assert_eq!(ready.status, 503, "readiness must be false while draining");
    assert!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "the listener still accepts after SIGTERM"
    );
    let answer = in_flight.await.unwrap();
    assert_eq!(answer.status, 200, "the in-flight request was cut");
    assert_eq!(proxy.wait_exit(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shutdown_delay_readiness_turns_false_while_new_requests_are_still_served() {
    let monolith = Upstream::start("monolith").await;
    let mut proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &["--shutdown-delay", "1s"],
    );
    proxy.signal("TERM");
    proxy
        .logs
        .wait_for("still accepting for the shutdown delay");
    let ready = get(&format!("http://{}/readyz", proxy.admin), &[]).await;
    assert_eq!(
        ready.status, 503,
        "readiness must be false during the delay"
    );
    // A fresh client, so a new connection: the listener still accepts.
    let answer = get(&proxy.url("/late"), &[]).await;
    assert_eq!(answer.status, 200, "a request during the delay was refused");
    assert_eq!(answer.json()["target"], "/late");
    assert_eq!(
        proxy.logs.count("stopped accepting"),
        0,
        "the listeners closed before the delay was over:\n{}",
        proxy.logs.all()
    );
    proxy.logs.wait_for("stopped accepting");
    assert_eq!(proxy.wait_exit(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_cuts_the_shutdown_delay_short() {
    let monolith = Upstream::start("monolith").await;
    let mut proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &["--shutdown-delay", "1h"],
    );
    proxy.signal("TERM");
    proxy
        .logs
        .wait_for("still accepting for the shutdown delay");
    proxy.signal("INT");
    proxy.logs.wait_for("shutdown delay cut short");
    // Well within PATIENCE, far from the hour.
    assert_eq!(proxy.wait_exit(), Some(0));
}

/// While the listeners drain (up to `--grace`), one more signal ends the wait: an operator
/// who presses Ctrl-C twice means it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_signal_while_draining_cuts_the_in_flight_requests() {
    let monolith = Upstream::start("monolith").await;
    // An upstream timeout far beyond the test's patience: only the signal can end it.
    let mut proxy = Proxy::start(
        &format!(
            "upstreams:\n  monolith: {{ url: \"{}\", timeout: 2h }}\ndefault: monolith\n",
            monolith.url()
        ),
        &["--grace", "1h"],
    );
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url, &[("x-test-delay-ms", "3600000")]).await });
    monolith.wait_for_hits(1).await;
    proxy.signal("INT");
    proxy.logs.wait_for("stopped accepting");
    proxy.signal("INT");
    proxy.logs.wait_for("in-flight requests cut");
    // Well within PATIENCE, far from the hour.
    assert_eq!(proxy.wait_exit(), Some(0));
    in_flight.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_liveness_answer_on_the_admin_port() {
    let monolith = Upstream::start("monolith").await;
    let proxy = Proxy::start(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[],
    );
    let health = get(&format!("http://{}/healthz", proxy.admin), &[]).await;
    assert_eq!(health.status, 200);
    let ready = get(&format!("http://{}/readyz", proxy.admin), &[]).await;
    assert_eq!(ready.status, 200);
    let missing = get(&format!("http://{}/nope", proxy.admin), &[]).await;
    assert_eq!(missing.status, 404);
}
