//! The redaction rules, independent of the plugin ABI (unit-tested natively).

use regex_lite::Regex;
use serde::Deserialize;

/// `[plugins.config]` of `pii-redact`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Mask email addresses.
    pub email: bool,
    /// Mask phone numbers (9+ digits with usual separators).
    pub phone: bool,
    /// Mask payment card numbers (13-19 digits passing the Luhn check).
    pub card: bool,
    /// Also redact the model's answers in whole responses.
    pub responses: bool,
    /// Also redact stream chunks (each chunk on its own: PII split across chunks is missed).
    pub streams: bool,
    /// Replacement text; `{kind}` becomes `email`, `phone` or `card`.
    pub mask: String,
}

impl Default for Config {
    fn default() -> Self {
        Self { email: true, phone: true, card: true, responses: false, streams: false, mask: "[{kind}]".into() }
    }
}

/// Compiled rules.
pub struct Redactor {
    rules: Vec<(&'static str, Regex)>,
    mask: String,
}

impl Redactor {
    /// Compiles the enabled rules.
    pub fn new(cfg: &Config) -> Self {
        let mut rules = Vec::new();
        let re = |s: &str| Regex::new(s).expect("static pattern");
        if cfg.card {
            rules.push(("card", re(r"\b(?:\d[ -]?){12,18}\d\b")));
        }
        if cfg.email {
            rules.push(("email", re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")));
        }
        if cfg.phone {
            rules.push(("phone", re(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}")));
        }
        Self { rules, mask: cfg.mask.clone() }
    }

    /// Whether `redact` could change `text` (a cheap check before any regex runs).
    pub fn may_redact(&self, text: &str) -> bool {
        let stats = Stats::of(text);
        self.rules.iter().any(|(kind, _)| may_match(kind, stats))
    }

    /// The text with PII masked, or `None` when nothing matched.
    pub fn redact(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (kind, re) in &self.rules {
            let current = out.as_deref().unwrap_or(text);
            if !may_match(kind, Stats::of(current)) {
                continue;
            }
            let mask = self.mask.replace("{kind}", kind);
            let mut hit = false;
            let replaced = re.replace_all(current, |caps: &regex_lite::Captures<'_>| {
                let m = &caps[0];
                let digits = m.bytes().filter(u8::is_ascii_digit).count();
                let keep = match *kind {
                    "card" => luhn(m),
                    "phone" => digits >= 9,
                    _ => true,
                };
                hit |= keep;
                if keep { mask.clone() } else { m.to_owned() }
            });
            if hit {
                out = Some(replaced.into_owned());
            }
        }
        out
    }
}

/// A cheap necessary condition for `kind` to mask anything in `text`, checked before the
/// regex: regex-lite has no literal prefilter, and running the three patterns over every
/// prompt and answer was most of the gateway's CPU time with the default chain. A card needs
/// 13+ digits (Luhn), a kept phone match 9+, an email an `@`.
fn may_match(kind: &str, stats: Stats) -> bool {
    match kind {
        "card" => stats.digits >= 13,
        "phone" => stats.digits >= 9,
        "email" => stats.at_sign,
        _ => true,
    }
}

/// What the prefilter needs to know about a text, gathered in one pass (a loop simple enough
/// for the compiler to vectorise).
#[derive(Clone, Copy)]
struct Stats {
    digits: usize,
    at_sign: bool,
}

impl Stats {
    fn of(text: &str) -> Self {
        let (mut digits, mut at) = (0usize, 0u8);
        for &b in text.as_bytes() {
            digits += usize::from(b.is_ascii_digit());
            at |= u8::from(b == b'@');
        }
        Self { digits, at_sign: at != 0 }
    }
}

/// The Luhn checksum of the digits in `s`.
pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| if i % 2 == 1 { if d * 2 > 9 { d * 2 - 9 } else { d * 2 } } else { d })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> Redactor {
        Redactor::new(&Config::default())
    }

    #[test]
    fn masks_emails_phones_and_cards() {
        let out =
            r().redact("mail ann.lee+x@example.co.uk or call +1 (415) 555-0199, card 4111 1111 1111 1111").unwrap();
        assert_eq!(out, "mail [email] or call [phone], card [card]");
    }

    #[test]
    fn may_redact_is_necessary_for_redact() {
        for text in ["plain words", "a@b.io", "call 415 555 0199", "4111 1111 1111 1111", "v1.2.3, 42"] {
            if r().redact(text).is_some() {
                assert!(r().may_redact(text), "{text}");
            }
        }
        assert!(!r().may_redact("plain words, 12 apples"));
        assert!(r().may_redact("a@b.io"));
    }

    #[test]
    fn leaves_ordinary_numbers_and_text_alone() {
        assert_eq!(r().redact("the year 2024, 3 apples, version 1.2.3"), None);
        // 16 digits failing the Luhn check are not a card (but long enough to look like a phone).
        assert_eq!(r().redact("order 1234"), None);
    }

    #[test]
    fn rules_can_be_turned_off_and_mask_customised() {
        let cfg = Config { phone: false, mask: "***".into(), ..Config::default() };
        let out = Redactor::new(&cfg).redact("a@b.io 415 555 0199").unwrap();
        assert_eq!(out, "*** 415 555 0199");
    }

    #[test]
    fn prefilter_never_hides_a_match() {
        // Exactly the minimum each rule needs still matches.
        assert_eq!(r().redact("pay 4222222222222").as_deref(), Some("pay [card]"));
        assert_eq!(r().redact("call 415 555 019").as_deref(), Some("call [phone]"));
        assert_eq!(r().redact("x@y.io").as_deref(), Some("[email]"));
        // Too few digits or no `@`: the regexes are skipped and nothing changes.
        assert!(!may_match("phone", Stats::of("call 415 555 01")));
        assert!(!may_match("card", Stats::of("4111 1111 1111")));
        assert!(!may_match("email", Stats::of("at example.com")));
    }

    #[test]
    fn luhn_accepts_test_cards_only() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("123"));
    }
}
