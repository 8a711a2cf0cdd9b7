//! `upstreams.NAME` → [`Upstream`].

use std::time::Duration;

use http::Uri;

use super::{Ctx, SELF_ANSWER_UPSTREAM, is_valid_name};
use crate::file::{RawUpstream, Scalar};
use crate::table::{Scheme, Upstream, UpstreamTls};
use crate::units::parse_duration;

const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
// Below the 60 s keep-alive most servers use, so the pool drops a connection before the
// upstream closes it under a request.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(50);
const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Compiles one upstream, recording every problem; `None` if there was any.
pub(super) fn compile(ctx: &mut Ctx<'_>, name: &str, raw: &RawUpstream) -> Option<Upstream> {
    let key = format!("upstreams.{name}");
    let errors_before = ctx.errors.len();
    if !is_valid_name(name) {
        let message =
            format!("invalid upstream name `{name}` (use letters, digits, `.`, `_`, `-`)");
        ctx.error(&key, None, message);
    } else if name == SELF_ANSWER_UPSTREAM {
        let message = format!(
            "upstream name `{name}` is reserved: metrics and logs say upstream=\"{name}\" for answers the proxy gave itself"
        );
        ctx.error(&key, None, message);
    }
    let url = match &raw.url {
        Some(url) => parse_url(ctx, &format!("{key}.url"), url.as_str()),
        None => {
            ctx.error(format!("{key}.url"), None, "missing required key `url`");
            None
        }
    };
    let duration = |ctx: &mut Ctx<'_>, field: &str, value: &Option<Scalar>, default| {
        let Some(value) = value else {
            return Some(default);
        };
        match parse_duration(value.as_str()) {
            Ok(duration) if duration.is_zero() => {
                ctx.error(format!("{key}.{field}"), None, "must be greater than zero");
                None
            }
            Ok(duration) => Some(duration),
            Err(err) => {
                ctx.error(
                    format!("{key}.{field}"),
                    None,
                    format!("invalid duration: {err}"),
                );
                None
            }
        }
    };
    let connect_timeout = duration(
        ctx,
        "connect_timeout",
        &raw.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
    );
    let timeout = duration(ctx, "timeout", &raw.timeout, DEFAULT_TIMEOUT);
    let idle_timeout = duration(ctx, "idle_timeout", &raw.idle_timeout, DEFAULT_IDLE_TIMEOUT);
    let host_rewrite = match raw.host.as_ref().map(Scalar::as_str) {
        None | Some("preserve") => false,
        Some("rewrite") => true,
        Some(other) => {
            let message = format!("invalid value `{other}` (expected `preserve` or `rewrite`)");
            ctx.error(format!("{key}.host"), None, message);
            false
        }
    };
    let http2 = match raw.http2.as_ref().map(Scalar::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            let message = format!("invalid value `{other}` (expected `true` or `false`)");
            ctx.error(format!("{key}.http2"), None, message);
            false
        }
    };
    let max_connections = match &raw.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(value) => match value.as_str().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                let message = format!(
                    "invalid value `{}` (expected a positive integer)",
                    value.as_str()
                );
                ctx.error(format!("{key}.max_connections"), None, message);
                0
            }
        },
    };
    let tls = raw.tls.as_ref().map(|tls| {
        let ca = tls.ca.as_ref().map(|ca| {
            let path = ctx.base_dir().join(ca.as_str());
            if !path.is_file() {
                let message = format!("ca file `{}` does not exist", path.display());
                ctx.error(format!("{key}.tls.ca"), None, message);
            }
            path
        });
        UpstreamTls {
            ca,
            server_name: tls.server_name.as_ref().map(|s| s.as_str().to_owned()),
        }
    });
    if tls.is_some()
        && url
            .as_ref()
            .is_some_and(|(scheme, ..)| *scheme == Scheme::Http)
    {
        let message = "`tls` needs an `https://` url";
        ctx.error(format!("{key}.tls"), None, message);
    }
    if ctx.errors.len() > errors_before {
        return None;
    }
    let (scheme, authority, base_path) = url?;
    Some(Upstream {
        name: name.to_owned(),
        scheme,
        authority,
        base_path,
        connect_timeout: connect_timeout?,
        timeout: timeout?,
        idle_timeout: idle_timeout?,
        host_rewrite,
        http2,
        tls,
        max_connections,
    })
}

fn parse_url(
    ctx: &mut Ctx<'_>,
    key: &str,
    url: &str,
) -> Option<(Scheme, http::uri::Authority, String)> {
    let mut fail = |message: String| {
        ctx.error(key, None, format!("invalid url `{url}`: {message}"));
        None
    };
    let uri = match url.parse::<Uri>() {
        Ok(uri) => uri,
        Err(err) => return fail(err.to_string()),
    };
    let scheme = match uri.scheme_str() {
        Some("http") => Scheme::Http,
        Some("https") => Scheme::Https,
        Some(other) => {
            return fail(format!(
                "scheme `{other}` is not supported (use http or https)"
            ));
        }
        None => return fail("missing scheme (write e.g. http://host:port)".into()),
    };
    let Some(authority) = uri.authority().cloned() else {
        return fail("missing host".into());
    };
    if authority.as_str().contains('@') {
        return fail("credentials in the url are not supported".into());
    }
    if authority.host().is_empty() {
        return fail("missing host".into());
    }
    // `Uri` accepts any text after the host's `:` (`http://host:port`), but a request
    // built on it cannot be sent: catch it here rather than answer 400 to every request.
    if let Some(port) = authority.as_str()[authority.host().len()..].strip_prefix(':') {
        match port.parse::<u16>() {
            Ok(0) => return fail("port 0 cannot be connected to".into()),
            Ok(_) => {}
            Err(_) => return fail(format!("invalid port `{port}` (expected 1 to 65535)")),
        }
    }
    if uri.query().is_some() {
        return fail("a query string is not allowed".into());
    }
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Some((scheme, authority, base_path))
}
