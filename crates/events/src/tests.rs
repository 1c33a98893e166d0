//! The bus under bursts, stalls and panics (real threads, bounded waits).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::config::Backpressure;

/// Records what it is given.
struct Collect(Arc<Mutex<Vec<Event>>>);
impl Sink for Collect {
    fn write(&mut self, event: &Event) -> std::io::Result<()> {
        self.0.lock().unwrap().push(event.clone());
        Ok(())
    }
}

/// Blocks every write until released.
struct Stalled(Arc<AtomicBool>);
impl Sink for Stalled {
    fn write(&mut self, _: &Event) -> std::io::Result<()> {
        let until = Instant::now() + Duration::from_secs(10);
        while !self.0.load(Ordering::Relaxed) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Panics on every write.
struct Panics;
impl Sink for Panics {
    fn write(&mut self, _: &Event) -> std::io::Result<()> {
        panic!("sink bug");
    }
}

fn cfg(policy: Backpressure, cap: usize) -> EventsConfig {
    EventsConfig { queues: QueueCapacities { high: cap, medium: cap, low: cap }, policy, ..EventsConfig::default() }
}

fn spec(name: &str, queue: usize, sink: impl Sink) -> SinkSpec {
    SinkSpec { name: name.into(), min_priority: Priority::Low, queue, sink: Box::new(sink) }
}

fn fact(p: Priority, n: usize) -> Event {
    Event::fact(p, "test", serde_json::json!(n))
}

/// Waits (bounded) until `done`.
fn eventually(mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < until, "timed out");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn a_stalled_sink_loses_only_its_own_events_and_publishing_stays_fast() {
    let release = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = Bus::start(
        &cfg(Backpressure::DropOldest, 100_000),
        vec![spec("stalled", 64, Stalled(release.clone())), spec("good", 100_000, Collect(seen.clone()))],
    )
    .unwrap();
    let n = 50_000;
    let t0 = Instant::now();
    for i in 0..n {
        bus.publish(fact(Priority::Medium, i));
    }
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(2), "publishing {n} events took {took:?}");
    eventually(|| seen.lock().unwrap().len() == n);
    let stats = bus.stats();
    let stalled = &stats.sinks[0];
    assert!(stalled.dropped_total as usize >= n - 64 - BATCH * 2, "{stalled:?}");
    assert!(stalled.dropped.iter().all(|d| d.reason == "drop-oldest" && d.queue == "medium"));
    assert_eq!(stats.sinks[1].dropped_total, 0);
    release.store(true, Ordering::Relaxed);
}

#[test]
fn high_priority_events_survive_a_flood_of_low_ones_under_every_policy() {
    // The bus's queues are small; the only sink waits until the flood is over.
    struct Gated(Arc<AtomicBool>, Collect);
    impl Sink for Gated {
        fn write(&mut self, ev: &Event) -> std::io::Result<()> {
            Stalled(self.0.clone()).write(ev)?;
            self.1.write(ev)
        }
    }
    for policy in [Backpressure::DropLowPriority, Backpressure::DropOldest, Backpressure::DropNewest] {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(AtomicBool::new(false));
        let bus = Bus::start(&cfg(policy, 256), vec![spec("gated", 256, Gated(gate.clone(), Collect(seen.clone())))])
            .unwrap();
        for i in 0..20_000 {
            bus.publish(fact(Priority::Low, i));
            if i % 100 == 0 {
                bus.publish(fact(Priority::High, i));
            }
        }
        gate.store(true, Ordering::Relaxed);
        eventually(|| seen.lock().unwrap().iter().filter(|e| e.priority == Priority::High).count() == 200);
        let stats = bus.stats();
        let all_drops = || stats.dropped.iter().chain(&stats.sinks[0].dropped);
        let low_drops: u64 = all_drops().filter(|d| d.queue == "low").map(|d| d.count).sum();
        assert!(low_drops > 10_000, "{policy:?}: the flood was dropped: {stats:?}");
        assert!(all_drops().all(|d| d.queue == "low"), "{policy:?}: {stats:?}");
    }
}

#[test]
fn drop_newest_keeps_the_first_events_and_counts_the_rest() {
    let gate = Arc::new(AtomicBool::new(false));
    let bus = Bus::start(&cfg(Backpressure::DropNewest, 10), vec![spec("stalled", 10, Stalled(gate.clone()))]).unwrap();
    // Nothing leaves the bus before the workers run; publish faster than they could take.
    for i in 0..1000 {
        bus.publish(fact(Priority::Medium, i));
    }
    eventually(|| {
        let s = bus.stats();
        let total: u64 = s.dropped.iter().chain(&s.sinks[0].dropped).map(|d| d.count).sum();
        // At most the queues' places plus one event held by the stalled write are not dropped.
        total >= 1000 - 10 - 10 - 1 - BATCH as u64
    });
    let s = bus.stats();
    assert!(s.dropped.iter().chain(&s.sinks[0].dropped).all(|d| d.reason == "drop-newest"), "{s:?}");
    gate.store(true, Ordering::Relaxed);
}

#[test]
fn a_panicking_sink_is_isolated_and_counted() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let bus = Bus::start(
        &cfg(Backpressure::DropOldest, 1000),
        vec![spec("panics", 1000, Panics), spec("good", 1000, Collect(seen.clone()))],
    )
    .unwrap();
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for i in 0..100 {
        bus.publish(fact(Priority::High, i));
    }
    eventually(|| seen.lock().unwrap().len() == 100 && bus.stats().sinks[0].dropped_total == 100);
    std::panic::set_hook(hook);
    assert_eq!(bus.stats().sinks[0].dropped, vec![DropCount { queue: "high", reason: "panic", count: 100 }]);
}

#[test]
fn a_sink_takes_only_its_priorities_and_shutdown_writes_what_is_queued() {
    let all = Arc::new(Mutex::new(Vec::new()));
    let high = Arc::new(Mutex::new(Vec::new()));
    let mut only_high = spec("high", 100, Collect(high.clone()));
    only_high.min_priority = Priority::High;
    let bus = Bus::start(&cfg(Backpressure::DropOldest, 100), vec![spec("all", 100, Collect(all.clone())), only_high])
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    for (i, p) in Priority::ALL.into_iter().enumerate() {
        bus.publish(fact(p, i));
        written.fetch_add(1, Ordering::Relaxed);
    }
    bus.shutdown(Duration::from_secs(5));
    assert_eq!(all.lock().unwrap().len(), 3);
    let high = high.lock().unwrap();
    assert_eq!(high.len(), 1);
    assert_eq!(high[0].priority, Priority::High);
}
