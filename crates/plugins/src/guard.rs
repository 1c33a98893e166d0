//! The guards set before every hook call (fuel, deadline, memory cap) and the
//! classification of what went wrong when a call fails.

use std::future::Future;
use std::task::Poll;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::host::StoreData;
use super::ticker::Watch;

/// Why a plugin call failed. Each is a metric `outcome` and decides whether the instance is
/// kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The guest trapped (panic, `unreachable`, stack overflow, bad handle).
    Trap(String),
    /// It used up its fuel for the call.
    Fuel,
    /// It ran past its wall-clock deadline.
    Deadline,
    /// It tried to grow memory past `memory_limit`.
    Memory,
    /// It handed back more than `max_output_bytes`.
    Output,
    /// It returned a decision the gateway cannot apply (bad status, invalid JSON, ...).
    Invalid(String),
    /// No instance became free within the plugin's timeout.
    Busy,
}

impl Failure {
    /// The `outcome` metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Failure::Trap(_) => "trap",
            Failure::Fuel => "fuel",
            Failure::Deadline => "deadline",
            Failure::Memory => "memory",
            Failure::Output => "output",
            Failure::Invalid(_) => "invalid",
            Failure::Busy => "busy",
        }
    }

    /// Whether the instance is unusable afterwards. Since wasmtime 42 any trap poisons the
    /// whole store; a call cut short by the hard timeout leaves it mid-call.
    pub fn discards_instance(&self) -> bool {
        matches!(self, Failure::Trap(_) | Failure::Fuel | Failure::Deadline | Failure::Memory)
    }

    /// A client-safe description (no guest backtraces).
    pub fn describe(&self) -> &'static str {
        match self {
            Failure::Trap(_) => "trapped",
            Failure::Fuel => "ran out of fuel",
            Failure::Deadline => "exceeded its deadline",
            Failure::Memory => "exceeded its memory limit",
            Failure::Output => "returned more than max_output_bytes",
            Failure::Invalid(_) => "returned an invalid decision",
            Failure::Busy => "had no free instance in time",
        }
    }

    /// Detail for the log.
    pub fn detail(&self) -> &str {
        match self {
            Failure::Trap(s) | Failure::Invalid(s) => s,
            _ => "",
        }
    }
}

/// Error raised from the epoch callback when the deadline has passed.
#[derive(Debug)]
struct DeadlineExceeded;

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plugin call exceeded its deadline")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Installs the per-store guards that do not change between calls: the memory limiter, and
/// the epoch callback that checks the deadline on every tick and otherwise yields to tokio.
///
/// The yield is tokio's own (`yield_now`), which lets every other ready task of the thread
/// and the I/O driver go first. A bare self-wake (wasmtime's default `Yield`) would put the
/// call straight back on the run queue, and on a serving thread ([`crate::shards`]) a plugin
/// spinning to its deadline would then hold up the I/O of every other connection there for
/// up to tokio's event interval (61 polls of ~1 ms each).
///
/// # Errors
/// Only if fuel is not enabled on the engine (a bug).
pub fn install(store: &mut Store<StoreData>) -> wasmtime::Result<()> {
    store.limiter(|d| &mut d.limits);
    store.epoch_deadline_callback(|ctx| {
        if Instant::now() >= ctx.data().deadline {
            return Err(wasmtime::Error::new(DeadlineExceeded));
        }
        Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now())))
    });
    // Also yield every 2M fuel. This is the first yield of a CPU-bound call, which moves it off
    // its serving thread and turns the ticker to its fast rate (`run`). After that the tokio
    // timer (the hard timeout) fires even when the ticker thread is starved on a saturated
    // machine.
    store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))
}

/// Fuel between forced yields. A tight loop burns it in ~0.3 ms and ordinary guest code in
/// about 1 ms (the stall benchmark's loop burns 50M fuel in ~7 ms), so a call that spins yields
/// first through fuel, well before the ticker's idle tick ([`super::ticker::IDLE_EPOCH_TICK`]).
/// The yield itself is a bare self-wake. The call is on the plugin runtime by then (it moved
/// at its first yield), so that wake holds up no serving thread.
const FUEL_YIELD_INTERVAL: u64 = 2_000_000;

/// Arms the guards for one call: fresh fuel, a deadline, a cleared memory flag.
///
/// # Errors
/// Only if fuel is not enabled on the engine (a bug).
pub fn arm(store: &mut Store<StoreData>, fuel: u64, timeout: Duration) -> wasmtime::Result<()> {
    store.set_fuel(fuel)?;
    let data = store.data_mut();
    data.deadline = Instant::now() + timeout;
    data.limits.memory_hit = false;
    store.set_epoch_deadline(1);
    Ok(())
}

/// The hard timeout around a call, for when neither the epoch callback nor fuel got to stop
/// it: the deadline plus a grace of at least 10 ms.
pub fn hard_timeout(timeout: Duration) -> Duration {
    timeout + (timeout / 2).max(Duration::from_millis(10))
}

/// Runs a call future under the hard timeout. `Err(None)` means the timeout fired.
///
/// The first poll runs without a timer: nearly every call ends there, within microseconds,
/// and then neither arms the timer nor counts as slow. A call still running after it is
/// counted as slow ([`Watch`]) until it ends, which turns the epoch ticker to its fast rate so
/// the deadline is checked every tick, and from then on runs under the hard timeout, which
/// counts from the call's start.
pub async fn run<T>(
    fut: impl Future<Output = wasmtime::Result<T>>,
    hard: Duration,
) -> Result<T, Option<wasmtime::Error>> {
    let hard_at = tokio::time::Instant::now() + hard;
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    let outcome = match first {
        Poll::Ready(r) => Ok(r),
        Poll::Pending => {
            let _slow = Watch::begin();
            tokio::time::timeout_at(hard_at, fut).await
        }
    };
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

/// Classifies a failed call.
pub fn classify(err: Option<wasmtime::Error>, data: &StoreData) -> Failure {
    let Some(err) = err else { return Failure::Deadline };
    // The deadline first: a call that was refused memory and went on until the deadline
    // stopped it failed by its time, not its memory.
    if err.downcast_ref::<DeadlineExceeded>().is_some() {
        return Failure::Deadline;
    }
    if data.limits.memory_hit {
        return Failure::Memory;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure::Fuel,
        Some(Trap::Interrupt) => Failure::Deadline,
        _ => {
            let text = format!("{err:#}");
            Failure::Trap(super::host::log::truncate(&text, 1024).to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_store_breaking_failures_discard_the_instance() {
        assert!(Failure::Trap("x".into()).discards_instance());
        assert!(Failure::Fuel.discards_instance());
        assert!(Failure::Deadline.discards_instance());
        assert!(Failure::Memory.discards_instance());
        assert!(!Failure::Output.discards_instance());
        assert!(!Failure::Invalid("x".into()).discards_instance());
        assert!(!Failure::Busy.discards_instance());
    }

    #[test]
    fn hard_timeout_leaves_room_for_the_epoch_deadline() {
        assert_eq!(hard_timeout(Duration::from_millis(4)), Duration::from_millis(14));
        assert_eq!(hard_timeout(Duration::from_millis(100)), Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_call_that_yields_is_counted_as_slow_while_it_runs() {
        // Other tests' slow calls share the count, so only "at least this one" can be checked.
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let call = run(
            async move {
                let _ = rx.await;
                Ok(Watch::count())
            },
            Duration::from_secs(5),
        );
        let (during, ()) = tokio::join!(call, async move {
            tokio::task::yield_now().await;
            let _ = tx.send(());
        });
        assert!(during.unwrap() >= 1, "a call that yielded is counted while it runs");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_finishes_hits_the_hard_timeout() {
        let r: Result<(), _> = run(std::future::pending(), Duration::from_millis(50)).await;
        assert!(matches!(r, Err(None)));
    }
}
