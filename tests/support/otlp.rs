//! A real OTLP/HTTP receiver on 127.0.0.1: `POST /v1/traces` with an
//! `ExportTraceServiceRequest` and `POST /v1/logs` with an `ExportLogsServiceRequest`, in
//! protobuf, decoded with the official OTLP definitions (`opentelemetry-proto`'s prost
//! messages) and answered as a collector does. Every span and log record received is kept,
//! flattened, for the test to look at.

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
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
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

/// One received log record.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    /// Its event name.
    pub event_name: String,
    /// Its severity number (OTLP's numbering: 9 info, 13 warn, 17 error).
    pub severity: i32,
    /// Its trace id as 32 hex digits, empty without one.
    pub trace_id: String,
    /// Its body as text.
    pub body: String,
    /// Attributes as text.
    pub attrs: HashMap<String, String>,
    /// `service.name` of the resource it came with.
    pub service: String,
}

/// What the receiver keeps.
#[derive(Default)]
struct Received {
    spans: Mutex<Vec<ReceivedSpan>>,
    logs: Mutex<Vec<ReceivedLog>>,
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    addr: SocketAddr,
    got: Arc<Received>,
    /// Export requests received.
    requests: Arc<Mutex<usize>>,
    server: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Received::default());
        let requests = Arc::new(Mutex::new(0));
        let (s, r) = (got.clone(), requests.clone());
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
        Self { addr, got, requests, server }
    }

    /// The logs URL to configure as an `otlp` event sink's `endpoint`.
    pub fn logs_endpoint(&self) -> String {
        format!("http://{}/v1/logs", self.addr)
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.got.logs.lock().unwrap().clone()
    }

    /// The first log record whose attribute `key` is `value`, waiting at most 10 s.
    ///
    /// # Panics
    /// If none arrives in time.
    pub async fn wait_for_log(&self, key: &str, value: &str) -> ReceivedLog {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.logs().into_iter().find(|l| l.attrs.get(key).is_some_and(|v| v == value)) {
                return l;
            }
            assert!(Instant::now() < deadline, "no log record with {key}={value} arrived; got {:#?}", self.logs());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The traces URL to configure as `tracing.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.got.spans.lock().unwrap().clone()
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
    got: Arc<Received>,
    requests: Arc<Mutex<usize>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
        Ok(r)
    };
    let is_proto = req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
    let path = req.uri().path().to_owned();
    if req.method() != http::Method::POST || !is_proto || !["/v1/traces", "/v1/logs"].contains(&path.as_str()) {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if path == "/v1/logs" {
        let Ok(export) = ExportLogsServiceRequest::decode(body) else {
            return reply(StatusCode::BAD_REQUEST, Vec::new());
        };
        let mut out = got.logs.lock().unwrap();
        for rl in export.resource_logs {
            let service = service_name(rl.resource.iter().flat_map(|r| &r.attributes));
            for log in rl.scope_logs.into_iter().flat_map(|sl| sl.log_records) {
                out.push(ReceivedLog {
                    event_name: log.event_name,
                    severity: log.severity_number,
                    trace_id: hex(&log.trace_id),
                    body: text(log.body.as_ref().and_then(|v| v.value.as_ref())),
                    attrs: (log.attributes.iter())
                        .map(|kv| (kv.key.clone(), text(kv.value.as_ref().and_then(|v| v.value.as_ref()))))
                        .collect(),
                    service: service.clone(),
                });
            }
        }
        return reply(StatusCode::OK, ExportLogsServiceResponse { partial_success: None }.encode_to_vec());
    }
    let Ok(export) = ExportTraceServiceRequest::decode(body) else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    *requests.lock().unwrap() += 1;
    let mut out = got.spans.lock().unwrap();
    for rs in export.resource_spans {
        let service = service_name(rs.resource.iter().flat_map(|r| &r.attributes));
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

fn service_name<'a>(mut attrs: impl Iterator<Item = &'a opentelemetry_proto::tonic::common::v1::KeyValue>) -> String {
    attrs
        .find(|kv| kv.key == "service.name")
        .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
        .unwrap_or_default()
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
        Some(Value::ArrayValue(a)) => a.values.iter().map(|v| text(v.value.as_ref())).collect::<Vec<_>>().join(","),
        _ => String::new(),
    }
}
