//! The route file: model, validation, compiled table, matcher and reloader.
//!
//! [`load_file`] (or [`parse_str`]) turns a route file into an immutable [`RouteTable`],
//! reporting every problem at once with file, line and key ([`ValidationErrors`]).
//! [`RouteTable::find`] picks the first matching route in file order for a request whose
//! path went through [`normalize::normalize_path`]; [`RouteTable::explain`] says why.
//! [`reload`] watches the file and says when its content changed.
//!
//! Flow: `file` (serde mirror of the YAML) → `validate` (all errors at once, lines from
//! `locate`) → `table` + `index` (segment trie) + `matching` (predicates).
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::Path;

mod action;
mod error;
mod explain;
mod file;
mod index;
mod lint;
mod locate;
mod matching;
pub mod normalize;
pub mod reload;
mod table;
pub mod units;
mod validate;

pub use action::{
    Action, Canary, CanaryGate, Compare, Hook, Noise, OnError, Respond, Shadow, ShadowGate, Sticky,
};
pub use error::{ConfigError, ValidationErrors, Warning};
pub use explain::{ExplainStep, Explanation};
pub use matching::RequestView;
pub use normalize::{NormalizeError, normalize_path};
pub use reload::{ChangeEvent, ReloadError, Reloader, spawn_watcher, spawn_watcher_files};
pub use table::{Rewrite, Route, RouteTable, Scheme, Upstream, UpstreamId, UpstreamTls};
pub use validate::{SELF_ANSWER_UPSTREAM, UNMATCHED_ROUTE, hex_sha256};

/// Reads, parses and validates the route file at `path`. Relative paths inside the file
/// (e.g. `tls.ca`) resolve against the file's directory.
///
/// # Errors
/// Every problem found, each with file, line and key; an unreadable file is one error
/// with key `file`.
pub fn load_file(path: &Path) -> Result<RouteTable, ValidationErrors> {
    let file_error = |message: String| {
        ValidationErrors::single(ConfigError {
            file: path.to_path_buf(),
            line: None,
            route: None,
            key: "file".to_owned(),
            message,
        })
    };
    let bytes = std::fs::read(path).map_err(|err| file_error(format!("cannot read: {err}")))?;
    let text =
        String::from_utf8(bytes).map_err(|err| file_error(format!("not valid UTF-8: {err}")))?;
    parse_str(path, &text)
}

/// Parses and validates route file content; `source` names the file in messages and is
/// where relative paths resolve from (its directory).
///
/// # Errors
/// Every problem found, each with file, line and key.
pub fn parse_str(source: &Path, text: &str) -> Result<RouteTable, ValidationErrors> {
    validate::compile(source, text)
}
