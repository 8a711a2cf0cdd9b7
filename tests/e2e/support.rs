//! The harness: real upstream servers, the real `strangler` binary, real clients, on loopback.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long any wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// An echo upstream: answers every request with JSON describing what it received.
///
/// Request headers steer it: `x-test-delay-ms` (answer late), `x-test-status` (answer with
/// that status). An `Upgrade` request is accepted with 101 and then echoes bytes.
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received so far.
    pub hits: Arc<Mutex<Vec<Value>>>,
    /// TCP connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    arrived: Arc<tokio::sync::Notify>,
}

/// A scripted answer: what an upstream replies to one request (given as the echo record).
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(&'static str, String)>,
    /// Response body.
    pub body: Vec<u8>,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    /// A 200 JSON answer.
    pub fn json(value: Value) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: value.to_string().into_bytes(),
            delay: Duration::ZERO,
        }
    }
}

/// How a scripted upstream answers.
pub type Script = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

impl Upstream {
    /// Start an echo upstream named `name`.
    pub async fn start(name: &'static str) -> Upstream {
        Self::start_scripted(name, None).await
    }

    /// Start an upstream that records requests like the echo one but answers with `script`.
    pub async fn scripted(
        name: &'static str,
        script: impl Fn(&Value) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        Self::start_scripted(name, Some(Arc::new(script))).await
    }

    async fn start_scripted(name: &'static str, script: Option<Script>) -> Upstream {
        Self::serve(name, script, None).await
    }

    /// The accept loop of every test upstream: plain, or TLS with `acceptor`.
    async fn serve(
        name: &'static str,
        script: Option<Script>,
        acceptor: Option<tokio_rustls::TlsAcceptor>,
    ) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = hits.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let arrived = Arc::new(tokio::sync::Notify::new());
        let notify = arrived.clone();
        let accepted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let recorded = recorded.clone();
                let notify = notify.clone();
                let script = script.clone();
                let acceptor = acceptor.clone();
                let service = service_fn(move |request| {
                    echo(
                        name,
                        request,
                        recorded.clone(),
                        notify.clone(),
                        script.clone(),
                    )
                });
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .await;
                        }
                        // A proxy that refuses our certificate ends the handshake: nothing
                        // to serve.
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            hits,
            connections,
            arrived,
        }
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wait until at least `count` requests reached this upstream.
    pub async fn wait_for_hits(&self, count: usize) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                let notified = self.arrived.notified();
                if self.hit_count() >= count {
                    return;
                }
                notified.await;
            }
        })
        .await
        .expect("the upstream never got the request");
    }

    /// How many requests reached this upstream.
    pub fn hit_count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }
}

async fn echo(
    name: &'static str,
    mut request: Request<Incoming>,
    hits: Arc<Mutex<Vec<Value>>>,
    arrived: Arc<tokio::sync::Notify>,
    script: Option<Script>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |k: &str| {
        request
            .headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let delay = header("x-test-delay-ms").and_then(|v| v.parse::<u64>().ok());
    let status = header("x-test-status").and_then(|v| v.parse::<u16>().ok());
    if let Some(protocol) = header("upgrade") {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        response
            .headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        response
            .headers_mut()
            .insert("upgrade", protocol.parse().unwrap());
        return Ok(response);
    }
    let mut headers = BTreeMap::new();
    for (k, v) in request.headers() {
        headers.insert(
            k.as_str().to_string(),
            String::from_utf8_lossy(v.as_bytes()).to_string(),
        );
    }
    let method = request.method().to_string();
    let target = request
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = format!("{:?}", request.version());
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let record = json!({
        "upstream": name,
        "method": method,
        "target": target,
        "version": version,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    hits.lock().unwrap().push(record.clone());
    arrived.notify_waiters();
    if let Some(script) = script {
        let reply = script(&record);
        tokio::time::sleep(reply.delay).await;
        let mut response = Response::new(Full::new(Bytes::from(reply.body)));
        *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
        for (name, value) in reply.headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        return Ok(response);
    }
    if let Some(ms) = delay {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut response = Response::new(Full::new(Bytes::from(record.to_string())));
    *response.status_mut() = StatusCode::from_u16(status.unwrap_or(200)).unwrap();
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
        .headers_mut()
        .insert("connection", "x-hop".parse().unwrap());
    response
        .headers_mut()
        .insert("x-hop", "must-not-pass".parse().unwrap());
    response
        .headers_mut()
        .insert("keep-alive", "timeout=5".parse().unwrap());
    Ok(response)
}

/// A port on which nothing listens (bound, then released).
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// Lines the proxy printed, with a way to wait for one.
#[derive(Default)]
pub struct Logs {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Logs {
    /// Wait until at least `count` lines contain `needle`; return the last of them.
    pub fn wait_for_count(&self, needle: &str, count: usize) -> String {
        let deadline = std::time::Instant::now() + PATIENCE;
        let mut lines = self.lines.lock().unwrap();
        loop {
            let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
            if found.len() >= count {
                return found[count - 1].clone();
            }
            let now = std::time::Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {count}× {needle:?}; log:\n{}",
                lines.join("\n")
            );
            lines = self.grew.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    /// Wait for a line containing `needle`.
    pub fn wait_for(&self, needle: &str) -> String {
        self.wait_for_count(needle, 1)
    }

    /// How many lines contain `needle` right now.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Everything printed so far.
    pub fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.grew.notify_all();
    }
}

/// The `strangler` binary running with a route file in its own temporary directory.
pub struct Proxy {
    child: Child,
    /// The proxy listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Directory holding the route file.
    pub dir: tempfile::TempDir,
    /// Everything the proxy logged (stdout and stderr).
    pub logs: Arc<Logs>,
}

/// The path of the `strangler` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_strangler")
}

impl Proxy {
    /// Start the proxy with `routes` written to `routes.yaml`, plus extra flags.
    pub fn start(routes: &str, extra: &[&str]) -> Proxy {
        Self::start_through(routes, extra, &[])
    }

    /// Start the proxy on `file` inside an already prepared `dir`.
    ///
    /// Unless `extra` says otherwise, the route file is polled every 500 ms, and shadow
    /// copies are made however busy the CPUs are (`--shadow-spare-cpu 0%`): the tests run
    /// side by side on few CPUs, and a parallel-run test must get the copies it counts on.
    pub fn start_in(dir: tempfile::TempDir, file: &str, extra: &[&str]) -> Proxy {
        Self::launch(Command::new(binary()), dir, file, extra)
    }

    /// As [`Proxy::start`], through `launcher` unless it is empty: a program and its first
    /// arguments, to which the binary and its arguments are appended (e.g.
    /// `sh -c '...; exec "$0" "$@"'`).
    pub fn start_through(routes: &str, extra: &[&str], launcher: &[String]) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
        let command = match launcher.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary());
                command
            }
            None => Command::new(binary()),
        };
        Self::launch(command, dir, "routes.yaml", extra)
    }

    fn launch(mut command: Command, dir: tempfile::TempDir, file: &str, extra: &[&str]) -> Proxy {
        let default = |flag: &str, value: &'static str| {
            if extra.contains(&flag) {
                Vec::new()
            } else {
                vec![flag.to_string(), value.to_string()]
            }
        };
        let mut child = command
            .args(["run", "--routes"])
            .arg(dir.path().join(file))
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(default("--poll", "500ms"))
            .args(default("--shadow-spare-cpu", "0%"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let logs = Arc::new(Logs::default());
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    logs.push(line);
                }
            });
        }
        let addr = listening(&logs.wait_for("(proxy)"));
        let admin = listening(&logs.wait_for("(admin)"));
        logs.wait_for(" ready");
        Proxy {
            child,
            addr,
            admin,
            dir,
            logs,
        }
    }

    /// The route file's path.
    pub fn routes_file(&self) -> PathBuf {
        self.dir.path().join("routes.yaml")
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Send a signal (`TERM`, `HUP`, ...) to the proxy.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit; its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "proxy did not exit; log:\n{}",
                self.logs.all()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replace the route file in place (same inode) and wait until the proxy reloaded it.
    pub fn rewrite_routes_in_place(&self, routes: &str) {
        let before = self.logs.count("route table loaded");
        std::fs::write(self.routes_file(), routes).unwrap();
        self.logs.wait_for_count("route table loaded", before + 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn listening(line: &str) -> SocketAddr {
    let start = line.find("http://").unwrap() + "http://".len();
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    rest[..end].parse().unwrap()
}

/// Echo upstreams `monolith` (the default) and `service`, and a proxy in front of them
/// with `routes` (route-file lines under `routes:`) and the `extra` flags.
pub async fn monolith_and_service(routes: &str, extra: &[&str]) -> (Upstream, Upstream, Proxy) {
    let (monolith, service) = (
        Upstream::start("monolith").await,
        Upstream::start("service").await,
    );
    let yaml = routes_yaml(
        &[("monolith", &monolith.url()), ("service", &service.url())],
        "monolith",
        routes,
    );
    let proxy = Proxy::start(&yaml, extra);
    (monolith, service, proxy)
}

/// A pooled HTTP/1.1 client, like any application's.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A prior-knowledge HTTP/2 (h2c) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A response read to its end.
pub struct Answer {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (the echo upstream's record).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
}

/// Send `request` with `client` and read the whole answer.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Answer {
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("request timed out")
        .expect("request failed");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET url` with extra headers.
pub async fn get(url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut builder = Request::get(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    send(&client(), builder.body(Full::new(Bytes::new())).unwrap()).await
}

/// Write `text` to `path` atomically: a temporary file in the same directory, then rename.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp~");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A minimal route file: everything to `default_url`, plus `routes`.
pub fn routes_yaml(upstreams: &[(&str, &str)], default: &str, routes: &str) -> String {
    let mut yaml = String::from("upstreams:\n");
    for (name, url) in upstreams {
        yaml.push_str(&format!("  {name}: {{ url: \"{url}\", timeout: 2s }}\n"));
    }
    yaml.push_str(&format!("default: {default}\nroutes:\n{routes}"));
    if routes.trim().is_empty() {
        yaml.push_str("  []\n");
    }
    yaml
}

// TLS helpers (tests/e2e/tls.rs): a test CA made with rcgen, an HTTPS echo upstream and
// clients that either verify against the test CA or accept anything to see what is served.

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM).
    pub pem: String,
    /// The CA certificate (DER).
    pub der: rustls::pki_types::CertificateDer<'static>,
}

/// A server certificate and its key, signed by a [`TestCa`].
pub struct Leaf {
    /// Certificate (PEM).
    pub cert_pem: String,
    /// Private key (PKCS#8 PEM).
    pub key_pem: String,
    /// Certificate (DER), to compare with what a server presents.
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> TestCa {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            der: cert.der().clone(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A server certificate for the DNS names (or IP addresses) `names`.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let key = rcgen::KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "strangler test");
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// Write the CA certificate to `dir/file`; its path.
    pub fn write(&self, dir: &Path, file: &str) -> PathBuf {
        let path = dir.join(file);
        std::fs::write(&path, &self.pem).unwrap();
        path
    }

    /// A client configuration that trusts this CA only, offering `alpn`.
    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(strangler::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

impl Leaf {
    /// Write `STEM.crt` and `STEM.key` to `dir`; their paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }

    /// A server configuration presenting this certificate, with ALPN `h2`, `http/1.1`.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(strangler::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![self.der.clone()], key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

impl Upstream {
    /// Start an echo upstream named `name` that speaks HTTPS with `leaf`'s certificate
    /// (HTTP/1.1 or HTTP/2 as ALPN says).
    pub async fn start_tls(name: &'static str, leaf: &Leaf) -> Upstream {
        let acceptor = tokio_rustls::TlsAcceptor::from(leaf.server_config());
        Self::serve(name, None, Some(acceptor)).await
    }
}

impl Proxy {
    /// The first HTTPS listener (`--listen-tls`).
    pub fn tls_addr(&self) -> SocketAddr {
        let line = self.logs.wait_for("listening on https://");
        let start = line.find("https://").unwrap() + "https://".len();
        let rest = &line[start..];
        let end = rest.find(' ').unwrap_or(rest.len());
        rest[..end].parse().unwrap()
    }
}

/// A pooled HTTPS client trusting `ca` only, verifying the name `server_name` whatever the
/// URL's host (so URLs can use `127.0.0.1`), offering ALPN `h2` and `http/1.1`.
pub fn https_client(
    ca: &TestCa,
    server_name: &str,
) -> Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).unwrap();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(ca.client_config(&[]))
        .https_only()
        .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
        .enable_all_versions()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Send `request` with any pooled `client` and read the whole answer.
pub async fn send_with<C>(client: &Client<C, Full<Bytes>>, request: Request<Full<Bytes>>) -> Answer
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let response = tokio::time::timeout(PATIENCE, client.request(request))
        .await
        .expect("request timed out")
        .expect("request failed");
    let version = response.version();
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    parts.headers.insert(
        "x-test-response-version",
        format!("{version:?}").parse().unwrap(),
    );
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// One HTTP/1.1-over-TLS connection to a proxy's HTTPS listener, opened without verifying
/// the server (the point is to see which certificate it presents).
pub struct TlsConnection {
    /// The certificate the server presented.
    pub certificate: rustls::pki_types::CertificateDer<'static>,
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl TlsConnection {
    /// Connect to `addr`, sending `sni` as the server name (none when `None`).
    pub async fn open(addr: SocketAddr, sni: Option<&str>) -> TlsConnection {
        let mut config = rustls::ClientConfig::builder_with_provider(strangler::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // An IP address as the name: rustls sends no SNI at all.
        let name = match sni {
            Some(name) => rustls::pki_types::ServerName::try_from(name.to_string()).unwrap(),
            None => rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
        };
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let stream = tokio::time::timeout(
            PATIENCE,
            tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .expect("tls handshake timed out")
        .expect("tls handshake failed");
        let certificate = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        TlsConnection {
            certificate,
            sender,
        }
    }

    /// `GET path` on this connection; the status.
    pub async fn get(&mut self, path: &str) -> StatusCode {
        let request = Request::get(path)
            .header("host", "proxy.test")
            .body(Full::new(Bytes::new()))
            .unwrap();
        tokio::time::timeout(PATIENCE, async {
            self.sender.ready().await.unwrap();
            let response = self.sender.send_request(request).await.unwrap();
            let status = response.status();
            response.into_body().collect().await.unwrap();
            status
        })
        .await
        .expect("request timed out")
    }
}

/// Accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAnyCertificate;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &strangler::tls::provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &strangler::tls::provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        strangler::tls::provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// `GET` a path of the proxy's admin endpoint.
pub async fn admin_get(proxy: &Proxy, path: &str) -> Answer {
    get(&format!("http://{}{path}", proxy.admin), &[]).await
}

/// Poll `GET /diffs/{route}` until `done` holds for its summary (comparisons finish after
/// the client has its answer, so there is no response to wait on); the last report.
pub async fn wait_for_diffs(proxy: &Proxy, route: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let report = admin_get(proxy, &format!("/diffs/{route}")).await;
        if report.status == 200 {
            let report = report.json();
            if done(&report["summary"]) {
                return report;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out; last report: {report:#}"
            );
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for /diffs/{route}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The DOM of the page at `url` after headless Chromium loaded it (`--dump-dom`): what a
/// browser makes of the markup, scripts included. Chromium is Debian's `chromium`
/// (`.ci/run` installs it); `STRANGLER_CHROMIUM` names another binary.
pub fn chromium_dom(url: &str) -> String {
    let binary = std::env::var("STRANGLER_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let profile = tempfile::tempdir().unwrap();
    // The flags keep it from dialing out (the machine's network is closed) and let it run
    // as root in a container.
    let output = Command::new(&binary)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(["--dump-dom", url])
        .output()
        .unwrap_or_else(|err| {
            panic!("cannot run {binary} ({err}): install Debian's chromium, as .ci/run does")
        });
    assert!(
        output.status.success(),
        "{binary} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
