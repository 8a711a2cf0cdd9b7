//! Lua hooks around the request path (the "decorate" migration step): sandboxed LuaJIT
//! states, the hook API scripts program against, and budgets that keep a bad script from
//! hurting the proxy.
//!
//! The proxy sees no Lua type. At reload it compiles each route's scripts into a
//! [`HookChain`]; per request it calls the [`Hooks`] phases on the route's [`LuaHooks`]:
//!
//! ```
//! use std::sync::Arc;
//! use http::{HeaderValue, Method, StatusCode};
//! use strangler_plugins::{
//!     Exchange, Flow, HookChain, HookConfig, HookEngine, HookEntry, HookRequest, HookResponse,
//!     HookScript, Hooks, NoCallouts, NoObserver, OnError, Submission,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Runtime::new()?;
//! # runtime.block_on(async {
//! // Start-up: one engine for the life of the process.
//! let engine = HookEngine::new(HookConfig::default(), Arc::new(NoObserver))?;
//!
//! // Reload: compile (a syntax error here fails the reload, naming script and line)...
//! let script = HookScript::from_source(
//!     "plugins/tag.lua".as_ref(),
//!     r#"
//!     function on_request(req)
//!       if req.headers:get("x-block") then return req:respond(403, "blocked") end
//!       req.headers:set("x-tagged", "1")
//!     end
//!     function on_response(req, res) res.headers:set("x-route", req.route) end
//!     "#
//!     .to_string(),
//! )?;
//! let chain = HookChain::new("orders", vec![HookEntry { script, on_error: OnError::Fail }]);
//! // ...and bind the chain with the route file's upstreams for `http.request`.
//! let hooks = engine.hooks(chain, Arc::new(NoCallouts));
//!
//! // Per request, on the worker thread that serves it.
//! let mut req = Box::new(HookRequest {
//!     method: Method::POST,
//!     path: "/orders".into(),
//!     request_id: HeaderValue::from_static("req-1"),
//!     ..HookRequest::default()
//! });
//! match hooks.on_request(&mut req) {
//!     Ok(Flow::Continue) => {}                           // forward `req` as the hooks left it
//!     Ok(Flow::Respond { status, .. }) => { let _ = status; } // answer without an upstream
//!     Err(e) => { let _ = e; }                           // 500 with the request id
//! }
//! assert_eq!(req.headers["x-tagged"], "1");
//!
//! let mut res = HookResponse { status: StatusCode::CREATED, ..HookResponse::default() };
//! hooks.on_response(&mut req, &mut res)?;                // Err: 500 as well
//! assert_eq!(res.headers["x-route"], HeaderValue::from_static("orders"));
//!
//! // After the client has its answer: never waits, never fails the exchange.
//! let exchange = Exchange { request: req, response: res, body: None };
//! assert_eq!(hooks.after_response(exchange), Submission::Skipped); // no after_response here
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```
//!
//! The Lua API and the sandbox are described in this crate's `README.md`; budgets in
//! [`HookConfig`]; states and threads in [`HookEngine`].
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod bridge;
mod callout;
mod config;
mod engine;
mod error;
mod hooks;
mod patterns;
mod sandbox;
mod script;
mod shared;
mod state;
mod worker;

pub use callout::{CalloutRequest, CalloutResponse, Callouts, NoCallouts};
pub use config::HookConfig;
pub use engine::{HookEngine, LuaHooks};
pub use error::{HookError, HookFailure, PluginError, PluginErrorKind};
pub use hooks::{
    Exchange, Flow, HookObserver, HookRequest, HookResponse, Hooks, NoHooks, NoObserver, OnError,
    Phase, Phases, RunResult, Submission, UpstreamFields,
};
pub use script::{HookChain, HookEntry, HookScript};
