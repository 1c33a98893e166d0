//! Modes for the sandbox-runtime tests (`tests/all/plugin_sandbox_runtime.rs`): one bulk
//! `memory.fill` as large as the memory cap allows, a spin in any hook, an instance whose
//! trap leaves a kv marker that makes the next `init`s fail or spin, log and stdout floods,
//! a forged log line, and custom metric names that collide.

use std::hint::black_box;

use serde_json::json;
use weir_plugin_sdk::Reply;

use super::Act;

/// kv key a trapping call sets; `init` of the `init-*-after-trap` modes reads it.
const TRAPPED: &str = "trapped";
/// `init`s that fail (or spin) per trap.
pub const INIT_FAILURES_PER_TRAP: i64 = 2;

fn reply(body: serde_json::Value) -> Option<Act> {
    Some(Act::Reply(Reply { status: 200, headers: Vec::new(), body: body.to_string() }))
}

/// Finds the largest block the memory cap still allows (to 64 KiB, searching down from
/// 2 GiB), then fills it with one `vec![1; n]`, which compiles to a single `memory.fill`.
pub fn memory_fill() -> Option<Act> {
    let fits = |n: usize| Vec::<u8>::new().try_reserve_exact(n).is_ok();
    let mut n = 0usize;
    let mut step: usize = 1 << 31;
    while step >= 1 << 16 {
        if fits(n + step) {
            n += step;
        }
        step /= 2;
    }
    // A little below the largest block: the probes' failed growths leave the allocator's
    // free space split.
    let filled = black_box(vec![1u8; n.saturating_sub(1 << 20)]);
    reply(json!({ "filled": filled.len() }))
}

/// Spins until fuel or the deadline stops it.
pub fn spin() -> Option<Act> {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Marks the plugin as trapped in kv (so fresh instances' `init` fails or spins), then traps.
pub fn trap_and_mark() -> Option<Act> {
    let _ = weir_plugin_sdk::kv::incr(TRAPPED, INIT_FAILURES_PER_TRAP, 0);
    panic!("misbehave: deliberate panic after marking kv");
}

/// `init` of the `init-fails-after-trap` / `init-spins-after-trap` modes: while the marker
/// is above zero, take one from it and fail (or spin to the init deadline).
///
/// # Errors
/// The refusal, while the marker is set.
pub fn init_after_trap(mode: &str) -> Result<(), String> {
    let left = weir_plugin_sdk::kv::get(TRAPPED)
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or(0);
    if left <= 0 {
        return Ok(());
    }
    let _ = weir_plugin_sdk::kv::incr(TRAPPED, -1, 0);
    if mode == "init-spins-after-trap" {
        spin();
    }
    Err("misbehave: refusing to start after a trap".into())
}

/// 2,200 lines of 4 KiB through `log` (~8.6 MiB).
pub fn log_flood() -> Option<Act> {
    let line = "x".repeat(4096);
    for _ in 0..2200 {
        weir_plugin_sdk::log::info(&line);
    }
    reply(json!({ "logged": 2200 * 4096 }))
}

/// 1,700 lines of 4 KiB on stdout (~6.6 MiB).
pub fn stdout_flood() -> Option<Act> {
    let line = "y".repeat(4095);
    for _ in 0..1700 {
        println!("{line}");
    }
    reply(json!({ "printed": 1700 * 4096 }))
}

/// A message whose newline would start a line that looks like the gateway's own.
pub fn log_forge() -> Option<Act> {
    let forged = "innocent\n2026-01-01T00:00:00.000000Z  INFO weir::server: FORGED admin login ok";
    weir_plugin_sdk::log::info(forged);
    println!("also\r2026-01-01T00:00:00.000000Z  INFO weir::server: FORGED via stdout\u{1b}[2J");
    reply(json!({ "forged": true }))
}

/// Custom metric names that clash: one name as both kinds, and names a histogram's own
/// series use.
pub fn metric_collide() -> Option<Act> {
    use weir_plugin_sdk::metrics::{counter, histogram};
    counter("dup", 1);
    histogram("dup", 1.0);
    histogram("lat", 2.0);
    counter("lat_count", 1);
    counter("lat_sum", 1);
    counter("lat_bucket", 1);
    counter("fine", 1);
    reply(json!({ "collided": true }))
}
