//! `strangler demo`: a toy monolith, one new service, the proxy in front, and sample traffic.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::app;
use crate::config::{DemoArgs, HookArgs, LogFormat, RunArgs, Switch};

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A socket or file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The proxy did not start.
    #[error(transparent)]
    Start(#[from] app::StartError),
}

/// The route file of the demo; `{monolith}` and `{invoices}` become the toy servers' addresses.
const DEMO_ROUTES: &str = r#"# strangler demo: edit me while the demo runs; the proxy reloads within a second.
upstreams:
  monolith: { url: "http://{monolith}" }
  invoices: { url: "http://{invoices}", timeout: 5s }

default: monolith              # step 1: everything else passes through to the monolith

routes:
  - name: invoices             # step 4: /invoices now lives in the new service
    match: { path_prefix: /invoices }
    to: invoices

  - name: reports              # a route that is being rebuilt answers from the file
    match: { path_prefix: /reports }
    respond: { status: 501, body: "reports are moving\n" }

  - name: payroll              # step 2: parallel run; the monolith answers, the service is compared
    match: { path_prefix: /payroll, methods: [GET] }
    shadow:
      primary: monolith
      candidate: invoices
      compare: { ignore_json: ["/served_by"] }
      gate: { min_comparisons: 3, max_mismatch_rate: 1% }

  - name: catalog              # step 3: canary; half of the users, sticky per session cookie
    match: { path_prefix: /catalog }
    canary:
      split: { monolith: 50, invoices: 50 }
      sticky: { cookie: session }
      gate: { min_requests: 50, max_error_rate: 5% }

  - name: orders               # step 5: decorate the monolith with a Lua hook
    match: { path_prefix: /orders }
    to: monolith
    hooks: [decorate.lua]
"#;

/// The hook of the demo's `orders` route.
const DEMO_HOOK: &str = r#"-- Runs around the monolith's /orders without changing it.
function on_response(req, res)
  res.headers:set("x-decorated-by", "strangler hook for route " .. req.route)
end
"#;

/// Run the demo until Ctrl-C (or, with `--once`, until the sample traffic is done).
///
/// # Errors
/// [`DemoError`] when a toy server or the proxy cannot start.
pub async fn run(args: DemoArgs) -> Result<(), DemoError> {
    let monolith = spawn_toy("monolith").await?;
    let invoices = spawn_toy("invoices-service").await?;
    let dir = std::env::temp_dir().join(format!("strangler-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Io {
        what: "creating the demo directory",
        source,
    })?;
    let routes = dir.join("routes.yaml");
    let text = DEMO_ROUTES
        .replace("{monolith}", &monolith.to_string())
        .replace("{invoices}", &invoices.to_string());
    std::fs::write(dir.join("decorate.lua"), DEMO_HOOK).map_err(|source| DemoError::Io {
        what: "writing the demo hook",
        source,
    })?;
    std::fs::write(&routes, text).map_err(|source| DemoError::Io {
        what: "writing the demo route file",
        source,
    })?;

    let run_args = demo_run_args(&args, routes.clone());
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<app::Bound>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let once = args.once;
    let traffic = tokio::spawn(async move {
        let Ok(bound) = started_rx.await else { return };
        let Some(proxy) = bound.proxy.first().copied() else {
            return;
        };
        sample_traffic(proxy, bound.admin).await;
        print_tour(proxy, bound.admin, &routes, once);
        if once {
            let _ = done_tx.send(());
        } else {
            // Keep the sender alive so the demo serves until Ctrl-C.
            std::future::pending::<()>().await;
        }
    });
    let stop = async {
        let _ = done_rx.await;
    };
    let served = app::serve(run_args, stop, Some(started_tx)).await;
    traffic.abort();
    // The route file and hook were the demo's own: leave no directory behind per run.
    let _ = std::fs::remove_dir_all(&dir);
    served?;
    Ok(())
}

fn demo_run_args(args: &DemoArgs, routes: PathBuf) -> RunArgs {
    RunArgs {
        routes,
        listen: vec![args.listen],
        admin: args.admin,
        admin_token_file: None,
        admin_insecure: false,
        // The tour's parallel run must compare every request it sends, however busy the
        // machine running it is.
        shadow_spare_cpu: 0.0,
        diff_log: None,
        log_format: LogFormat::Text,
        access_log: Switch::On,
        max_body: None,
        max_header_bytes: 32 * 1024,
        shutdown_delay: Duration::ZERO,
        grace: Duration::from_secs(5),
        header_timeout: Duration::from_secs(30),
        poll: Duration::from_secs(2),
        workers: None,
        hooks: HookArgs::default(),
    }
}

/// A toy HTTP server on an ephemeral loopback port that says who answered.
async fn spawn_toy(name: &'static str) -> Result<SocketAddr, DemoError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| DemoError::Io {
            what: "binding a toy server",
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| DemoError::Io {
        what: "reading a toy server's address",
        source,
    })?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = service_fn(move |request: Request<Incoming>| async move {
                let body = format!(
                    "{{\"served_by\":\"{name}\",\"method\":\"{}\",\"path\":\"{}\"}}\n",
                    request.method(),
                    request.uri().path()
                );
                let mut response = Response::new(Full::new(Bytes::from(body)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                Ok::<_, Infallible>(response)
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A few requests through the proxy, printed as `GET /path -> status body`.
async fn sample_traffic(proxy: SocketAddr, admin: SocketAddr) {
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    println!("\n== sample traffic through the proxy at http://{proxy} ==");
    let requests = [
        ("/", None),
        ("/invoices/7", None),
        ("/invoices/../orders/1", None),
        ("/reports/q3", None),
        ("/payroll/7", None),
        ("/payroll/8", None),
        ("/payroll/9", None),
        ("/catalog/1", Some("session=alice")),
        ("/catalog/1", Some("session=dave")),
        ("/catalog/1", Some("session=alice")),
        ("/catalog/1", Some("session=dave")),
    ];
    for (path, cookie) in requests {
        let (status, headers, body) =
            fetch(&client, &format!("http://{proxy}{path}"), cookie).await;
        let hook = headers
            .get("x-decorated-by")
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("   [x-decorated-by: {v}]"))
            .unwrap_or_default();
        let who = cookie.map(|c| format!(" ({c})")).unwrap_or_default();
        println!(
            "GET {:<32} -> {status} {}{hook}",
            format!("{path}{who}"),
            body.trim()
        );
    }
    // Comparisons finish after the answers; give the three shadowed requests a moment.
    let url = format!("http://{admin}/diffs/payroll");
    for _ in 0..50 {
        let (_, _, report) = fetch(&client, &url, None).await;
        let summary: serde_json::Value = serde_json::from_str(&report)
            .map(|r: serde_json::Value| r["summary"].clone())
            .unwrap_or_default();
        if summary["comparisons"].as_u64().unwrap_or(0) >= 3 {
            println!(
                "\nparallel run of /payroll: {} comparisons, counts {}, gate {}",
                summary["comparisons"], summary["counts"], summary["gate"]["state"]
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET `url` (with a cookie) and read the whole answer; a failure reads as a 502.
async fn fetch(
    client: &Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<Bytes>,
    >,
    url: &str,
    cookie: Option<&str>,
) -> (u16, http::HeaderMap, String) {
    let mut request = Request::new(http_body_util::Empty::new());
    let Ok(uri) = url.parse::<http::Uri>() else {
        return (
            StatusCode::BAD_REQUEST.as_u16(),
            http::HeaderMap::new(),
            String::new(),
        );
    };
    *request.uri_mut() = uri;
    if let Some(cookie) = cookie.and_then(|c| http::HeaderValue::from_str(c).ok()) {
        request.headers_mut().insert(http::header::COOKIE, cookie);
    }
    match client.request(request).await {
        Ok(response) => {
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (
                head.status.as_u16(),
                head.headers,
                String::from_utf8_lossy(&body).into_owned(),
            )
        }
        Err(err) => (
            StatusCode::BAD_GATEWAY.as_u16(),
            http::HeaderMap::new(),
            err.to_string(),
        ),
    }
}

fn print_tour(proxy: SocketAddr, admin: SocketAddr, routes: &std::path::Path, once: bool) {
    if once {
        println!(
            "\n== done ==\n\
             --once: the demo stops here. Run `strangler demo` without it to try the proxy\n\
             with curl and a browser, and to edit its route file while it runs.\n"
        );
        return;
    }
    println!(
        "\n== try it ==\n\
         curl -i http://{proxy}/invoices/42        # served by the new invoices service\n\
         curl -i http://{proxy}/orders/1           # passes through to the monolith\n\
         curl -i http://{proxy}/reports            # answered from the route file (501)\n\
         curl -i http://{proxy}/payroll/1          # monolith answers; invoices gets a compared copy\n\
         curl -i -b session=you http://{proxy}/catalog/1   # canary, sticky per session\n\
         open http://{admin}/ in a browser         # the dashboard: progress, routes, differences\n\
         curl -i http://{admin}/diffs/payroll      # what the parallel run found\n\
         curl -i http://{admin}/routes             # the active table, pins and gates\n\
         curl -i http://{admin}/readyz             # readiness probe\n\
         \n\
         Edit {} (e.g. delete the invoices route):\n\
         the proxy reloads within a second; an invalid edit is rejected and the old table keeps serving.\n\
         Ctrl-C stops the demo.\n",
        routes.display()
    );
}
