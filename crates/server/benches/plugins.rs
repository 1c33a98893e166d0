//! Plugin runtime costs: one no-op `on-request` through the chain on a 1 KB and a 64 KB
//! request (checkout + guards + call + return), the default chain on the load script's body,
//! pool checkout/return alone, instance replacement (instantiate + init), and the raw call made
//! sync vs async on one instance. The `_cold` variants flush the core's caches before each
//! timed call, as happens between requests at a low request rate.
//!
//! Needs the plugins built: `cargo build --manifest-path plugins/Cargo.toml --target
//! wasm32-wasip2 --release`. Run: `cargo bench -p weir --features bench --bench plugins --
//! --warm-up-time 1 --measurement-time 3`.
#![allow(missing_docs)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use serde_json::json;
use weir_server::config::{PluginConfig, PluginRuntimeConfig};
use weir_server::exchange::{GatewayRequest, JsonBody};
use weir_server::format::Endpoint;
use weir_server::plugins::Chain;
use weir_server::plugins::bench::{RawCall, checkout_return, make_instance};

fn wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../plugins/target/wasm32-wasip2/release/{name}.wasm"));
    assert!(path.exists(), "{} missing: build the plugins first", path.display());
    path
}

fn request(kb: usize) -> GatewayRequest {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(kb * 1024)}]});
    GatewayRequest {
        id: "req_bench".into(),
        endpoint: Endpoint::OPENAI_CHAT,
        model: "m".into(),
        stream: false,
        body: JsonBody::from_map(body.as_object().unwrap().clone()),
        headers: HeaderMap::new(),
        affinity: weir_server::affinity::Affinity::NONE,
    }
}

fn noop_chain(rt: &tokio::runtime::Runtime) -> Chain {
    // A long timeout: on a busy shared machine a descheduled thread can outlast 100 ms, and a
    // deadline hit would abort the run.
    let cfg: PluginConfig =
        toml::from_str(&format!("name = \"noop\"\npath = {:?}\ninstances = 2\ntimeout = \"5s\"\n", wasm("noop")))
            .unwrap();
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/weir-bench-cache");
    let runtime = PluginRuntimeConfig { cache_dir: Some(cache), ..Default::default() };
    rt.block_on(Chain::load(&[cfg], &runtime)).unwrap()
}

/// The chain `weir serve` runs by default: the `[[plugins]]` of the embedded default config
/// (prompt-guard, then pii-redact), found from the repository root as `weir serve` finds them.
fn default_chain(rt: &tokio::runtime::Runtime) -> Chain {
    std::env::set_current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).unwrap();
    let mut plugins = weir_server::config::embedded_default().unwrap().plugins;
    assert_eq!(plugins.len(), 2, "the default chain's plugins are not built");
    for p in &mut plugins {
        p.timeout = std::time::Duration::from_secs(5);
    }
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/weir-bench-cache");
    let runtime = PluginRuntimeConfig { cache_dir: Some(cache), ..Default::default() };
    rt.block_on(Chain::load(&plugins, &runtime)).unwrap()
}

/// The request body of scripts/bench.sh.
fn bench_request() -> GatewayRequest {
    let body = common::bench_chat_body();
    GatewayRequest {
        model: "bench-1".into(),
        body: JsonBody::from_map(body.as_object().unwrap().clone()),
        ..request(0)
    }
}

/// A buffer larger than the per-core caches (L1 + L2), written through before each timed call
/// so the call finds its code and data in L3 at best.
struct Evict(Vec<u64>);

impl Evict {
    const BYTES: usize = 4 << 20;

    fn new() -> Self {
        Self(vec![0; Self::BYTES / 8])
    }

    /// Total time of `iters` calls of `f`, each made right after the caches were flushed.
    fn time_cold<T>(&mut self, iters: u64, mut f: impl FnMut() -> T) -> Duration {
        let mut total = Duration::ZERO;
        for i in 0..iters {
            // One write per 64-byte line.
            for line in self.0.chunks_exact_mut(8) {
                line[0] = line[0].wrapping_add(i);
            }
            std::hint::black_box(&self.0);
            let started = Instant::now();
            std::hint::black_box(f());
            total += started.elapsed();
        }
        total
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let chain = noop_chain(&rt);

    let default = default_chain(&rt);
    let mut req = bench_request();
    c.bench_function("default_chain_on_request_bench_body", |b| {
        b.iter(|| rt.block_on(default.on_request(&mut req, None)).unwrap());
    });
    // The same call with the caches cold, as at 1,000 req/s: there the serving thread sleeps
    // between requests while the load generator and the provider run on the same cores.
    let mut evict = Evict::new();
    c.bench_function("default_chain_on_request_bench_body_cold", |b| {
        b.iter_custom(|iters| evict.time_cold(iters, || rt.block_on(default.on_request(&mut req, None)).unwrap()));
    });

    for kb in [1, 64] {
        let mut req = request(kb);
        c.bench_function(&format!("chain_noop_on_request_{kb}kb"), |b| {
            b.iter(|| rt.block_on(chain.on_request(&mut req, None)).unwrap());
        });
    }
    let mut req = request(1);
    c.bench_function("chain_noop_on_request_1kb_cold", |b| {
        b.iter_custom(|iters| evict.time_cold(iters, || rt.block_on(chain.on_request(&mut req, None)).unwrap()));
    });

    c.bench_function("pool_checkout_return", |b| b.iter(|| rt.block_on(checkout_return(&chain))));

    c.bench_function("instance_replacement", |b| b.iter(|| rt.block_on(make_instance(&chain))));

    let mut raw = rt.block_on(RawCall::new(&chain, request(1)));
    c.bench_function("raw_on_request_sync_call", |b| b.iter(|| raw.call_sync()));
    c.bench_function("raw_on_request_async_call", |b| b.iter(|| rt.block_on(raw.call_async())));
    c.bench_function("tokio_block_on_empty", |b| b.iter(|| rt.block_on(async {})));
}

criterion_group!(benches, bench);
criterion_main!(benches);
