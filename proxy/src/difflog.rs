//! `--diff-log FILE`: mismatch records appended as JSON lines by one writer task.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

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
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        let (lines, mut queue) = mpsc::channel::<String>(QUEUE);
        tokio::spawn(async move {
            while let Some(line) = queue.recv().await {
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
