//! The `request` and `response` resources: the host keeps the data, a hook gets a handle and
//! copies out only what it asks for. One exchange slot per instance, filled for one call.
//! Granted to every plugin; writes are capped by the plugin's `max_output_bytes` per call and,
//! summed over the request's calls and hooks, by the depth, body-growth and header limits
//! below; request writes are refused in post hooks (the body has gone upstream by then).

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value};
use wasmtime::component::{HasSelf, Linker, Resource};

use super::StoreData;
use crate::exchange::{GatewayRequest, GatewayResponse, Growth, JsonBody};
use crate::format::Endpoint;
use crate::plugins::bindings::types;
use crate::plugins::bindings::{PACKAGE, RequestHandle, ResponseHandle, VERSION};
use crate::plugins::json;
use weir_types::json::index::{BodyIndex, Lookup};

/// Longest model name a plugin may set.
pub const MAX_MODEL_BYTES: usize = 256;

/// Most headers a response may carry from plugins' `set-header` calls and replies (together,
/// across every hook of the request). The header map panics past 32,768 entries, and each
/// entry is sent to the client.
pub const MAX_HEADERS: usize = 100;

/// Most bytes (names + values) of those headers. Without it, calls each under
/// `max_output_bytes` add up to any size.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// How far plugins' edits may grow a request or response body past its size as received
/// (JSON text, counted across every call and hook of the request). Per-call caps alone let
/// many calls add up to any size.
pub const MAX_BODY_GROWTH_BYTES: usize = 4 * 1024 * 1024;

/// The request as the current call sees it.
#[allow(clippy::large_enum_variant)] // one slot per instance; boxing would allocate on every call
enum RequestSlot {
    Empty,
    /// `on-request`: editable.
    Owned(GatewayRequest),
    /// Post hooks: read-only metadata.
    Shared(Arc<GatewayRequest>),
}

/// Per-instance exchange slot.
pub struct Exchange {
    request: RequestSlot,
    provider: Option<Arc<str>>,
    response: Option<GatewayResponse>,
    /// The response body parsed on the first pointer access; re-serialized when edited.
    response_doc: Option<Value>,
    response_edited: bool,
    /// What edits (this hook's and earlier hooks') did to the response body's size.
    response_growth: Growth,
    /// The request body was edited through `set`/`set-body` (the caller re-validates it).
    pub body_edited: bool,
    /// The model was changed (the caller re-routes).
    pub model_edited: bool,
    max_output: usize,
}

impl Exchange {
    /// An empty slot; writes larger than `max_output` bytes are refused.
    pub fn new(max_output: usize) -> Self {
        Self {
            request: RequestSlot::Empty,
            provider: None,
            response: None,
            response_doc: None,
            response_edited: false,
            response_growth: Growth { base: 0, added: 0 },
            body_edited: false,
            model_edited: false,
            max_output,
        }
    }

    /// Fills the slot for `on-request` (the request moves in; take it back with
    /// [`Exchange::take_request`]).
    pub fn put_request(&mut self, req: GatewayRequest, provider: Option<Arc<str>>) {
        self.request = RequestSlot::Owned(req);
        self.provider = provider;
        self.body_edited = false;
        self.model_edited = false;
    }

    /// Takes back the request put in by [`Exchange::put_request`].
    pub fn take_request(&mut self) -> Option<GatewayRequest> {
        match std::mem::replace(&mut self.request, RequestSlot::Empty) {
            RequestSlot::Owned(r) => Some(r),
            _ => None,
        }
    }

    /// Fills the slot for a post hook.
    pub fn put_shared(&mut self, req: Arc<GatewayRequest>, provider: Option<Arc<str>>) {
        self.request = RequestSlot::Shared(req);
        self.provider = provider;
    }

    /// Puts a response in for `on-response`.
    pub fn put_response(&mut self, resp: GatewayResponse) {
        self.response_growth = resp.growth.unwrap_or(Growth { base: resp.body.len(), added: 0 });
        self.response = Some(resp);
        self.response_doc = None;
        self.response_edited = false;
    }

    /// Takes the (possibly edited) response back out.
    pub fn take_response(&mut self) -> Option<GatewayResponse> {
        let mut resp = self.response.take()?;
        if self.response_edited
            && let Some(doc) = self.response_doc.take()
        {
            resp.body = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            resp.growth = Some(self.response_growth);
        }
        self.response_doc = None;
        self.response_edited = false;
        Some(resp)
    }

    /// Empties the slot after a call (drops the shared request and provider handles).
    pub fn clear(&mut self) {
        self.request = RequestSlot::Empty;
        self.provider = None;
        self.response = None;
        self.response_doc = None;
    }

    /// Where the current call's request came in (`None` between calls).
    pub fn request_endpoint(&self) -> Option<Endpoint> {
        self.req().map(|r| r.endpoint)
    }

    fn req(&self) -> Option<&GatewayRequest> {
        match &self.request {
            RequestSlot::Owned(r) => Some(r),
            RequestSlot::Shared(r) => Some(r),
            RequestSlot::Empty => None,
        }
    }

    fn req_mut(&mut self) -> Result<&mut GatewayRequest, String> {
        match &mut self.request {
            RequestSlot::Owned(r) => Ok(r),
            _ => Err("the request is read-only outside on-request".into()),
        }
    }

    /// The front door's record of the request body, while no tree has been parsed
    /// (`on-request` only).
    fn body_index(&self) -> Option<(&BodyIndex, &Bytes)> {
        match &self.request {
            RequestSlot::Owned(r) => r.body.indexed(),
            _ => None,
        }
    }

    /// The request's endpoint and body tree, parsed on first use. `None` in post hooks, where
    /// the body has gone upstream.
    fn body_tree(&mut self) -> Option<(Endpoint, &Map<String, Value>)> {
        match &mut self.request {
            RequestSlot::Owned(r) => Some((r.endpoint, r.body.map())),
            RequestSlot::Shared(r) => r.body.parsed().map(|m| (r.endpoint, m)),
            RequestSlot::Empty => None,
        }
    }

    /// The value at `pointer` in the request body: from the scan's index when it can answer,
    /// else from the body tree.
    fn body_value(&mut self, pointer: &str) -> Option<Cow<'_, Value>> {
        if let Some((index, raw)) = self.body_index() {
            match index.get(raw, pointer) {
                Lookup::Found(v) => return Some(Cow::Owned(v)),
                Lookup::Absent => return None,
                Lookup::NeedsTree => {}
            }
        }
        let (_, body) = self.body_tree()?;
        json::get(body, pointer).map(Cow::Borrowed)
    }

    /// The request's prompt texts. In `on-request` the first plugin to ask builds them and the
    /// body keeps them for the next (until an edit), so a chain reads them once per request.
    fn prompt_texts(&mut self) -> Arc<[Arc<str>]> {
        if let RequestSlot::Owned(r) = &self.request
            && let Some(texts) = r.body.kept_texts()
        {
            return texts.clone();
        }
        let texts: Arc<[Arc<str>]> = if let Some((index, raw)) = self.body_index() {
            index.texts.iter().map(|t| Arc::from(t.resolve(raw))).collect()
        } else if let Some((endpoint, body)) = self.body_tree() {
            let mut out = Vec::new();
            json::visit_prompt_texts(body, endpoint, &mut |t| out.push(Arc::from(t)));
            out.into()
        } else {
            return Arc::new([]);
        };
        if let RequestSlot::Owned(r) = &mut self.request {
            r.body.keep_texts(texts.clone());
        }
        texts
    }

    fn check_size(&self, len: usize) -> Result<(), String> {
        if len > self.max_output {
            return Err(format!("value larger than max_output_bytes ({})", self.max_output));
        }
        Ok(())
    }

    /// The request body's size accounting, started at its current length on the first edit.
    fn request_growth(&mut self) -> Result<Growth, String> {
        let req = self.req_mut()?;
        Ok(match req.body.growth() {
            Some(g) => g,
            None => {
                let base = match req.body.raw() {
                    Some(raw) => raw.len(),
                    None => json::text_len(req.body.map()),
                };
                Growth { base, added: 0 }
            }
        })
    }

    fn response_doc(&mut self) -> Option<&mut Value> {
        if self.response_doc.is_none() {
            let resp = self.response.as_ref()?;
            self.response_doc = serde_json::from_slice(&resp.body).ok();
        }
        self.response_doc.as_mut()
    }
}

impl types::Host for Exchange {}

impl types::HostRequest for Exchange {
    fn id(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.id.to_string()).unwrap_or_default()
    }

    fn api_format(&mut self, _: Resource<RequestHandle>) -> String {
        self.request_endpoint().map_or("", |e| e.format.name()).to_owned()
    }

    fn operation(&mut self, _: Resource<RequestHandle>) -> String {
        self.request_endpoint().map_or("", |e| e.op.name()).to_owned()
    }

    fn model(&mut self, _: Resource<RequestHandle>) -> String {
        self.req().map(|r| r.model.clone()).unwrap_or_default()
    }

    fn set_model(&mut self, _: Resource<RequestHandle>, model: String) {
        if model.is_empty() || model.len() > MAX_MODEL_BYTES {
            return;
        }
        if let Ok(req) = self.req_mut() {
            // Where the request's format keeps it.
            crate::api::set_model(req.endpoint.format, req.body.map_mut(), model.clone());
            req.model = model;
            self.model_edited = true;
        }
    }

    fn provider(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        self.provider.as_deref().map(str::to_owned)
    }

    fn is_stream(&mut self, _: Resource<RequestHandle>) -> bool {
        self.req().is_some_and(|r| r.stream)
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> Option<String> {
        let value = self.req()?.headers.get(name.as_str())?;
        value.to_str().ok().map(str::to_owned)
    }

    fn headers(&mut self, _: Resource<RequestHandle>) -> Vec<(String, String)> {
        let Some(req) = self.req() else { return Vec::new() };
        req.headers.iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned()))).collect()
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> Option<String> {
        match &mut self.request {
            RequestSlot::Owned(r) => serde_json::to_string(r.body.map()).ok(),
            _ => None,
        }
    }

    fn get(&mut self, _: Resource<RequestHandle>, pointer: String) -> Option<String> {
        self.body_value(&pointer).and_then(|v| serde_json::to_string(&*v).ok())
    }

    fn max_tokens(&mut self, _: Resource<RequestHandle>) -> Option<u64> {
        let format = self.request_endpoint()?.format;
        // The larger of the fields set: a limit a plugin enforces cannot be slipped under by
        // setting one name low and the other high.
        crate::api::max_tokens_pointers(format).iter().filter_map(|p| self.body_value(p)?.as_u64()).max()
    }

    fn prompt_texts(&mut self, _: Resource<RequestHandle>) -> Vec<String> {
        self.prompt_texts().iter().map(|t| t.to_string()).collect()
    }

    fn set(&mut self, _: Resource<RequestHandle>, pointer: String, json: String) -> Result<(), String> {
        self.check_size(json.len())?;
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("invalid JSON: {e}"))?;
        let growth = self.request_growth()?;
        let req = self.req_mut()?;
        let growth = grow(growth, set_delta(req.body.map(), &pointer, json.len()))?;
        json::set(req.body.map_mut(), &pointer, value).map_err(str::to_owned)?;
        req.body.set_growth(growth);
        self.body_edited = true;
        Ok(())
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, json: String) -> Result<(), String> {
        self.check_size(json.len())?;
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(map) = value else { return Err("the body must be a JSON object".into()) };
        let growth = replaced(self.request_growth()?, json.len())?;
        let mut body = JsonBody::from_map(map);
        body.set_growth(growth);
        self.req_mut()?.body = body;
        self.body_edited = true;
        Ok(())
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponse for Exchange {
    fn status(&mut self, _: Resource<ResponseHandle>) -> u16 {
        self.response.as_ref().map_or(0, |r| r.status)
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> Option<String> {
        let v = self.response.as_ref()?.headers.get(name.as_str())?;
        v.to_str().ok().map(str::to_owned)
    }

    fn set_header(&mut self, _: Resource<ResponseHandle>, name: String, value: String) -> Result<(), String> {
        self.check_size(name.len() + value.len())?;
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| "invalid header name".to_owned())?;
        if matches!(name.as_str(), "content-length" | "transfer-encoding" | "connection" | "content-type") {
            return Err(format!("header {name} is managed by the gateway"));
        }
        let value = HeaderValue::from_str(&value).map_err(|_| "invalid header value".to_owned())?;
        let resp = self.response.as_mut().ok_or("no response in this hook")?;
        header_room(&resp.headers, &name, &value)?;
        resp.headers.try_insert(name, value).map_err(|_| "too many response headers".to_owned())?;
        Ok(())
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> String {
        if self.response_edited
            && let Some(doc) = &self.response_doc
        {
            return doc.to_string();
        }
        self.response.as_ref().map(|r| String::from_utf8_lossy(&r.body).into_owned()).unwrap_or_default()
    }

    fn get(&mut self, _: Resource<ResponseHandle>, pointer: String) -> Option<String> {
        let doc = self.response_doc()?;
        doc.pointer(&pointer).map(Value::to_string)
    }

    fn set(&mut self, _: Resource<ResponseHandle>, pointer: String, json: String) -> Result<(), String> {
        self.check_size(json.len())?;
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("invalid JSON: {e}"))?;
        let growth = self.response_growth;
        let doc = self.response_doc().ok_or("the response body is not JSON")?;
        let map = doc.as_object_mut().ok_or("the response body is not a JSON object")?;
        let growth = grow(growth, set_delta(map, &pointer, json.len()))?;
        json::set(map, &pointer, value).map_err(str::to_owned)?;
        self.response_growth = growth;
        self.response_edited = true;
        Ok(())
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, json: String) -> Result<(), String> {
        self.check_size(json.len())?;
        let value: Value = serde_json::from_str(&json).map_err(|e| format!("invalid JSON: {e}"))?;
        if self.response.is_none() {
            return Err("no response in this hook".into());
        }
        self.response_growth = replaced(self.response_growth, json.len())?;
        self.response_doc = Some(value);
        self.response_edited = true;
        Ok(())
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// Bytes `set(pointer, json)` adds to a body's JSON text, less those it replaces: the old
/// value's or, for a new member, none but the key and its punctuation.
fn set_delta(body: &Map<String, Value>, pointer: &str, new_len: usize) -> i64 {
    let new = new_len as i64;
    match json::get(body, pointer) {
        Some(old) => new - json::text_len(old) as i64,
        None => new + pointer.rsplit('/').next().map_or(0, str::len) as i64 + 4,
    }
}

/// `growth` after an edit that adds `delta` bytes, unless that passes
/// [`MAX_BODY_GROWTH_BYTES`].
fn grow(growth: Growth, delta: i64) -> Result<Growth, String> {
    let added = growth.added.saturating_add(delta);
    if added > MAX_BODY_GROWTH_BYTES as i64 {
        return Err(format!("edits may grow a body by at most {MAX_BODY_GROWTH_BYTES} bytes per request"));
    }
    Ok(Growth { added, ..growth })
}

/// `growth` after the whole body is replaced by `new_len` bytes of JSON text.
fn replaced(growth: Growth, new_len: usize) -> Result<Growth, String> {
    grow(Growth { added: 0, ..growth }, new_len as i64 - growth.base as i64)
}

/// Refuses a header that would take a response's headers past [`MAX_HEADERS`] or
/// [`MAX_HEADER_BYTES`] (`name`'s current values are replaced, so they do not count).
fn header_room(headers: &HeaderMap, name: &HeaderName, value: &HeaderValue) -> Result<(), String> {
    let current = headers.get_all(name).iter().count();
    if headers.len() - current + 1 > MAX_HEADERS {
        return Err(format!("a response may carry at most {MAX_HEADERS} plugin headers"));
    }
    let others: usize = headers.iter().filter(|(k, _)| *k != name).map(|(k, v)| k.as_str().len() + v.len()).sum();
    if others + name.as_str().len() + value.len() > MAX_HEADER_BYTES {
        return Err(format!("plugin headers may total at most {MAX_HEADER_BYTES} bytes per response"));
    }
    Ok(())
}

/// Adds `weir:plugin/types` (the two resources) to the linker.
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    types::add_to_linker::<StoreData, HasSelf<Exchange>>(linker, |d| &mut d.exchange)?;
    // `prompt-texts` again, returning the shared texts: the generated signature returns owned
    // strings, which would copy them on the host for every plugin before copying them in.
    linker.allow_shadowing(true);
    let defined = linker.instance(&format!("{PACKAGE}/types@{VERSION}")).and_then(|mut types| {
        types.func_wrap("[method]request.prompt-texts", |mut store, (_,): (Resource<RequestHandle>,)| {
            Ok((store.data_mut().exchange.prompt_texts(),))
        })
    });
    linker.allow_shadowing(false);
    defined
}

#[cfg(test)]
mod tests;
