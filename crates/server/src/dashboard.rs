//! The dashboard: one HTML page embedded in the binary (inline CSS and JS, no network
//! access), served on the admin listener. A browser cannot put the admin token on a page
//! navigation or an `EventSource`, so the page's login form posts the token once
//! (`POST /admin/login`, JSON) and gets a session cookie: a random value, `HttpOnly`,
//! `SameSite=Strict`, valid for 12 hours and only while the admin token stays the same. The
//! token itself is never put in a URL, a cookie or a log.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::Read as _;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::ResponseBody;

/// The page.
const PAGE: &str = include_str!("dashboard.html");
/// Name of the session cookie.
const COOKIE: &str = "weir_session";
/// How long a session lasts.
const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept; the oldest goes first.
const MAX_SESSIONS: usize = 32;

struct Session {
    value: [u8; 32],
    /// Fingerprint of the admin token it was made with: a changed token ends it.
    token: u64,
    expires: Instant,
}

struct Sessions {
    list: Vec<Session>,
    hasher: RandomState,
}

fn sessions() -> std::sync::MutexGuard<'static, Sessions> {
    static S: OnceLock<Mutex<Sessions>> = OnceLock::new();
    S.get_or_init(|| Mutex::new(Sessions { list: Vec::new(), hasher: RandomState::new() }))
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Constant-time equality of two byte strings.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `headers` carry a live session made with `token`.
pub fn session_ok(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = cookie(headers) else { return false };
    let mut s = sessions();
    let now = Instant::now();
    s.list.retain(|x| x.expires > now);
    let fp = s.hasher.hash_one(token);
    s.list.iter().any(|x| x.token == fp && same(hex(&x.value).as_bytes(), given.as_bytes()))
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('=').map(str::to_owned))
}

/// `POST /admin/login` with `{"token": "..."}`: a session cookie when the token is right.
pub fn login(body: &[u8], token: &str) -> Response<ResponseBody> {
    let given = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("token").and_then(|t| t.as_str()).map(str::to_owned));
    if !given.is_some_and(|g| !token.is_empty() && same(g.as_bytes(), token.as_bytes())) {
        return plain(StatusCode::UNAUTHORIZED, "wrong admin token");
    }
    let Some(value) = random() else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no random source for a session");
    };
    {
        let mut s = sessions();
        let fp = s.hasher.hash_one(token);
        if s.list.len() >= MAX_SESSIONS {
            s.list.remove(0);
        }
        s.list.push(Session { value, token: fp, expires: Instant::now() + SESSION_LIFETIME });
    }
    let mut resp = plain(StatusCode::NO_CONTENT, "");
    let cookie = format!(
        "{COOKIE}={}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}",
        hex(&value),
        SESSION_LIFETIME.as_secs()
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `POST /admin/logout`: ends the session.
pub fn logout(headers: &HeaderMap) -> Response<ResponseBody> {
    if let Some(given) = cookie(headers) {
        sessions().list.retain(|x| !same(hex(&x.value).as_bytes(), given.as_bytes()));
    }
    let mut resp = plain(StatusCode::NO_CONTENT, "");
    let clear = format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0");
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("ASCII"));
    resp
}

/// The page: 200 for a signed-in browser, else 401 (the page then shows only its login form;
/// it holds no data, every number comes from the authenticated API).
pub fn page(authorized: bool) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(PAGE.as_bytes())));
    *resp.status_mut() = if authorized { StatusCode::OK } else { StatusCode::UNAUTHORIZED };
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Only the page's own inline code and its own origin; no frames (clickjacking).
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
             img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

fn plain(status: StatusCode, text: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(text.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

/// 32 bytes from the operating system's random source.
fn random() -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(resp: &Response<ResponseBody>) -> HeaderMap {
        let set = resp.headers()[header::SET_COOKIE].to_str().unwrap();
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"), "{set}");
        let pair = set.split(';').next().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(&format!("other=1; {pair}")).unwrap());
        h
    }

    #[test]
    fn a_session_needs_the_right_token_and_ends_with_a_new_token_or_logout() {
        assert_eq!(login(br#"{"token":"nope"}"#, "s3cret").status(), StatusCode::UNAUTHORIZED);
        assert_eq!(login(b"not json", "s3cret").status(), StatusCode::UNAUTHORIZED);
        let ok = login(br#"{"token":"s3cret"}"#, "s3cret");
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let h = with_cookie(&ok);
        assert!(session_ok(&h, "s3cret"));
        assert!(!session_ok(&h, "rotated"), "a changed admin token ends the session");
        assert!(!session_ok(&HeaderMap::new(), "s3cret"));
        logout(&h);
        assert!(!session_ok(&h, "s3cret"));
    }
}
