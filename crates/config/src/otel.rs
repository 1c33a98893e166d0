//! `[tracing]`: OpenTelemetry traces of requests, exported over OTLP/HTTP (protobuf). Absent:
//! no span is made at all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, values};

/// `[tracing]`: where spans go and which requests make them.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/HTTP traces URL, e.g. `http://127.0.0.1:4318/v1/traces` (used as
    /// written: include the `/v1/traces` path). May use `${ENV}`.
    pub endpoint: String,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of requests traced, 0.0 to 1.0, decided from the trace id (so services with the
    /// same ratio keep or drop the same traces).
    pub sample_ratio: f64,
    /// Also record requests the ratio left out, and export those that ended in an error.
    /// Costs the spans of every request (made and then dropped for most).
    pub always_on_error: bool,
    /// Longest one export to the collector may take.
    #[serde(with = "values::duration")]
    pub export_timeout: Duration,
    /// How often queued spans are sent (sooner when a batch fills).
    #[serde(with = "values::duration")]
    pub export_interval: Duration,
    /// Most spans waiting for export; past it, spans are dropped and counted
    /// (`weir_trace_spans_dropped_total`): bounds memory when the collector is slow or down.
    pub max_queue_spans: usize,
    /// Most spans in one export request.
    pub max_batch_spans: usize,
    /// Headers sent to the collector (e.g. an API key as `${ENV}`): secrets, never logged.
    pub headers: BTreeMap<String, String>,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            service_name: "weir".into(),
            sample_ratio: 1.0,
            always_on_error: false,
            export_timeout: Duration::from_secs(10),
            export_interval: Duration::from_secs(1),
            max_queue_spans: 8192,
            max_batch_spans: 512,
            headers: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for TracingConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TracingConfig")
            .field("endpoint", &self.endpoint)
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("always_on_error", &self.always_on_error)
            .field("export_timeout", &self.export_timeout)
            .field("export_interval", &self.export_interval)
            .field("max_queue_spans", &self.max_queue_spans)
            .field("max_batch_spans", &self.max_batch_spans)
            .field("headers", &self.headers.keys().map(|k| (k, "<redacted>")).collect::<BTreeMap<_, _>>())
            .finish()
    }
}

impl TracingConfig {
    /// Checks the values.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the `tracing.*` key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::invalid(format!("tracing.{key}"), why));
        if self.endpoint.is_empty() {
            return bad("endpoint", "required: the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318/v1/traces");
        }
        let uri: http::Uri = match self.endpoint.parse() {
            Ok(u) => u,
            Err(_) => return bad("endpoint", "not a URL"),
        };
        if let Err(why) = crate::url::check_base_url(&uri) {
            return bad("endpoint", &why);
        }
        if self.service_name.is_empty() {
            return bad("service_name", "must not be empty");
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad("sample_ratio", "must be between 0.0 and 1.0");
        }
        if self.export_timeout.is_zero() {
            return bad("export_timeout", "must be more than zero");
        }
        if self.export_interval.is_zero() {
            return bad("export_interval", "must be more than zero");
        }
        if self.max_queue_spans == 0 {
            return bad("max_queue_spans", "must be at least 1");
        }
        if self.max_batch_spans == 0 || self.max_batch_spans > self.max_queue_spans {
            return bad("max_batch_spans", "must be at least 1 and at most max_queue_spans");
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return bad(&format!("headers.{name}"), "not a valid header name");
            }
            if http::HeaderValue::from_str(value).is_err() {
                return bad(&format!("headers.{name}"), "not a valid header value");
            }
        }
        Ok(())
    }

    /// The config with header values replaced by `<redacted>`.
    pub fn redact(&mut self) {
        for v in self.headers.values_mut() {
            *v = "<redacted>".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> TracingConfig {
        TracingConfig { endpoint: "http://127.0.0.1:4318/v1/traces".into(), ..TracingConfig::default() }
    }

    #[test]
    fn each_bad_value_is_refused_naming_its_key() {
        assert!(valid().validate().is_ok());
        type Edit = fn(&mut TracingConfig);
        let cases: [(&str, Edit); 7] = [
            ("tracing.endpoint", |c| c.endpoint.clear()),
            ("tracing.endpoint", |c| c.endpoint = "ftp://x/v1/traces".into()),
            ("tracing.sample_ratio", |c| c.sample_ratio = 1.5),
            ("tracing.export_timeout", |c| c.export_timeout = Duration::ZERO),
            ("tracing.max_queue_spans", |c| c.max_queue_spans = 0),
            ("tracing.max_batch_spans", |c| c.max_batch_spans = c.max_queue_spans + 1),
            ("tracing.headers.bad name", |c| {
                c.headers.insert("bad name".into(), "v".into());
            }),
        ];
        for (key, edit) in cases {
            let mut c = valid();
            edit(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
    }

    #[test]
    fn header_values_never_show_in_debug_or_redacted() {
        let mut c = valid();
        c.headers.insert("authorization".into(), "Bearer s3cret".into());
        assert!(!format!("{c:?}").contains("s3cret"));
        c.redact();
        assert_eq!(c.headers["authorization"], "<redacted>");
    }
}
