//! The epoch ticker: the thread that advances the engine's epoch, which is how a running guest
//! learns that time passed (its deadline check and its polite yield, `guard.rs`).
//!
//! It ticks at two rates. While any guest call is past its first poll (it yielded at least
//! once, which makes it a slow call; on a serving thread it has then moved to the plugin
//! runtime, `offload.rs`), it ticks every [`EPOCH_TICK`], so that call's deadline is checked
//! every millisecond. Otherwise it ticks every
//! [`IDLE_EPOCH_TICK`], as the backstop for a call that has not yielded yet. Nearly every call
//! ends within its first poll, a few microseconds, and needs no tick at all. A CPU-bound call
//! yields first through fuel (`guard.rs`), well within a millisecond. So the fast rate is
//! spent only where it is needed: on the benchmark VM each wake-up costs ~25 us of CPU, so a
//! fixed 1 ms tick would take ~3% of a core whether or not a guest ran.
//!
//! A call becomes slow through [`Watch::begin`], which wakes a ticker sleeping at the idle rate.
//! The ticker then advances the epoch at once. That costs one wake-up per slow call, never one
//! per quick call.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::EngineWeak;

/// How often the epoch advances while a slow call runs. Each tick, a running guest checks its
/// deadline and yields to the tokio scheduler.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How often it advances when no call is slow: how long a guest that burns little fuel between
/// its fuel checks (bulk memory operations) can run before its first yield.
pub const IDLE_EPOCH_TICK: Duration = Duration::from_millis(10);

/// Calls that are past their first poll and not finished.
static SLOW_CALLS: AtomicUsize = AtomicUsize::new(0);
/// The ticker thread, to wake it when a call turns slow.
static TICKER: OnceLock<Thread> = OnceLock::new();

/// Starts the ticker thread for `engine`; it ends when the engine is dropped.
///
/// # Errors
/// The thread could not be started.
pub fn start(engine: EngineWeak) -> std::io::Result<()> {
    let handle = std::thread::Builder::new().name("weir-epoch".into()).spawn(move || {
        while let Some(engine) = engine.upgrade() {
            engine.increment_epoch();
            drop(engine);
            if SLOW_CALLS.load(Ordering::Acquire) > 0 {
                std::thread::sleep(EPOCH_TICK);
            } else {
                // `Watch::begin` unparks: a park that starts after it returns at once.
                std::thread::park_timeout(IDLE_EPOCH_TICK);
            }
        }
    })?;
    let _ = TICKER.set(handle.thread().clone());
    Ok(())
}

/// A slow call, counted while this lives: the ticker runs at the fast rate until every watch
/// is dropped.
pub struct Watch(());

impl Watch {
    /// Counts a call as slow, waking the ticker if it was sleeping at the idle rate.
    pub fn begin() -> Self {
        if SLOW_CALLS.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(ticker) = TICKER.get()
        {
            ticker.unpark();
        }
        Watch(())
    }

    /// Calls counted as slow now.
    #[cfg(test)]
    pub fn count() -> usize {
        SLOW_CALLS.load(Ordering::Acquire)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        SLOW_CALLS.fetch_sub(1, Ordering::AcqRel);
    }
}
