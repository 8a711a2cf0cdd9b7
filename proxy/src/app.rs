//! Wiring of `strangler run`: load, bind, serve, reload, drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, Admin, AdminConfigError, AdminToken, Readiness};
use crate::config::RunArgs;
use crate::metrics::{Metrics, MetricsError};
use crate::pipeline::{Limits, Pipeline};
use crate::runtime::{ReloadError, RuntimeStore};
use crate::server::{self, ServerSettings};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The route file (or an upstream in it) is not usable.
    #[error("cannot load {file}:\n{source}")]
    Routes {
        /// The route file.
        file: PathBuf,
        /// What is wrong with it.
        #[source]
        source: ReloadError,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint's settings are unsafe or unusable.
    #[error(transparent)]
    Admin(#[from] AdminConfigError),
    /// Metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The file watcher could not start.
    #[error("cannot watch the route file: {0}")]
    Watch(String),
}

/// The addresses a started proxy actually listens on (ports chosen by the OS for `:0`).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The proxy listeners.
    pub proxy: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
}

/// Serve until SIGTERM/SIGINT, then drain and return.
///
/// # Errors
/// A [`StartError`] when the proxy cannot start; once serving, it only returns `Ok`.
pub async fn run(args: RunArgs) -> Result<(), StartError> {
    serve(args, std::future::pending(), None).await
}

/// Serve until SIGTERM/SIGINT or until `stop` completes, then drain and return.
/// `started` receives the bound addresses once the proxy is ready.
///
/// # Errors
/// A [`StartError`] when the proxy cannot start; once serving, it only returns `Ok`.
pub async fn serve(
    args: RunArgs,
    stop: impl std::future::Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), StartError> {
    let token = match &args.admin_token_file {
        Some(file) => Some(AdminToken::read(file)?),
        None => None,
    };
    admin::check_exposure(args.admin, token.is_some(), args.admin_insecure)?;
    let metrics = Arc::new(Metrics::new()?);
    let store = RuntimeStore::open(&args.routes, metrics).map_err(|source| StartError::Routes {
        file: args.routes.clone(),
        source,
    })?;
    let store = Arc::new(store);
    for warning in store.snapshot().table().warnings() {
        tracing::warn!("{warning}");
    }
    let limits = Limits {
        max_body: args.max_body,
        max_header_bytes: args.max_header_bytes,
    };
    let settings = ServerSettings {
        header_timeout: args.header_timeout,
        max_head_bytes: usize::try_from(args.max_header_bytes)
            .unwrap_or(usize::MAX)
            .saturating_add(16 * 1024)
            .max(8 * 1024),
        grace: args.grace,
    };
    let pipeline = Arc::new(Pipeline::new(
        store.clone(),
        limits,
        args.access_log.enabled(),
    ));
    let readiness = Arc::new(Readiness::default());
    let admin = Arc::new(Admin::new(store.clone(), readiness.clone(), token));

    let mut terminate = signal(SignalKind::terminate()).map_err(StartError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(StartError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(StartError::Signals)?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut proxies = JoinSet::new();
    let mut bound = Vec::new();
    for addr in &args.listen {
        let listener = bind(*addr).await?;
        bound.extend(announce(&listener, "proxy"));
        proxies.spawn(server::serve(
            listener,
            pipeline.clone(),
            settings,
            "http",
            stop_rx.clone(),
        ));
    }
    let admin_listener = bind(args.admin).await?;
    let admin_addr = announce(&admin_listener, "admin").unwrap_or(args.admin);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        admin,
        settings,
        "http",
        admin_stop_rx,
    ));

    let mut changes = strangler_routes::reload::spawn_watcher(args.routes.clone(), args.poll)
        .map_err(|e| StartError::Watch(e.to_string()))?;
    readiness.set(true);
    tracing::info!(version = store.snapshot().table().version(), "ready");
    if let Some(started) = started {
        let _ = started.send(Bound {
            proxy: bound,
            admin: admin_addr,
        });
    }

    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => { tracing::info!("stop requested: shutting down"); break; }
            _ = terminate.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = interrupt.recv() => { tracing::info!("SIGINT: shutting down"); break; }
            _ = hangup.recv() => { let _ = store.reload("SIGHUP").await; }
            change = changes.recv() => match change {
                Some(_) => { let _ = store.reload("file change").await; }
                None => { tracing::error!("route file watcher stopped"); break; }
            },
        }
    }

    // Readiness first, so load balancers stop sending before the listeners close.
    readiness.set(false);
    let _ = stop_tx.send(true);
    while proxies.join_next().await.is_some() {}
    let _ = admin_stop_tx.send(true);
    let _ = admin_task.await;
    tracing::info!("stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Log the bound address (the port is chosen by the OS for `:0`, tests read it from here).
fn announce(listener: &TcpListener, what: &'static str) -> Option<SocketAddr> {
    let addr = listener.local_addr().ok()?;
    tracing::info!("listening on http://{addr} ({what})");
    Some(addr)
}
