//! The bearer token that guards the admin endpoint, read from a file and read again when
//! the file changes, so that a rotated Secret takes effect without a restart.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use http::{HeaderMap, header};
use subtle::ConstantTimeEq;

use super::AdminConfigError;

/// The admin endpoint's bearer token.
///
/// Each guarded call looks at the file's metadata (a `stat`; admin calls are rare) and reads
/// the file again when it changed: a Kubernetes Secret volume swaps its files on rotation,
/// and an operator may rewrite the file by hand. A change that leaves the file unreadable or
/// empty keeps the token in force (and says so in the log): a botched rotation must not
/// open the endpoint, nor lock the operator out.
pub struct AdminToken {
    file: PathBuf,
    current: Mutex<Current>,
}

/// The token in force and the state of the file it was read from.
struct Current {
    token: Vec<u8>,
    stamp: Option<Stamp>,
}

/// What tells that the file changed: a new file in its place (an atomic rename, a Secret's
/// swap), a new modification time, a new length. (File times tick by the kernel's coarse
/// clock, so a same-length rewrite in place within one tick would go unseen.)
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

impl AdminToken {
    /// Read the token (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`AdminConfigError::Token`] when unreadable or empty.
    pub fn read(file: &Path) -> Result<Self, AdminConfigError> {
        let stamp = stamp(file);
        let token = read_token(file).map_err(|reason| AdminConfigError::Token {
            file: file.display().to_string(),
            reason,
        })?;
        Ok(Self {
            file: file.to_path_buf(),
            current: Mutex::new(Current { token, stamp }),
        })
    }

    /// Whether `headers` carry `Authorization: Bearer <token>` (the scheme in any case,
    /// RFC 9110 section 11.1) with the token in force, compared in constant time.
    pub(super) fn accepts(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(presented) = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer "))
            .and(value.get(7..))
        else {
            return false;
        };
        let presented = presented.trim_ascii();
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        self.follow_the_file(&mut current);
        presented.ct_eq(&current.token).into()
    }

    /// Reads the file again if it changed since the token in force was read from it.
    fn follow_the_file(&self, current: &mut Current) {
        let stamp = stamp(&self.file);
        if stamp == current.stamp {
            return;
        }
        current.stamp = stamp;
        match read_token(&self.file) {
            Ok(token) if token == current.token => {}
            Ok(token) => {
                current.token = token;
                tracing::info!(file = %self.file.display(), "admin token file changed: the new token is in force");
            }
            Err(reason) => tracing::warn!(
                file = %self.file.display(),
                reason,
                "admin token file changed but holds no usable token: the previous token stays in force"
            ),
        }
    }
}

fn stamp(file: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(file).ok()?;
    Some(Stamp {
        inode: metadata.ino(),
        modified: metadata.modified().ok(),
        len: metadata.len(),
    })
}

/// The token in `file`, or why there is none.
fn read_token(file: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let token = text.trim();
    if token.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(token.as_bytes().to_vec())
}
