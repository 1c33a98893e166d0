//! The `otlp` event sink: each event on the bus (request records, audit and error facts) as an
//! OpenTelemetry log record, exported over OTLP/HTTP (protobuf) to a collector. It runs on the
//! sink's own thread (the bus gives every sink one): records gather as they come and go out as
//! one export when the sink's queue is empty or a batch is full, so a slow or absent collector
//! only fills this sink's queue (the bus drops and counts what does not fit).

use std::time::Duration;

use weir_config::{Priority, SinkConfig};
use weir_events::{Body, Event, Sink};

use crate::encode::{Value, any, bytes_field, export_head, fixed64_field, kv, nanos, string_field, varint_field};

/// Records in one export at most.
const BATCH: usize = 512;
/// Longest one export may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// `SeverityNumber`s: INFO, WARN, ERROR.
const INFO: u64 = 9;
const WARN: u64 = 13;
const ERROR: u64 = 17;

/// The sink `cfg` (`kind = "otlp"`) describes.
///
/// # Errors
/// The exporter could not be built (a message without header values).
pub fn sink(cfg: &SinkConfig) -> Result<Box<dyn Sink>, String> {
    let endpoint = cfg.endpoint.as_deref().unwrap_or_default();
    let headers: Vec<(String, String)> = cfg.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let client = crate::client::Client::new(endpoint, &headers, TIMEOUT)
        .map_err(|e| format!("event sink {}: {e}", cfg.display_name()))?;
    Ok(Box::new(OtlpLogs {
        client,
        service: cfg.service_name.clone().unwrap_or_else(|| "weir".into()),
        runtime: None,
        records: Vec::new(),
        record: Vec::new(),
        line: Vec::new(),
        count: 0,
    }))
}

struct OtlpLogs {
    client: crate::client::Client,
    service: String,
    /// Drives the exports; made on the sink's thread at its first export.
    runtime: Option<tokio::runtime::Runtime>,
    /// The gathered records, each as a length-delimited `ScopeLogs.log_records` field.
    records: Vec<u8>,
    /// One record's fields, before its length is known.
    record: Vec<u8>,
    /// The event's JSON line (the record's body).
    line: Vec<u8>,
    count: usize,
}

impl Sink for OtlpLogs {
    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.record.clear();
        log_record(&mut self.record, &mut self.line, event);
        bytes_field(&mut self.records, 2, &self.record);
        self.count += 1;
        if self.count >= BATCH { self.flush() } else { Ok(()) }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let mut body = export_head(&self.service, self.records.len());
        body.extend_from_slice(&self.records);
        self.records.clear();
        self.count = 0;
        if self.runtime.is_none() {
            self.runtime = Some(tokio::runtime::Builder::new_current_thread().enable_all().build()?);
        }
        let runtime = self.runtime.as_ref().expect("made above");
        runtime.block_on(self.client.send(body)).map_err(std::io::Error::other)
    }
}

/// One `LogRecord`'s fields: the time, a severity, the event's name, its JSON line as the body,
/// and a request record's main fields as attributes (OpenTelemetry's names where there is one)
/// with its trace id.
fn log_record(buf: &mut Vec<u8>, line: &mut Vec<u8>, event: &Event) {
    fixed64_field(buf, 1, nanos(event.time));
    let (severity, text) = severity(event);
    varint_field(buf, 2, severity);
    string_field(buf, 3, text);
    line.clear();
    event.write_json_line(line);
    line.pop();
    any(buf, 5, &Value::Str(std::str::from_utf8(line).unwrap_or_default()));
    let mut name = "weir.request";
    match &event.body {
        Body::Request(r) => {
            kv(buf, 6, "weir.request_id", &Value::Str(&r.id));
            kv(buf, 6, "weir.front_door", &Value::Str(r.front_door));
            kv(buf, 6, "gen_ai.request.model", &Value::Str(&r.model));
            if let Some(m) = &r.served_model {
                kv(buf, 6, "gen_ai.response.model", &Value::Str(m));
            }
            if let Some(p) = &r.provider {
                kv(buf, 6, "weir.provider", &Value::Str(p));
            }
            if let Some(k) = &r.key {
                kv(buf, 6, "weir.key", &Value::Str(k));
            }
            kv(buf, 6, "http.response.status_code", &Value::Int(i64::from(r.status)));
            kv(buf, 6, "weir.outcome", &Value::Str(r.outcome));
            if let Some(code) = &r.error_code {
                kv(buf, 6, "error.type", &Value::Str(code));
            }
            kv(buf, 6, "weir.attempts", &Value::Int(i64::from(r.attempts)));
            kv(buf, 6, "weir.stream", &Value::Bool(r.stream));
            if let Some(t) = r.tokens_in {
                kv(buf, 6, "gen_ai.usage.input_tokens", &Value::Int(t as i64));
            }
            if let Some(t) = r.tokens_out {
                kv(buf, 6, "gen_ai.usage.output_tokens", &Value::Int(t as i64));
            }
            if let Some(c) = r.cost_usd {
                kv(buf, 6, "weir.cost_usd", &Value::Double(c));
            }
            kv(buf, 6, "weir.latency_ms", &Value::Double(r.latency_ms));
            kv(buf, 6, "weir.overhead_us", &Value::Int(r.overhead_us as i64));
            if let Some(t) = r.ttft_ms {
                kv(buf, 6, "weir.ttft_ms", &Value::Double(t));
            }
            if let Some(c) = r.cache {
                kv(buf, 6, "weir.cache", &Value::Str(c));
            }
            if !r.plugins.seen.is_empty() {
                kv(buf, 6, "weir.plugins", &Value::Strs(&r.plugins.seen));
            }
            if let Some(id) = r.trace_id.as_deref().and_then(|h| u128::from_str_radix(h, 16).ok()).filter(|&id| id != 0)
            {
                bytes_field(buf, 9, &id.to_be_bytes());
            }
        }
        Body::Fact { kind, .. } => {
            kv(buf, 6, "weir.event", &Value::Str(kind));
            name = "weir.event";
        }
    }
    fixed64_field(buf, 11, nanos(event.time));
    string_field(buf, 12, name);
}

/// A request's severity from its status; a fact's from its priority.
fn severity(event: &Event) -> (u64, &'static str) {
    match &event.body {
        Body::Request(r) if r.status >= 500 => (ERROR, "ERROR"),
        Body::Request(r) if r.status >= 400 => (WARN, "WARN"),
        Body::Fact { .. } if event.priority == Priority::High => (WARN, "WARN"),
        _ => (INFO, "INFO"),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use prost::Message as _;
    use weir_events::{PluginOutcomes, RequestRecord};

    use super::*;

    fn attr<'a>(r: &'a opentelemetry_proto::tonic::logs::v1::LogRecord, key: &str) -> Option<&'a Any> {
        r.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_request_record_decodes_as_an_otlp_log_record_with_its_fields() {
        let record = RequestRecord {
            id: "req_1".into(),
            front_door: "openai.chat",
            model: "gpt-4o-mini".into(),
            served_model: Some("gpt-4o-mini-2024".into()),
            provider: Some("openai".into()),
            key: Some("team-a".into()),
            status: 503,
            outcome: "upstream_error",
            error_code: Some("upstream_unavailable".into()),
            tokens_in: Some(12),
            cost_usd: Some(0.25),
            latency_ms: 1.5,
            plugins: PluginOutcomes { seen: vec!["prompt-guard".into(), "pii-redact".into()], outcome: "continue" },
            trace_id: Some("0af7651916cd43dd8448eb211c80319c".into()),
            ..Default::default()
        };
        let events =
            [Event::request(record), Event::fact(Priority::High, "breaker", serde_json::json!({"to": "open"}))];
        let mut records = Vec::new();
        let (mut one, mut line) = (Vec::new(), Vec::new());
        for e in &events {
            one.clear();
            log_record(&mut one, &mut line, e);
            bytes_field(&mut records, 2, &one);
        }
        let mut body = export_head("svc", records.len());
        body.extend_from_slice(&records);

        let req = ExportLogsServiceRequest::decode(body.as_slice()).expect("valid protobuf");
        let rl = &req.resource_logs[0];
        let service = &rl.resource.as_ref().unwrap().attributes[0];
        assert_eq!(service.key, "service.name");
        let sl = &rl.scope_logs[0];
        assert_eq!(sl.scope.as_ref().unwrap().name, "weir");
        let [req_log, fact] = &sl.log_records[..] else { panic!("two records: {:?}", sl.log_records) };
        assert_eq!(req_log.severity_number, ERROR as i32);
        assert_eq!(req_log.severity_text, "ERROR");
        assert_eq!(req_log.event_name, "weir.request");
        assert_eq!(req_log.trace_id, 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128.to_be_bytes().to_vec());
        assert!(req_log.time_unix_nano > 0 && req_log.observed_time_unix_nano == req_log.time_unix_nano);
        assert_eq!(attr(req_log, "weir.request_id"), Some(&Any::StringValue("req_1".into())));
        assert_eq!(attr(req_log, "http.response.status_code"), Some(&Any::IntValue(503)));
        assert_eq!(attr(req_log, "gen_ai.usage.input_tokens"), Some(&Any::IntValue(12)));
        assert_eq!(attr(req_log, "weir.cost_usd"), Some(&Any::DoubleValue(0.25)));
        assert_eq!(attr(req_log, "weir.stream"), Some(&Any::BoolValue(false)));
        assert_eq!(attr(req_log, "error.type"), Some(&Any::StringValue("upstream_unavailable".into())));
        match attr(req_log, "weir.plugins") {
            Some(Any::ArrayValue(a)) => assert_eq!(a.values.len(), 2),
            other => panic!("plugins as an array: {other:?}"),
        }
        match req_log.body.as_ref().and_then(|b| b.value.as_ref()) {
            Some(Any::StringValue(json)) => {
                let v: serde_json::Value = serde_json::from_str(json).expect("the body is the JSON line");
                assert_eq!(v["id"], "req_1");
            }
            other => panic!("a string body: {other:?}"),
        }
        assert_eq!(fact.event_name, "weir.event");
        assert_eq!(fact.severity_number, WARN as i32);
        assert_eq!(attr(fact, "weir.event"), Some(&Any::StringValue("breaker".into())));
    }
}
