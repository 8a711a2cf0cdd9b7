//! Wiring of `strangler run`: load, bind, serve, reload (routes and certificates), drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::admin::{self, Admin, AdminConfigError, AdminToken, Readiness};
use crate::config::{RunArgs, TlsArgs};
use crate::cpu::SpareCpu;
use strangler_plugins::HookEngine;

use crate::difflog::DiffLog;
use crate::metrics::{Metrics, MetricsError};
use crate::pipeline::{Limits, Pipeline};
use crate::runtime::{ReloadError, RuntimeStore, Shared};
use crate::server::{self, ServerSettings, Transport};
use crate::tls::{self, CertResolver, CertSet, TlsError};
use crate::verify::Verifiers;

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
    /// The Lua hook engine could not start its thread.
    #[error("cannot start the hook engine: {0}")]
    Hooks(#[source] std::io::Error),
    /// The diff log cannot be opened.
    #[error("cannot open the diff log {file}: {source}")]
    DiffLog {
        /// The file.
        file: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// The file watcher could not start.
    #[error("cannot watch the route file: {0}")]
    Watch(String),
    /// The TLS flags or certificate files are unusable.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// The certificate watcher could not start.
    #[error("cannot watch the tls certificate files: {0}")]
    WatchCertificates(String),
}

/// The addresses a started proxy actually listens on (ports chosen by the OS for `:0`).
#[derive(Debug, Clone)]
pub struct Bound {
    /// The plain proxy listeners.
    pub proxy: Vec<SocketAddr>,
    /// The HTTPS proxy listeners.
    pub tls: Vec<SocketAddr>,
    /// The admin listener.
    pub admin: SocketAddr,
}

/// Serve until SIGTERM/SIGINT, then drain and return.
///
/// # Errors
/// A [`StartError`] when the proxy cannot start; once serving, it only returns `Ok`.
pub async fn run(args: RunArgs, tls: TlsArgs) -> Result<(), StartError> {
    serve_with_tls(args, tls, std::future::pending(), None).await
}

/// [`serve_with_tls`] without HTTPS listeners.
///
/// # Errors
/// A [`StartError`] when the proxy cannot start; once serving, it only returns `Ok`.
pub async fn serve(
    args: RunArgs,
    stop: impl std::future::Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), StartError> {
    serve_with_tls(args, TlsArgs::default(), stop, started).await
}

/// Serve until SIGTERM/SIGINT or until `stop` completes, then drain and return.
/// `started` receives the bound addresses once the proxy is ready.
///
/// # Errors
/// A [`StartError`] when the proxy cannot start (including unreadable or mismatched
/// certificate files, named with the reason); once serving, it only returns `Ok`.
pub async fn serve_with_tls(
    args: RunArgs,
    tls_args: TlsArgs,
    stop: impl std::future::Future<Output = ()>,
    started: Option<tokio::sync::oneshot::Sender<Bound>>,
) -> Result<(), StartError> {
    let cert_pairs = tls_args.pairs()?;
    // Certificates are checked before anything binds: a bad pair is a start-up error.
    let resolver = match cert_pairs.is_empty() {
        true => None,
        false => Some(Arc::new(CertResolver::new(CertSet::load(&cert_pairs)?))),
    };
    let token = match &args.admin_token_file {
        Some(file) => Some(AdminToken::read(file)?),
        None => None,
    };
    admin::check_exposure(args.admin, token.is_some(), args.admin_insecure)?;
    let diff_log = match &args.diff_log {
        Some(path) => Some(Arc::new(DiffLog::open(path.clone()).await.map_err(
            |source| StartError::DiffLog {
                file: path.clone(),
                source,
            },
        )?)),
        None => None,
    };
    let (trips, mut tripped) = tokio::sync::mpsc::unbounded_channel();
    let metrics = Arc::new(Metrics::new()?);
    let hooks =
        HookEngine::new(args.hooks.config(), metrics.hook_runs()).map_err(StartError::Hooks)?;
    let spare_cpu = SpareCpu::new(args.shadow_spare_cpu);
    let cpu_sampler = spare_cpu.spawn_sampler();
    let shared = Arc::new(Shared {
        metrics,
        verifiers: Verifiers::new(),
        diff_log,
        trips,
        hooks,
        spare_cpu,
    });
    let store = RuntimeStore::open(&args.routes, shared).map_err(|source| StartError::Routes {
        file: args.routes.clone(),
        source,
    })?;
    let store = Arc::new(store);
    // Failing canary gates pin their route through the same switch as the admin API.
    let gate_store = store.clone();
    tokio::spawn(async move {
        while let Some(trip) = tripped.recv().await {
            if let Ok(true) = gate_store.pin_by_gate(&trip).await {
                gate_store.metrics().canary_rollback(&trip.route);
                tracing::warn!(route = %trip.route, reason = %trip.reason, "canary rolled back");
            }
        }
    });
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
        handshake_timeout: args.header_timeout,
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
            Transport::Plain,
            stop_rx.clone(),
        ));
    }
    let mut bound_tls = Vec::new();
    if let Some(resolver) = &resolver {
        let acceptor = tokio_rustls::TlsAcceptor::from(resolver.server_config()?);
        for addr in &tls_args.listen_tls {
            let listener = bind(*addr).await?;
            bound_tls.extend(announce_as(&listener, "https", "proxy"));
            proxies.spawn(server::serve(
                listener,
                pipeline.clone(),
                settings,
                Transport::Tls(acceptor.clone()),
                stop_rx.clone(),
            ));
        }
    }
    let admin_listener = bind(args.admin).await?;
    let admin_addr = announce(&admin_listener, "admin").unwrap_or(args.admin);
    let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
    let admin_task = tokio::spawn(server::serve(
        admin_listener,
        admin,
        settings,
        Transport::Plain,
        admin_stop_rx,
    ));

    // The route file and the files it names (hook scripts, CA bundles), re-set by the
    // store after every reload.
    let (mut changes, watcher) = strangler_routes::reload::spawn_watcher_files(
        store.snapshot().table().watched_files(),
        args.poll,
    )
    .map_err(|e| StartError::Watch(e.to_string()))?;
    store.watch_with(watcher);
    let rotation = match &resolver {
        Some(resolver) => {
            let store = store.clone();
            let count = move |ok: bool| {
                store
                    .metrics()
                    .reloaded(ok, store.snapshot().table().version());
            };
            let task = tls::rotation::spawn(resolver.clone(), cert_pairs, args.poll, count)
                .map_err(|e| StartError::WatchCertificates(e.to_string()))?;
            Some(task)
        }
        None => None,
    };
    readiness.set(true);
    tracing::info!(version = store.snapshot().table().version(), "ready");
    if let Some(started) = started {
        let _ = started.send(Bound {
            proxy: bound,
            tls: bound_tls,
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
    if !args.shutdown_delay.is_zero() {
        // Kubernetes removes a terminating pod from its endpoints at the same time as it
        // sends SIGTERM, and the proxies in front take a moment to notice: closing the
        // listeners at once would refuse the requests they still send. A second signal
        // (an impatient Ctrl-C) skips the rest of the wait.
        tracing::info!(delay = ?args.shutdown_delay, "not ready; still accepting for the shutdown delay");
        tokio::select! {
            () = tokio::time::sleep(args.shutdown_delay) => {}
            _ = terminate.recv() => tracing::info!("SIGTERM again: shutdown delay cut short"),
            _ = interrupt.recv() => tracing::info!("SIGINT again: shutdown delay cut short"),
        }
    }
    if let Some(rotation) = rotation {
        rotation.abort();
    }
    if let Some(sampler) = cpu_sampler {
        sampler.abort();
    }
    let _ = stop_tx.send(true);
    // In-flight requests get up to --grace to finish; another signal (an operator who will
    // not wait) ends them now, as nginx's fast shutdown does.
    loop {
        tokio::select! {
            joined = proxies.join_next() => if joined.is_none() { break },
            _ = terminate.recv() => { tracing::warn!("SIGTERM again: in-flight requests cut"); break; }
            _ = interrupt.recv() => { tracing::warn!("SIGINT again: in-flight requests cut"); break; }
        }
    }
    proxies.abort_all();
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
    announce_as(listener, "http", what)
}

fn announce_as(
    listener: &TcpListener,
    scheme: &'static str,
    what: &'static str,
) -> Option<SocketAddr> {
    let addr = listener.local_addr().ok()?;
    tracing::info!("listening on {scheme}://{addr} ({what})");
    Some(addr)
}
