//! The hook runtime with real Lua: phases, short-circuit, callouts, budgets, sandbox, bounds.
#![allow(clippy::unwrap_used, missing_docs)]

mod after;
mod limits;
mod phases;
mod sandbox;

#[path = "../support/mod.rs"]
mod support;

use support::*;
