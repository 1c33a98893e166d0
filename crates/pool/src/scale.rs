//! Adaptive workers (`max_workers`): a task per such pool looks at its line every tick and
//! adds slots when requests wait (the line `scale_up_queue_fill` full, or a wait of
//! `scale_up_wait`), or retires idle ones when nobody waited and at most half were busy for a
//! `scale_cooldown`. A new slot goes to the oldest waiter at once; only idle slots are retired,
//! so no running call is touched. Pools without `max_workers` have no task and no cost.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Shared, Slot};

/// How often the line is looked at.
const TICK: Duration = Duration::from_millis(50);

/// Scales `pool` until it is dropped.
pub(crate) async fn run(pool: Weak<Shared>) {
    let mut changed = Instant::now();
    // The most slots busy at once since `window` began; a window lasts a cool-down.
    let (mut window, mut peak_busy) = (Instant::now(), 0);
    loop {
        tokio::time::sleep(TICK).await;
        let Some(s) = pool.upgrade() else { return };
        let cfg = &s.cfg;
        let (Some(max), min) = (cfg.max_workers, cfg.min_workers.unwrap_or(1)) else { return };
        let waiting = s.queue.len();
        let waited = Duration::from_micros(s.longest_wait_us.swap(0, Ordering::Relaxed));
        let workers = s.workers.load(Ordering::Relaxed);
        peak_busy = peak_busy.max(s.outstanding.load(Ordering::Relaxed).saturating_sub(waiting));
        let now = Instant::now();
        if now.duration_since(changed) < cfg.scale_cooldown {
            continue;
        }
        let crowded = waiting > 0 && waiting as f64 >= cfg.scale_up_queue_fill * cfg.queue as f64;
        if (crowded || waited >= cfg.scale_up_wait) && workers < max {
            let add = (workers / 2).max(1).min(max - workers);
            s.workers.fetch_add(add, Ordering::Relaxed);
            s.metrics.scaled(add as f64);
            for _ in 0..add {
                s.queue.release(Slot);
            }
            tracing::debug!(provider = %s.name, workers = workers + add, "workers added");
            (changed, window, peak_busy) = (now, now, 0);
        } else if now.duration_since(window) >= cfg.scale_cooldown {
            if waiting == 0 && peak_busy * 2 <= workers && workers > min {
                let mut removed = 0;
                while removed < (workers / 4).max(1).min(workers - min) {
                    match s.queue.take() {
                        Ok(Some(Slot)) => removed += 1,
                        _ => break,
                    }
                }
                if removed > 0 {
                    s.workers.fetch_sub(removed, Ordering::Relaxed);
                    s.metrics.scaled(-(removed as f64));
                    tracing::debug!(provider = %s.name, workers = workers - removed, "idle workers retired");
                    changed = now;
                }
            }
            (window, peak_busy) = (now, 0);
        }
    }
}
