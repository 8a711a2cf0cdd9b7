//! Certificate rotation: watch the pair files, reload the whole set, swap it in or keep the old.

use std::sync::Arc;
use std::time::Duration;

use strangler_routes::reload::{ReloadError, spawn_watcher_files};
use tokio::task::JoinHandle;

use super::{CertPair, CertResolver, CertSet};

/// Watch the files of `pairs` (their directories, so renames and Kubernetes Secret symlink
/// swaps are seen, with a poll every `poll` as a safety net) and, on every content change,
/// load the whole set again and swap it into `resolver`. A set that fails to load is
/// logged and dropped; the previous one keeps serving. `on_reload` is told the outcome
/// (for the reload metric). The task ends when it is aborted.
///
/// # Errors
/// [`ReloadError`] when the watcher cannot start (outside a runtime, unwatchable directory).
pub fn spawn(
    resolver: Arc<CertResolver>,
    pairs: Vec<CertPair>,
    poll: Duration,
    on_reload: impl Fn(bool) + Send + 'static,
) -> Result<JoinHandle<()>, ReloadError> {
    let mut files = Vec::new();
    for pair in &pairs {
        for file in [&pair.cert, &pair.key] {
            if !files.contains(file) {
                files.push(file.clone());
            }
        }
    }
    let (mut changes, _files) = spawn_watcher_files(files, poll)?;
    Ok(tokio::spawn(async move {
        while changes.recv().await.is_some() {
            let pairs = pairs.clone();
            let loaded = tokio::task::spawn_blocking(move || CertSet::load(&pairs)).await;
            match loaded {
                Ok(Ok(set)) => {
                    let count = set.pairs().count();
                    resolver.replace(set);
                    on_reload(true);
                    tracing::info!(
                        pairs = count,
                        "tls certificates reloaded; new handshakes use them"
                    );
                }
                Ok(Err(err)) => {
                    on_reload(false);
                    tracing::error!(
                        "tls certificate reload rejected, the previous certificates keep serving: {err}"
                    );
                }
                Err(err) => {
                    on_reload(false);
                    tracing::error!(error = %err, "tls certificate reload failed");
                }
            }
        }
    }))
}
