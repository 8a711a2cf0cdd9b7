//! `--diff-log FILE`: mismatch records appended as JSON lines by one writer task.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::fs::File;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// How many lines may wait for the writer before new ones are dropped (and counted).
const QUEUE: usize = 4096;

/// A handle to the diff-log writer; cheap to share, never blocks the caller.
pub struct DiffLog {
    lines: mpsc::Sender<String>,
    dropped: AtomicU64,
}

impl DiffLog {
    /// Open `path` for appending and start the writer task (needs a tokio runtime).
    ///
    /// # Errors
    /// The I/O error when the file cannot be opened.
    pub async fn open(path: PathBuf) -> std::io::Result<Self> {
        let mut file = append_to(&path).await?;
        let (lines, mut queue) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            while let Some(line) = queue.recv().await {
                // logrotate (without copytruncate) renames the file away and expects the
                // writer to start a new one; a deleted file, likewise. Records are rare
                // (mismatches only): one look at the path per record costs nothing.
                if moved_away(&path, &file).await {
                    match append_to(&path).await {
                        Ok(reopened) => file = reopened,
                        Err(err) => {
                            tracing::error!(file = %path.display(), error = %err, "cannot reopen the diff log");
                        }
                    }
                }
                if let Err(err) = file.write_all(line.as_bytes()).await {
                    tracing::error!(file = %path.display(), error = %err, "cannot write the diff log");
                }
            }
            let _ = file.flush().await;
        });
        Ok(Self {
            lines,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queue one JSON line, newline included ([`MismatchRecord::to_json_line`]); when the
    /// writer is behind, drop it and count it.
    ///
    /// [`MismatchRecord::to_json_line`]: crate::verify::MismatchRecord::to_json_line
    pub fn append(&self, line: String) {
        if self.lines.try_send(line).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "diff log writer is behind; records dropped");
            }
        }
    }
}

/// `path` opened for appending, created if needed.
async fn append_to(path: &Path) -> std::io::Result<File> {
    tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await
}

/// Whether `path` no longer names `file`: renamed away (rotated) or deleted.
async fn moved_away(path: &Path, file: &File) -> bool {
    match (tokio::fs::metadata(path).await, file.metadata().await) {
        (Ok(named), Ok(open)) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
        _ => true,
    }
}
