//! The per-request directives of the mock upstream, parsed from the model name (see
//! `upstream.rs` for the list).

use std::time::Duration;

/// Per-request behaviour parsed from the model name.
#[derive(Default)]
pub(super) struct Directives {
    pub(super) latency: Duration,
    pub(super) hold: bool,
    pub(super) status: Option<u16>,
    pub(super) retry_after: Option<u64>,
    pub(super) echo_auth: bool,
    pub(super) echo_param: bool,
    pub(super) echo_header: Option<String>,
    pub(super) key_at: Option<usize>,
    pub(super) malformed: bool,
    pub(super) size: Option<usize>,
    pub(super) no_length: bool,
    pub(super) redirect: bool,
    pub(super) chunks: Option<usize>,
    pub(super) chunk_delay: Duration,
    pub(super) hold_after: Option<usize>,
    pub(super) stall: Duration,
    pub(super) cut: Option<String>,
    pub(super) pad: Option<usize>,
    pub(super) relay: bool,
    pub(super) code: Option<String>,
    pub(super) sse: Option<&'static [&'static [u8]]>,
    pub(super) fail_times: Option<u32>,
    pub(super) reset: bool,
    pub(super) for_key: Option<String>,
    pub(super) cut_at: Option<usize>,
    pub(super) prefill: bool,
    pub(super) no_prefill: bool,
}

impl Directives {
    pub(super) fn parse(model: &str) -> Result<Self, String> {
        let mut d = Self::default();
        for part in model.split(';').skip(1) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let num = || value.parse::<u64>().map_err(|_| format!("directive {key} needs a number"));
            match key {
                "latency" => d.latency = Duration::from_millis(num()?),
                "hold" => d.hold = true,
                "status" => d.status = Some(num()? as u16),
                "retry_after" => d.retry_after = Some(num()?),
                "echo_auth" => d.echo_auth = true,
                "echo_param" => d.echo_param = true,
                "echo_header" => d.echo_header = Some(value.to_owned()),
                "key_at" => d.key_at = Some(num()? as usize),
                "malformed" => d.malformed = true,
                "size" => d.size = Some(num()? as usize),
                "no_length" => d.no_length = true,
                "redirect" => d.redirect = true,
                "chunks" => d.chunks = Some(num()? as usize),
                "chunk_delay" => d.chunk_delay = Duration::from_millis(num()?),
                "hold_after" => d.hold_after = Some(num()? as usize),
                "stall" => d.stall = Duration::from_millis(num()?),
                "cut" if value == "nodone" || value == "drop" => d.cut = Some(value.to_owned()),
                "pad" => d.pad = Some(num()? as usize),
                "relay" => d.relay = true,
                "fail_times" => d.fail_times = Some(num()? as u32),
                "reset" => d.reset = true,
                "for_key" => d.for_key = Some(value.to_owned()),
                "code" => d.code = Some(value.to_owned()),
                "sse" => d.sse = Some(SSE_FIXTURES.iter().find(|(n, _)| *n == value).ok_or("unknown sse fixture")?.1),
                "cut_at" => d.cut_at = Some(num()? as usize),
                "prefill" => d.prefill = true,
                "no_prefill" => d.no_prefill = true,
                _ => return Err(format!("unknown directive {part:?}")),
            }
        }
        Ok(d)
    }
}

impl Directives {
    /// The 400 a `prefill` or `no_prefill` model answers `body` with, if any: `prefill`
    /// answers only a request ending in an assistant message, `no_prefill` refuses one.
    pub(super) fn prefill_refusal(&self, body: &serde_json::Value) -> Option<&'static str> {
        let last = body["messages"].as_array().and_then(|m| m.last());
        let prefilled = last.is_some_and(|m| m["role"] == "assistant");
        match (self.prefill, self.no_prefill, prefilled) {
            (true, _, false) => Some("expected an assistant message to continue"),
            (_, true, true) => Some("assistant prefill not supported"),
            _ => None,
        }
    }
}

/// Raw SSE fixtures (`sse=NAME`): the exact bytes sent, one entry per write.
const SSE_FIXTURES: &[(&str, &[&[u8]])] = &[
    ("multiline", &[b"data: {\"id\":\"m\",\n", b"data: \"choices\":[]}\r\n\r\n", b"data: {\"a\":\r", b"data: 1}\r\r"]),
    ("lone_cr", &[b"data: {\"n\":1}\r\rdata: {\"n\":2}\rdata: {\"x\":3}\n\n"]),
];
