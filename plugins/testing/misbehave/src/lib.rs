//! Misbehaves on purpose, for the runtime's tests: loops forever, eats memory, panics,
//! recurses without end, returns oversized output or an invalid decision, sleeps in a host
//! call; also probes WASI (to prove it is denied), counts in kv, and reports the client
//! headers it is shown (`headers`, to prove credentials are withheld) or logs its `note`
//! through the log capability and stdout (`log`, to prove secrets are scrubbed from the log)
//! or writes it into its reply, replacement, rewritten chunk, rejection or the request's
//! first message (`echo-note`, `reject-note`, `set-note`: to prove that what a plugin writes
//! is scrubbed before it leaves);
//! the sandbox-runtime modes (`sandbox_runtime.rs`) fill memory in one instruction, spin, fail
//! `init` after a trap, flood and forge logs and clash metric names. Misbehaves only on
//! requests carrying the trigger header (default `x-misbehave`), unless `always` is set, so
//! tests can mix good and bad requests.
//!
//! Edit and reply modes against the host's limits (`deep-json`, `deep-json-body`,
//! `many-headers`, `reply-many-headers`, `reply-status-100`, `reply-status-101`,
//! `accumulate-body`, `accumulate-headers`) are in `sandbox_edits`.
//!
//! Config: `{ "mode": "loop", "hook": "request" | "response" | "chunk", "always": false,
//! "trigger_header": "x-misbehave", "fail_init": false, "note": "" }`.

mod sandbox_edits;
mod sandbox_runtime;

use std::hint::black_box;

use serde::Deserialize;
use serde_json::json;
use weir_plugin_sdk::{
    ChunkAction, Hooks, Plugin, Rejection, Reply, Request, RequestAction, Response, ResponseAction, export,
    parse_config,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    mode: String,
    #[serde(default = "default_hook")]
    hook: String,
    #[serde(default)]
    always: bool,
    #[serde(default = "default_trigger")]
    trigger_header: String,
    #[serde(default)]
    fail_init: bool,
    #[serde(default)]
    note: String,
}

fn default_hook() -> String {
    "request".into()
}
fn default_trigger() -> String {
    "x-misbehave".into()
}

struct Misbehave {
    cfg: Config,
    hoard: Vec<Vec<u8>>,
}

enum Act {
    Reply(Reply),
    Reject(Rejection),
}

impl Misbehave {
    fn triggered(&self, req: &Request, hook: &str) -> bool {
        self.cfg.hook == hook && (self.cfg.always || req.header(&self.cfg.trigger_header).is_some())
    }

    /// Does the configured bad thing; returns what to hand back when the mode returns at all.
    fn misbehave(&mut self) -> Option<Act> {
        match self.cfg.mode.as_str() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = black_box(n.wrapping_add(1));
                }
            }
            "memory" => loop {
                let mut chunk = vec![0u8; 1 << 20];
                chunk[black_box(0)] = 1;
                self.hoard.push(chunk);
            },
            "trap" => panic!("misbehave: deliberate panic"),
            "recursion" => {
                black_box(recurse(black_box(1)));
                None
            }
            "oversized" => Some(Act::Reply(Reply {
                status: 200,
                headers: Vec::new(),
                body: format!("{{\"junk\":\"{}\"}}", "x".repeat(2 << 20)),
            })),
            "invalid" => {
                Some(Act::Reject(Rejection { status: 200, message: "not an error status".into(), code: None }))
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(30));
                None
            }
            "wasi-probe" => {
                let env = std::env::vars().count();
                let file = std::fs::read("/etc/passwd").map(|b| b.len()).map_err(|e| e.to_string());
                let dir = std::fs::read_dir("/").map(|d| d.count()).map_err(|e| e.to_string());
                let tcp = std::net::TcpStream::connect("127.0.0.1:9").map(|_| ()).map_err(|e| e.to_string());
                println!("wasi-probe ran: env={env}");
                let body = json!({
                    "env_vars": env,
                    "file_denied": file.is_err(),
                    "dir_denied": dir.is_err(),
                    "tcp_denied": tcp.is_err(),
                });
                Some(Act::Reply(Reply { status: 200, headers: Vec::new(), body: body.to_string() }))
            }
            "log" => {
                weir_plugin_sdk::log::warn(&format!("note is {}", self.cfg.note));
                println!("note on stdout is {}", self.cfg.note);
                None
            }
            "echo-note" => Some(Act::Reply(Reply {
                status: 200,
                headers: vec![("x-note".into(), format!("note={}", self.cfg.note))],
                body: json!({ "note": self.cfg.note, "object": "echo" }).to_string(),
            })),
            "reject-note" => Some(Act::Reject(Rejection {
                status: 403,
                message: format!("refused, note {}", self.cfg.note),
                code: None,
            })),
            "count" => {
                let n = weir_plugin_sdk::kv::incr("hits", 1, 0).unwrap_or(-1);
                weir_plugin_sdk::metrics::counter("count_calls", 1);
                weir_plugin_sdk::log::info(&format!("count is {n}"));
                Some(Act::Reply(Reply { status: 200, headers: Vec::new(), body: json!({ "count": n }).to_string() }))
            }
            "memory-fill" => sandbox_runtime::memory_fill(),
            "spin-chunk" => sandbox_runtime::spin(),
            "init-fails-after-trap" | "init-spins-after-trap" => sandbox_runtime::trap_and_mark(),
            "log-flood" => sandbox_runtime::log_flood(),
            "stdout-flood" => sandbox_runtime::stdout_flood(),
            "log-forge" => sandbox_runtime::log_forge(),
            "metric-collide" => sandbox_runtime::metric_collide(),
            _ => None,
        }
    }
}

impl Misbehave {
    /// The modes that push the host's limits on edits and replies (`sandbox_edits`).
    fn edit(&self, at: &sandbox_edits::Target<'_>) -> Option<Act> {
        match self.cfg.mode.as_str() {
            "deep-json" => sandbox_edits::deep_json(at),
            "deep-json-body" => sandbox_edits::deep_json_body(at),
            "many-headers" => sandbox_edits::many_headers(at),
            "reply-many-headers" => Some(sandbox_edits::reply(200, 30_000)),
            "reply-status-100" => Some(sandbox_edits::reply(100, 0)),
            "reply-status-101" => Some(sandbox_edits::reply(101, 0)),
            "accumulate-body" => sandbox_edits::accumulate_body(at),
            "accumulate-headers" => sandbox_edits::accumulate_headers(at),
            _ => None,
        }
    }
}

/// A 200 whose body is `{"headers": {name: value, ...}}`: every client header the host let
/// this plugin see.
fn seen_headers(req: &Request) -> Reply {
    let seen: serde_json::Map<String, serde_json::Value> =
        req.headers().into_iter().map(|(name, value)| (name, serde_json::Value::String(value))).collect();
    Reply { status: 200, headers: Vec::new(), body: json!({ "headers": seen }).to_string() }
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64) -> u64 {
    let pad = black_box([n; 64]);
    black_box(recurse(black_box(pad[7] + 1))) + pad[3]
}

impl Plugin for Misbehave {
    const HOOKS: Hooks = Hooks::all();

    fn init(config: &str) -> Result<Self, String> {
        let cfg: Config = parse_config(config)?;
        if cfg.fail_init {
            return Err("misbehave: refusing to start (fail_init)".into());
        }
        sandbox_runtime::init_after_trap(&cfg.mode)?;
        Ok(Misbehave { cfg, hoard: Vec::new() })
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        if !self.triggered(req, "request") {
            return RequestAction::Continue;
        }
        if self.cfg.mode == "headers" {
            return RequestAction::Respond(seen_headers(req));
        }
        if self.cfg.mode == "set-note" {
            let _ = req.set("/messages/0/content", &json!(format!("note {}", self.cfg.note)).to_string());
            return RequestAction::Continue;
        }
        match self.edit(&sandbox_edits::Target::Request(req)).or_else(|| self.misbehave()) {
            Some(Act::Reply(r)) => RequestAction::Respond(r),
            Some(Act::Reject(r)) => RequestAction::Reject(r),
            None => RequestAction::Continue,
        }
    }

    fn on_response(&mut self, req: &Request, resp: &Response) -> ResponseAction {
        if !self.triggered(req, "response") {
            return ResponseAction::Pass;
        }
        match self.edit(&sandbox_edits::Target::Response(resp)).or_else(|| self.misbehave()) {
            Some(Act::Reply(r)) => ResponseAction::Replace(r),
            Some(Act::Reject(r)) => ResponseAction::Replace(Reply { status: 0, headers: Vec::new(), body: r.message }),
            None => ResponseAction::Pass,
        }
    }

    fn on_stream_chunk(&mut self, req: &Request, _chunk: &[u8]) -> ChunkAction {
        if !self.triggered(req, "chunk") {
            return ChunkAction::Pass;
        }
        match self.misbehave() {
            Some(Act::Reply(r)) => ChunkAction::Rewrite(r.body.into_bytes()),
            Some(Act::Reject(r)) => ChunkAction::Abort(r),
            None => ChunkAction::Pass,
        }
    }
}

export!(Misbehave);
