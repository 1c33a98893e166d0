//! The admin API, on its own listener and only with `Authorization: Bearer <admin.token>`:
//! inspect plugins and the effective config (secrets redacted), reload, upload or remove a
//! plugin. Every change goes through [`Reloader::reload`], so a bad change is refused whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::admin_live;
use crate::api::GATEWAY_FORMAT;
use crate::body::{Limit, ResponseBody};
use crate::config::PluginConfig;
use crate::error::{Error, ErrorKind};
use crate::gateway::Gateway;
use crate::reload::Reloader;
use crate::respond::error_response;

/// Write buffer of an upload on its way to disk: memory per upload stays this, whatever its size.
const UPLOAD_BUFFER: usize = 1024 * 1024;

/// Serves one admin request on the listener bound to `listen`. The browser guard runs first:
/// a web page must not reach the admin API, even by DNS rebinding. No CORS is granted here,
/// so a browser cannot read admin answers nor send the token cross-site.
pub async fn dispatch(
    reloader: Arc<Reloader>,
    listen: SocketAddr,
    mut req: Request<Incoming>,
) -> Response<ResponseBody> {
    let gw = reloader.state().gateway.load_full();
    // The dashboard's own requests carry its origin, the admin listener's: not a foreign page
    // (a DNS-rebinding page has a foreign Host, which the guard still refuses).
    if same_origin(req.headers()) {
        req.headers_mut().remove(header::ORIGIN);
    }
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).is_some_and(|v| v.as_bytes() != b"0");
    let mut resp = match crate::browser::admit(&gw.config.server.browser, listen, &req) {
        Ok(_) => serve(&reloader, &gw, req).await,
        Err(e) => error_response(GATEWAY_FORMAT, &e),
    };
    if has_body && resp.status().is_client_error() {
        // The upload may not have been read: the connection cannot carry another request.
        resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

async fn serve(reloader: &Arc<Reloader>, gw: &Arc<Gateway>, req: Request<Incoming>) -> Response<ResponseBody> {
    let token = gw.config.admin.token.as_deref().unwrap_or("");
    let signed_in = authorized(req.headers(), Some(token))
        || (!token.is_empty() && crate::dashboard::session_ok(req.headers(), token));
    // The dashboard page and its sign-in hold no data: they answer without a session.
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/" | "/admin" | "/admin/") => return redirect("/admin/dashboard"),
        (&Method::GET, "/admin/dashboard") => return crate::dashboard::page(signed_in),
        (&Method::POST, "/admin/login") => {
            let limit = Limit { bytes: 4096, key: "the sign-in body" };
            let body =
                crate::body::read_limited(req.into_body(), None, limit, gw.config.server.body_read_timeout).await;
            let resp = match body {
                Ok(body) => crate::dashboard::login(&body, token),
                Err(e) => error_response(GATEWAY_FORMAT, &e),
            };
            let result = if resp.status().is_success() { "ok" } else { "refused" };
            audit(gw, json!({ "action": "dashboard_sign_in", "result": result }));
            return resp;
        }
        (&Method::POST, "/admin/logout") => return crate::dashboard::logout(req.headers()),
        _ => {}
    }
    if !signed_in {
        return error_response(
            GATEWAY_FORMAT,
            &Error::new(ErrorKind::Unauthorized, "missing or invalid admin token (Authorization: Bearer ...)"),
        );
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    if path.starts_with("/admin/keys") {
        return crate::admin_keys::serve(gw, &method, &path, req)
            .await
            .unwrap_or_else(|e| error_response(GATEWAY_FORMAT, &e));
    }
    let plugin_name = path.strip_prefix("/admin/plugins/").filter(|n| !n.is_empty()).map(str::to_owned);
    let result = match (&method, path.as_str(), plugin_name) {
        (&Method::GET, "/admin/plugins", _) => Ok(json_ok(StatusCode::OK, &plugins(gw))),
        (&Method::GET, "/admin/config", _) => {
            Ok(json_ok(StatusCode::OK, &serde_json::to_value(gw.config.redacted()).unwrap_or(Value::Null)))
        }
        (&Method::POST, "/admin/reload", _) => Ok(reload(reloader).await),
        (&Method::GET, "/admin/stats", _) => {
            let range = admin_live::window(req.uri().query());
            Ok(json_ok(StatusCode::OK, &admin_live::stats(gw, reloader.state().started, range)))
        }
        (&Method::GET, "/admin/requests", _) => Ok(json_ok(StatusCode::OK, &admin_live::requests(req.uri().query()))),
        (&Method::GET, "/admin/live", _) => {
            admin_live::stream(reloader.state().clone(), admin_live::window(req.uri().query()))
        }
        (&Method::GET, p, _) if p.starts_with("/admin/requests/") => {
            admin_live::request(&p["/admin/requests/".len()..]).map(|v| json_ok(StatusCode::OK, &v))
        }
        (&Method::PUT, _, Some(name)) => {
            let r = upload(reloader, gw, &name, req).await;
            audit(gw, json!({ "action": "plugin_upload", "plugin": name, "status": status_of(&r) }));
            r
        }
        (&Method::DELETE, _, Some(name)) => {
            let r = remove(reloader, gw, &name).await;
            audit(gw, json!({ "action": "plugin_remove", "plugin": name, "status": status_of(&r) }));
            r
        }
        _ => Err(Error::new(ErrorKind::RouteNotFound, format!("no admin route for {method} {path}"))),
    };
    result.unwrap_or_else(|e| error_response(GATEWAY_FORMAT, &e))
}

/// An admin action as a high-priority `admin` event on the bus (never the token).
fn audit(gw: &Gateway, detail: Value) {
    if let Some(bus) = &gw.events {
        bus.publish(crate::events::Event::fact(crate::config::Priority::High, "admin", detail));
    }
}

fn status_of(r: &Result<Response<ResponseBody>, Error>) -> u16 {
    r.as_ref().map_or_else(|e| e.status().as_u16(), |resp| resp.status().as_u16())
}

/// Whether the request's `Origin` is the admin listener's own (`http://` and its `Host`).
fn same_origin(headers: &http::HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (headers.get(header::ORIGIN), headers.get(header::HOST)) else { return false };
    headers.get_all(header::ORIGIN).iter().count() == 1
        && origin.as_bytes().strip_prefix(b"http://").is_some_and(|o| o == host.as_bytes())
}

fn redirect(to: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::SEE_OTHER;
    resp.headers_mut().insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

/// Constant-time comparison of the bearer token. No token configured: nothing is authorized
/// (the listener is not even started then; this is belt and braces).
fn authorized(headers: &http::HeaderMap, token: Option<&str>) -> bool {
    let Some(expected) = token.filter(|t| !t.is_empty()) else { return false };
    let Some(given) =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    crate::dashboard::same(given.as_bytes(), expected.as_bytes())
}

fn json_ok(status: StatusCode, v: &Value) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Each plugin in chain order: file and content hash, hooks, pool (idle/busy), call counts.
fn plugins(gw: &Gateway) -> Value {
    let stats = gw.plugins.stats();
    let list: Vec<Value> = gw
        .config
        .plugins
        .iter()
        .map(|p| {
            let s = stats.iter().find(|s| s.name == p.name);
            json!({
                "name": p.name,
                "path": p.path,
                "sha256": s.map(|s| s.sha256.as_str()),
                "hooks": s.map(|s| s.hooks.clone()),
                "on_error": p.on_error,
                "instances": {
                    "configured": p.instances,
                    "live": s.map(|s| s.live),
                    "idle": s.map(|s| s.idle),
                    "busy": s.map(|s| s.live.saturating_sub(s.idle)),
                    "replaced": s.map(|s| s.replaced),
                },
                "calls": s.map(|s| s.calls),
                "failures": s.map(|s| s.failures),
            })
        })
        .collect();
    json!({ "plugins": list })
}

async fn reload(reloader: &Reloader) -> Response<ResponseBody> {
    match reloader.reload("admin").await {
        Ok(report) => json_ok(StatusCode::OK, &json!({ "status": "reloaded", "report": report })),
        Err(e) => refused(&e),
    }
}

/// A reload that was refused: 422, the reason, and the fact that nothing changed.
fn refused(reason: &str) -> Response<ResponseBody> {
    json_ok(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({
            "error": {
                "message": format!("reload refused, the previous configuration keeps serving: {reason}"),
                "type": "invalid_request_error",
                "param": null,
                "code": "reload_failed",
            }
        }),
    )
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `PUT /admin/plugins/{name}`: store the component atomically and reload. A configured
/// plugin's file is replaced in place; another name is stored in `admin.plugin_dir` and
/// appended to the chain. If the reload is refused the previous file is put back.
async fn upload(
    reloader: &Reloader,
    gw: &Gateway,
    name: &str,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Error> {
    if !valid_name(name) {
        return Err(Error::invalid_param("name", "plugin names use only [A-Za-z0-9_-], at most 64 characters"));
    }
    let (overlay_prev, was_disabled) = reloader.overlay_entry(name);
    let configured = gw.config.plugins.iter().find(|p| p.name == name).cloned();
    let target: PathBuf = match (&configured, &overlay_prev) {
        (Some(p), _) if overlay_prev.is_none() => p.path.clone(),
        (_, Some(p)) => p.path.clone(),
        _ => plugin_dir(gw).join(format!("{name}.wasm")),
    };
    let len = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let limit = Limit { bytes: gw.config.admin.max_upload_bytes, key: "admin.max_upload_bytes" };
    let timeout = gw.config.server.body_read_timeout;
    let upload =
        tokio::time::timeout(timeout, receive(req.into_body(), len, limit, &target)).await.map_err(|_| {
            Error::new(
                ErrorKind::BodyTimeout,
                format!("the upload did not arrive within {timeout:?} (server.body_read_timeout)"),
            )
        })??;
    let size = upload.size;
    let previous = Backup::take(&target).await.map_err(|e| store_failed(name, &e))?;
    upload.commit(&target).await.map_err(|e| store_failed(name, &e))?;
    if configured.is_none() {
        let plugin = overlay_prev.clone().unwrap_or_else(|| default_plugin(name, target.clone()));
        reloader.overlay_add(plugin);
    }
    match reloader.reload("admin").await {
        Ok(report) => {
            Ok(json_ok(StatusCode::OK, &json!({ "status": "stored", "path": target, "bytes": size, "report": report })))
        }
        Err(e) => {
            previous.restore(&target).await;
            reloader.overlay_restore(name, overlay_prev, was_disabled);
            Ok(refused(&e))
        }
    }
}

/// `DELETE /admin/plugins/{name}`: take the plugin out of the chain (until restart, or until
/// it is uploaded again); an uploaded file in `admin.plugin_dir` is deleted too.
async fn remove(reloader: &Reloader, gw: &Gateway, name: &str) -> Result<Response<ResponseBody>, Error> {
    let Some(plugin) = gw.config.plugins.iter().find(|p| p.name == name) else {
        return Err(Error::new(ErrorKind::RouteNotFound, format!("no plugin named {name:?} is loaded")));
    };
    let (overlay_prev, was_disabled) = reloader.overlay_entry(name);
    reloader.overlay_remove(name);
    match reloader.reload("admin").await {
        Ok(report) => {
            if overlay_prev.is_some() && plugin.path.starts_with(plugin_dir(gw)) {
                let _ = tokio::fs::remove_file(&plugin.path).await;
            }
            Ok(json_ok(StatusCode::OK, &json!({ "status": "removed", "report": report })))
        }
        Err(e) => {
            reloader.overlay_restore(name, overlay_prev, was_disabled);
            Ok(refused(&e))
        }
    }
}

fn plugin_dir(gw: &Gateway) -> PathBuf {
    gw.config.admin.plugin_dir.clone().unwrap_or_else(|| PathBuf::from("plugins"))
}

/// Settings for a plugin added through the API: the config defaults.
fn default_plugin(name: &str, path: PathBuf) -> PluginConfig {
    let text = format!("name = {name:?}\npath = {:?}\n", path.display().to_string());
    toml::from_str(&text).expect("a name and a path are all a plugin entry needs")
}

fn store_failed(name: &str, e: &std::io::Error) -> Error {
    Error::new(ErrorKind::Internal, format!("cannot store plugin {name}: {e}"))
}

/// An upload received into a temporary file beside its target. Dropped without
/// [`Upload::commit`], the file is removed.
struct Upload {
    tmp: PathBuf,
    size: usize,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

impl Upload {
    /// Renames the file over `target`, so a reader (the watcher, a reload, a restart) never
    /// sees half a component.
    async fn commit(mut self, target: &Path) -> std::io::Result<()> {
        let tmp = std::mem::take(&mut self.tmp);
        let renamed = tokio::fs::rename(&tmp, target).await;
        if renamed.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        renamed
    }
}

/// A temporary name in `target`'s directory (same file system, so a rename is atomic).
fn temp_beside(target: &Path, what: &str) -> PathBuf {
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file = target.file_name().and_then(|n| n.to_str()).unwrap_or("plugin");
    dir.join(format!(".{file}.{what}.{:08x}.tmp", fastrand::u32(..)))
}

/// Streams the body to a temporary file beside `target` through a bounded buffer, so an
/// upload costs [`UPLOAD_BUFFER`] of memory whatever its size. Refuses a body over `limit`
/// (from `Content-Length` first, then while reading) and one that does not start like a
/// WebAssembly binary, before writing much of it.
async fn receive(
    mut body: Incoming,
    content_length: Option<u64>,
    limit: Limit,
    target: &Path,
) -> Result<Upload, Error> {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;

    if content_length.is_some_and(|len| len > limit.bytes as u64) {
        return Err(limit.exceeded());
    }
    let io = |e: std::io::Error| Error::new(ErrorKind::Internal, format!("cannot store the upload: {e}"));
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    let mut upload = Upload { tmp: temp_beside(target, "upload"), size: 0 };
    let file = tokio::fs::File::create(&upload.tmp).await.map_err(io)?;
    let mut out = tokio::io::BufWriter::with_capacity(UPLOAD_BUFFER, file);
    let mut head = [0u8; 4];
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| Error::new(ErrorKind::InvalidRequest, format!("failed to read the upload: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        let seen = upload.size;
        upload.size += data.len();
        if upload.size > limit.bytes {
            return Err(limit.exceeded());
        }
        if seen < head.len() {
            let n = (head.len() - seen).min(data.len());
            head[seen..seen + n].copy_from_slice(&data[..n]);
            if seen + n == head.len() && &head != b"\0asm" {
                return Err(not_wasm());
            }
        }
        out.write_all(&data).await.map_err(io)?;
    }
    if upload.size < head.len() {
        return Err(not_wasm());
    }
    out.flush().await.map_err(io)?;
    out.into_inner().sync_all().await.map_err(io)?;
    Ok(upload)
}

fn not_wasm() -> Error {
    Error::new(ErrorKind::InvalidRequest, "the body is not a WebAssembly component (no \\0asm header)")
}

/// The file an upload replaces, kept aside (a hard link, else a copy) until the reload is
/// accepted: a refused reload puts it back.
struct Backup {
    saved: Option<PathBuf>,
}

impl Backup {
    async fn take(target: &Path) -> std::io::Result<Self> {
        if tokio::fs::metadata(target).await.is_err() {
            return Ok(Self { saved: None });
        }
        let saved = temp_beside(target, "previous");
        if tokio::fs::hard_link(target, &saved).await.is_err() {
            tokio::fs::copy(target, &saved).await?;
        }
        Ok(Self { saved: Some(saved) })
    }

    /// The reload was refused: the previous file goes back (or, if there was none, the
    /// upload is removed).
    async fn restore(mut self, target: &Path) {
        match self.saved.take() {
            Some(saved) => {
                let _ = tokio::fs::rename(&saved, target).await;
            }
            None => {
                let _ = tokio::fs::remove_file(target).await;
            }
        }
    }
}

impl Drop for Backup {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = std::fs::remove_file(saved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_must_match_exactly() {
        let mut h = http::HeaderMap::new();
        assert!(!authorized(&h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cre"));
        assert!(!authorized(&h, Some("s3cret")));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(authorized(&h, Some("s3cret")));
        assert!(!authorized(&h, None));
        assert!(!authorized(&h, Some("")));
    }

    #[test]
    fn default_plugin_uses_config_defaults() {
        let p = default_plugin("x", PathBuf::from("/tmp/x.wasm"));
        assert_eq!(p.name, "x");
        assert!(p.instances >= 1);
    }
}
