//! strangler: a reverse proxy for migrating a monolith to microservices one route at a time.
//!
//! The request path, top to bottom: [`server`] accepts → [`pipeline`] takes one
//! [`runtime`] snapshot, normalizes and matches → [`dispatch`] runs the route's strategy
//! ([`upstream`] pools do the forwarding) → the answer streams back; failures become answers
//! in [`error`].
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod app;
pub mod body;
pub mod check;
pub mod config;
pub mod cpu;
pub mod decorate;
pub mod demo;
pub mod difflog;
pub mod dispatch;
pub mod error;
pub mod headers;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod random;
pub mod runtime;
pub mod server;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod window;
mod wire;
