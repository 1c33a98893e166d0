//! One key's quota grant on this instance (with Redis): a share of each limit (requests of the
//! rpm window, tokens of the minute, nano-dollars of the budget period, concurrency slots) that
//! Redis already counted for this instance, so most admissions take from it without a round
//! trip. When it does not cover a request, one script call returns what is left and takes a
//! new grant (`redis.rs`); the script caps a grant's extra at an eighth of what remains under
//! each limit, so near a limit grants are single requests and admission is exact again.
//! A request alone on the key here asks for itself only; one call per key is on its way at a
//! time, and the misses meanwhile wait for it (`lib.rs`).
//!
//! A grant lives [`GRANT_TTL_MS`] (and only in the windows it was taken in); once the key has
//! nothing in flight here (still so when the settler looks, right after the last settlement),
//! its unused parts go back to Redis.

use crate::{Ask, Windows};

/// How long a grant may be drawn on: the bound on how late a request is counted (it counts
/// at its grant's time) and on how long a revocation elsewhere may go unnoticed here.
pub(crate) const GRANT_TTL_MS: u64 = 1000;
/// Most requests one grant asks for.
pub(crate) const MAX_CHUNK: u64 = 4096;

/// Unused parts of a grant, handed back to Redis (each in the window it was counted in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Leftover {
    /// The second whose rpm bucket counted the requests.
    pub sec: u64,
    pub requests: u64,
    pub minute: u64,
    pub tokens: u64,
    pub period: u64,
    pub nano: u64,
    pub slots: u64,
}

impl Leftover {
    pub(crate) fn is_empty(&self) -> bool {
        self.requests == 0 && self.tokens == 0 && self.nano == 0 && self.slots == 0
    }
}

/// What a grant call was answered: the asking request admitted, and this much more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Granted {
    pub windows: Windows,
    pub sec: u64,
    pub requests: u64,
    pub tokens: u64,
    pub nano: u64,
    pub slots: u64,
}

/// One key's grant on this instance.
#[derive(Debug, Default)]
pub struct Lease {
    /// Drawable until (ms since the epoch); 0: no grant.
    until_ms: u64,
    /// What is left, in the windows it was counted in.
    left: Leftover,
    /// Requests admitted through Redis or the grant and not yet settled.
    in_flight: u64,
    /// Admissions since the last grant call.
    used: u64,
    /// Requests the next grant call asks for.
    chunk: u64,
    /// Slots handed back by a call that failed (Redis may or may not have taken them): handed
    /// back again with the next return, which never takes a count below zero.
    owed_slots: u64,
    /// Admissions so far (an idle return checks none came since).
    generation: u64,
    /// A grant call for the key is on its way: the next misses wait for it.
    pub(crate) pending: bool,
    /// Admissions waiting for the pending call (the next grant asks for them too).
    pub(crate) waiting: u64,
    /// The instance's count of failed grant calls when this grant was taken: a later failure
    /// (Redis away) stops every grant from being drawn on until a call succeeds again.
    epoch: u64,
}

impl Lease {
    /// Admits `ask` from the grant if it covers every configured limit (nothing is taken
    /// otherwise).
    pub(crate) fn take(&mut self, ask: &Ask, epoch: u64) -> Option<Windows> {
        let w = ask.windows();
        let l = &self.left;
        let covered = ask.now_ms < self.until_ms
            && self.epoch == epoch
            && l.minute == w.minute
            && l.period == w.period
            && (ask.rpm.is_none() || l.requests >= 1)
            && (ask.tpm.is_none() || l.tokens >= ask.tokens)
            // A free estimate still needs some of the budget left (a spent budget refuses it).
            && (ask.budget_nano.is_none() || l.nano >= ask.cost_nano.max(1))
            && (ask.max_concurrent.is_none() || l.slots >= 1);
        if !covered {
            return None;
        }
        let l = &mut self.left;
        if ask.rpm.is_some() {
            l.requests -= 1;
        }
        if ask.tpm.is_some() {
            l.tokens -= ask.tokens;
        }
        if ask.budget_nano.is_some() {
            l.nano -= ask.cost_nano;
        }
        if ask.max_concurrent.is_some() {
            l.slots -= 1;
        }
        self.used += 1;
        self.in_flight += 1;
        self.generation += 1;
        Some(w)
    }

    /// Before a grant call: takes out what is left (the call hands it back) and says how many
    /// requests to ask for. A request alone on the key here asks for itself only (light
    /// traffic stays exact and holds nothing). With others in flight: twice the last chunk when
    /// the grant ran out while valid, about what the last grant served when it expired, the
    /// size it had before an idle return otherwise.
    pub(crate) fn prepare(&mut self, now_ms: u64) -> (Leftover, u64) {
        if self.until_ms != 0 && self.in_flight > 0 {
            self.chunk = if now_ms < self.until_ms { self.chunk * 2 } else { self.used };
        }
        self.chunk = self.chunk.clamp(1, MAX_CHUNK);
        self.used = 0;
        let mut back = std::mem::take(&mut self.left);
        back.slots += std::mem::take(&mut self.owed_slots);
        let alone = if self.in_flight == 0 { 1 } else { self.chunk };
        self.pending = true;
        (back, alone.max(1 + self.waiting).min(MAX_CHUNK))
    }

    /// After a grant call admitted the asking request: keeps the grant. What another call
    /// granted meanwhile in other windows comes back, to be returned.
    pub(crate) fn apply(&mut self, g: Granted, now_ms: u64, epoch: u64) -> Option<Leftover> {
        self.epoch = epoch;
        self.pending = false;
        let l = &self.left;
        let same = l.sec == g.sec && l.minute == g.windows.minute && l.period == g.windows.period;
        let stale = (!same && !l.is_empty()).then(|| std::mem::take(&mut self.left));
        let l = &mut self.left;
        (l.sec, l.minute, l.period) = (g.sec, g.windows.minute, g.windows.period);
        l.requests += g.requests;
        l.tokens += g.tokens;
        l.nano += g.nano;
        l.slots += g.slots;
        self.until_ms = self.until_ms.max(now_ms + GRANT_TTL_MS);
        self.used += 1;
        self.in_flight += 1;
        self.generation += 1;
        stale
    }

    /// A request admitted under the grant (or a grant call) finished: its slot comes back to
    /// the grant. Once nothing is in flight and something is left, the generation to check
    /// with [`Lease::idle_return`] a moment later (a busy key is idle for microseconds between
    /// requests; it keeps its grant).
    pub(crate) fn release(&mut self, slot: bool) -> Option<u64> {
        self.in_flight = self.in_flight.saturating_sub(1);
        if slot {
            self.left.slots += 1;
        }
        let idle = self.in_flight == 0 && (!self.left.is_empty() || self.owed_slots > 0);
        idle.then_some(self.generation)
    }

    /// Everything left, if no admission came since generation `generation` and nothing is in
    /// flight: the next admission asks Redis again.
    pub(crate) fn idle_return(&mut self, generation: u64) -> Option<Leftover> {
        if self.generation != generation || self.in_flight > 0 {
            return None;
        }
        self.until_ms = 0;
        let mut back = std::mem::take(&mut self.left);
        back.slots += std::mem::take(&mut self.owed_slots);
        (!back.is_empty()).then_some(back)
    }

    /// A grant call refused: the next one starts again at one request.
    pub(crate) fn reset(&mut self) {
        self.until_ms = 0;
        self.chunk = 1;
        self.pending = false;
    }

    /// A grant call failed with `back` in it. Unused requests, tokens and spend are dropped
    /// (counted until their windows end: the safe side); slots would stay counted as long as
    /// this instance lives, so they are handed back again later.
    pub(crate) fn failed(&mut self, back: Leftover) {
        self.reset();
        self.owed_slots += back.slots;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(now_ms: u64) -> Ask {
        Ask {
            now_ms,
            rpm: Some(1000),
            tpm: Some(100_000),
            tokens: 10,
            budget_nano: Some(1_000_000),
            cost_nano: 100,
            period_s: 3600,
            max_concurrent: Some(100),
        }
    }

    fn granted(a: &Ask, n: u64) -> Granted {
        Granted {
            windows: a.windows(),
            sec: a.now_ms / 1000,
            requests: n,
            tokens: n * a.tokens,
            nano: n * a.cost_nano,
            slots: n,
        }
    }

    #[test]
    fn chunks_start_at_one_and_double_while_grants_run_out() {
        let mut l = Lease::default();
        let a = ask(10_000);
        assert_eq!(l.take(&a, 0), None, "no grant yet");
        let (back, want) = l.prepare(a.now_ms);
        assert_eq!((back.is_empty(), want), (true, 1));
        assert_eq!(l.apply(granted(&a, 0), a.now_ms, 0), None);
        let mut wants = vec![want];
        for n in 0..5 {
            assert_eq!(l.take(&a, 0), None, "grant {n} used up");
            let (_, want) = l.prepare(a.now_ms);
            wants.push(want);
            l.apply(granted(&a, want - 1), a.now_ms, 0);
            for _ in 1..want {
                assert!(l.take(&a, 0).is_some());
            }
        }
        assert_eq!(wants, [1, 2, 4, 8, 16, 32]);
    }

    #[test]
    fn a_request_alone_asks_for_itself_and_a_busy_key_keeps_its_size_across_idle_returns() {
        let mut l = Lease::default();
        let a = ask(10_000);
        for _ in 0..3 {
            assert_eq!(l.prepare(a.now_ms).1, 1, "nothing else in flight");
            l.apply(granted(&a, 0), a.now_ms, 0);
            assert_eq!(l.release(false), None, "nothing left to hand back");
        }
        // Busy: the size grows while grants run out with others in flight.
        l.apply(granted(&a, 0), a.now_ms, 0);
        assert_eq!(l.prepare(a.now_ms).1, 2);
        l.apply(granted(&a, 1), a.now_ms, 0);
        l.take(&a, 0).unwrap();
        assert_eq!(l.prepare(a.now_ms).1, 4);
        l.apply(granted(&a, 3), a.now_ms, 0);
        for _ in 0..3 {
            l.release(false);
        }
        let generation = l.release(false).unwrap();
        l.idle_return(generation).unwrap();
        assert_eq!(l.prepare(a.now_ms).1, 1, "alone again");
        l.apply(granted(&a, 0), a.now_ms, 0);
        assert_eq!(l.prepare(a.now_ms).1, 8, "a second request in flight: growing on from the size before");
    }

    #[test]
    fn a_grant_call_asks_for_the_admissions_waiting_on_it() {
        let mut l = Lease::default();
        let a = ask(10_000);
        l.prepare(a.now_ms);
        assert!(l.pending);
        l.waiting = 5;
        l.apply(granted(&a, 0), a.now_ms, 0);
        assert!(!l.pending);
        assert_eq!(l.prepare(a.now_ms).1, 6, "itself and the five waiting");
    }

    #[test]
    fn a_grant_covers_every_limit_or_nothing_is_taken() {
        let mut l = Lease::default();
        let mut a = ask(5_000);
        l.prepare(a.now_ms);
        let g = Granted { tokens: 15, ..granted(&a, 3) };
        l.apply(g, a.now_ms, 0);
        assert!(l.take(&a, 0).is_some());
        // 5 tokens left: a 10-token request needs Redis, and takes no request nor slot.
        assert_eq!(l.take(&a, 0), None);
        let (back, _) = l.prepare(a.now_ms);
        assert_eq!((back.requests, back.tokens, back.nano, back.slots), (2, 5, 200, 2));
        // A later minute is another window: a grant of the last one does not cover it.
        l.apply(granted(&a, 4), a.now_ms, 0);
        a.now_ms = 60_000;
        assert_eq!(l.take(&a, 0), None);
    }

    #[test]
    fn a_grant_expires_and_the_next_asks_for_what_the_last_served() {
        let mut l = Lease::default();
        let a = ask(1_000);
        l.prepare(a.now_ms);
        l.apply(granted(&a, 100), a.now_ms, 0);
        for _ in 0..6 {
            l.take(&a, 0).unwrap();
        }
        let later = ask(1_000 + GRANT_TTL_MS);
        assert_eq!(l.take(&later, 0), None, "expired");
        let (back, want) = l.prepare(later.now_ms);
        assert_eq!((back.requests, want), (94, 7), "the rest goes back; 7 were admitted under it");
    }

    #[test]
    fn unused_parts_go_back_once_nothing_is_in_flight() {
        let mut l = Lease::default();
        let a = ask(2_000);
        l.prepare(a.now_ms);
        l.apply(granted(&a, 4), a.now_ms, 0);
        l.take(&a, 0).unwrap();
        assert_eq!(l.release(true), None, "one still in flight keeps the grant");
        let generation = l.release(true).unwrap();
        l.take(&a, 0).unwrap();
        assert_eq!(l.idle_return(generation), None, "an admission came since: still busy");
        let generation = l.release(true).unwrap();
        let back = l.idle_return(generation).unwrap();
        assert_eq!((back.sec, back.requests, back.tokens, back.nano, back.slots), (2, 2, 20, 200, 5));
        assert_eq!(l.take(&a, 0), None, "after an idle return the next admission asks Redis");
        assert_eq!(l.prepare(a.now_ms).1, 1);
    }

    #[test]
    fn a_grant_in_another_second_hands_the_old_one_back() {
        let mut l = Lease::default();
        let a = ask(2_000);
        l.prepare(a.now_ms);
        l.apply(granted(&a, 4), a.now_ms, 0);
        let b = ask(3_500);
        let stale = l.apply(granted(&b, 2), b.now_ms, 0).unwrap();
        assert_eq!((stale.sec, stale.requests), (2, 4));
        assert_eq!(l.left.requests, 2);
    }

    #[test]
    fn a_failed_call_elsewhere_stops_drawing_on_the_grant() {
        let mut l = Lease::default();
        let a = ask(2_000);
        l.prepare(a.now_ms);
        l.apply(granted(&a, 3), a.now_ms, 4);
        assert!(l.take(&a, 4).is_some());
        assert_eq!(l.take(&a, 5), None, "Redis failed a call since the grant");
    }

    #[test]
    fn slots_of_a_failed_call_are_handed_back_again() {
        let mut l = Lease::default();
        let a = ask(2_000);
        l.prepare(a.now_ms);
        l.apply(granted(&a, 3), a.now_ms, 0);
        let (back, _) = l.prepare(a.now_ms);
        l.failed(back);
        assert_eq!(l.take(&a, 0), None);
        let generation = l.release(true).unwrap();
        let back = l.idle_return(generation).unwrap();
        assert_eq!((back.requests, back.slots), (0, 4), "3 owed, 1 freed");
    }
}
