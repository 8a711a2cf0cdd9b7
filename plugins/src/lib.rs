//! Lua hooks around the request path (the "decorate" migration step).
//!
//! Reserved for the hook runtime (mlua with LuaJIT, one sandboxed state per worker); the
//! proxy does not call into this crate yet.
