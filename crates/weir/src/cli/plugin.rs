//! `weir plugin inspect|test`: plugin development without a running gateway. Both go through
//! the gateway's own runtime (`weir_server::plugins::tool`): same engine, linker, guards and
//! conversions, so what passes here behaves the same in `weir serve`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Subcommand;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use weir_server::exchange::GatewayResponse;
use weir_server::format::Endpoint;
use weir_server::plugins::tool::{self, ChunkOutcome, CompileSource, RequestOutcome, TestRun};

/// `weir plugin ...`.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Show the contract a component targets, its imports (and whether Weir grants them), the
    /// hooks its `init` returns, its size and its compile and instantiation times.
    Inspect {
        /// The `.wasm` component.
        file: PathBuf,
        /// JSON file passed to `init` as the plugin's config (default `{}`).
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run the hooks offline on a request (and a response) under the gateway's guards; print
    /// each decision, the resulting request/response, fuel and time. Plugin log lines go to
    /// stderr. Exit status: 0 when every hook returned a decision (a rejection included),
    /// 1 on a trap, a guard limit (fuel, deadline, memory, output) or an invalid decision.
    Test {
        /// The `.wasm` component.
        file: PathBuf,
        /// JSON file: the OpenAI-style request body.
        #[arg(long)]
        request: PathBuf,
        /// JSON file: the provider's response body (default: a small canned chat completion).
        #[arg(long)]
        response: Option<PathBuf>,
        /// JSON file passed to `init` as the plugin's config (default `{}`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// A client header `name: value` (repeatable).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The request is an embeddings request.
        #[arg(long)]
        embeddings: bool,
        /// SSE file: a provider's streamed answer (`data:` events, OpenAI chunks). Runs
        /// `on-stream-chunk` on each event, as for a `"stream": true` request, instead of
        /// `on-response`.
        #[arg(long, value_name = "FILE")]
        stream: Option<PathBuf>,
        /// Also call `on-request` this many more times and print the mean time per call.
        #[arg(long, default_value_t = 0)]
        repeat: u32,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Scaffold a working plugin project (contract, source, build script, sample request and
    /// config) in Rust, Python, JavaScript, C or Go.
    New(super::new::NewArgs),
}

/// Where compiled components are cached between runs.
#[derive(clap::Args)]
pub struct CacheArgs {
    /// Compile through this cache directory (default: the gateway's, `$XDG_CACHE_HOME/weir` or
    /// `~/.cache/weir`, so only the first run of a component compiles it).
    #[arg(long, conflicts_with = "no_cache")]
    cache_dir: Option<PathBuf>,
    /// Compile fresh and cache nothing.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    fn dir(self) -> Option<PathBuf> {
        if self.no_cache { None } else { self.cache_dir.or_else(tool::default_cache_dir) }
    }
}

/// Runs a `weir plugin` subcommand.
///
/// # Errors
/// Unreadable input, a component that cannot load, or a hook that failed.
pub fn run(cmd: PluginCommand) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    rt.block_on(async move {
        match cmd {
            PluginCommand::Inspect { file, config, cache } => inspect(file, config, cache.dir()).await,
            PluginCommand::Test { file, request, response, config, headers, embeddings, stream, repeat, cache } => {
                let endpoint = if embeddings { Endpoint::OPENAI_EMBEDDINGS } else { Endpoint::OPENAI_CHAT };
                let cache_dir = cache.dir();
                let t = TestArgs { file, request, response, config, headers, endpoint, stream, repeat, cache_dir };
                test(t).await
            }
            PluginCommand::New(args) => super::new::run(&args),
        }
    })
}

/// The `data:` payloads of an SSE file, in order, without the `[DONE]` marker.
fn read_sse(path: &PathBuf) -> anyhow::Result<Vec<Bytes>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut parser = weir_server::providers::sse::SseParser::default();
    parser.feed(&bytes);
    // A last event without its blank line still counts, as when a provider closes after it.
    parser.feed(b"\n\n");
    let mut events = Vec::new();
    while let Some(event) = parser.next_event().map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))? {
        match event {
            weir_server::providers::sse::SseEvent::Data(payload) => events.push(payload),
            weir_server::providers::sse::SseEvent::Done => break,
        }
    }
    if events.is_empty() {
        bail!("{} holds no `data:` events", path.display());
    }
    Ok(events)
}

/// Runs `on-stream-chunk` on each event and prints the decisions and the stream the client
/// would get. Returns whether a call failed.
async fn stream_chunks(run: &TestRun, req: &weir_server::exchange::GatewayRequest, events: &[Bytes]) -> bool {
    if !run.has("on-stream-chunk") {
        println!("on-stream-chunk: not implemented; the {} events pass unchanged", events.len());
        return false;
    }
    let mut out = Vec::new();
    for (i, payload) in events.iter().enumerate() {
        let call = run.on_stream_chunk(req, payload.clone()).await;
        let stats = format!("fuel {}, {}", call.fuel, ms(call.time));
        match call.outcome {
            Ok(ChunkOutcome::Pass) => {
                println!("on-stream-chunk [{i}]: pass ({stats})");
                out.push(payload.clone());
            }
            Ok(ChunkOutcome::Rewrite(b)) => {
                println!("on-stream-chunk [{i}]: rewrite ({stats})");
                out.push(b);
            }
            Ok(ChunkOutcome::Drop) => println!("on-stream-chunk [{i}]: drop ({stats})"),
            Ok(ChunkOutcome::Abort(status, body)) => {
                println!("on-stream-chunk [{i}]: ABORT with status {status} ({stats}); the stream ends with:");
                println!("{}", String::from_utf8_lossy(&body));
                break;
            }
            Err(e) => {
                println!("on-stream-chunk [{i}]: FAILED: plugin {e} ({stats})");
                return true;
            }
        }
    }
    println!("stream sent to the client:");
    for payload in out {
        println!("data: {}", String::from_utf8_lossy(&payload));
    }
    false
}

fn read_json(path: &PathBuf) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn inspect(file: PathBuf, config: Option<PathBuf>, cache: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config.as_ref().map(read_json).transpose()?;
    let cfg = tool::plugin_config(&file, config.as_ref()).map_err(anyhow::Error::msg)?;
    let r = tool::inspect(&cfg, cache.as_deref()).await.map_err(anyhow::Error::msg)?;
    println!("component:   {} ({} bytes, {:.1} MB)", file.display(), r.size, r.size as f64 / 1e6);
    println!(
        "targets:     {} (this gateway implements {})",
        r.target.as_deref().unwrap_or("nothing Weir knows"),
        tool::contract()
    );
    let how = match r.compile.1 {
        CompileSource::Compiled => "compiled",
        CompileSource::Cache => "loaded from the compile cache",
    };
    println!("compile:     {how} in {}", ms(r.compile.0));
    println!("imports:");
    for (name, grant) in &r.imports {
        println!("  {name:<44} {grant}");
    }
    if let Err(e) = &r.contract {
        bail!("the gateway would refuse this component: {e}");
    }
    if let Some(steps) = &r.upgrade {
        println!("legacy:      {}", steps.join("\n             "));
    }
    match &r.loaded {
        Ok((hooks, inst)) => {
            println!("hooks:       {}", if hooks.is_empty() { "none".to_owned() } else { hooks.join(", ") });
            println!("instantiate: {} (instantiate + init, one instance)", ms(*inst));
            Ok(())
        }
        Err(e) => bail!("the gateway would refuse this component: {e}"),
    }
}

struct TestArgs {
    file: PathBuf,
    request: PathBuf,
    response: Option<PathBuf>,
    config: Option<PathBuf>,
    headers: Vec<String>,
    endpoint: Endpoint,
    stream: Option<PathBuf>,
    repeat: u32,
    cache_dir: Option<PathBuf>,
}

fn parse_headers(raw: &[String]) -> anyhow::Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for h in raw {
        let (name, value) = h.split_once(':').with_context(|| format!("header {h:?} is not `name: value`"))?;
        let name = HeaderName::try_from(name.trim().to_ascii_lowercase()).context("invalid header name")?;
        map.append(name, HeaderValue::try_from(value.trim()).context("invalid header value")?);
    }
    Ok(weir_server::exchange::client_headers(&map, &weir_server::exchange::HeaderRule::default()))
}

const CANNED_RESPONSE: &str = r#"{"id":"chatcmpl-plugin-test","object":"chat.completion","created":0,"model":"MODEL","choices":[{"index":0,"message":{"role":"assistant","content":"(canned response from weir plugin test)"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

async fn test(a: TestArgs) -> anyhow::Result<()> {
    let config = a.config.as_ref().map(read_json).transpose()?;
    let cfg = tool::plugin_config(&a.file, config.as_ref()).map_err(anyhow::Error::msg)?;
    let mut req = tool::request(a.endpoint, read_json(&a.request)?, parse_headers(&a.headers)?)
        .map_err(|e| anyhow::anyhow!("invalid request: {e}"))?;
    let events = a.stream.as_ref().map(read_sse).transpose()?;
    if events.is_some() {
        req.stream = true;
    }
    let response_body = match &a.response {
        Some(p) => Bytes::from(serde_json::to_vec(&read_json(p)?)?),
        None => Bytes::from(CANNED_RESPONSE.replace("MODEL", &req.model)),
    };
    let run = TestRun::load(&cfg, a.cache_dir.as_deref()).await.map_err(|e| anyhow::anyhow!("cannot load: {e}"))?;
    println!("hooks: {}", run.hooks().join(", "));
    let mut failed = false;
    let mut response = Some(GatewayResponse::ok(response_body));
    if run.has("on-request") {
        let original = req.body.clone().into_map();
        let call = run.on_request(&mut req).await;
        let stats = format!("fuel {}, {}", call.fuel, ms(call.time));
        match call.outcome {
            Ok(RequestOutcome::Continue(body)) => {
                let edited = if body == original { "unchanged" } else { "edited" };
                println!("on-request: continue ({stats}); request {edited}:");
                println!("{}", serde_json::to_string_pretty(&Value::Object(body))?);
            }
            Ok(RequestOutcome::Respond(r)) => {
                println!("on-request: respond with status {} ({stats}); the provider is not called", r.status);
                response = Some(r);
            }
            Ok(RequestOutcome::Reject(status, body)) => {
                println!("on-request: REJECT with status {status} ({stats}); the client gets:");
                println!("{}", String::from_utf8_lossy(&body));
                response = None;
            }
            Err(e) => {
                println!("on-request: FAILED: plugin {e} ({stats})");
                failed = true;
                response = None;
            }
        }
        if a.repeat > 0 && !failed {
            let mut total = Duration::ZERO;
            for _ in 0..a.repeat {
                let mut r = tool::request(a.endpoint, Value::Object(original.clone()), req.headers.clone())
                    .map_err(anyhow::Error::msg)?;
                let call = run.on_request(&mut r).await;
                if let Err(e) = call.outcome {
                    bail!("on-request failed on repeat: plugin {e}");
                }
                total += call.time;
            }
            println!("on-request: {} calls, mean {} per call", a.repeat, ms(total / a.repeat));
        }
    }
    if let (Some(events), Some(_)) = (&events, &response) {
        failed |= stream_chunks(&run, &req, events).await;
    } else if let Some(mut resp) = response
        && run.has("on-response")
    {
        let call = run.on_response(&req, &mut resp).await;
        let stats = format!("fuel {}, {}", call.fuel, ms(call.time));
        match call.outcome {
            Ok(()) => {
                println!("on-response: ok ({stats}); response status {}:", resp.status);
                for (name, value) in &resp.headers {
                    println!("  {name}: {}", value.to_str().unwrap_or("<binary>"));
                }
                println!("{}", String::from_utf8_lossy(&resp.body));
            }
            Err(e) => {
                println!("on-response: FAILED: plugin {e} ({stats})");
                failed = true;
            }
        }
    }
    if failed {
        bail!("a hook failed (the gateway would fail the request closed, or skip the plugin if fail-open)");
    }
    Ok(())
}
