//! The `req`, `res` and `headers` objects a hook sees over [`HookRequest`] and
//! [`HookResponse`], with the mutability rules of each phase.
//!
//! The synchronous phases reuse one set of these objects per state: the caller's request is
//! moved into the slot before the call and moved back after it (no copy, no allocation),
//! because building fresh objects costs more than a trivial hook call itself.
//!
//! Every call from Lua into Rust costs far more than the work of a trivial hook (mlua checks
//! and borrows a userdata for each), so what a typical hook touches is reached without one:
//! in the synchronous phases `req`/`res` are proxies (bare userdata) whose `headers` (and
//! `req.respond`) are found by metatable lookups, and each `headers` object holds plain
//! functions. The other fields go through the `req`/`res` userdata views, which also serve
//! `after_response` as they are.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use mlua::{
    AnyUserData, BString, Function, Lua, LuaString, Table, UserData, UserDataFields,
    UserDataMethods, Value,
};

use crate::hooks::{Flow, HookRequest, Phase, UpstreamFields};

/// One exchange as the Lua objects see it, shared by `req`, `res` and their `headers`.
///
/// A plain mutex rather than the userdata's own borrow: the Rust side moves the request in
/// and out on every call, and an uncontended lock costs a fraction of an mlua borrow (which
/// locks the state and checks the userdata's type). Never held while Lua code runs.
pub(crate) struct Slot {
    pub(crate) req: Box<HookRequest>,
    pub(crate) route: Arc<str>,
    pub(crate) phase: Phase,
    /// Set by `req:respond(..)`.
    pub(crate) flow: Option<Flow>,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    /// The answer's fields as the upstream sent them, read before `headers` (see
    /// [`HookResponse::upstream`](crate::HookResponse::upstream)).
    pub(crate) upstream: Option<UpstreamFields>,
    pub(crate) body: Option<Bytes>,
}

/// A `req` and a `res` over one [`Slot`], as userdata.
pub(crate) struct Views {
    pub(crate) slot: Arc<Mutex<Slot>>,
    pub(crate) req: AnyUserData,
    pub(crate) res: AnyUserData,
    /// `req.headers` and `res.headers`, shared with the userdata.
    headers: [AnyUserData; 2],
}

/// `req` and `res` as proxies in front of the [`Views`] userdata.
///
/// Each is a bare Lua userdata (no Rust value behind it) whose metatable finds `headers`
/// (and `respond`) in a table of fields, and everything else, read or assigned, in the
/// view: the same fields with the same errors, while `res.headers` costs two table lookups
/// and no call into Rust. A userdata has no fields of its own, so nothing a script does
/// (`rawset`, `table.insert`) can leave something on these shared objects for the next
/// request; the metatable is locked against scripts.
pub(crate) struct Proxies {
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

#[derive(Clone, Copy)]
enum Part {
    Request,
    Response,
}

impl Views {
    /// `req` and `res` (with their `headers`) over an empty slot.
    pub(crate) fn create(lua: &Lua) -> mlua::Result<Views> {
        let slot = Arc::new(Mutex::new(Slot {
            req: Box::default(),
            route: Arc::from(""),
            phase: Phase::OnRequest,
            flow: None,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            upstream: None,
            body: None,
        }));
        let headers = [
            headers_object(lua, &slot, Part::Request)?,
            headers_object(lua, &slot, Part::Response)?,
        ];
        let req = lua.create_userdata(RequestView {
            slot: Arc::clone(&slot),
            headers: headers[0].clone(),
        })?;
        let res = lua.create_userdata(ResponseView {
            slot: Arc::clone(&slot),
            headers: headers[1].clone(),
        })?;
        Ok(Views {
            slot,
            req,
            res,
            headers,
        })
    }

    /// `req` and `res` as proxies over these views (see [`Proxies`]).
    pub(crate) fn proxies(&self, lua: &Lua) -> mlua::Result<Proxies> {
        let [req_headers, res_headers] = &self.headers;
        let req_fields = lua.create_table()?;
        req_fields.raw_set("headers", req_headers)?;
        let slot = Arc::clone(&self.slot);
        let respond = lua.create_function(
            move |_,
                  (_, status, body, headers): (
                AnyUserData,
                Value,
                Option<LuaString>,
                Option<Table>,
            )| { respond(&slot, &status, body, headers) },
        )?;
        req_fields.raw_set("respond", respond)?;
        let res_fields = lua.create_table()?;
        res_fields.raw_set("headers", res_headers)?;
        Ok(Proxies {
            req: proxy(lua, &self.req, req_fields)?,
            res: proxy(lua, &self.res, res_fields)?,
        })
    }

    /// The slot, locked.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Slot> {
        lock(&self.slot)
    }
}

/// Builds a proxy (`...` = its fields table, its view): a bare userdata that reads the
/// fields first, then the view, and assigns through the view.
const PROXY_OBJECT: &str = r#"
local fields, view = ...
local object = newproxy(true)
local meta = getmetatable(object)
meta.__index = fields
meta.__newindex = view
meta.__metatable = false
return object
"#;

/// A proxy that reads `fields` first, then `view`, and assigns through `view`.
fn proxy(lua: &Lua, view: &AnyUserData, fields: Table) -> mlua::Result<AnyUserData> {
    let fallback = lua.create_table()?;
    fallback.raw_set("__index", view)?;
    fields.set_metatable(Some(fallback))?;
    lua.load(PROXY_OBJECT)
        .set_name("=strangler")
        .call((fields, view))
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
            lua.create_string(lock(&this.slot).req.request_id.as_bytes())
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
            check_path(&path).map_err(mlua::Error::runtime)?;
            let mut slot = lock(&this.slot);
            writable(&slot, "path")?;
            slot.req.path = path.to_owned();
            Ok(())
        });
        fields.add_field_method_set("query", |_, this, query: Option<LuaString>| {
            let query = query
                .map(|q| q.to_str().map(|q| q.to_owned()))
                .transpose()?;
            if let Some(query) = &query {
                check_query(query).map_err(mlua::Error::runtime)?;
            }
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
                respond(&this.slot, &status, body, headers)
            },
        );
    }
}

/// `req:respond(status, body, headers)`: ends `on_request` with [`Flow::Respond`].
fn respond(
    slot: &Mutex<Slot>,
    status: &Value,
    body: Option<LuaString>,
    headers: Option<Table>,
) -> mlua::Result<()> {
    let status = status_from(status)?;
    let body = body
        .map(|b| Bytes::copy_from_slice(&b.as_bytes()))
        .unwrap_or_default();
    let headers = headers
        .map(|t| header_map(&t))
        .transpose()?
        .unwrap_or_default();
    let mut slot = lock(slot);
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
}

/// Why `path` cannot be what `req.path` forwards, if it cannot: it must be a URI path
/// (RFC 3986, section 3.3) with well-formed escapes. Checked as the script assigns it, so
/// that a mistake fails the hook at its line, under its `on_error`, instead of reaching the
/// client as a bad request it never sent.
fn check_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("req.path must start with '/'".into());
    }
    if path.contains('?') {
        return Err("req.path cannot hold '?': set the query with req.query".into());
    }
    if path.contains('#') {
        return Err("req.path cannot hold '#': a fragment is never sent".into());
    }
    let bytes = path.as_bytes();
    for (at, _) in path.match_indices('%') {
        match bytes.get(at + 1..at + 3) {
            Some(b"00") => return Err(format!("req.path: an encoded NUL (%00) at byte {at}")),
            Some(hex) if hex.iter().all(u8::is_ascii_hexdigit) => {}
            _ => return Err(format!("req.path: a malformed percent-escape at byte {at}")),
        }
    }
    uri_characters("req.path", "path", path, path)
}

/// Why `query` cannot be what `req.query` forwards, if it cannot (see [`check_path`]).
fn check_query(query: &str) -> Result<(), String> {
    if query.contains('#') {
        return Err("req.query cannot hold '#': a fragment is never sent".into());
    }
    uri_characters("req.query", "query", query, &format!("/?{query}"))
}

/// Why `value`, assigned to `what` and forwarded in `target`, holds characters a URI `part`
/// cannot: any `http` refuses in `target`, or bytes that are not ASCII (which `http` lets
/// through but RFC 3986 wants percent-encoded).
fn uri_characters(what: &str, part: &str, value: &str, target: &str) -> Result<(), String> {
    match http::uri::PathAndQuery::try_from(target) {
        Ok(_) if value.is_ascii() => Ok(()),
        Ok(_) => Err(format!(
            "{what} is not a URI {part} (a byte that is not ASCII): percent-encode it"
        )),
        Err(e) => Err(format!(
            "{what} is not a URI {part} ({e}): percent-encode what it holds"
        )),
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

/// Builds one headers object around its five functions (`...`): a bare userdata whose
/// metatable holds the methods and refuses assignments (a userdata, so that nothing can be
/// stored on this shared object, not even with `rawset`). The methods check `self` in Lua,
/// so the Rust functions take only strings, which mlua hands over without registering a
/// reference (the costliest part of a call into Rust).
const HEADERS_OBJECT: &str = r#"
local get, get_all, set, add, remove = ...
local error, tostring = error, tostring
local object = newproxy(true)
local function misuse(method)
  error("headers:" .. method .. " must be called with ':' on a headers object", 3)
end
local methods = {
  get = function(self, name)
    if self ~= object then misuse("get") end
    return get(name)
  end,
  get_all = function(self, name)
    if self ~= object then misuse("get_all") end
    return get_all(name)
  end,
  set = function(self, name, value)
    if self ~= object then misuse("set") end
    return set(name, value)
  end,
  add = function(self, name, value)
    if self ~= object then misuse("add") end
    return add(name, value)
  end,
  remove = function(self, name)
    if self ~= object then misuse("remove") end
    return remove(name)
  end,
}
local meta = getmetatable(object)
meta.__index = methods
meta.__newindex = function(_, key)
  error("cannot assign headers." .. tostring(key) .. ": use headers:set(name, value)", 2)
end
meta.__metatable = false
return object
"#;

/// Where the compiled [`HEADERS_OBJECT`] is kept in a state's registry.
const HEADERS_OBJECT_KEY: &str = "strangler.headers_object";

/// `req.headers` / `res.headers` over `part` of the slot (see [`HEADERS_OBJECT`]).
fn headers_object(lua: &Lua, slot: &Arc<Mutex<Slot>>, part: Part) -> mlua::Result<AnyUserData> {
    let on = || Headers {
        slot: Arc::clone(slot),
        part,
    };
    // An invalid name cannot be present, so reading one gives nil rather than an error.
    let headers = on();
    let get = lua.create_function(move |lua, name: BString| {
        let Ok(name) = HeaderName::from_bytes(&name) else {
            return Ok(None);
        };
        headers.with(|fields, _| {
            let upstream = fields
                .upstream
                .and_then(|upstream| upstream.values(&name).next());
            upstream
                .or_else(|| fields.map.get(&name).map(HeaderValue::as_bytes))
                .map(|v| lua.create_string(v))
                .transpose()
        })
    })?;
    let headers = on();
    let get_all = lua.create_function(move |lua, name: BString| {
        let list = lua.create_table()?;
        if let Ok(name) = HeaderName::from_bytes(&name) {
            headers.with(|fields, _| {
                let upstream = fields.upstream.into_iter().flat_map(|u| u.values(&name));
                let added = fields
                    .map
                    .get_all(&name)
                    .into_iter()
                    .map(HeaderValue::as_bytes);
                for (i, v) in upstream.chain(added).enumerate() {
                    list.raw_set(i + 1, lua.create_string(v)?)?;
                }
                Ok(())
            })?;
        }
        Ok(list)
    })?;
    // `set(name, nil)` removes, like assigning nil to a table field.
    let headers = on();
    let set = lua.create_function(move |_, (name, value): (BString, Option<BString>)| {
        let value = value.map(owned_header_value).transpose()?;
        headers.write(&name, |fields, name| {
            fields.set(name, value);
            Ok(())
        })
    })?;
    let headers = on();
    let add = lua.create_function(move |_, (name, value): (BString, BString)| {
        let value = owned_header_value(value)?;
        headers.write(&name, |fields, name| {
            fields.add(name, value);
            Ok(())
        })
    })?;
    let headers = on();
    let remove = lua.create_function(move |_, name: BString| {
        headers.write(&name, |fields, name| {
            fields.set(name, None);
            Ok(())
        })
    })?;
    let build = match lua.named_registry_value::<Option<Function>>(HEADERS_OBJECT_KEY)? {
        Some(build) => build,
        None => {
            let build = lua
                .load(HEADERS_OBJECT)
                .set_name("=strangler")
                .into_function()?;
            lua.set_named_registry_value(HEADERS_OBJECT_KEY, &build)?;
            build
        }
    };
    build.call((get, get_all, set, add, remove))
}

/// What a headers function works on.
struct Headers {
    slot: Arc<Mutex<Slot>>,
    part: Part,
}

/// The fields a headers function sees: a header map, or for a response relayed as it came,
/// the upstream's fields (and what hooks add to them).
struct Fields<'a> {
    map: &'a mut HeaderMap,
    upstream: Option<&'a mut UpstreamFields>,
}

impl Fields<'_> {
    /// The fields named `name` give way to `value` (none: they are removed).
    fn set(self, name: HeaderName, value: Option<HeaderValue>) {
        match self.upstream {
            Some(upstream) => upstream.set(name, value),
            None => {
                match value {
                    Some(value) => self.map.insert(name, value),
                    None => self.map.remove(name),
                };
            }
        }
    }

    /// One more field named `name`.
    fn add(self, name: HeaderName, value: HeaderValue) {
        match self.upstream {
            Some(upstream) => upstream.add(name, value),
            None => {
                self.map.append(name, value);
            }
        }
    }
}

impl Headers {
    /// Runs `f` on the headers; `read_only` says why they may not change, if so.
    fn with<R>(
        &self,
        f: impl FnOnce(Fields<'_>, Option<String>) -> mlua::Result<R>,
    ) -> mlua::Result<R> {
        let mut slot = lock(&self.slot);
        let slot = &mut *slot;
        let phase = slot.phase;
        match self.part {
            Part::Request => {
                let read_only = (phase != Phase::OnRequest)
                    .then(|| format!("request headers are read-only in {phase}"));
                let fields = Fields {
                    map: &mut slot.req.headers,
                    upstream: None,
                };
                f(fields, read_only)
            }
            Part::Response => {
                let read_only = (phase != Phase::OnResponse)
                    .then(|| format!("response headers are read-only in {phase}"));
                let fields = Fields {
                    map: &mut slot.headers,
                    upstream: slot.upstream.as_mut(),
                };
                f(fields, read_only)
            }
        }
    }

    fn write(
        &self,
        name: &[u8],
        f: impl FnOnce(Fields<'_>, HeaderName) -> mlua::Result<()>,
    ) -> mlua::Result<()> {
        let name = HeaderName::from_bytes(name).map_err(|_| {
            mlua::Error::runtime(format!(
                "invalid header name {:?}",
                String::from_utf8_lossy(name)
            ))
        })?;
        proxys_own(&name)?;
        self.with(|fields, read_only| match read_only {
            Some(why) => Err(mlua::Error::runtime(why)),
            None => f(fields, name),
        })
    }
}

/// The fields that frame a message or concern one connection (RFC 9110, section 7.6.1;
/// RFC 9112, section 6). The proxy sets them for each hop from the body it actually sends:
/// a hook's `content-length` over a body it cannot change would leave the client waiting
/// for bytes that never come, or read the rest of the body as the next answer.
const PROXYS_OWN: [HeaderName; 8] = [
    http::header::CONTENT_LENGTH,
    http::header::TRANSFER_ENCODING,
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Refuses a hook's change to a field in [`PROXYS_OWN`].
fn proxys_own(name: &HeaderName) -> mlua::Result<()> {
    if PROXYS_OWN.contains(name) {
        return Err(mlua::Error::runtime(format!(
            "`{name}` is the proxy's to set: it frames the message or concerns one connection"
        )));
    }
    Ok(())
}

/// A final status code from Lua: an integer in 200..=599. (A 1xx is no final answer: a
/// 101 would switch the client's connection to another protocol; codes past 599 mean
/// nothing to clients.)
fn status_from(value: &Value) -> mlua::Result<StatusCode> {
    let code = match value {
        Value::Integer(n) => u16::try_from(*n).ok(),
        Value::Number(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= 999.0 => Some(*n as u16),
        _ => None,
    };
    code.filter(|c| (200..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| {
            let shown = value
                .to_string()
                .unwrap_or_else(|_| value.type_name().to_string());
            mlua::Error::runtime(format!(
                "invalid status {shown} ({}), expected an integer 200..599",
                value.type_name()
            ))
        })
}

/// A header value made of the bytes Lua handed over, without copying them again.
fn owned_header_value(value: BString) -> mlua::Result<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(Vec::from(value))).map_err(|_| {
        mlua::Error::runtime(
            "invalid header value: control characters (such as CR or LF) are not allowed",
        )
    })
}

fn header_value(value: &[u8]) -> mlua::Result<HeaderValue> {
    HeaderValue::from_bytes(value).map_err(|_| {
        mlua::Error::runtime(format!(
            "invalid header value {:?}",
            String::from_utf8_lossy(value)
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
        proxys_own(&name)?;
        headers.append(name, header_value(&value.as_bytes())?);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `req` and `res` tables over a slot in `phase`, as globals of a fresh state.
    fn state(phase: Phase) -> (Lua, Views) {
        let lua = Lua::new();
        let views = Views::create(&lua).unwrap();
        views.lock().phase = phase;
        let proxies = views.proxies(&lua).unwrap();
        lua.globals().set("req", proxies.req).unwrap();
        lua.globals().set("res", proxies.res).unwrap();
        (lua, views)
    }

    fn error_of(lua: &Lua, code: &str) -> String {
        match lua.load(code).exec() {
            Ok(()) => panic!("{code} did not fail"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn the_tables_answer_like_the_userdata() {
        let (lua, views) = state(Phase::OnResponse);
        views.lock().req.path = "/orders".into();
        lua.load(
            r#"
            assert(req.path == "/orders" and req.query == nil and req.nope == nil)
            assert(res.status == 200 and res.body == nil)
            res.status = 404
            res.headers:set("x-a", "1")
            res.headers:add("x-a", "2")
            assert(res.headers:get_all("x-a")[2] == "2" and res.headers:get("bad name") == nil)
            assert(getmetatable(req) == false and getmetatable(res.headers) == false)
            "#,
        )
        .exec()
        .unwrap();
        assert_eq!(views.lock().status, StatusCode::NOT_FOUND);
        assert_eq!(views.lock().headers.get_all("x-a").iter().count(), 2);
    }

    #[test]
    fn upstream_fields_are_read_in_place_and_edits_land_beside_them() {
        static VIA: HeaderValue = HeaderValue::from_static("1.1 strangler");
        let (lua, views) = state(Phase::OnResponse);
        let head = Bytes::from_static(b"Content-Type: a\r\nX-M: 1\r\nx-m: 2\r\nX-Gone: y\r\n");
        let spans = |name: &str, value: &str| {
            let text = std::str::from_utf8(&head).unwrap();
            let at = |part: &str, from: usize| from + text[from..].find(part).unwrap();
            let n = at(name, 0);
            let v = at(value, n + name.len());
            (n..n + name.len(), v..v + value.len())
        };
        let fields = vec![
            spans("Content-Type", "a"),
            spans("X-M", "1"),
            spans("x-m", "2"),
            spans("X-Gone", "y"),
        ];
        views.lock().upstream = Some(UpstreamFields {
            head: head.clone(),
            fields,
            edits: Vec::new(),
            via: Some(&VIA),
        });
        lua.load(
            r#"
            local h = res.headers
            assert(h:get("content-type") == "a" and h:get("CONTENT-TYPE") == "a")
            assert(table.concat(h:get_all("x-m"), ",") == "1,2")
            h:add("x-m", "3")
            assert(table.concat(h:get_all("x-m"), ",") == "1,2,3")
            h:set("content-type", "b")
            assert(h:get("content-type") == "b")
            h:remove("x-gone")
            assert(h:get("x-gone") == nil and #h:get_all("x-gone") == 0)
            assert(h:get("via") == "1.1 strangler")
            h:set("via", "1.1 edge")
            assert(h:get("via") == "1.1 edge" and #h:get_all("via") == 1)
            "#,
        )
        .exec()
        .unwrap();
        let slot = views.lock();
        let upstream = slot.upstream.as_ref().unwrap();
        let hidden: Vec<_> = upstream
            .edits
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.as_str())
            .collect();
        assert_eq!(hidden, ["content-type", "x-gone", "via"]);
        assert_eq!(
            upstream.lines().map(|(name, _)| name).collect::<Vec<_>>(),
            [&b"X-M"[..], b"x-m"],
            "the proxy's Via is hidden with the upstream's fields"
        );
        assert!(upstream.is_hidden(b"X-Gone"));
        let added: Vec<_> = upstream
            .added()
            .map(|(name, value)| (name.as_str(), value.to_str().unwrap()))
            .collect();
        assert_eq!(
            added,
            [("x-m", "3"), ("content-type", "b"), ("via", "1.1 edge")],
            "edits land beside the fields, in order"
        );
        assert!(slot.headers.is_empty(), "no header map is built");
        assert_eq!(
            upstream.head, head,
            "the upstream's bytes are never changed"
        );
    }

    #[test]
    fn a_path_or_query_that_could_not_be_forwarded_fails_where_it_is_set() {
        let (lua, views) = state(Phase::OnRequest);
        for path in ["/a/b", "/a%2Fb/", "/x;v=1", "/@:!$&'()*+,=~"] {
            lua.load(format!("req.path = {path:?}")).exec().unwrap();
            assert_eq!(views.lock().req.path, path);
        }
        for query in ["a=1&b=2", "next=/x?y", "q=a%20b"] {
            lua.load(format!("req.query = {query:?}")).exec().unwrap();
            assert_eq!(views.lock().req.query.as_deref(), Some(query));
        }
        for (code, want) in [
            ("req.path = 'nope'", "must start with '/'"),
            ("req.path = '/q?x=1'", "set the query with req.query"),
            ("req.path = '/x#top'", "a fragment is never sent"),
            ("req.path = '/u/%zz'", "malformed percent-escape at byte 3"),
            ("req.path = '/u/%4'", "malformed percent-escape at byte 3"),
            ("req.path = '/%00'", "encoded NUL"),
            ("req.path = '/a b'", "percent-encode"),
            ("req.path = '/caf\\195\\169'", "percent-encode"),
            ("req.query = 'a#b'", "a fragment is never sent"),
            ("req.query = 'a b'", "percent-encode"),
            ("req.query = 'q=caf\\195\\169'", "percent-encode"),
        ] {
            let err = error_of(&lua, code);
            assert!(err.contains(want), "{code}: {err}");
        }
        assert_eq!(
            views.lock().req.path,
            "/@:!$&'()*+,=~",
            "a refused path changes nothing"
        );
    }

    #[test]
    fn framing_fields_are_the_proxys_in_every_direction() {
        let (lua, _views) = state(Phase::OnRequest);
        for (code, want) in [
            (
                "req.headers:set('content-length', '1')",
                "`content-length` is the proxy's",
            ),
            ("req.headers:add('TE', 'trailers')", "`te` is the proxy's"),
            (
                "req:respond(200, 'ok', { ['Transfer-Encoding'] = 'chunked' })",
                "`transfer-encoding` is the proxy's",
            ),
        ] {
            let err = error_of(&lua, code);
            assert!(err.contains(want), "{code}: {err}");
        }
        // Reading them is fine, and so is every other field.
        lua.load("req.headers:get('content-length'); req.headers:set('x-ok', '1')")
            .exec()
            .unwrap();
    }

    #[test]
    fn the_proxies_refuse_what_the_views_refuse() {
        let (lua, _views) = state(Phase::OnResponse);
        for (code, want) in [
            ("req.path = '/x'", "req.path is read-only in on_response"),
            ("req.headers:set('x', '1')", "request headers are read-only"),
            (
                "req:respond(403)",
                "req:respond is only available in on_request",
            ),
            ("res.nope = 1", "attempt to set an unknown field 'nope'"),
            (
                "res.headers = {}",
                "attempt to set an unknown field 'headers'",
            ),
            (
                "local x = res.nope",
                "attempt to get an unknown field 'nope'",
            ),
            ("res.headers.set = nil", "cannot assign headers.set"),
            ("res.headers.set('x', '1')", "must be called with ':'"),
            // Nothing can be stored on the shared objects for a later request to find.
            ("setmetatable(req, {})", "table expected, got userdata"),
            ("rawset(req, 'x', 1)", "table expected, got userdata"),
            (
                "table.insert(res.headers, 1)",
                "table expected, got userdata",
            ),
            ("res.headers:set('bad name', '1')", "invalid header name"),
            ("res.status = 101", "expected an integer 200..599"),
            ("res.status = 600", "expected an integer 200..599"),
            (
                "res.headers:set('Content-Length', '999')",
                "`content-length` is the proxy's to set",
            ),
            (
                "res.headers:add('transfer-encoding', 'chunked')",
                "`transfer-encoding` is the proxy's to set",
            ),
            (
                "res.headers:remove('connection')",
                "`connection` is the proxy's",
            ),
            (
                "res.headers:set('keep-alive', nil)",
                "`keep-alive` is the proxy's",
            ),
        ] {
            let err = error_of(&lua, code);
            assert!(err.contains(want), "{code}: {err}");
        }
    }
}
