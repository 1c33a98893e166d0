//! Chain tests against real components built from `plugins/` (build them first:
//! `scripts/build-plugins.sh`, or `cargo build --manifest-path plugins/Cargo.toml --target
//! wasm32-wasip2 --release`).

use std::path::PathBuf;
use std::time::Duration;

use http::HeaderMap;
use serde_json::json;

use super::*;
use crate::exchange::JsonBody;
use crate::format::Endpoint;

/// Path of a built plugin component (`WEIR_PLUGIN_DIR` overrides the directory).
pub(crate) fn wasm(name: &str) -> PathBuf {
    let dir = std::env::var_os("WEIR_PLUGIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm32-wasip2/release")
    });
    let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
    assert!(path.exists(), "{} is missing: build the plugins first (scripts/build-plugins.sh)", path.display());
    path
}

pub(crate) fn plugin(name: &str, file: &str, config: serde_json::Value) -> PluginConfig {
    let toml = format!("name = {name:?}\npath = {:?}\n", wasm(file).display().to_string());
    let mut cfg: PluginConfig = toml::from_str(&toml).unwrap();
    if let serde_json::Value::Object(map) = config {
        cfg.config = toml::Table::try_from(map).unwrap();
    }
    cfg
}

/// A cache shared by the tests of this run, so each component compiles once.
fn runtime() -> PluginRuntimeConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/weir-test-cache");
    PluginRuntimeConfig { cache_dir: Some(dir), ..Default::default() }
}

pub(crate) fn request(model: &str, kb: usize) -> GatewayRequest {
    let filler = "x".repeat(kb * 1024);
    let body = json!({"model": model, "messages": [{"role": "user", "content": filler}]});
    GatewayRequest {
        id: "req_test".into(),
        endpoint: Endpoint::OPENAI_CHAT,
        model: model.into(),
        stream: false,
        body: JsonBody::from_map(body.as_object().unwrap().clone()),
        headers: HeaderMap::new(),
        affinity: crate::affinity::Affinity::NONE,
    }
}

fn misbehave(mode: &str, extra: serde_json::Value) -> PluginConfig {
    let mut cfg = json!({"mode": mode, "always": true});
    cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let mut p = plugin(mode, "misbehave", cfg);
    p.instances = 2;
    p
}

async fn wait_healed(chain: &Chain, live: usize) {
    for _ in 0..200 {
        if chain.stats().iter().all(|s| s.live == live && s.idle == live) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("pool did not heal: {:?}", chain.stats());
}

#[tokio::test]
async fn noop_plugin_continues_and_sees_the_response() {
    let chain = Chain::load(&[plugin("noop", "noop", json!({}))], &runtime()).await.unwrap();
    assert_eq!(chain.names(), ["noop"]);
    let mut req = request("m", 1);
    let pre = chain.on_request(&mut req, None).await.unwrap();
    assert!(pre.respond.is_none() && !pre.model_changed);
    assert!(!pre.edited, "a plugin that only reads leaves the client's bytes forwardable");
    assert_eq!(req.body.map()["messages"][0]["content"].as_str().unwrap().len(), 1024);
    let ctx = HookCtx { request: Arc::new(req), provider: Some("mock".into()), trace: Default::default() };
    let mut resp = GatewayResponse::ok(Bytes::from_static(b"{}"));
    chain.on_response(&ctx, pre.seen, &mut resp).await.unwrap();
    assert!(chain.has_stream_hooks(pre.seen));
    assert_eq!(chain.stats()[0].live, 4);
}

#[tokio::test]
async fn a_0_1_plugin_loads_and_its_edits_and_answers_reach_the_gateway() {
    let chain = Chain::load(&[plugin("old", "legacy-v0_1", json!({}))], &runtime()).await.unwrap();
    assert_eq!(chain.plugins[0].contract, bindings::Contract::V0_1);
    let mut req = request("m", 0);
    req.body.map_mut()["messages"][0]["content"] = json!("hi");
    let pre = chain.on_request(&mut req, None).await.unwrap();
    assert!(pre.edited && pre.respond.is_none());
    assert_eq!(req.body.map()["messages"][0]["content"], "hi [legacy:chat-completions]");
    let ctx = HookCtx { request: Arc::new(req), provider: None, trace: Default::default() };
    let mut resp = GatewayResponse::ok(Bytes::from_static(b"{}"));
    chain.on_response(&ctx, pre.seen, &mut resp).await.unwrap();
    assert_eq!(resp.headers["x-legacy"], "chat-completions");

    let mut refused = request("m", 0);
    refused.headers.insert("x-legacy-reject", http::HeaderValue::from_static("1"));
    let err = chain.on_request(&mut refused, None).await.err().unwrap();
    assert_eq!((err.status().as_u16(), err.code_str()), (403, "legacy_rejected"));
}

#[tokio::test]
async fn each_failure_is_classified_and_the_pool_heals() {
    let cases = [
        ("loop", json!({}), "ran out of fuel"),
        ("memory", json!({}), "memory limit"),
        ("trap", json!({}), "trapped"),
        ("recursion", json!({}), "trapped"),
        ("oversized", json!({}), "max_output_bytes"),
        ("invalid", json!({}), "invalid decision"),
    ];
    for (mode, extra, expect) in cases {
        let mut cfg = misbehave(mode, extra);
        cfg.memory_limit = 16 * 1024 * 1024;
        let chain = Chain::load(&[cfg], &runtime()).await.unwrap();
        for _ in 0..3 {
            let mut req = request("m", 1);
            let err = chain.on_request(&mut req, None).await.err().unwrap_or_else(|| panic!("{mode} passed"));
            assert_eq!(err.kind, ErrorKind::PluginFailed, "{mode}: {err}");
            assert!(err.message.contains(expect), "{mode}: {err}");
            assert!(err.message.contains(&format!("`{mode}`")), "{mode}: names the plugin: {err}");
            // The request survives the failed call intact.
            assert_eq!(req.body.map()["messages"][0]["content"].as_str().unwrap().len(), 1024, "{mode}");
        }
        wait_healed(&chain, 2).await;
        let replaced = chain.stats()[0].replaced;
        if matches!(mode, "oversized" | "invalid") {
            assert_eq!(replaced, 0, "{mode}: the store is intact, the instance is kept");
        } else {
            assert_eq!(replaced, 3, "{mode}: each failed instance is replaced");
        }
    }
}

#[tokio::test]
async fn deadline_stops_a_loop_when_fuel_would_not() {
    let mut cfg = misbehave("loop", json!({}));
    cfg.fuel = u64::MAX / 4;
    cfg.timeout = Duration::from_millis(20);
    let chain = Chain::load(&[cfg], &runtime()).await.unwrap();
    let started = std::time::Instant::now();
    let err = chain.on_request(&mut request("m", 1), None).await.err().unwrap();
    assert!(err.message.contains("deadline"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    wait_healed(&chain, 2).await;
}

#[tokio::test]
async fn a_call_cancelled_midway_replaces_its_instance() {
    let mut cfg = misbehave("loop", json!({}));
    cfg.fuel = u64::MAX / 4;
    cfg.timeout = Duration::from_secs(30);
    let chain = Arc::new(Chain::load(&[cfg], &runtime()).await.unwrap());
    // Cancel a call on each of the two instances while the guest spins (as when a client
    // disconnects mid-request): neither instance may be lost to the pool.
    for _ in 0..2 {
        let c = chain.clone();
        let call = tokio::spawn(async move { c.on_request(&mut request("m", 1), None).await.is_ok() });
        tokio::time::sleep(Duration::from_millis(50)).await;
        call.abort();
        assert!(call.await.unwrap_err().is_cancelled());
    }
    wait_healed(&chain, 2).await;
    assert_eq!(chain.stats()[0].replaced, 2);
}

#[tokio::test]
async fn hard_timeout_stops_a_plugin_stuck_in_a_host_call() {
    let mut cfg = misbehave("sleep", json!({}));
    cfg.timeout = Duration::from_millis(20);
    let chain = Chain::load(&[cfg], &runtime()).await.unwrap();
    let started = std::time::Instant::now();
    let err = chain.on_request(&mut request("m", 1), None).await.err().unwrap();
    assert!(err.message.contains("deadline"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
    wait_healed(&chain, 2).await;
}

#[tokio::test]
async fn fail_open_skips_the_plugin_and_its_post_hooks() {
    let mut cfg = misbehave("trap", json!({}));
    cfg.on_error = OnError::FailOpen;
    let chain = Chain::load(&[cfg], &runtime()).await.unwrap();
    let pre = chain.on_request(&mut request("m", 1), None).await.unwrap();
    assert_eq!(pre.seen, Seen::default());
    assert!(!chain.has_stream_hooks(pre.seen));
    assert!(pre.edited, "a failed call may have written to the request: not forwarded as sent");
}

#[tokio::test]
async fn wasi_is_denied_by_default() {
    let chain = Chain::load(&[misbehave("wasi-probe", json!({}))], &runtime()).await.unwrap();
    let pre = chain.on_request(&mut request("m", 1), None).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(&pre.respond.unwrap().body).unwrap();
    assert_eq!(body, json!({"env_vars": 0, "file_denied": true, "dir_denied": true, "tcp_denied": true}));
}

#[tokio::test]
async fn kv_is_shared_by_the_instances_of_a_plugin() {
    let mut cfg = misbehave("count", json!({}));
    cfg.name = "kv-shared-test".into();
    let chain = Chain::load(&[cfg], &runtime()).await.unwrap();
    let mut counts = Vec::new();
    for _ in 0..4 {
        let pre = chain.on_request(&mut request("m", 1), None).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&pre.respond.unwrap().body).unwrap();
        counts.push(body["count"].as_i64().unwrap());
    }
    assert_eq!(counts, [1, 2, 3, 4]);
}

#[tokio::test]
async fn init_failure_and_wrong_version_fail_the_load_with_the_plugin_name() {
    let err = Chain::load(&[misbehave("trap", json!({"fail_init": true}))], &runtime()).await.err().unwrap();
    assert!(err.contains("plugin trap") && err.contains("fail_init"), "{err}");
    let err = Chain::load(&[plugin("future", "wrong-version", json!({}))], &runtime()).await.err().unwrap();
    assert!(err.contains("plugin future") && err.contains("weir:plugin@1.0.0"), "{err}");
    let mut missing = plugin("gone", "noop", json!({}));
    missing.path = "/nonexistent/x.wasm".into();
    let err = Chain::load(&[missing], &runtime()).await.err().unwrap();
    assert!(err.contains("plugin gone") && err.contains("cannot read"), "{err}");
}

#[tokio::test]
async fn instances_are_recycled_after_max_calls() {
    let mut cfg = plugin("noop", "noop", json!({}));
    cfg.instances = 1;
    cfg.max_calls = 2;
    let chain = Chain::load(&[cfg], &runtime()).await.unwrap();
    for _ in 0..4 {
        chain.on_request(&mut request("m", 1), None).await.unwrap();
        wait_healed(&chain, 1).await;
    }
    assert_eq!(chain.stats()[0].replaced, 2);
}

#[tokio::test]
async fn disk_cache_is_written_and_reused() {
    let dir = std::env::temp_dir().join(format!("weir-cache-test-{}", std::process::id()));
    let rt = PluginRuntimeConfig { cache_dir: Some(dir.clone()), ..Default::default() };
    Chain::load(&[plugin("noop", "noop", json!({}))], &rt).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(files.len(), 1);
    let chain = Chain::load(&[plugin("noop", "noop", json!({}))], &rt).await.unwrap();
    chain.on_request(&mut request("m", 1), None).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[tokio::test]
async fn a_world_writable_cache_is_neither_read_nor_written() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("weir-cache-untrusted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    // Anyone could plant a compiled component here and have it mapped as code.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let rt = PluginRuntimeConfig { cache_dir: Some(dir.clone()), ..Default::default() };
    let chain = Chain::load(&[plugin("noop", "noop", json!({}))], &rt).await.unwrap();
    chain.on_request(&mut request("m", 1), None).await.unwrap();
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(files.is_empty(), "the plugin was cached in an untrusted directory: {files:?}");
}
