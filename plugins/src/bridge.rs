//! The `req`, `res` and `headers` objects a hook sees: Lua userdata over [`HookRequest`] and
//! [`HookResponse`], with the mutability rules of each phase.
//!
//! The synchronous phases reuse one set of these objects per state: the caller's request is
//! moved into the slot before the call and moved back after it (no copy, no allocation),
//! because building fresh userdata costs more than a trivial hook call itself.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mlua::{AnyUserData, Lua, LuaString, Table, UserData, UserDataFields, UserDataMethods, Value};

use crate::hooks::{Flow, HookRequest, Phase};

/// One exchange as the Lua objects see it, shared by `req`, `res` and their `headers`.
///
/// A plain mutex rather than the userdata's own borrow: the Rust side moves the request in
/// and out on every call, and an uncontended lock costs a fraction of an mlua borrow (which
/// locks the state and checks the userdata's type). Never held while Lua code runs.
pub(crate) struct Slot {
    pub(crate) req: HookRequest,
    pub(crate) route: Arc<str>,
    pub(crate) phase: Phase,
    /// Set by `req:respond(..)`.
    pub(crate) flow: Option<Flow>,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
}

/// A `req` and a `res` over one [`Slot`].
pub(crate) struct Views {
    pub(crate) slot: Arc<Mutex<Slot>>,
    pub(crate) req: AnyUserData,
    pub(crate) res: AnyUserData,
}

/// `req`: the request of the exchange.
struct RequestView {
    slot: Arc<Mutex<Slot>>,
    headers: AnyUserData,
}

/// `res`: the response of the exchange.
struct ResponseView {
    slot: Arc<Mutex<Slot>>,
    headers: AnyUserData,
}

/// `req.headers` / `res.headers`.
struct HeadersView {
    slot: Arc<Mutex<Slot>>,
    part: Part,
}

#[derive(Clone, Copy)]
enum Part {
    Request,
    Response,
}

impl Views {
    /// `req` and `res` (with their `headers`) over an empty slot.
    pub(crate) fn create(lua: &Lua) -> mlua::Result<Views> {
        let slot = Arc::new(Mutex::new(Slot {
            req: HookRequest::default(),
            route: Arc::from(""),
            phase: Phase::OnRequest,
            flow: None,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: None,
        }));
        let headers = lua.create_userdata(HeadersView {
            slot: Arc::clone(&slot),
            part: Part::Request,
        })?;
        let req = lua.create_userdata(RequestView {
            slot: Arc::clone(&slot),
            headers,
        })?;
        let headers = lua.create_userdata(HeadersView {
            slot: Arc::clone(&slot),
            part: Part::Response,
        })?;
        let res = lua.create_userdata(ResponseView {
            slot: Arc::clone(&slot),
            headers,
        })?;
        Ok(Views { slot, req, res })
    }

    /// The slot, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Slot> {
        lock(&self.slot)
    }
}

fn lock(slot: &Mutex<Slot>) -> MutexGuard<'_, Slot> {
    // A panic while holding the lock cannot leave the slot half-written in a way that
    // matters: the next call overwrites every field it reads.
    slot.lock().unwrap_or_else(PoisonError::into_inner)
}

impl UserData for RequestView {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("method", |lua, this| {
            lua.create_string(lock(&this.slot).req.method.as_str())
        });
        fields.add_field_method_get("path", |lua, this| {
            lua.create_string(&lock(&this.slot).req.path)
        });
        fields.add_field_method_get("query", |lua, this| {
            lock(&this.slot)
                .req
                .query
                .as_deref()
                .map(|q| lua.create_string(q))
                .transpose()
        });
        fields.add_field_method_get("route", |lua, this| {
            lua.create_string(&*lock(&this.slot).route)
        });
        fields.add_field_method_get("id", |lua, this| {
            lua.create_string(&lock(&this.slot).req.request_id)
        });
        fields.add_field_method_get("client", |_, this| {
            Ok(lock(&this.slot).req.client.ip().to_string())
        });
        fields.add_field_method_get("client_port", |_, this| {
            Ok(lock(&this.slot).req.client.port())
        });
        fields.add_field_method_get("headers", |_, this| Ok(this.headers.clone()));
        fields.add_field_method_set("path", |_, this, path: LuaString| {
            let path = path.to_str()?;
            if !path.starts_with('/') {
                return Err(mlua::Error::runtime("req.path must start with '/'"));
            }
            let mut slot = lock(&this.slot);
            writable(&slot, "path")?;
            slot.req.path = path.to_owned();
            Ok(())
        });
        fields.add_field_method_set("query", |_, this, query: Option<LuaString>| {
            let query = query
                .map(|q| q.to_str().map(|q| q.to_owned()))
                .transpose()?;
            let mut slot = lock(&this.slot);
            writable(&slot, "query")?;
            slot.req.query = query;
            Ok(())
        });
    }

    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        methods.add_method(
            "respond",
            |_, this, (status, body, headers): (Value, Option<LuaString>, Option<Table>)| {
                let status = status_from(&status)?;
                let body = body
                    .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
                    .unwrap_or_default();
                let headers = headers
                    .map(|t| header_map(&t))
                    .transpose()?
                    .unwrap_or_default();
                let mut slot = lock(&this.slot);
                if slot.phase != Phase::OnRequest {
                    return Err(mlua::Error::runtime(format!(
                        "req:respond is only available in on_request, not in {}",
                        slot.phase
                    )));
                }
                slot.flow = Some(Flow::Respond {
                    status,
                    body,
                    headers,
                });
                Ok(())
            },
        );
    }
}

fn writable(slot: &Slot, what: &str) -> mlua::Result<()> {
    if slot.phase == Phase::OnRequest {
        Ok(())
    } else {
        Err(mlua::Error::runtime(format!(
            "req.{what} is read-only in {}",
            slot.phase
        )))
    }
}

impl UserData for ResponseView {
    fn add_fields<F: UserDataFields<Self>>(fields: &mut F) {
        fields.add_field_method_get("status", |_, this| Ok(lock(&this.slot).status.as_u16()));
        fields.add_field_method_get("headers", |_, this| Ok(this.headers.clone()));
        fields.add_field_method_get("body", |lua, this| {
            let body = lock(&this.slot).body.clone();
            body.map(|b| lua.create_string(&b)).transpose()
        });
        fields.add_field_method_set("status", |_, this, status: Value| {
            let status = status_from(&status)?;
            let mut slot = lock(&this.slot);
            if slot.phase != Phase::OnResponse {
                return Err(mlua::Error::runtime(format!(
                    "res.status is read-only in {}",
                    slot.phase
                )));
            }
            slot.status = status;
            Ok(())
        });
    }
}

impl HeadersView {
    /// Runs `f` on the headers; `read_only` says why they may not change, if so.
    fn with<R>(
        &self,
        f: impl FnOnce(&mut HeaderMap, Option<String>) -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        let mut slot = lock(&self.slot);
        let phase = slot.phase;
        match self.part {
            Part::Request => {
                let read_only = (phase != Phase::OnRequest)
                    .then(|| format!("request headers are read-only in {phase}"));
                f(&mut slot.req.headers, read_only)
            }
            Part::Response => {
                let read_only = (phase != Phase::OnResponse)
                    .then(|| format!("response headers are read-only in {phase}"));
                f(&mut slot.headers, read_only)
            }
        }
    }

    fn write(
        &self,
        name: &LuaString,
        f: impl FnOnce(&mut HeaderMap, HeaderName) -> mlua::Result<()>,
    ) -> mlua::Result<()> {
        let name = HeaderName::from_bytes(&name.as_bytes()).map_err(|_| {
            mlua::Error::runtime(format!("invalid header name {:?}", name.to_string_lossy()))
        })?;
        self.with(|headers, read_only| match read_only {
            Some(why) => Err(mlua::Error::runtime(why)),
            None => f(headers, name),
        })
    }
}

impl UserData for HeadersView {
    fn add_methods<M: UserDataMethods<Self>>(methods: &mut M) {
        // An invalid name cannot be present, so reading one gives nil rather than an error.
        methods.add_method("get", |lua, this, name: LuaString| {
            let Ok(name) = HeaderName::from_bytes(&name.as_bytes()) else {
                return Ok(None);
            };
            this.with(|headers, _| {
                headers
                    .get(&name)
                    .map(|v| lua.create_string(v.as_bytes()))
                    .transpose()
            })
        });
        methods.add_method("get_all", |lua, this, name: LuaString| {
            let list = lua.create_table()?;
            if let Ok(name) = HeaderName::from_bytes(&name.as_bytes()) {
                this.with(|headers, _| {
                    for (i, v) in headers.get_all(&name).iter().enumerate() {
                        list.raw_set(i + 1, lua.create_string(v.as_bytes())?)?;
                    }
                    Ok(())
                })?;
            }
            Ok(list)
        });
        // `set(name, nil)` removes, like assigning nil to a table field.
        methods.add_method(
            "set",
            |_, this, (name, value): (LuaString, Option<LuaString>)| {
                let value = value.map(|v| header_value(&v)).transpose()?;
                this.write(&name, |headers, name| {
                    match value {
                        Some(v) => headers.insert(name, v),
                        None => headers.remove(name),
                    };
                    Ok(())
                })
            },
        );
        methods.add_method("add", |_, this, (name, value): (LuaString, LuaString)| {
            let value = header_value(&value)?;
            this.write(&name, |headers, name| {
                headers.append(name, value);
                Ok(())
            })
        });
        methods.add_method("remove", |_, this, name: LuaString| {
            this.write(&name, |headers, name| {
                headers.remove(name);
                Ok(())
            })
        });
    }
}

/// A status code from Lua: an integer in 100..=999.
fn status_from(value: &Value) -> mlua::Result<StatusCode> {
    let code = match value {
        Value::Integer(n) => u16::try_from(*n).ok(),
        Value::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= 999.0 => Some(*n as u16),
        _ => None,
    };
    code.and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            let shown = value
                .to_string()
                .unwrap_or_else(|_| value.type_name().to_string());
            mlua::Error::runtime(format!(
                "invalid status {shown} ({}), expected an integer 100..999",
                value.type_name()
            ))
        })
}

fn header_value(value: &LuaString) -> mlua::Result<HeaderValue> {
    HeaderValue::from_bytes(&value.as_bytes()).map_err(|_| {
        mlua::Error::runtime(format!(
            "invalid header value {:?}",
            value.to_string_lossy()
        ))
    })
}

/// A `{ name = value }` table (values may be strings or numbers) as a header map.
pub(crate) fn header_map(table: &Table) -> mlua::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for pair in table.pairs::<LuaString, LuaString>() {
        let (name, value) = pair?;
        let name = HeaderName::from_bytes(&name.as_bytes()).map_err(|_| {
            mlua::Error::runtime(format!("invalid header name {:?}", name.to_string_lossy()))
        })?;
        headers.append(name, header_value(&value)?);
    }
    Ok(headers)
}

/// A header map as a `{ name = value }` table; repeated names are joined with ", ".
pub(crate) fn header_table(lua: &Lua, headers: &HeaderMap) -> mlua::Result<Table> {
    let table = lua.create_table()?;
    for name in headers.keys() {
        let mut joined: Vec<u8> = Vec::new();
        for (i, v) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        table.raw_set(name.as_str(), lua.create_string(&joined)?)?;
    }
    Ok(table)
}
