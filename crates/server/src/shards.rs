//! Serving threads ("shards"), one per core: each runs its own single-thread tokio runtime,
//! and every client connection lives on one shard from accept to close. A request then never
//! changes thread: its connection task, its upstream connection (taken from the idle ones of
//! its shard, which the request names by its [`Affinity`]) and the tasks it spawns all share
//! a thread and its run queue, so a wake-up
//! is a push onto a local queue instead of a cross-thread futex call. This is how nginx and
//! Envoy workers serve, and it costs the gateway less CPU per request than one work-stealing
//! runtime (ARCHITECTURE.md, "Threads", has the measurements).
//!
//! The acceptor (on the control runtime, with the admin API, reloads and signals) hands each
//! new connection to the shard with the fewest open connections, so a few long-lived
//! connections cannot pile onto one core the way `SO_REUSEPORT` hashing can.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::affinity::Affinity;

/// Work sent to a shard: runs on the shard's thread, inside its runtime, told which shard.
type Job = Box<dyn FnOnce(Affinity) + Send>;

struct Shard {
    jobs: mpsc::UnboundedSender<Job>,
    /// Connections open on this shard (the balancing key).
    conns: Arc<AtomicUsize>,
    /// The same count, exported as `weir_connections_open{thread}`.
    gauge: metrics::Gauge,
}

/// The running serving threads. Dropping it stops them: each finishes the job in hand, then
/// its runtime is shut down (tasks still on it are dropped), and the threads are joined.
pub struct Shards {
    shards: Vec<Shard>,
    threads: Vec<JoinHandle<()>>,
    /// Where the search for the least-loaded shard starts (rotates, so ties spread).
    next: AtomicUsize,
}

impl Shards {
    /// Starts `n` shards (at least one), named `weir-shard-<i>`.
    ///
    /// # Errors
    /// If a runtime or a thread cannot be created.
    pub fn start(n: usize) -> std::io::Result<Self> {
        let n = n.max(1);
        let mut shards = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
            let thread = std::thread::Builder::new().name(format!("weir-shard-{i}")).spawn(move || {
                let here = Affinity::shard(i);
                runtime.block_on(async move {
                    let _floor = tokio::spawn(keep_a_timer_armed());
                    while let Some(job) = rx.recv().await {
                        job(here);
                    }
                });
            })?;
            let gauge = metrics::gauge!("weir_connections_open", "thread" => i.to_string());
            gauge.set(0.0);
            shards.push(Shard { jobs: tx, conns: Arc::new(AtomicUsize::new(0)), gauge });
            threads.push(thread);
        }
        Ok(Self { shards, threads, next: AtomicUsize::new(0) })
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Always false: there is at least one shard.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Open connections on all shards.
    pub fn open(&self) -> usize {
        self.shards.iter().map(|s| s.conns.load(Ordering::Relaxed)).sum()
    }

    /// A function counting the open connections on all shards, for other threads.
    pub fn open_counter(&self) -> impl Fn() -> usize + Send + Sync + 'static {
        let counts: Vec<Arc<AtomicUsize>> = self.shards.iter().map(|s| s.conns.clone()).collect();
        move || counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// Open connections per shard, in shard order.
    pub fn loads(&self) -> Vec<usize> {
        self.shards.iter().map(|s| s.conns.load(Ordering::Relaxed)).collect()
    }

    /// Runs `start` on the shard with the fewest open connections and spawns the future it
    /// returns there; that shard counts one more connection until the future ends. `start`
    /// runs inside the shard's runtime, so it is where a socket is registered with the
    /// shard's reactor; it is given the shard's [`Affinity`] for the requests it serves.
    pub fn spawn<F, Fut>(&self, start: F)
    where
        F: FnOnce(Affinity) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let shard = &self.shards[self.least_loaded()];
        shard.conns.fetch_add(1, Ordering::Relaxed);
        shard.gauge.increment(1.0);
        let open = Open(shard.conns.clone(), shard.gauge.clone());
        let job: Job = Box::new(move |here| {
            let fut = start(here);
            tokio::spawn(async move {
                let _open = open;
                fut.await;
            });
        });
        // Fails only once the shard's thread is gone (the process is stopping); the job and
        // its connection are dropped with it.
        let _ = shard.jobs.send(job);
    }

    fn least_loaded(&self) -> usize {
        let n = self.shards.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut best = start;
        let mut best_load = usize::MAX;
        for k in 0..n {
            let i = (start + k) % n;
            let load = self.shards[i].conns.load(Ordering::Relaxed);
            if load < best_load {
                best = i;
                best_load = load;
            }
        }
        best
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.shards.clear(); // closes every job channel: each shard's loop ends
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// How far away the shard's next timer is at most (see [`keep_a_timer_armed`]).
const TIMER_FLOOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Keeps a timer due within [`TIMER_FLOOR`] armed on the shard at all times. tokio wakes its
/// time driver (an eventfd write, then one more `epoll_wait`) whenever a timer is armed that
/// expires before every other armed one; on a shard serving one request at a time that was
/// every request's `request_timeout`: two system calls on the request path. With this timer
/// always due sooner, arming a longer timeout wakes nothing; it costs one wake-up a second.
async fn keep_a_timer_armed() {
    loop {
        tokio::time::sleep(TIMER_FLOOR).await;
    }
}

/// One open connection on a shard; closing it lowers the shard's count.
struct Open(Arc<AtomicUsize>, metrics::Gauge);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
        self.1.decrement(1.0);
    }
}

/// The number of shards to start: `configured`, or one per core when it is 0.
pub fn count(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_shard_threads_and_connections_spread_by_load() {
        let shards = Shards::start(2).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold_tx, hold_rx) = tokio::sync::watch::channel(false);
        // Three long connections: they spread 2/1, never 3/0.
        for _ in 0..3 {
            let tx = tx.clone();
            let mut hold = hold_rx.clone();
            shards.spawn(move |here| {
                tx.send((here.index(), std::thread::current().name().map(str::to_owned))).unwrap();
                async move {
                    let _ = hold.wait_for(|done| *done).await;
                }
            });
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap());
        }
        for (shard, name) in &seen {
            let i = shard.expect("runs on a shard thread");
            assert_eq!(name.as_deref(), Some(format!("weir-shard-{i}").as_str()));
        }
        let mut loads = shards.loads();
        loads.sort_unstable();
        assert_eq!(loads, vec![1, 2]);
        // Ended connections stop counting.
        hold_tx.send(true).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while shards.loads() != vec![0, 0] {
            assert!(std::time::Instant::now() < deadline, "loads stayed {:?}", shards.loads());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        drop(shards); // joins the threads; a hang here fails the test by timeout
    }

    #[test]
    fn count_defaults_to_one_per_core() {
        assert_eq!(count(3), 3);
        assert!(count(0) >= 1);
    }
}
