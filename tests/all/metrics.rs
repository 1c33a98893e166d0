//! `/metrics`: labels, token counters, descriptions and series shapes, read from a real
//! exposition after a known set of requests.

use serde_json::json;

use crate::support::plugins::plugin_toml;
use crate::support::upstream::USAGE;
use crate::support::{MockUpstream, SseReader, Weir, chat, client, metric, post};

/// `(name, kind)` of every `# TYPE` line and the names that have a `# HELP` line.
fn declared(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut types = Vec::new();
    let mut helps = Vec::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("#"), Some("TYPE"), Some(name), Some(kind)) => types.push((name.to_owned(), kind.to_owned())),
            (Some("#"), Some("HELP"), Some(name), _) => helps.push(name.to_owned()),
            _ => {}
        }
    }
    (types, helps)
}

#[tokio::test]
async fn metrics_label_models_count_tokens_and_describe_every_series() {
    let up = MockUpstream::start().await;
    let mut config = up.provider_toml(
        "up",
        r#"models = ["up-a"]
aliases = { fast = "up-a" }"#,
        "",
    );
    // prompt-guard implements on_request only.
    config += &plugin_toml("guard", "prompt-guard", r#"config = { deny_keywords = ["forbidden"] }"#);
    let weir = Weir::start(&config).await;
    let url = weir.url("/v1/chat/completions");

    assert_eq!(post(&url, &chat("up-a", "hello there")).await.status, 200);
    let mut streamed = chat("fast", "hello there");
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let resp = client().post(&url).json(&streamed).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).rest().await;
    assert!(events.iter().any(|e| e.contains("\"usage\"")), "the usage chunk is relayed: {events:?}");
    // A model that is neither configured nor an alias gets no label value of its own.
    assert_eq!(post(&url, &chat("up/unlisted", "hi")).await.status, 200);
    // A plugin rejection counts for the provider the model routes to.
    assert_eq!(post(&url, &chat("up-a", "something forbidden")).await.status, 400);
    assert_eq!(post(&url, &chat("nowhere", "hi")).await.status, 404);

    let m = weir.metrics().await;
    let ok = |model| metric(&m, "weir_requests_total", &[("provider", "up"), ("model", model), ("outcome", "ok")]);
    assert_eq!((ok("up-a"), ok("fast"), ok("other")), (1.0, 1.0, 1.0), "{m}");
    assert!(!m.contains("model=\"unlisted\"") && !m.contains("model=\"up/unlisted\""), "{m}");
    let rejected = [("provider", "up"), ("model", "up-a"), ("status", "400")];
    assert_eq!(metric(&m, "weir_requests_total", &rejected), 1.0, "{m}");
    assert_eq!(metric(&m, "weir_requests_total", &[("provider", "none"), ("status", "400")]), 0.0, "{m}");
    assert_eq!(metric(&m, "weir_requests_total", &[("provider", "none"), ("status", "404")]), 1.0, "{m}");

    let (prompt, completion, cached) = USAGE;
    for model in ["up-a", "fast", "other"] {
        let tokens = |kind| metric(&m, "weir_tokens_total", &[("provider", "up"), ("model", model), ("kind", kind)]);
        assert_eq!(
            (tokens("prompt"), tokens("completion"), tokens("cached")),
            (prompt as f64, completion as f64, cached as f64),
            "tokens of {model}: {m}"
        );
    }

    let version = format!("version=\"{}\"", env!("CARGO_PKG_VERSION"));
    assert!(m.lines().any(|l| l.starts_with("weir_build_info{") && l.contains(&version) && l.ends_with(" 1")), "{m}");

    let (types, helps) = declared(&m);
    assert!(types.len() > 20, "{m}");
    for (name, _) in types.iter().filter(|(n, _)| n.starts_with("weir_")) {
        assert!(helps.contains(name), "{name} has no # HELP line");
    }

    for hook in ["on_response", "on_stream_chunk"] {
        let label = format!("hook=\"{hook}\"");
        let unimplemented = m.lines().find(|l| l.contains("plugin=\"guard\"") && l.contains(&label));
        assert!(unimplemented.is_none(), "series for a hook guard lacks: {unimplemented:?}");
    }
    assert!(types.contains(&("weir_plugin_fuel_used".into(), "histogram".into())), "{m}");
    let on_request = [("plugin", "guard"), ("hook", "on_request")];
    let calls = metric(&m, "weir_plugin_calls_total", &on_request);
    assert!(calls >= 4.0, "{m}");
    assert_eq!(metric(&m, "weir_plugin_fuel_used_count", &on_request), calls, "{m}");
    assert_eq!(metric(&m, "weir_plugin_fuel_used_bucket", &[("plugin", "guard"), ("le", "+Inf")]), calls, "{m}");
}
