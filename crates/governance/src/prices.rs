//! What a request costs: the bundled price table (`prices.toml`) under the config's
//! `[prices]`, and the cost of reported token usage in nano-dollars (integers add exactly, in
//! Redis too).

use std::collections::{BTreeMap, HashMap};
use std::sync::RwLock;

use weir_config::PriceConfig;

/// The bundled table, US dollars per million tokens.
const BUNDLED: &str = include_str!("../prices.toml");

/// Token counts of one answer (or of an estimate).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Prompt tokens, cached ones included.
    pub prompt: u64,
    /// Completion tokens.
    pub completion: u64,
    /// Prompt tokens read from the provider's cache (part of `prompt`).
    pub cached: u64,
}

impl Tokens {
    /// Prompt and completion tokens: what `tpm` counts.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}

/// One model's price in nano-dollars per token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Price {
    input: f64,
    output: f64,
    cached: f64,
}

impl Price {
    fn from_config(p: &PriceConfig) -> Self {
        // Dollars per million tokens = 1000 nano-dollars per token per dollar-per-million.
        Self { input: p.input * 1000.0, output: p.output * 1000.0, cached: p.cached.unwrap_or(p.input) * 1000.0 }
    }

    /// The cost of `t` in nano-dollars, rounded up.
    pub fn cost(&self, t: Tokens) -> u64 {
        let fresh = t.prompt.saturating_sub(t.cached) as f64;
        let nano = fresh * self.input + t.cached.min(t.prompt) as f64 * self.cached + t.completion as f64 * self.output;
        nano.ceil() as u64
    }
}

/// Names remembered with their pattern match (or none): a model the table does not know is
/// looked up once, not matched against every pattern per request.
const MEMO_MAX: usize = 4096;

// Looked up on every request: foldhash is a few times cheaper than SipHash on short names and
// still seeded per process (model names come from clients).
type Map<V> = HashMap<String, V, foldhash::fast::RandomState>;

/// Prices by model: exact names, then patterns (longest first).
#[derive(Debug, Default)]
pub struct PriceTable {
    exact: Map<Price>,
    patterns: Vec<(String, Price)>,
    memo: RwLock<Map<Option<Price>>>,
}

impl PriceTable {
    /// The bundled table with `overrides` (the config's `[prices]`) on top.
    pub fn new(overrides: &BTreeMap<String, PriceConfig>) -> Self {
        let bundled: BTreeMap<String, PriceConfig> = toml::from_str(BUNDLED).unwrap_or_default();
        let mut table = Self::default();
        // Overrides first: an entry already present is not replaced by the bundled one.
        for (name, p) in overrides.iter().chain(bundled.iter()) {
            let price = Price::from_config(p);
            if name.contains('*') {
                if !table.patterns.iter().any(|(n, _)| n == name) {
                    table.patterns.push((name.clone(), price));
                }
            } else {
                table.exact.entry(name.clone()).or_insert(price);
            }
        }
        // Stable: among equally long patterns the config's come first.
        table.patterns.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        table
    }

    /// The price of `model`, if the table knows it.
    pub fn get(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.exact.get(model) {
            return Some(*p);
        }
        if let Some(p) = self.memo.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(model) {
            return *p;
        }
        let found = self.patterns.iter().find(|(pat, _)| glob(pat, model)).map(|(_, p)| *p);
        let mut memo = self.memo.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if memo.len() < MEMO_MAX {
            memo.insert(model.to_owned(), found);
        }
        found
    }
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else { return true };
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Nano-dollars as a decimal dollar amount (`0.000123`), for headers and the admin API.
pub fn usd(nano: u64) -> String {
    let s = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').map_or_else(|| s.to_owned(), |whole| whole.to_owned())
}

/// Dollars as nano-dollars (budgets).
pub fn nano(usd: f64) -> u64 {
    (usd * 1e9).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_price_wins_and_config_overrides_the_bundle() {
        let t = PriceTable::new(&BTreeMap::new());
        let mini = t.get("gpt-4o-mini-2024-07-18").unwrap();
        assert_eq!(mini, t.get("gpt-4o-mini").unwrap());
        assert_ne!(mini, t.get("gpt-4o").unwrap(), "gpt-4o* must not shadow gpt-4o-mini*");
        assert!(t.get("claude-sonnet-4-5-20250929").is_some());
        assert!(t.get("no-such-model").is_none());
        let over = BTreeMap::from([("gpt-4o-mini".to_owned(), PriceConfig { input: 1.0, output: 2.0, cached: None })]);
        let t = PriceTable::new(&over);
        // 1M fresh prompt tokens at $1/M and 1M completion at $2/M.
        let cost = t.get("gpt-4o-mini").unwrap().cost(Tokens { prompt: 1_000_000, completion: 1_000_000, cached: 0 });
        assert_eq!(usd(cost), "3");
    }

    #[test]
    fn cached_tokens_cost_the_cached_price() {
        let p = Price::from_config(&PriceConfig { input: 2.0, output: 0.0, cached: Some(1.0) });
        assert_eq!(p.cost(Tokens { prompt: 10, completion: 0, cached: 4 }), 6 * 2000 + 4 * 1000);
        assert_eq!(usd(16_000), "0.000016");
        assert_eq!(usd(0), "0");
        assert_eq!(nano(25.0), 25_000_000_000);
    }

    #[test]
    fn globs_match_runs() {
        assert!(glob("mock/*", "mock/a"));
        assert!(glob("*", ""));
        assert!(glob("a*c*e", "abcde"));
        assert!(!glob("a*c*e", "abcd"));
        assert!(!glob("gpt-4o", "gpt-4o-mini"));
        assert!(glob("*-mini", "gpt-4o-mini"));
    }
}
