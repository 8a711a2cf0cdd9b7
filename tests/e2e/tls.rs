//! TLS: the HTTPS listener (SNI, ALPN, rotation, start-up errors) and `https://` upstreams
//! (private CA, name override, HTTP/2 by ALPN, verification failures), with certificates
//! made by rcgen in each test.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;

use crate::support::{
    Leaf, Proxy, TestCa, TlsConnection, Upstream, binary, get, https_client, routes_yaml,
    send_with, write_atomically,
};

/// `--listen-tls 127.0.0.1:0` plus one `--tls-cert`/`--tls-key` per pair.
fn tls_flags(pairs: &[(&Path, &Path)]) -> Vec<String> {
    let mut flags = vec!["--listen-tls".to_string(), "127.0.0.1:0".to_string()];
    for (cert, key) in pairs {
        flags.push("--tls-cert".into());
        flags.push(cert.display().to_string());
        flags.push("--tls-key".into());
        flags.push(key.display().to_string());
    }
    flags
}

fn start_with_tls(routes: &str, pairs: &[(&Path, &Path)]) -> Proxy {
    let flags = tls_flags(pairs);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    Proxy::start(routes, &flags)
}

/// A proxy in front of an echo upstream, serving `leaf` for `localhost` on its TLS port.
async fn proxy_with(leaf: &Leaf, dir: &Path) -> (Upstream, Proxy) {
    let monolith = Upstream::start("monolith").await;
    let (cert, key) = leaf.write(dir, "server");
    let proxy = start_with_tls(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[(&cert, &key)],
    );
    (monolith, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_requests_reach_a_plain_upstream_marked_as_https() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let (_monolith, proxy) = proxy_with(&ca.leaf(&["localhost"]), dir.path()).await;
    let url = format!("https://{}/orders?x=1", proxy.tls_addr());
    let request = Request::post(url)
        .body(Full::new(Bytes::from_static(b"over tls")))
        .unwrap();
    let answer = send_with(&https_client(&ca, "localhost"), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(
        answer.headers["x-test-response-version"], "HTTP/2.0",
        "ALPN picks h2 when the client offers it"
    );
    let seen = answer.json();
    assert_eq!(seen["target"], "/orders?x=1");
    assert_eq!(seen["body"], "over tls");
    assert_eq!(seen["version"], "HTTP/1.1", "h2 in, HTTP/1.1 out");
    assert_eq!(seen["headers"]["x-forwarded-proto"], "https");

    // The plain listener keeps working beside it, and says so.
    let plain = get(&proxy.url("/plain"), &[]).await;
    assert_eq!(plain.json()["headers"]["x-forwarded-proto"], "http");
}

/// An `http://` URL for the HTTPS port (a typo, a health check with the wrong scheme) gets
/// a 400 that says so, as with nginx, rather than TLS bytes shown as garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_request_on_the_https_port_is_told_why_it_failed() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let (monolith, proxy) = proxy_with(&ca.leaf(&["localhost"]), dir.path()).await;
    let plain = get(&format!("http://{}/orders", proxy.tls_addr()), &[]).await;
    assert_eq!(plain.status, 400);
    assert_eq!(
        plain.text(),
        "bad request: a plain HTTP request was sent to HTTPS port\n"
    );
    assert_eq!(plain.headers["connection"], "close");
    assert_eq!(monolith.hit_count(), 0);
    // TLS clients are served as before.
    let url = format!("https://{}/orders", proxy.tls_addr());
    let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let answer = send_with(&https_client(&ca, "localhost"), request).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_negotiates_h2_and_http1_by_alpn() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let (_monolith, proxy) = proxy_with(&ca.leaf(&["localhost"]), dir.path()).await;
    let port = proxy.tls_addr().port();
    let curl = |version: &'static str| {
        let ca_file = ca_file.clone();
        tokio::task::spawn_blocking(move || {
            let output = Command::new("curl")
                .args(["-sS", "--max-time", "10", version, "--cacert"])
                .arg(&ca_file)
                .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
                .args(["-o", "/dev/null", "-w", "%{http_version} %{http_code}"])
                .arg(format!("https://localhost:{port}/alpn"))
                .output()
                .expect("curl is installed (.ci/run installs it)");
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        })
    };
    assert_eq!(curl("--http2").await.unwrap(), "2 200");
    assert_eq!(curl("--http1.1").await.unwrap(), "1.1 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_that_names_the_host() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let first = ca.leaf(&["a.test"]);
    let wildcard = ca.leaf(&["*.b.test", "b.test"]);
    let (cert_a, key_a) = first.write(dir.path(), "a");
    let (cert_b, key_b) = wildcard.write(dir.path(), "b");
    let monolith = Upstream::start("monolith").await;
    let proxy = start_with_tls(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[(&cert_a, &key_a), (&cert_b, &key_b)],
    );
    let addr = proxy.tls_addr();
    for (sni, expected, why) in [
        (Some("a.test"), &first, "named by the first pair"),
        (Some("b.test"), &wildcard, "named by the second pair"),
        (Some("api.b.test"), &wildcard, "matched by the wildcard"),
        (
            Some("unknown.test"),
            &first,
            "unknown names get the first pair",
        ),
        (None, &first, "no SNI gets the first pair"),
    ] {
        let mut connection = TlsConnection::open(addr, sni).await;
        assert!(connection.certificate == expected.der, "{sni:?}: {why}");
        assert_eq!(connection.get("/sni").await, 200);
    }
}

/// Kubernetes mounts a Secret as `tls.crt -> ..data/tls.crt`, `..data -> ..<version>/`,
/// and rotates it by swapping `..data` atomically.
fn mount_secret(dir: &Path, version: &str, leaf: &Leaf) {
    let versioned = dir.join(version);
    std::fs::create_dir(&versioned).unwrap();
    leaf.write(&versioned, "tls");
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        let link = dir.join(file);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), &link).unwrap();
        }
    }
}

async fn metric(proxy: &Proxy, line_start: &str) -> f64 {
    let text = get(&format!("http://{}/metrics", proxy.admin), &[])
        .await
        .text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_served_to_new_connections_and_old_ones_keep_working() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (ca.leaf(&["proxy.test"]), ca.leaf(&["proxy.test"]));
    mount_secret(dir.path(), "..v1", &old);
    let monolith = Upstream::start("monolith").await;
    let proxy = start_with_tls(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[(&dir.path().join("tls.crt"), &dir.path().join("tls.key"))],
    );
    let addr = proxy.tls_addr();
    let mut open = TlsConnection::open(addr, Some("proxy.test")).await;
    assert!(open.certificate == old.der);
    assert_eq!(open.get("/before").await, 200);

    mount_secret(dir.path(), "..v2", &new);
    proxy.logs.wait_for("tls certificates reloaded");

    let mut fresh = TlsConnection::open(addr, Some("proxy.test")).await;
    assert!(
        fresh.certificate == new.der,
        "new handshakes get the new pair"
    );
    assert_eq!(fresh.get("/fresh").await, 200);
    assert_eq!(
        open.get("/after").await,
        200,
        "the open connection is untouched"
    );
    assert!(
        metric(&proxy, "strangler_config_reloads_total{result=\"success\"}").await >= 1.0,
        "counted as a reload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_rotation_is_rejected_and_the_old_certificate_keeps_serving() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let old = ca.leaf(&["proxy.test"]);
    let (cert, key) = old.write(dir.path(), "server");
    let monolith = Upstream::start("monolith").await;
    let proxy = start_with_tls(
        &routes_yaml(&[("monolith", &monolith.url())], "monolith", ""),
        &[(&cert, &key)],
    );
    let addr = proxy.tls_addr();

    // A new certificate without its key: it does not match the key on disk.
    write_atomically(&cert, &ca.leaf(&["proxy.test"]).cert_pem);
    let line = proxy.logs.wait_for("tls certificate reload rejected");
    assert!(line.contains("do not belong together"), "{line}");
    assert!(
        line.contains("server.crt") && line.contains("server.key"),
        "{line}"
    );

    let mut connection = TlsConnection::open(addr, Some("proxy.test")).await;
    assert!(
        connection.certificate == old.der,
        "the old pair keeps serving"
    );
    assert_eq!(connection.get("/still").await, 200);
    assert!(
        metric(&proxy, "strangler_config_reloads_total{result=\"failure\"}").await >= 1.0,
        "counted as a failed reload"
    );

    // Garbage is rejected too, and the old pair still serves.
    write_atomically(&cert, "not a certificate\n");
    let line = proxy
        .logs
        .wait_for_count("tls certificate reload rejected", 2);
    assert!(line.contains("no certificate found"), "{line}");
    let connection = TlsConnection::open(addr, Some("proxy.test")).await;
    assert!(connection.certificate == old.der);
}

fn start_failure(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        routes_yaml(&[("monolith", "http://127.0.0.1:9")], "monolith", ""),
    )
    .unwrap();
    let output = Command::new(binary())
        .args(["run", "--routes"])
        .arg(&routes)
        .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).to_string(),
    )
}

#[test]
fn unusable_certificate_files_stop_start_up_naming_the_file_and_reason() {
    let ca = TestCa::new("test ca");
    let dir = tempfile::tempdir().unwrap();
    let (cert_a, _) = ca.leaf(&["a.test"]).write(dir.path(), "a");
    let (_, key_b) = ca.leaf(&["b.test"]).write(dir.path(), "b");
    let (cert, key) = (cert_a.to_str().unwrap(), key_b.to_str().unwrap());

    let (code, stderr) = start_failure(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{cert} and {key} do not belong together")),
        "{stderr}"
    );

    let missing = dir.path().join("missing.key");
    let (code, stderr) = start_failure(&[
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot read {}", missing.display())),
        "{stderr}"
    );

    let (code, stderr) = start_failure(&["--listen-tls", "127.0.0.1:0"]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--listen-tls needs a certificate"),
        "{stderr}"
    );
}

/// A route file with one `https://` upstream on 127.0.0.1 and `tls` settings.
fn https_upstream(addr: std::net::SocketAddr, ca: &Path, server_name: &str, http2: bool) -> String {
    format!(
        "upstreams:\n  secure: {{ url: \"https://{addr}\", timeout: 2s, http2: {http2}, \
         tls: {{ ca: \"{}\", server_name: {server_name} }} }}\ndefault: secure\nroutes: []\n",
        ca.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_with_a_private_ca_is_verified_and_used() {
    let ca = TestCa::new("private ca");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = ca.write(dir.path(), "ca.pem");
    let service = Upstream::start_tls("service", &ca.leaf(&["service.test"])).await;
    for http2 in [false, true] {
        let proxy = Proxy::start(
            &https_upstream(service.addr, &ca_file, "service.test", http2),
            &[],
        );
        let answer = get(&proxy.url("/secure"), &[]).await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let seen = answer.json();
        assert_eq!(seen["upstream"], "service");
        let expected = if http2 { "HTTP/2.0" } else { "HTTP/1.1" };
        assert_eq!(
            seen["version"], expected,
            "http2: {http2} is negotiated by ALPN"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_that_fails_verification_is_a_502_saying_why() {
    let real_ca = TestCa::new("real ca");
    let other_ca = TestCa::new("other ca");
    let dir = tempfile::tempdir().unwrap();
    let service = Upstream::start_tls("service", &real_ca.leaf(&["service.test"])).await;

    let wrong_ca = other_ca.write(dir.path(), "other.pem");
    let proxy = Proxy::start(
        &https_upstream(service.addr, &wrong_ca, "service.test", false),
        &[],
    );
    let answer = get(&proxy.url("/secure"), &[]).await;
    assert_eq!(answer.status, 502);
    assert!(
        answer.text().contains("unknown issuer (UnknownIssuer)"),
        "{}",
        answer.text()
    );
    let line = proxy.logs.wait_for("request failed");
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert_eq!(service.hit_count(), 0);

    let right_ca = real_ca.write(dir.path(), "real.pem");
    let proxy = Proxy::start(
        &https_upstream(service.addr, &right_ca, "elsewhere.test", false),
        &[],
    );
    let answer = get(&proxy.url("/secure"), &[]).await;
    assert_eq!(answer.status, 502);
    let text = answer.text();
    assert!(
        text.contains("name mismatch (NotValidForName)") && text.contains("elsewhere.test"),
        "{text}"
    );
}
