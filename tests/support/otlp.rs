//! A real OTLP/HTTP trace receiver on 127.0.0.1: `POST /v1/traces` with an
//! `ExportTraceServiceRequest` in protobuf, decoded with the official OTLP definitions
//! (`opentelemetry-proto`'s prost messages) and answered as a collector does. Every span
//! received is kept, flattened, for the test to look at.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

/// One received span, its ids as lower-case hex.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, empty for a root.
    pub parent_id: String,
    /// The span's name.
    pub name: String,
    /// Its kind (OTLP's numbering: 2 server, 3 client).
    pub kind: i32,
    /// Attributes as text.
    pub attrs: HashMap<String, String>,
    /// Event names.
    pub events: Vec<String>,
    /// Status code (OTLP's numbering: 2 error).
    pub status: i32,
    /// `service.name` of the resource it came with.
    pub service: String,
    /// Start and end, nanoseconds since the epoch.
    pub times: (u64, u64),
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    /// Export requests received.
    requests: Arc<Mutex<usize>>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(0));
        let (s, r) = (spans.clone(), requests.clone());
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (s, r) = (s.clone(), r.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| receive(req, s.clone(), r.clone()));
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, spans, requests, server }
    }

    /// The traces URL to configure as `tracing.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Export requests received so far.
    pub fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }

    /// The spans of trace `trace_id` once its span named `name` has arrived, waiting at most
    /// 10 s.
    ///
    /// # Panics
    /// If it does not arrive in time.
    pub async fn wait_for(&self, trace_id: &str, name: &str) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans: Vec<_> = self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect();
            if spans.iter().any(|s| s.name == name) {
                return spans;
            }
            assert!(Instant::now() < deadline, "no span {name} of trace {trace_id} arrived; got {:#?}", self.spans());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    req: Request<Incoming>,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    requests: Arc<Mutex<usize>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
        Ok(r)
    };
    let is_proto = req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" || !is_proto {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    *requests.lock().unwrap() += 1;
    let mut out = spans.lock().unwrap();
    for rs in export.resource_spans {
        let service = (rs.resource.iter().flat_map(|r| &r.attributes))
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
            .unwrap_or_default();
        for span in rs.scope_spans.into_iter().flat_map(|ss| ss.spans) {
            out.push(ReceivedSpan {
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_id: hex(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attrs: (span.attributes.iter())
                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                    .collect(),
                events: span.events.into_iter().map(|e| e.name).collect(),
                status: span.status.map_or(0, |s| s.code),
                service: service.clone(),
                times: (span.start_time_unix_nano, span.end_time_unix_nano),
            });
        }
    }
    reply(StatusCode::OK, ExportTraceServiceResponse { partial_success: None }.encode_to_vec())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}
