//! Watches the route file (and files it refers to) and reports content changes.
//!
//! A watch on the file itself dies at the first editor-style atomic rename or Kubernetes
//! ConfigMap swap, so the parent directories are watched instead, without filtering by
//! name (a ConfigMap swap only produces events for `..data`). Events are debounced,
//! then the files are re-read and a content hash is compared with the last one seen:
//! only a real change is reported. A slow poll does the same comparison as a safety net
//! for file systems that do not deliver events. This is the only module that uses
//! notify and tokio; it does not parse anything, the receiver calls
//! [`load_file`](crate::load_file).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

/// Quiet time after the last file system event before the files are re-read.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// Upper bound on the debounce when events keep coming.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// The watched files' content changed (one event per detected change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEvent {
    /// Hex SHA-256 over the watched files' contents (not the route table version).
    pub content_hash: String,
}

/// Why a watcher could not be started.
#[derive(Debug, Error)]
pub enum ReloadError {
    /// The watcher was started outside a tokio runtime.
    #[error("the route file watcher must be started inside a tokio runtime")]
    NoRuntime,
    /// The operating system refused to watch a directory.
    #[error("cannot watch directory {dir}: {source}")]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
}

/// Handle to a running watcher: changes the set of watched files. Dropping it does not
/// stop the watcher (dropping the event receiver does).
#[derive(Debug, Clone)]
pub struct Reloader {
    files: watch::Sender<Vec<PathBuf>>,
}

struct State {
    files: Vec<PathBuf>,
    dirs: BTreeSet<PathBuf>,
    watcher: RecommendedWatcher,
    last_hash: String,
}

/// Watches `path`'s directory and sends one [`ChangeEvent`] per content change of
/// `path`, polling every `poll_every` as a safety net. Must be called inside a tokio
/// runtime; the watcher task ends when the receiver is dropped.
///
/// # Errors
/// Outside a tokio runtime, or when the directory cannot be watched.
pub fn spawn_watcher(
    path: PathBuf,
    poll_every: Duration,
) -> Result<mpsc::Receiver<ChangeEvent>, ReloadError> {
    spawn_watcher_files(vec![path], poll_every).map(|(events, _handle)| events)
}

/// Like [`spawn_watcher`] for several files (the route file first, then e.g.
/// [`RouteTable::watched_files`](crate::RouteTable::watched_files)); the returned
/// [`Reloader`] replaces the set after each successful reload.
///
/// # Errors
/// Outside a tokio runtime, or when a directory cannot be watched.
pub fn spawn_watcher_files(
    files: Vec<PathBuf>,
    poll_every: Duration,
) -> Result<(mpsc::Receiver<ChangeEvent>, Reloader), ReloadError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| ReloadError::NoRuntime)?;
    let (fs_tx, fs_rx) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // The receiver is gone only when the task has ended; nothing left to notify.
        let _ = fs_tx.send(event);
    })
    .map_err(|source| ReloadError::Watch {
        dir: PathBuf::new(),
        source,
    })?;
    let mut state = State {
        last_hash: content_hash(&files),
        files: Vec::new(),
        dirs: BTreeSet::new(),
        watcher,
    };
    state.set_files(files.clone())?;
    let (events_tx, events_rx) = mpsc::channel(4);
    let (files_tx, files_rx) = watch::channel(files);
    runtime.spawn(run(state, fs_rx, files_rx, events_tx, poll_every));
    Ok((events_rx, Reloader { files: files_tx }))
}

impl Reloader {
    /// Replaces the watched files (the route file first). The new set's current content
    /// becomes the baseline: call this right after loading the table that named them. The
    /// set being watched already changes nothing: resetting its baseline could hide a write
    /// that landed after the caller read the files.
    pub fn set_files(&self, files: Vec<PathBuf>) {
        self.files.send_if_modified(|watched| {
            let changed = *watched != files;
            if changed {
                *watched = files;
            }
            changed
        });
    }

    /// The files being watched now.
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.borrow().clone()
    }
}

async fn run(
    mut state: State,
    mut fs_events: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    mut files: watch::Receiver<Vec<PathBuf>>,
    events: mpsc::Sender<ChangeEvent>,
    poll_every: Duration,
) {
    let mut poll = tokio::time::interval(poll_every.max(Duration::from_millis(10)));
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    poll.tick().await;
    let mut first_event: Option<Instant> = None;
    let mut deadline: Option<Instant> = None;
    let mut files_open = true;
    loop {
        let debounce = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = events.closed() => break,
            Some(event) = fs_events.recv() => {
                if is_relevant(&event) {
                    let now = Instant::now();
                    let first = *first_event.get_or_insert(now);
                    deadline = Some((now + DEBOUNCE).min(first + MAX_DEBOUNCE));
                }
            }
            () = debounce => {
                first_event = None;
                deadline = None;
                if !state.check(&events).await {
                    break;
                }
            }
            _ = poll.tick() => {
                if !state.check(&events).await {
                    break;
                }
            }
            changed = files.changed(), if files_open => {
                if changed.is_err() {
                    files_open = false;
                    continue;
                }
                let new_files = files.borrow_and_update().clone();
                if let Err(err) = state.set_files(new_files) {
                    tracing::warn!(error = %err, "route file watcher: cannot watch a new file");
                }
                state.last_hash = content_hash(&state.files);
            }
        }
    }
    tracing::debug!("route file watcher stopped");
}

impl State {
    /// Re-reads the files; sends an event if their content changed. Returns false when
    /// nobody listens any more.
    async fn check(&mut self, events: &mpsc::Sender<ChangeEvent>) -> bool {
        let files = self.files.clone();
        let hash = tokio::task::spawn_blocking(move || content_hash(&files))
            .await
            .unwrap_or_default();
        if hash.is_empty() || hash == self.last_hash {
            return true;
        }
        self.last_hash = hash.clone();
        tracing::info!(hash = %hash, "watched file content changed");
        events
            .send(ChangeEvent { content_hash: hash })
            .await
            .is_ok()
    }

    /// Watches the parent directory of every file (and of its symlink target).
    fn set_files(&mut self, files: Vec<PathBuf>) -> Result<(), ReloadError> {
        let mut wanted = BTreeSet::new();
        for file in &files {
            wanted.insert(parent_dir(file));
            if let Ok(target) = std::fs::canonicalize(file) {
                wanted.insert(parent_dir(&target));
            }
        }
        for dir in self.dirs.difference(&wanted) {
            let _ = self.watcher.unwatch(dir);
        }
        for dir in wanted.difference(&self.dirs) {
            self.watcher
                .watch(dir, RecursiveMode::NonRecursive)
                .map_err(|source| ReloadError::Watch {
                    dir: dir.clone(),
                    source,
                })?;
        }
        self.dirs = wanted;
        self.files = files;
        Ok(())
    }
}

/// Our own reads show up as `Access` events: reacting to them would loop.
fn is_relevant(event: &notify::Result<notify::Event>) -> bool {
    match event {
        Ok(event) => !matches!(event.kind, EventKind::Access(_)),
        Err(_) => true,
    }
}

fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Hash over every file's path and content (a missing file hashes as missing).
fn content_hash(files: &[PathBuf]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.as_os_str().as_encoded_bytes());
        match std::fs::read(file) {
            Ok(bytes) => {
                hasher.update([1]);
                hasher.update(Sha256::digest(&bytes));
            }
            Err(_) => hasher.update([0]),
        }
    }
    crate::validate::hex(&hasher.finalize())
}
