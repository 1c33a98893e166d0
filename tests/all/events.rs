//! The event bus end to end: one JSON line per request on stdout with its record, the file
//! sink's rotation, records as OTLP log records at a real receiver, Weir's own logs as JSON,
//! and a stalled sink that does not slow requests.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{MockUpstream, Weir, chat, client, metric, post, weir_check};

/// The request records among the process's output lines.
fn records(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter(|l| l.starts_with("{\"event\":\"request\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (at most 10 s) until `n` records were printed.
async fn wait_records(weir: &Weir, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = records(&weir.logs());
        if recs.len() >= n {
            return recs;
        }
        assert!(Instant::now() < deadline, "{} of {n} records:\n{}", recs.len(), weir.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn every_request_is_one_json_line_on_stdout_with_its_record() {
    let up = MockUpstream::start().await;
    let config = format!("[[events.sinks]]\nkind = \"stdout\"\n\n{}", up.provider_toml("up", "", ""));
    let weir = Weir::start(&config).await;
    let url = weir.url("/v1/chat/completions");
    let ok = post(&url, &chat("up/m", "hello there")).await;
    assert_eq!(ok.status, 200);
    let failed = post(&url, &chat("up/m;status=503", "x")).await;
    assert_eq!(failed.status, 503);
    let unknown = post(&url, &chat("nowhere/m", "x")).await;
    assert_eq!(unknown.status, 404);
    let mut body = chat("up/m", "one two three");
    body["stream"] = json!(true);
    let stream = client().post(&url).json(&body).send().await.unwrap();
    let stream_id = stream.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(stream.text().await.unwrap().contains("[DONE]"));

    let recs = wait_records(&weir, 4).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(records(&weir.logs()).len(), 4, "one record per request, no more");
    let by_id = |h: &crate::support::Reply| {
        let id = h.header("x-request-id").unwrap();
        recs.iter().find(|r| r["id"] == id).unwrap_or_else(|| panic!("no record for {id}: {recs:?}")).clone()
    };
    let r = by_id(&ok);
    assert_eq!((r["status"].as_u64(), r["outcome"].as_str()), (Some(200), Some("ok")));
    assert_eq!((r["model"].as_str(), r["provider"].as_str()), (Some("up/m"), Some("up")));
    assert_eq!(r["served_model"], "m");
    assert_eq!((r["front_door"].as_str(), r["attempts"].as_u64()), (Some("openai.chat"), Some(1)));
    assert!(r["tokens_in"].as_u64().is_some() && r["tokens_out"].as_u64().is_some(), "{r}");
    assert!(r["latency_ms"].as_f64().unwrap() > 0.0 && r["overhead_us"].as_u64().is_some());
    assert!(r["time"].as_str().unwrap().ends_with('Z'));
    for unset in ["key", "cost_usd", "cache", "ttft_ms", "error_code"] {
        assert!(r[unset].is_null(), "{unset} in {r}");
    }
    let r = by_id(&failed);
    assert_eq!((r["status"].as_u64(), r["priority"].as_str()), (Some(503), Some("high")), "{r}");
    assert!(r["error_code"].is_string(), "{r}");
    let r = by_id(&unknown);
    assert_eq!((r["error_code"].as_str(), r["provider"].as_str()), (Some("model_not_found"), None), "{r}");
    let r = recs.iter().find(|r| r["id"] == stream_id.as_str()).unwrap();
    assert_eq!((r["stream"].as_bool(), r["status"].as_u64()), (Some(true), Some(200)));
    let ttft = r["ttft_ms"].as_f64().expect("a stream has a time to first token");
    assert!(ttft > 0.0 && ttft <= r["latency_ms"].as_f64().unwrap(), "{r}");
}

#[tokio::test]
async fn a_stream_the_client_leaves_is_one_record_with_499() {
    let up = MockUpstream::start().await;
    let config = format!("[[events.sinks]]\nkind = \"stdout\"\n\n{}", up.provider_toml("up", "", ""));
    let weir = Weir::start(&config).await;
    let mut body = chat("up/m;chunks=500;chunk_delay=20", "long");
    body["stream"] = json!(true);
    let mut resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(resp.chunk().await.unwrap().is_some(), "the stream started");
    drop(resp);
    let recs = wait_records(&weir, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mine: Vec<Value> = records(&weir.logs()).into_iter().filter(|r| r["id"] == id.as_str()).collect();
    assert_eq!(mine.len(), 1, "one record for the stream: {recs:?}");
    assert_eq!((mine[0]["status"].as_u64(), mine[0]["outcome"].as_str()), (Some(499), Some("client_closed")));
    assert!(mine[0]["ttft_ms"].as_f64().is_some() && mine[0]["latency_ms"].as_f64().unwrap() < 5000.0);
}

#[tokio::test]
async fn the_file_sink_rotates_by_size_and_keeps_whole_lines() {
    let up = MockUpstream::start().await;
    let config = format!(
        "[[events.sinks]]\nkind = \"file\"\npath = \"logs/requests.jsonl\"\nmax_bytes = 2048\nkeep = 2\n\n{}",
        up.provider_toml("up", "", "")
    );
    let mut weir = Weir::start(&config).await;
    for i in 0..40 {
        assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("up/m", &format!("n{i}"))).await.status, 200);
    }
    // SIGTERM: the sink writes out what is queued before the process exits.
    weir.sigterm();
    assert!(weir.wait_exit(Duration::from_secs(20)).await.success());
    let dir = weir.config_path().parent().unwrap().join("logs");
    let file = |suffix: &str| dir.join(format!("requests.jsonl{suffix}"));
    assert!(!file(".3").exists(), "only `keep` rotated files are kept");
    let mut lines = 0;
    for suffix in ["", ".1", ".2"] {
        let text = std::fs::read_to_string(file(suffix)).unwrap_or_else(|e| panic!("{suffix}: {e}"));
        assert!(text.len() <= 2048, "{suffix} is {} bytes", text.len());
        assert!(text.ends_with('\n'));
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["event"], "request");
            lines += 1;
        }
    }
    let current = std::fs::read_to_string(file("")).unwrap();
    assert!(current.contains("\"model\":\"up/m\""), "the newest records are in the current file");
    assert!((6..40).contains(&lines), "{lines} lines kept across the 3 files");
}

#[tokio::test]
async fn weirs_own_log_lines_are_json_with_log_format_json() {
    let up = MockUpstream::start().await;
    let config = format!("[log]\nformat = \"json\"\n\n{}", up.provider_toml("up", "", ""));
    let weir = Weir::start(&config).await;
    assert_eq!(post(&weir.url("/v1/chat/completions"), &chat("up/m", "hi")).await.status, 200);
    weir.wait_for_log("request finished").await;
    let logs = weir.logs();
    let mut n = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{v}");
        n += 1;
    }
    assert!(n >= 2, "{logs}");
    assert!(logs.contains("weir listening"));
}

#[test]
fn a_bad_events_table_is_refused_naming_the_key() {
    let cases = [
        ("[[events.sinks]]\nkind = \"file\"\n", "events.sinks[0].path"),
        ("[events]\nworkers = 0\n", "events.workers"),
        ("[events.queues]\nhigh = 0\n", "events.queues.high"),
        ("[events]\npolicy = \"drop-everything\"\n", "drop-low-priority"),
        ("[log]\nformat = \"xml\"\n", "json"),
    ];
    for (table, key) in cases {
        let config = format!("{table}\n[[providers]]\nname = \"m\"\nkind = \"mock\"\nmodels = [\"m\"]\n");
        let out = weir_check(&config, &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(key), "{table}: {err}");
    }
}

/// p99 of `n` chat requests sent by `conc` clients in parallel.
async fn p99(weir: &Weir, n: usize, conc: usize) -> Duration {
    let url = weir.url("/v1/chat/completions");
    let tasks = (0..conc).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let c = client();
            let mut times = Vec::with_capacity(n / conc);
            for _ in 0..n / conc {
                let t0 = Instant::now();
                let r = c.post(&url).json(&chat("up/m", "hi")).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                times.push(t0.elapsed());
            }
            times
        })
    });
    let mut all: Vec<Duration> = Vec::new();
    for t in futures_util::future::join_all(tasks).await {
        all.extend(t.unwrap());
    }
    all.sort();
    all[all.len() * 99 / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_sink_drops_its_records_without_slowing_requests() {
    let up = MockUpstream::start().await;
    // Nobody reads this process's stdout: once the pipe is full the stdout sink blocks.
    let stalled =
        format!("[[events.sinks]]\nkind = \"stdout\"\nqueue = 64\n\n{}", up.provider_toml("up", "", "workers = 16"));
    let stalled = Weir::builder(&stalled).unread_stdout().start().await;
    let plain = Weir::start(&up.provider_toml("up", "", "workers = 16")).await;
    // Warm both, then measure each twice, interleaved, and keep the better run of each
    // (a shared 2-core machine adds noise that is not the sink's).
    p99(&plain, 200, 4).await;
    p99(&stalled, 2000, 8).await;
    let mut with_stall = Duration::MAX;
    let mut without = Duration::MAX;
    for _ in 0..2 {
        without = without.min(p99(&plain, 800, 8).await);
        with_stall = with_stall.min(p99(&stalled, 800, 8).await);
    }
    eprintln!("p99 with a stalled stdout sink {with_stall:?}, without a sink {without:?}");
    let dropped = metric(&stalled.metrics().await, "weir_events_sink_dropped_total", &[("sink", "stdout")]);
    assert!(dropped > 1000.0, "the stalled sink's records are dropped and counted: {dropped}");
    assert!(
        with_stall <= without * 3 + Duration::from_millis(5),
        "p99 with a stalled sink {with_stall:?} vs {without:?} without a sink"
    );
}

#[tokio::test]
async fn request_records_reach_an_otlp_collector_as_log_records_with_their_trace() {
    let (up, otlp) = (MockUpstream::start().await, crate::support::otlp::OtlpReceiver::start().await);
    let config = format!(
        "[[events.sinks]]\nkind = \"otlp\"\nendpoint = \"{}\"\nservice_name = \"weir-logs\"\n\
         headers = {{ x-collector-key = \"collector-secret-1\" }}\n\n\
         [tracing]\nendpoint = \"{}\"\nexport_interval = \"50ms\"\n\n{}",
        otlp.logs_endpoint(),
        otlp.endpoint(),
        up.provider_toml("up", "", "")
    );
    let weir = Weir::start(&config).await;
    let url = weir.url("/v1/chat/completions");
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let ok = client()
        .post(&url)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&chat("up/m", "hello there"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok_id = ok.headers()["x-request-id"].to_str().unwrap().to_owned();
    let failed = post(&url, &chat("up/m;status=503", "x")).await;
    assert_eq!(failed.status, 503);

    let log = otlp.wait_for_log("weir.request_id", &ok_id).await;
    assert_eq!((log.event_name.as_str(), log.service.as_str()), ("weir.request", "weir-logs"));
    assert_eq!(log.severity, 9, "info");
    assert_eq!(log.trace_id, trace, "the record carries the client's trace");
    assert_eq!(log.attrs["http.response.status_code"], "200");
    assert_eq!(log.attrs["gen_ai.request.model"], "up/m");
    assert_eq!(log.attrs["weir.provider"], "up");
    assert_eq!(log.attrs["gen_ai.usage.input_tokens"], "12");
    let body: Value = serde_json::from_str(&log.body).expect("the body is the record's JSON line");
    assert_eq!(body["id"], ok_id.as_str());

    let failed_id = failed.header("x-request-id").unwrap();
    let log = otlp.wait_for_log("weir.request_id", failed_id).await;
    assert_eq!(log.severity, 17, "a 5xx is an error");
    assert_eq!(log.attrs["error.type"], body_code(&failed.text));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(otlp.logs().len(), 2, "one log record per request: {:#?}", otlp.logs());
    assert!(!weir.logs().contains("collector-secret-1"), "the collector's header stays out of the logs");
}

/// The `error.code` of an OpenAI-format error body.
fn body_code(text: &str) -> String {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn an_otlp_sink_without_an_endpoint_is_refused_naming_its_key() {
    let provider = "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n";
    let out = weir_check(&format!("[[events.sinks]]\nkind = \"otlp\"\n\n{provider}"), &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success() && text.contains("events.sinks[0].endpoint"), "{text}");
}
