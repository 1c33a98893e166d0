//! The `weir:plugin@0.1.0` imports, for components built before API formats: every function
//! delegates to its 0.2 twin in the capability's own file, so both versions share one grant,
//! one state and one set of limits. Only `request.endpoint` is new here, and it is never asked
//! about a request in another format than OpenAI's (a 0.1 plugin is out of scope for those).

use wasmtime::component::{HasSelf, Linker, Resource};

use super::StoreData;
use super::clock::ClockState;
use super::exchange::Exchange;
use super::kv::KvState;
use super::log::LogState;
use super::metrics::MetricsState;
use crate::plugins::bindings::{RequestHandle, ResponseHandle, clock, kv, log, metrics, types, v0_1};
use crate::plugins::convert::legacy_endpoint;

impl v0_1::log::Host for LogState {
    fn log(&mut self, level: v0_1::log::Level, message: String) {
        log::Host::log(self, level.into(), message);
    }
}

impl v0_1::kv::Host for KvState {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        kv::Host::get(self, key).await
    }
    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: u64) -> Result<(), String> {
        kv::Host::set(self, key, value, ttl_ms).await
    }
    async fn incr(&mut self, key: String, delta: i64, ttl_ms: u64) -> Result<i64, String> {
        kv::Host::incr(self, key, delta, ttl_ms).await
    }
    async fn delete(&mut self, key: String) {
        kv::Host::delete(self, key).await;
    }
}

impl v0_1::metrics::Host for MetricsState {
    fn counter(&mut self, name: String, value: u64) {
        metrics::Host::counter(self, name, value);
    }
    fn histogram(&mut self, name: String, value: f64) {
        metrics::Host::histogram(self, name, value);
    }
}

impl v0_1::clock::Host for ClockState {
    fn now(&mut self) -> u64 {
        clock::Host::now(self)
    }
}

impl v0_1::types::Host for Exchange {}

impl v0_1::types::HostRequest for Exchange {
    fn id(&mut self, r: Resource<RequestHandle>) -> String {
        types::HostRequest::id(self, r)
    }
    fn endpoint(&mut self, _: Resource<RequestHandle>) -> v0_1::Endpoint {
        legacy_endpoint(self.request_endpoint().map_or(crate::format::Operation::Chat, |e| e.op))
    }
    fn model(&mut self, r: Resource<RequestHandle>) -> String {
        types::HostRequest::model(self, r)
    }
    fn set_model(&mut self, r: Resource<RequestHandle>, model: String) {
        types::HostRequest::set_model(self, r, model);
    }
    fn provider(&mut self, r: Resource<RequestHandle>) -> Option<String> {
        types::HostRequest::provider(self, r)
    }
    fn is_stream(&mut self, r: Resource<RequestHandle>) -> bool {
        types::HostRequest::is_stream(self, r)
    }
    fn header(&mut self, r: Resource<RequestHandle>, name: String) -> Option<String> {
        types::HostRequest::header(self, r, name)
    }
    fn headers(&mut self, r: Resource<RequestHandle>) -> Vec<(String, String)> {
        types::HostRequest::headers(self, r)
    }
    fn body(&mut self, r: Resource<RequestHandle>) -> Option<String> {
        types::HostRequest::body(self, r)
    }
    fn get(&mut self, r: Resource<RequestHandle>, pointer: String) -> Option<String> {
        types::HostRequest::get(self, r, pointer)
    }
    fn prompt_texts(&mut self, r: Resource<RequestHandle>) -> Vec<String> {
        types::HostRequest::prompt_texts(self, r)
    }
    fn set(&mut self, r: Resource<RequestHandle>, pointer: String, json: String) -> Result<(), String> {
        types::HostRequest::set(self, r, pointer, json)
    }
    fn set_body(&mut self, r: Resource<RequestHandle>, json: String) -> Result<(), String> {
        types::HostRequest::set_body(self, r, json)
    }
    fn drop(&mut self, r: Resource<RequestHandle>) -> wasmtime::Result<()> {
        types::HostRequest::drop(self, r)
    }
}

impl v0_1::types::HostResponse for Exchange {
    fn status(&mut self, r: Resource<ResponseHandle>) -> u16 {
        types::HostResponse::status(self, r)
    }
    fn header(&mut self, r: Resource<ResponseHandle>, name: String) -> Option<String> {
        types::HostResponse::header(self, r, name)
    }
    fn set_header(&mut self, r: Resource<ResponseHandle>, name: String, value: String) -> Result<(), String> {
        types::HostResponse::set_header(self, r, name, value)
    }
    fn body(&mut self, r: Resource<ResponseHandle>) -> String {
        types::HostResponse::body(self, r)
    }
    fn get(&mut self, r: Resource<ResponseHandle>, pointer: String) -> Option<String> {
        types::HostResponse::get(self, r, pointer)
    }
    fn set(&mut self, r: Resource<ResponseHandle>, pointer: String, json: String) -> Result<(), String> {
        types::HostResponse::set(self, r, pointer, json)
    }
    fn set_body(&mut self, r: Resource<ResponseHandle>, json: String) -> Result<(), String> {
        types::HostResponse::set_body(self, r, json)
    }
    fn drop(&mut self, r: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        types::HostResponse::drop(self, r)
    }
}

/// Adds every `weir:plugin@0.1.0` interface to the linker, beside the 0.2 ones (the names carry
/// the version, so the two do not clash).
///
/// # Errors
/// Only on a linker conflict (a bug).
pub fn add_to_linker(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    v0_1::types::add_to_linker::<StoreData, HasSelf<Exchange>>(linker, |d| &mut d.exchange)?;
    v0_1::log::add_to_linker::<StoreData, HasSelf<LogState>>(linker, |d| &mut d.log)?;
    v0_1::kv::add_to_linker::<StoreData, HasSelf<KvState>>(linker, |d| &mut d.kv)?;
    v0_1::metrics::add_to_linker::<StoreData, HasSelf<MetricsState>>(linker, |d| &mut d.metrics)?;
    v0_1::clock::add_to_linker::<StoreData, HasSelf<ClockState>>(linker, |d| &mut d.clock)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::HeaderMap;
    use v0_1::types::HostRequest as R;

    use super::*;
    use crate::exchange::{GatewayRequest, JsonBody};
    use crate::format::Endpoint;

    fn put(ex: &mut Exchange, endpoint: Endpoint) {
        let body = JsonBody::from_raw(Bytes::from_static(br#"{"model":"m","input":"hi"}"#));
        let req = GatewayRequest {
            id: "req_1".into(),
            endpoint,
            model: "m".into(),
            stream: false,
            body,
            headers: HeaderMap::new(),
            affinity: crate::affinity::Affinity::NONE,
        };
        ex.put_request(req, None);
    }

    #[test]
    fn a_legacy_request_names_its_openai_endpoint_and_delegates_the_rest() {
        let mut ex = Exchange::new(1024);
        put(&mut ex, Endpoint::OPENAI_EMBEDDINGS);
        assert!(matches!(R::endpoint(&mut ex, Resource::new_borrow(0)), v0_1::Endpoint::Embeddings));
        assert_eq!(R::model(&mut ex, Resource::new_borrow(0)), "m");
        R::set_model(&mut ex, Resource::new_borrow(0), "n".into());
        assert!(ex.model_edited);
        put(&mut ex, Endpoint::OPENAI_CHAT);
        assert!(matches!(R::endpoint(&mut ex, Resource::new_borrow(0)), v0_1::Endpoint::ChatCompletions));
    }
}
