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
use crate::config::{DemoArgs, LogFormat, RunArgs, Switch};

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
        sample_traffic(proxy).await;
        print_tour(proxy, bound.admin, &routes);
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
async fn sample_traffic(proxy: SocketAddr) {
    let client: Client<_, http_body_util::Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    println!("\n== sample traffic through the proxy at http://{proxy} ==");
    for path in ["/", "/invoices/7", "/invoices/../orders/1", "/reports/q3"] {
        let Ok(uri) = format!("http://{proxy}{path}").parse::<http::Uri>() else {
            continue;
        };
        let line = match client.get(uri).await {
            Ok(response) => {
                let status = response.status();
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                format!(
                    "{} {}",
                    status.as_u16(),
                    String::from_utf8_lossy(&body).trim()
                )
            }
            Err(err) => format!("{} {err}", StatusCode::BAD_GATEWAY),
        };
        println!("GET {path:<24} -> {line}");
    }
}

fn print_tour(proxy: SocketAddr, admin: SocketAddr, routes: &std::path::Path) {
    println!(
        "\n== try it ==\n\
         curl -i http://{proxy}/invoices/42        # served by the new invoices service\n\
         curl -i http://{proxy}/orders/1           # passes through to the monolith\n\
         curl -i http://{proxy}/reports            # answered from the route file (501)\n\
         curl -i http://{admin}/readyz             # readiness probe\n\
         \n\
         Edit {} (e.g. delete the invoices route):\n\
         the proxy reloads within a second; an invalid edit is rejected and the old table keeps serving.\n\
         Ctrl-C stops the demo.\n",
        routes.display()
    );
}
