//! The bounded queues of one stage (the bus, or one sink): a ring per priority, each with a
//! capacity, and the backpressure policy that decides what a full one drops.

use std::collections::VecDeque;

use crate::config::{Backpressure, Priority, QueueCapacities};

/// Why an event was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// A full queue dropped its oldest (`drop-oldest`).
    DropOldest,
    /// A full queue refused the new event (`drop-newest`).
    DropNewest,
    /// A higher-priority event took the place of a lower one (`drop-low-priority`).
    DropLowPriority,
    /// The sink panicked writing it.
    Panic,
    /// The sink returned an error writing it.
    Error,
}

impl Reason {
    /// Every reason, in [`Reason::index`] order.
    pub const ALL: [Self; 5] = [Self::DropOldest, Self::DropNewest, Self::DropLowPriority, Self::Panic, Self::Error];

    /// The `reason` label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::DropOldest => "drop-oldest",
            Self::DropNewest => "drop-newest",
            Self::DropLowPriority => "drop-low-priority",
            Self::Panic => "panic",
            Self::Error => "error",
        }
    }

    /// Position in per-reason arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One dropped event: which queue it was in and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    /// The queue the event was in (or was headed to).
    pub queue: Priority,
    /// Why.
    pub reason: Reason,
}

/// A ring per priority. Never grows past its capacities (under `drop-low-priority` a queue
/// higher queue may take the places of lower queues' events, and the total stays within the
/// capacities' sum).
pub struct Rings<T> {
    rings: [VecDeque<T>; 3],
    caps: [usize; 3],
    policies: [Backpressure; 3],
    /// Some ring drops lower ones' events: the rings then share one budget.
    shared: bool,
}

impl<T> Rings<T> {
    /// Empty rings with each priority's policy (high, medium, low); memory is reserved as
    /// events arrive, up to the capacities.
    pub fn new(caps: &QueueCapacities, policies: [Backpressure; 3]) -> Self {
        let caps = Priority::ALL.map(|p| caps.of(p));
        let shared = policies.contains(&Backpressure::DropLowPriority);
        Self { rings: [VecDeque::new(), VecDeque::new(), VecDeque::new()], caps, policies, shared }
    }

    /// Adds `item` to `p`'s ring, dropping under the policy when it is full.
    pub fn push(&mut self, p: Priority, item: T) -> Option<Dropped> {
        let i = p.index();
        // With `drop-low-priority` the rings share one budget (the capacities' sum), so a
        // place a higher ring took is not given back to the lower one.
        let shared_full = self.shared && self.rings.iter().map(VecDeque::len).sum::<usize>() >= self.caps.iter().sum();
        if self.rings[i].len() < self.caps[i] && !shared_full {
            self.rings[i].push_back(item);
            return None;
        }
        let newest = Some(Dropped { queue: p, reason: Reason::DropNewest });
        match self.policies[i] {
            Backpressure::DropNewest => newest,
            Backpressure::DropLowPriority if let Some(j) = (i + 1..3).rev().find(|&j| !self.rings[j].is_empty()) => {
                self.rings[j].pop_front();
                self.rings[i].push_back(item);
                Some(Dropped { queue: Priority::ALL[j], reason: Reason::DropLowPriority })
            }
            // Nothing of its own to drop (the shared budget is full): the new event goes.
            _ if self.rings[i].is_empty() => newest,
            Backpressure::DropOldest | Backpressure::DropLowPriority => self.replace_oldest(p, item),
        }
    }

    fn replace_oldest(&mut self, p: Priority, item: T) -> Option<Dropped> {
        let ring = &mut self.rings[p.index()];
        ring.pop_front();
        ring.push_back(item);
        Some(Dropped { queue: p, reason: Reason::DropOldest })
    }

    /// The oldest event of the highest non-empty priority.
    pub fn pop(&mut self) -> Option<T> {
        self.rings.iter_mut().find_map(VecDeque::pop_front)
    }

    /// Events waiting, per priority.
    pub fn lens(&self) -> [usize; 3] {
        [self.rings[0].len(), self.rings[1].len(), self.rings[2].len()]
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.rings.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rings(policy: Backpressure) -> Rings<u32> {
        Rings::new(&QueueCapacities { high: 2, medium: 2, low: 2 }, [policy; 3])
    }

    #[test]
    fn each_queue_has_its_own_policy() {
        use Backpressure::*;
        let mut r = Rings::new(&QueueCapacities { high: 1, medium: 1, low: 1 }, [DropNewest, DropOldest, DropOldest]);
        r.push(Priority::High, 1);
        assert_eq!(r.push(Priority::High, 2), Some(Dropped { queue: Priority::High, reason: Reason::DropNewest }));
        r.push(Priority::Medium, 10);
        assert_eq!(r.push(Priority::Medium, 11), Some(Dropped { queue: Priority::Medium, reason: Reason::DropOldest }));
        assert_eq!((r.pop(), r.pop()), (Some(1), Some(11)));
    }

    #[test]
    fn drop_oldest_keeps_the_newest() {
        let mut r = rings(Backpressure::DropOldest);
        assert_eq!(r.push(Priority::Medium, 1), None);
        assert_eq!(r.push(Priority::Medium, 2), None);
        assert_eq!(r.push(Priority::Medium, 3), Some(Dropped { queue: Priority::Medium, reason: Reason::DropOldest }));
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn drop_newest_keeps_the_first() {
        let mut r = rings(Backpressure::DropNewest);
        r.push(Priority::Low, 1);
        r.push(Priority::Low, 2);
        assert_eq!(r.push(Priority::Low, 3), Some(Dropped { queue: Priority::Low, reason: Reason::DropNewest }));
        assert_eq!((r.pop(), r.pop(), r.pop()), (Some(1), Some(2), None));
    }

    #[test]
    fn drop_low_priority_evicts_the_lowest_queue_and_stays_bounded() {
        let mut r = rings(Backpressure::DropLowPriority);
        for n in [10, 11] {
            r.push(Priority::Low, n);
        }
        for n in [20, 21] {
            r.push(Priority::Medium, n);
        }
        for n in [1, 2] {
            r.push(Priority::High, n);
        }
        let d = r.push(Priority::High, 3);
        assert_eq!(d, Some(Dropped { queue: Priority::Low, reason: Reason::DropLowPriority }));
        assert_eq!(r.lens(), [3, 2, 1]);
        // The place high borrowed is not given back: a low event replaces the oldest low one.
        assert_eq!(r.push(Priority::Low, 12), Some(Dropped { queue: Priority::Low, reason: Reason::DropOldest }));
        assert_eq!(r.lens(), [3, 2, 1]);
        for n in 4..100 {
            r.push(Priority::High, n);
        }
        let total: usize = r.lens().iter().sum();
        assert_eq!(total, 6, "never more than the capacities' sum: {:?}", r.lens());
        assert_eq!(r.lens(), [6, 0, 0], "high took every lower place, then dropped its oldest");
        assert_eq!(r.pop(), Some(94), "served oldest first");
    }
}
