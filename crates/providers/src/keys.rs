//! A provider's API keys ([`KeyRing`]): the header each kind sends its key in, the value's form
//! (`Bearer KEY` or the bare key), the weighted random choice per request, and each key's
//! health: a key answered 429 rests (its `Retry-After`, else [`RATE_LIMIT_REST`]) and one
//! answered 401/403 is left out for [`REJECTED_COOLDOWN`] (when there are others), and one
//! answered 5xx [`KEY_FAILURES_TO_OPEN`] times in a row rests for [`KEY_BREAKER_COOLDOWN`] (its
//! breaker), so requests go to the others.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, header};
use tokio::time::Instant;

use crate::config::KeyConfig;

/// How long a key that was answered 429 without a `Retry-After` is passed over.
pub const RATE_LIMIT_REST: Duration = Duration::from_secs(1);
/// How long a key that was answered 401/403 is left out.
pub const REJECTED_COOLDOWN: Duration = Duration::from_secs(60);
/// Server errors (5xx) in a row with one key that set it aside (its breaker opens) when the
/// provider has other keys.
pub const KEY_FAILURES_TO_OPEN: u32 = 5;
/// How long a key whose breaker opened rests; its next failure sets it aside again at once.
pub const KEY_BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// How a key is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `Bearer KEY` (OpenAI and compatible APIs, in `Authorization`).
    Bearer,
    /// The key as it is (`x-api-key`, `api-key`, `x-goog-api-key`).
    Plain,
}

/// One key, marked sensitive, and until when it is passed over (ms after the ring's start;
/// 0: never).
#[derive(Debug)]
struct Key {
    weight: u64,
    value: HeaderValue,
    /// Answered 429: chosen only when every other usable key rests too.
    resting_until: AtomicU64,
    /// Answered 401/403: never chosen until then.
    rejected_until: AtomicU64,
    /// Server errors in a row with this key (its breaker).
    failures: std::sync::atomic::AtomicU32,
}

/// The choice of a key for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    /// Key number `.0` (by position among the keys of weight > 0), value `.1`.
    Key(usize, &'a HeaderValue),
    /// The provider has no keys (it signs requests, or needs none).
    NoKeys,
    /// Every key was rejected (401/403) within the cool-down.
    AllRejected,
}

/// The keys of one provider.
#[derive(Debug)]
pub struct KeyRing {
    header: HeaderName,
    keys: Vec<Key>,
    start: Instant,
}

impl KeyRing {
    /// `Authorization: Bearer KEY`.
    ///
    /// # Errors
    /// A message naming the key (by index) that is no valid header value.
    pub fn bearer(keys: &[KeyConfig]) -> Result<Self, String> {
        Self::new(header::AUTHORIZATION, KeyFormat::Bearer, keys)
    }

    /// The key, as it is, in header `name`.
    ///
    /// # Errors
    /// A message naming the key (by index) that is no valid header value.
    pub fn plain(name: &'static str, keys: &[KeyConfig]) -> Result<Self, String> {
        Self::new(HeaderName::from_static(name), KeyFormat::Plain, keys)
    }

    /// No keys (a provider that signs its requests instead).
    pub fn none() -> Self {
        Self { header: header::AUTHORIZATION, keys: Vec::new(), start: Instant::now() }
    }

    /// Keys `keys` written as `format` in header `header`; weight 0 leaves a key out.
    ///
    /// # Errors
    /// A message naming the key (by index) that is no valid header value.
    pub fn new(header: HeaderName, format: KeyFormat, keys: &[KeyConfig]) -> Result<Self, String> {
        let mut ring = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            if k.weight == 0 {
                continue;
            }
            let text = match format {
                KeyFormat::Bearer => format!("Bearer {}", k.value),
                KeyFormat::Plain => k.value.clone(),
            };
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| format!("keys[{i}] contains characters not allowed in a header"))?;
            value.set_sensitive(true);
            ring.push(Key {
                weight: u64::from(k.weight),
                value,
                resting_until: AtomicU64::new(0),
                rejected_until: AtomicU64::new(0),
                failures: Default::default(),
            });
        }
        Ok(Self { header, keys: ring, start: Instant::now() })
    }

    /// The header the key goes in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A key by weighted random choice among those not rejected and not resting, else among
    /// those not rejected; never one of `tried` (bit `i` for key `i`, the first 64 keys).
    pub fn pick(&self, tried: u64) -> Pick<'_> {
        if self.keys.is_empty() {
            return Pick::NoKeys;
        }
        let now = self.now_ms();
        let open =
            |i: usize, k: &Key| (i >= 64 || tried & (1 << i) == 0) && k.rejected_until.load(Ordering::Relaxed) <= now;
        let rested = |k: &Key| k.resting_until.load(Ordering::Relaxed) <= now;
        let chosen = self.choose(|i, k| open(i, k) && rested(k)).or_else(|| self.choose(|i, k| open(i, k)));
        match chosen {
            Some(i) => Pick::Key(i, &self.keys[i].value),
            None => Pick::AllRejected,
        }
    }

    /// Weighted random choice among the keys `ok` lets through.
    fn choose(&self, ok: impl Fn(usize, &Key) -> bool) -> Option<usize> {
        let total: u64 = self.keys.iter().enumerate().filter(|(i, k)| ok(*i, k)).map(|(_, k)| k.weight).sum();
        if total == 0 {
            return None;
        }
        let mut roll = fastrand::u64(0..total);
        for (i, k) in self.keys.iter().enumerate().filter(|(i, k)| ok(*i, k)) {
            if roll < k.weight {
                return Some(i);
            }
            roll -= k.weight;
        }
        None
    }

    /// Key `i` was answered 429: it rests for `retry_after` (else [`RATE_LIMIT_REST`]).
    pub fn rate_limited(&self, i: usize, retry_after: Option<Duration>) {
        let until = self.now_ms() + duration_ms(retry_after.unwrap_or(RATE_LIMIT_REST));
        if let Some(k) = self.keys.get(i) {
            k.resting_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Key `i` was answered 401/403: it is left out for [`REJECTED_COOLDOWN`]. A lone key is
    /// not: with nothing to turn to, each request lets the upstream answer for itself (a 403
    /// may be about the model, not the key).
    pub fn rejected(&self, i: usize) {
        if self.keys.len() < 2 {
            return;
        }
        let until = self.now_ms() + duration_ms(REJECTED_COOLDOWN);
        if let Some(k) = self.keys.get(i) {
            k.rejected_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// Key `i` was answered 5xx. The [`KEY_FAILURES_TO_OPEN`]th in a row (and each one after,
    /// until an answer) sets it aside for [`KEY_BREAKER_COOLDOWN`], as a 429 would, when the
    /// provider has other keys. Returns whether it did.
    pub fn server_error(&self, i: usize) -> bool {
        let Some(k) = self.keys.get(i).filter(|_| self.keys.len() > 1) else { return false };
        if k.failures.fetch_add(1, Ordering::Relaxed) + 1 < KEY_FAILURES_TO_OPEN {
            return false;
        }
        k.resting_until.fetch_max(self.now_ms() + duration_ms(KEY_BREAKER_COOLDOWN), Ordering::Relaxed);
        true
    }

    /// Key `i` was answered: its run of server errors ends (one load when there was none).
    pub fn answered(&self, i: usize) {
        if let Some(k) = self.keys.get(i)
            && k.failures.load(Ordering::Relaxed) != 0
        {
            k.failures.store(0, Ordering::Relaxed);
        }
    }

    /// Milliseconds since the ring was made, at least 1 (0 marks a key never set aside).
    fn now_ms(&self) -> u64 {
        duration_ms(self.start.elapsed()).max(1)
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_failing_in_a_row_rests_and_an_answer_resets_its_count() {
        let ring = KeyRing::bearer(&[key("sk-1", 1000), key("sk-2", 1)]).unwrap();
        for _ in 1..KEY_FAILURES_TO_OPEN {
            assert!(!ring.server_error(0));
        }
        ring.answered(0);
        for _ in 1..KEY_FAILURES_TO_OPEN {
            assert!(!ring.server_error(0), "the answer ended the run");
        }
        assert!(ring.server_error(0), "the fifth in a row opens it");
        assert!((0..50).all(|_| matches!(ring.pick(0), Pick::Key(1, _))), "the other key serves");
        tokio::time::advance(KEY_BREAKER_COOLDOWN + Duration::from_millis(5)).await;
        assert!((0..50).any(|_| matches!(ring.pick(0), Pick::Key(0, _))), "back after the cool-down");
        assert!(ring.server_error(0), "still failing: set aside again at once");
        let lone = KeyRing::bearer(&[key("sk-1", 1)]).unwrap();
        assert!((0..10).all(|_| !lone.server_error(0)), "a lone key is never set aside");
    }

    fn key(value: &str, weight: u32) -> KeyConfig {
        KeyConfig { value: value.into(), weight }
    }

    #[test]
    fn keys_are_written_in_their_kinds_form_and_marked_sensitive() {
        let ring = KeyRing::bearer(&[key("sk-1", 1)]).unwrap();
        assert_eq!(ring.header(), header::AUTHORIZATION);
        let Pick::Key(0, v) = ring.pick(0) else { panic!("one key") };
        assert_eq!(v, "Bearer sk-1");
        assert!(v.is_sensitive());
        let ring = KeyRing::plain("x-api-key", &[key("sk-ant", 1)]).unwrap();
        assert_eq!(ring.header(), "x-api-key");
        assert!(matches!(ring.pick(0), Pick::Key(0, v) if v == "sk-ant"));
    }

    #[test]
    fn a_zero_weight_key_is_never_chosen_and_a_bad_one_is_named() {
        let ring = KeyRing::plain("api-key", &[key("off", 0), key("on", 3)]).unwrap();
        for _ in 0..50 {
            assert!(matches!(ring.pick(0), Pick::Key(0, v) if v == "on"));
        }
        assert_eq!(KeyRing::none().pick(0), Pick::NoKeys);
        let e = KeyRing::bearer(&[key("ok", 1), key("bad\nkey", 1)]).unwrap_err();
        assert!(e.contains("keys[1]") && !e.contains("bad"), "{e}");
    }

    fn two() -> KeyRing {
        KeyRing::plain("x-api-key", &[key("a", 1), key("b", 1)]).unwrap()
    }

    fn picks(ring: &KeyRing, tried: u64) -> Vec<usize> {
        (0..40)
            .map(|_| match ring.pick(tried) {
                Pick::Key(i, _) => i,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_key_rests_and_the_other_is_chosen_until_it_is_back() {
        let ring = two();
        ring.rate_limited(0, Some(Duration::from_secs(5)));
        assert!(picks(&ring, 0).iter().all(|&i| i == 1));
        tokio::time::advance(Duration::from_millis(5001)).await;
        assert!(picks(&ring, 0).contains(&0), "back after its Retry-After");
        // Both resting: one is still sent (the upstream decides), but never a tried one.
        ring.rate_limited(0, None);
        ring.rate_limited(1, None);
        assert!(picks(&ring, 0b01).iter().all(|&i| i == 1));
    }

    #[test]
    fn a_lone_key_is_never_left_out() {
        let ring = KeyRing::bearer(&[key("only", 1)]).unwrap();
        ring.rejected(0);
        assert!(matches!(ring.pick(0), Pick::Key(0, _)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejected_key_is_left_out_for_the_cooldown_and_all_rejected_says_so() {
        let ring = two();
        ring.rejected(1);
        assert!(picks(&ring, 0).iter().all(|&i| i == 0));
        assert_eq!(ring.pick(0b01), Pick::AllRejected, "the only other key was tried");
        ring.rejected(0);
        assert_eq!(ring.pick(0), Pick::AllRejected);
        tokio::time::advance(REJECTED_COOLDOWN + Duration::from_millis(1)).await;
        assert!(matches!(ring.pick(0), Pick::Key(..)), "usable again after the cool-down");
    }
}
