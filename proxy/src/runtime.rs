//! The one snapshot a request needs (route table + upstream pools), and the swap that replaces it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use strangler_routes::{RouteTable, UpstreamId, ValidationErrors};

use crate::upstream::{PoolError, UpstreamPool};

/// Everything a request needs, immutable once built. A request loads it once and keeps it
/// until its exchange ends, so a reload never changes the rules under a request.
pub struct Runtime {
    table: RouteTable,
    pools: Vec<Arc<UpstreamPool>>,
}

/// Why a new runtime could not be built; the running one keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The route file is invalid.
    #[error("{0}")]
    Invalid(#[from] ValidationErrors),
    /// An upstream's pool could not be built.
    #[error("{0}")]
    Pool(#[from] PoolError),
}

impl Runtime {
    /// Build a runtime for `table`, reusing the pools of `previous` whose upstream is unchanged.
    ///
    /// # Errors
    /// [`PoolError`] when an upstream cannot be served by this build.
    pub fn build(table: RouteTable, previous: Option<&Runtime>) -> Result<Self, PoolError> {
        let pools = table
            .upstreams()
            .iter()
            .map(|spec| {
                let reused = previous
                    .and_then(|old| old.pools.iter().find(|pool| pool.serves(spec)))
                    .cloned();
                match reused {
                    Some(pool) => Ok(pool),
                    None => UpstreamPool::new(spec).map(Arc::new),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { table, pools })
    }

    /// The compiled route table.
    pub fn table(&self) -> &RouteTable {
        &self.table
    }

    /// The pool of an upstream of this table.
    pub fn pool(&self, id: UpstreamId) -> &Arc<UpstreamPool> {
        &self.pools[id.0]
    }
}

/// The swappable home of the current [`Runtime`].
pub struct RuntimeStore {
    current: ArcSwap<Runtime>,
    routes_file: PathBuf,
    /// Serializes reloads so two sources (watcher, SIGHUP, admin) never race a swap.
    reload_lock: tokio::sync::Mutex<()>,
}

impl RuntimeStore {
    /// Load `routes_file` and build the first runtime.
    ///
    /// # Errors
    /// [`ReloadError`] when the file is invalid or a pool cannot be built.
    pub fn open(routes_file: &Path) -> Result<Self, ReloadError> {
        let table = strangler_routes::load_file(routes_file)?;
        let runtime = Runtime::build(table, None)?;
        Ok(Self {
            current: ArcSwap::from_pointee(runtime),
            routes_file: routes_file.to_path_buf(),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The runtime to serve one request with; keep the `Arc` for the whole exchange.
    pub fn snapshot(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// The route file this store loads.
    pub fn routes_file(&self) -> &Path {
        &self.routes_file
    }

    /// Re-read the route file, build a complete new runtime beside the running one and swap
    /// it in. On any error nothing changes. Returns the version now serving.
    ///
    /// # Errors
    /// [`ReloadError`] with every validation problem of the file.
    pub async fn reload(&self, cause: &str) -> Result<Arc<Runtime>, ReloadError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let old = self.snapshot();
        let built = strangler_routes::load_file(&self.routes_file)
            .map_err(ReloadError::from)
            .and_then(|table| Runtime::build(table, Some(&old)).map_err(ReloadError::from));
        match built {
            Ok(runtime) => {
                let runtime = Arc::new(runtime);
                let changed = runtime.table().version() != old.table().version();
                self.current.store(runtime.clone());
                tracing::info!(
                    cause,
                    version = runtime.table().version(),
                    changed,
                    routes = runtime.table().routes().len(),
                    "route table loaded"
                );
                Ok(runtime)
            }
            Err(err) => {
                tracing::error!(cause, file = %self.routes_file.display(), "reload rejected, the running table keeps serving:\n{err}");
                Err(err)
            }
        }
    }
}
