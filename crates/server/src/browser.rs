//! The browser guard, run on every request before its route: a web page can make a visitor's
//! browser send requests to Weir (a cross-site form post, or DNS rebinding that points the
//! page's own name at 127.0.0.1), and Weir would forward them with the provider keys. So a
//! foreign `Origin`, a `Host` the listener does not answer to, and a non-JSON API body are
//! refused; origins in `[server.browser]` get CORS headers and preflight answers instead.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};

use crate::body::ResponseBody;
use crate::config::BrowserConfig;
use crate::error::{Error, ErrorKind};

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: HeaderValue = HeaderValue::from_static("600");

/// Headers a preflight allows when it does not name any (what the OpenAI SDKs send).
const DEFAULT_ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("authorization, content-type");

/// Checks `Host` and `Origin` against `cfg` for a listener bound to `listen`.
///
/// # Errors
/// 403 `host_not_allowed` for a `Host` the listener does not answer to; 403
/// `origin_not_allowed` for an `Origin` that is not allowed.
///
/// Returns the `Origin` to grant CORS to, when the request has an allowed one.
pub fn admit<B>(cfg: &BrowserConfig, listen: SocketAddr, req: &Request<B>) -> Result<Option<HeaderValue>, Error> {
    check_host(cfg, listen, req.uri(), req.headers())?;
    let mut granted = None;
    // Every `Origin` header must be allowed, so a second one cannot smuggle a foreign page in.
    for origin in req.headers().get_all(header::ORIGIN) {
        if !origin_allowed(cfg, origin) {
            return Err(Error::new(
                ErrorKind::OriginNotAllowed,
                "requests from this web page's origin are not allowed (see server.browser.allowed_origins)",
            ));
        }
        granted = Some(origin.clone());
    }
    Ok(granted)
}

/// Requires a JSON body on API requests. A missing `Content-Type` is accepted: non-browser
/// clients may omit it, and a browser always sends one on a cross-site request without
/// preflight (`text/plain`, a form type), so refusing present-but-other types closes that hole.
///
/// # Errors
/// 415 `unsupported_media_type` when the type is present and not `application/json`.
pub fn require_json(headers: &HeaderMap) -> Result<(), Error> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    if ct.as_bytes() == b"application/json" {
        return Ok(());
    }
    let essence = ct.to_str().ok().map(|v| v.split(';').next().unwrap_or_default().trim());
    if essence.is_some_and(|e| e.eq_ignore_ascii_case("application/json")) {
        return Ok(());
    }
    Err(Error::new(ErrorKind::UnsupportedMediaType, "the request body must be JSON (content-type: application/json)")
        .with_param("content-type"))
}

/// Whether `req` is a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The 204 answer to a preflight from the allowed `origin`, allowing `methods` and the headers
/// the browser asked for (the origin is trusted by configuration, so its headers are too).
pub fn preflight(origin: HeaderValue, methods: &'static str, req_headers: &HeaderMap) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(bytes::Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    let asked = req_headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(methods));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.unwrap_or(DEFAULT_ALLOW_HEADERS));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE);
    grant(&mut resp, origin);
    resp
}

/// Lets the page of the allowed `origin` read `resp`.
pub fn grant(resp: &mut Response<ResponseBody>, origin: HeaderValue) {
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    // The answer differs per origin: caches must not hand one origin's grant to another.
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

fn origin_allowed(cfg: &BrowserConfig, origin: &HeaderValue) -> bool {
    cfg.allowed_origins.iter().any(|o| o == "*" || o.as_bytes() == origin.as_bytes())
}

/// On a loopback listener, only loopback names reach Weir unless others are listed: a DNS
/// rebinding page reaches 127.0.0.1 under its own name. Elsewhere the check is opt-in.
fn check_host(cfg: &BrowserConfig, listen: SocketAddr, uri: &Uri, headers: &HeaderMap) -> Result<(), Error> {
    if !listen.ip().is_loopback() && cfg.allowed_hosts.is_empty() {
        return Ok(());
    }
    // HTTP/2 carries the name in `:authority` (the URI), HTTP/1 in `Host`; both are checked
    // when both are present. A request with neither (HTTP/1.0) comes from no browser.
    let uri_ok = uri.authority().is_none_or(|a| host_allowed(cfg, a.host()));
    let headers_ok = headers
        .get_all(header::HOST)
        .iter()
        .all(|v| loopback_host(v.as_bytes()) || v.to_str().is_ok_and(|v| host_allowed(cfg, host_of(v))));
    if uri_ok && headers_ok {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::HostNotAllowed,
        "this gateway does not answer to that Host name (see server.browser.allowed_hosts)",
    ))
}

/// The usual `Host` of a local client, `127.0.0.1` or `localhost` with an optional port, in a
/// few byte compares; any other value takes the general check.
fn loopback_host(value: &[u8]) -> bool {
    let (name, port) = match value.iter().rposition(|&b| b == b':') {
        Some(i) => (&value[..i], &value[i + 1..]),
        None => (value, &b""[..]),
    };
    (name == b"127.0.0.1" || name == b"localhost") && port.iter().all(u8::is_ascii_digit)
}

/// The host part of a `Host` value: `[::1]:8080` -> `[::1]`, `a.example:80` -> `a.example`.
fn host_of(value: &str) -> &str {
    if value.starts_with('[') {
        return value.split_inclusive(']').next().unwrap_or(value);
    }
    value.rsplit_once(':').map_or(value, |(h, _)| h)
}

fn host_allowed(cfg: &BrowserConfig, host: &str) -> bool {
    let name = host.strip_suffix('.').unwrap_or(host);
    let literal = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    literal.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || cfg.allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(origins: &[&str], hosts: &[&str]) -> BrowserConfig {
        BrowserConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_hosts: hosts.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn req(host: Option<&str>, origin: Option<&str>) -> Request<()> {
        let mut b = Request::post("/v1/chat/completions");
        if let Some(h) = host {
            b = b.header("host", h);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap()
    }

    const LOOPBACK: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
    const ANY: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);

    #[test]
    fn loopback_listener_answers_only_loopback_names_and_listed_hosts() {
        let c = cfg(&[], &["gw.internal"]);
        for ok in
            ["127.0.0.1:8080", "[::1]:8080", "localhost", "LocalHost:1", "localhost.", "10.0.0.1", "gw.internal:8080"]
        {
            assert!(admit(&c, LOOPBACK, &req(Some(ok), None)).is_ok(), "{ok}");
        }
        for bad in ["evil.example", "evil.example:8080", "localhost.evil.example", "gw.internal.evil", ""] {
            let e = admit(&c, LOOPBACK, &req(Some(bad), None)).unwrap_err();
            assert_eq!(e.code_str(), "host_not_allowed", "{bad}");
        }
    }

    #[test]
    fn the_loopback_fast_path_takes_only_loopback_names_with_a_numeric_port() {
        for ok in ["127.0.0.1", "127.0.0.1:8080", "localhost", "localhost:1"] {
            assert!(loopback_host(ok.as_bytes()), "{ok}");
        }
        for other in ["127.0.0.1:x:1", "localhost.evil", "127.0.0.10", "localhost:8a", "[::1]:1", "LOCALHOST", ""] {
            assert!(!loopback_host(other.as_bytes()), "{other}");
        }
        let c = cfg(&[], &[]);
        assert!(admit(&c, LOOPBACK, &req(Some("127.0.0.1:x:1"), None)).is_err());
        let mut r = req(Some("127.0.0.1:8080"), None);
        r.headers_mut().append(header::HOST, HeaderValue::from_static("evil.example"));
        assert!(admit(&c, LOOPBACK, &r).is_err(), "every Host value is checked");
    }

    #[test]
    fn other_listeners_check_hosts_only_with_a_list() {
        assert!(admit(&cfg(&[], &[]), ANY, &req(Some("api.example"), None)).is_ok());
        assert!(admit(&cfg(&[], &["gw.example"]), ANY, &req(Some("api.example"), None)).is_err());
        assert!(admit(&cfg(&[], &["gw.example"]), ANY, &req(Some("gw.example:443"), None)).is_ok());
    }

    #[test]
    fn an_http2_authority_is_checked_like_a_host_header() {
        let r = Request::post("http://evil.example:8080/v1/chat/completions").body(()).unwrap();
        assert!(admit(&cfg(&[], &[]), LOOPBACK, &r).is_err());
        let r = Request::post("http://127.0.0.1:8080/v1/chat/completions").body(()).unwrap();
        assert!(admit(&cfg(&[], &[]), LOOPBACK, &r).is_ok());
    }

    #[test]
    fn origins_match_exactly_or_by_star() {
        let c = cfg(&["https://app.example"], &[]);
        assert_eq!(admit(&c, LOOPBACK, &req(None, None)).unwrap(), None);
        assert_eq!(
            admit(&c, LOOPBACK, &req(None, Some("https://app.example"))).unwrap().unwrap(),
            "https://app.example"
        );
        for bad in ["https://app.example:444", "http://app.example", "https://app.example.evil", "null"] {
            assert_eq!(admit(&c, LOOPBACK, &req(None, Some(bad))).unwrap_err().code_str(), "origin_not_allowed");
        }
        assert!(admit(&cfg(&["*"], &[]), LOOPBACK, &req(None, Some("https://any.example"))).is_ok());
        assert!(admit(&cfg(&[], &[]), LOOPBACK, &req(None, Some("https://any.example"))).is_err());
    }

    #[test]
    fn only_present_non_json_content_types_are_refused() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            require_json(&h)
        };
        assert!(require_json(&HeaderMap::new()).is_ok());
        for ok in ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON ;x=y"] {
            assert!(with(ok).is_ok(), "{ok}");
        }
        for bad in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "application/jsonx", ""] {
            assert_eq!(with(bad).unwrap_err().status(), 415, "{bad}");
        }
    }
}
