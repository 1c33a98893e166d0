//! Modes that push the host's limits on what a hook may build through the setters and
//! replies: JSON nested past the depth cap across calls, too many or too large headers, bodies
//! grown by many calls each under `max_output_bytes`, and 1xx reply statuses. A setter the
//! host refuses makes the mode panic with the host's message (a trap, so the gateway takes
//! the plugin's `on_error` path and the message reaches its log).

use weir_plugin_sdk::{Reply, Request, Response};

use crate::Act;

/// What a mode edits: the request in `on-request`, the response in `on-response`.
pub enum Target<'a> {
    /// `on-request`.
    Request(&'a Request),
    /// `on-response`.
    Response(&'a Response),
}

impl Target<'_> {
    fn set(&self, pointer: &str, json: &str) -> Result<(), String> {
        match self {
            Target::Request(r) => r.set(pointer, json),
            Target::Response(r) => r.set(pointer, json),
        }
    }

    fn set_body(&self, json: &str) -> Result<(), String> {
        match self {
            Target::Request(r) => r.set_body(json),
            Target::Response(r) => r.set_body(json),
        }
    }

    /// Reads the value at `pointer` and the whole body back (the host serialises both).
    fn read_back(&self, pointer: &str) -> usize {
        match self {
            Target::Request(r) => r.get(pointer).map_or(0, |v| v.len()) + r.body().map_or(0, |b| b.len()),
            Target::Response(r) => r.get(pointer).map_or(0, |v| v.len()) + r.body().len(),
        }
    }
}

fn refused(what: &str, err: &str) -> ! {
    panic!("misbehave: {what} refused by the host: {err}")
}

/// `{"d":{"d":...0}}`, `levels` objects deep.
fn nested(levels: usize) -> String {
    format!("{}0{}", "{\"d\":".repeat(levels), "}".repeat(levels))
}

/// Nests a 100-level value inside the last one 200 times, then reads the result back.
fn nest(at: &Target<'_>, mut pointer: String) -> Option<Act> {
    let value = nested(100);
    for _ in 0..200 {
        if let Err(e) = at.set(&pointer, &value) {
            refused("deep set", &e);
        }
        pointer = format!("{pointer}{}/x", "/d".repeat(99));
    }
    std::hint::black_box(at.read_back(&pointer));
    None
}

/// `deep-json`: 200 `set` calls, each 100 levels deep at the innermost point of the last.
pub fn deep_json(at: &Target<'_>) -> Option<Act> {
    nest(at, "/x".into())
}

/// `deep-json-body`: `set-body` with a 100-level value, then `set` calls nesting inside it.
pub fn deep_json_body(at: &Target<'_>) -> Option<Act> {
    let body = match at {
        Target::Request(r) => format!(
            "{{\"model\":{:?},\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"x\":{}}}",
            r.model(),
            nested(100)
        ),
        Target::Response(_) => format!("{{\"x\":{}}}", nested(100)),
    };
    if let Err(e) = at.set_body(&body) {
        refused("set-body", &e);
    }
    nest(at, format!("/x{}/y", "/d".repeat(99)))
}

/// `many-headers`: 40,000 distinct response headers through `set-header`.
pub fn many_headers(at: &Target<'_>) -> Option<Act> {
    if let Target::Response(r) = at {
        for i in 0..40_000 {
            if let Err(e) = r.set_header(&format!("x-many-{i}"), "1") {
                refused("set-header", &e);
            }
        }
    }
    None
}

/// `reply-*`: a reply with `status` and `headers` distinct (empty) headers.
pub fn reply(status: u16, headers: usize) -> Act {
    let headers = (0..headers).map(|i| (format!("x-{i}"), String::new())).collect();
    Act::Reply(Reply { status, headers, body: "{\"reply\":true}".into() })
}

/// A JSON string of about 1 MB, under the default `max_output_bytes` (1 MiB).
fn megabyte() -> String {
    format!("\"{}\"", "a".repeat(1_000_000))
}

/// `accumulate-body`: 40 `set` calls of 1 MB each (40 MB in all).
pub fn accumulate_body(at: &Target<'_>) -> Option<Act> {
    let mb = megabyte();
    for i in 0..40 {
        if let Err(e) = at.set(&format!("/pad{i}"), &mb) {
            refused("set", &e);
        }
    }
    None
}

/// `accumulate-headers`: 30 `set-header` calls of 1 MB each (30 MB of headers).
pub fn accumulate_headers(at: &Target<'_>) -> Option<Act> {
    if let Target::Response(r) = at {
        let mb = "a".repeat(1_000_000);
        for i in 0..30 {
            if let Err(e) = r.set_header(&format!("x-pad-{i}"), &mb) {
                refused("set-header", &e);
            }
        }
    }
    None
}
