//! Integration tests of the public API: errors, matching, examples and the reloader.
#![allow(clippy::unwrap_used, missing_docs)]

mod integration {
    pub(crate) mod support;

    mod errors;
    mod examples;
    mod matching;
    mod precedence;
    mod reload;
}
