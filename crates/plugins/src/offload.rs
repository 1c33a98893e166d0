//! Keeps slow plugin work off the serving threads. A hook call starts on the request's serving
//! thread (the server's `shards`) and nearly always ends within its first poll (about 1.5 us). A
//! call that is still running at its first yield moves to the plugin runtime, a small
//! multi-thread tokio runtime of its own, and the request waits for it there; so does making a
//! replacement instance. A call yields first when it has burned 2M fuel (well under a
//! millisecond of a spinning guest), at an epoch tick, or in a host call that waits. A stalled
//! plugin then costs its own request its deadline and the other connections of its thread at
//! most that first stretch, no more than when one work-stealing runtime serves everything.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::Poll;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

use crate::affinity::Affinity;

/// The plugin runtime, made on first use (the first slow call); `None` if it could not be.
fn runtime() -> Option<&'static Runtime> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("weir-plugin")
                .enable_all()
                .build()
                .inspect_err(|e| tracing::error!(error = %e, "cannot start the plugin runtime; slow calls stay inline"))
                .ok()
        })
        .as_ref()
}

/// Where work that may run long goes from `here`: the plugin runtime from a serving thread,
/// else the current runtime (the CLI, tests and benches run plugins on an ordinary tokio
/// runtime, where work stealing already keeps one stalled call from holding the rest).
fn target(here: Affinity) -> Option<Handle> {
    if here.is_serving() { runtime().map(|rt| rt.handle().clone()) } else { Handle::try_current().ok() }
}

/// Runs `call`: inline until its first `Pending`, then (when `here` is a serving thread) on
/// the plugin runtime, counting the move in `moved`. Dropping the returned future aborts the call
/// wherever it runs; what it owned (the instance) is dropped with it.
///
/// # Panics
/// Resumes a panic raised by `call`.
pub async fn run<T, F>(call: F, here: Affinity, moved: &metrics::Counter) -> T
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut call: Pin<Box<F>> = Box::pin(call);
    if let Poll::Ready(v) = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await {
        return v;
    }
    let Some(rt) = here.is_serving().then(runtime).flatten() else {
        return call.await;
    };
    moved.increment(1);
    let mut task = Abort(rt.spawn(call));
    match (&mut task.0).await {
        Ok(v) => v,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Only an abort cancels it, and only dropping `task` aborts.
            Err(e) => unreachable!("plugin call cancelled while awaited: {e}"),
        },
    }
}

/// Spawns background plugin work (making a replacement instance): on the plugin runtime when
/// `here` is a serving thread, else on the current runtime. Returns false (and drops `work`)
/// outside any runtime, when the process is winding down.
pub fn spawn(work: impl Future<Output = ()> + Send + 'static, here: Affinity) -> bool {
    match target(here) {
        Some(h) => {
            h.spawn(work);
            true
        }
        None => false,
    }
}

/// A spawned call that is aborted when its waiter goes away (the client left).
struct Abort<T>(JoinHandle<T>);

impl<T> Drop for Abort<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    fn thread_name() -> String {
        std::thread::current().name().unwrap_or_default().to_owned()
    }

    /// Runs `f` as a serving thread runs a request: on a current-thread runtime of its own
    /// thread, with that thread's affinity.
    fn on_serving_thread<F, Fut>(f: F)
    where
        F: FnOnce(Affinity) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        std::thread::Builder::new()
            .name("weir-shard-0".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(f(Affinity::shard(0)));
            })
            .unwrap();
    }

    #[test]
    fn a_call_that_yields_moves_off_the_serving_thread_and_a_quick_one_does_not() {
        let (tx, rx) = std::sync::mpsc::channel();
        on_serving_thread(move |here| async move {
            let quick = run(async { thread_name() }, here, &metrics::Counter::noop()).await;
            let slow = run(
                async {
                    let before = thread_name();
                    tokio::task::yield_now().await;
                    (before, thread_name())
                },
                here,
                &metrics::Counter::noop(),
            )
            .await;
            tx.send((quick, slow, thread_name())).unwrap();
        });
        let (quick, (before, after), waiter) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(quick, "weir-shard-0");
        assert_eq!(before, "weir-shard-0", "the first poll is inline");
        assert!(after.starts_with("weir-plugin"), "resumed on {after}");
        assert_eq!(waiter, "weir-shard-0", "the request itself stays on its thread");
    }

    #[test]
    fn dropping_the_waiter_aborts_a_moved_call() {
        let dropped = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let flag = dropped.clone();
        on_serving_thread(move |here| async move {
            struct Flag(Arc<AtomicBool>);
            impl Drop for Flag {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            let moved = metrics::Counter::noop();
            let call = run(
                async move {
                    let _owned = Flag(flag);
                    std::future::pending::<()>().await;
                },
                here,
                &moved,
            );
            // The waiter gives up (as when the client leaves) while the call sits on the
            // plugin runtime.
            let _ = tokio::time::timeout(Duration::from_millis(20), call).await;
            tx.send(()).unwrap();
        });
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !dropped.load(Ordering::SeqCst) {
            assert!(std::time::Instant::now() < deadline, "the moved call was never dropped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[tokio::test]
    async fn off_the_serving_threads_calls_stay_on_their_task() {
        let name = run(
            async {
                tokio::task::yield_now().await;
                thread_name()
            },
            Affinity::NONE,
            &metrics::Counter::noop(),
        )
        .await;
        assert!(!name.starts_with("weir-plugin"), "ran on {name}");
    }
}
