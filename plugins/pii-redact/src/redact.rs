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

/// What a rule masks. An enum rather than its name so that the per-text prefilter dispatches
/// on a tag instead of comparing strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Card,
    Email,
    Phone,
}

impl Kind {
    /// The name that replaces `{kind}` in the mask.
    fn name(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::Email => "email",
            Self::Phone => "phone",
        }
    }
}

/// Compiled rules.
pub struct Redactor {
    rules: Vec<(Kind, Regex)>,
    mask: String,
}

impl Redactor {
    /// Compiles the enabled rules.
    pub fn new(cfg: &Config) -> Self {
        let mut rules = Vec::new();
        let re = |s: &str| Regex::new(s).expect("static pattern");
        if cfg.card {
            rules.push((Kind::Card, re(r"\b(?:\d[ -]?){12,18}\d\b")));
        }
        if cfg.email {
            rules.push((Kind::Email, re(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")));
        }
        if cfg.phone {
            rules.push((Kind::Phone, re(r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}")));
        }
        Self { rules, mask: cfg.mask.clone() }
    }

    /// Whether `redact` could change `text` (a cheap check before any regex runs).
    pub fn may_redact(&self, text: &str) -> bool {
        let stats = Stats::of(text);
        self.rules.iter().any(|&(kind, _)| may_match(kind, stats))
    }

    /// The text with PII masked, or `None` when nothing matched.
    pub fn redact(&self, text: &str) -> Option<String> {
        let mut out: Option<String> = None;
        for (kind, re) in &self.rules {
            let current = out.as_deref().unwrap_or(text);
            if !may_match(*kind, Stats::of(current)) {
                continue;
            }
            let mask = self.mask.replace("{kind}", kind.name());
            let mut hit = false;
            let replaced = re.replace_all(current, |caps: &regex_lite::Captures<'_>| {
                let m = &caps[0];
                let digits = m.bytes().filter(u8::is_ascii_digit).count();
                let keep = match kind {
                    Kind::Card => luhn(m),
                    Kind::Phone => digits >= 9,
                    Kind::Email => true,
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
fn may_match(kind: Kind, stats: Stats) -> bool {
    match kind {
        Kind::Card => stats.digits >= 13,
        Kind::Phone => stats.digits >= 9,
        Kind::Email => stats.at_sign,
    }
}

/// What the prefilter needs to know about a text, gathered in one pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stats {
    digits: usize,
    at_sign: bool,
}

/// Bytes tallied into one set of `u8` counters: at most 255 so a count cannot wrap, and a
/// multiple of 16 (one wasm SIMD vector) so the compiler unrolls the group into whole-vector
/// steps with no per-group scalar remainder.
const GROUP: usize = 240;

/// One wasm SIMD vector of bytes.
const LANES: usize = 16;

impl Stats {
    /// Runs on every prompt text of every request, so it is shaped for the vectoriser: `u8`
    /// counters let LLVM handle 16 bytes per SIMD step (with `usize` counters it managed 4,
    /// ~7.8k fuel on a 1 KB prompt; this is ~1.7k). Fixed-size groups are unrolled; the last
    /// partial vector is copied into a zeroed block (zeros are neither digits nor `@`) instead
    /// of a byte-at-a-time loop.
    fn of(text: &str) -> Self {
        let mut stats = Self { digits: 0, at_sign: false };
        let (groups, rest) = text.as_bytes().as_chunks::<GROUP>();
        for group in groups {
            stats.tally(group);
        }
        let (vectors, bytes) = rest.as_chunks::<LANES>();
        stats.tally(vectors.as_flattened());
        let mut last = [0u8; LANES];
        last[..bytes.len()].copy_from_slice(bytes);
        stats.tally(&last);
        stats
    }

    /// Adds the digits and `@` of at most [`GROUP`] bytes (a longer slice could wrap the `u8`
    /// count and hide digits from the prefilter).
    #[inline(always)]
    fn tally(&mut self, bytes: &[u8]) {
        debug_assert!(bytes.len() <= GROUP);
        let (mut digits, mut at) = (0u8, 0u8);
        for &b in bytes {
            digits += u8::from(b.is_ascii_digit());
            at |= u8::from(b == b'@');
        }
        self.digits += usize::from(digits);
        self.at_sign |= at != 0;
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
        assert!(!may_match(Kind::Phone, Stats::of("call 415 555 01")));
        assert!(!may_match(Kind::Card, Stats::of("4111 1111 1111")));
        assert!(!may_match(Kind::Email, Stats::of("at example.com")));
    }

    /// The byte-at-a-time definition the chunked scan must agree with.
    fn naive(text: &str) -> Stats {
        Stats { digits: text.bytes().filter(u8::is_ascii_digit).count(), at_sign: text.contains('@') }
    }

    #[test]
    fn stats_count_every_digit_across_groups() {
        // More digits than a u8 holds, in one text: a counter that wrapped would report 0..255.
        for len in [0, 1, 15, 16, 17, 239, 240, 241, 255, 256, 257, 479, 480, 481, 1000, 4096] {
            let text = "7".repeat(len);
            assert_eq!(Stats::of(&text), Stats { digits: len, at_sign: false }, "{len} digits");
        }
    }

    #[test]
    fn stats_match_a_naive_scan_at_every_offset() {
        // Digits, `@` and multi-byte characters at every position around the group and
        // vector boundaries, including in the zero-padded last vector.
        let base: String = (0..600).map(|i| ['a', '5', 'é', ' ', '0', '9', '/', ':'][i % 8]).collect();
        for cut in [0, 1, 15, 16, 17, 200, 239, 240, 241, 250, 479, 480, 500, base.len()] {
            let cut = (cut..=base.len()).find(|&c| base.is_char_boundary(c)).unwrap();
            assert_eq!(Stats::of(&base[..cut]), naive(&base[..cut]), "prefix of {cut} bytes");
            assert_eq!(Stats::of(&base[cut..]), naive(&base[cut..]), "suffix from {cut}");
        }
        for at in [0, 1, 15, 16, 239, 240, 241, 300, 599] {
            let mut text = "x".repeat(600);
            text.replace_range(at..=at, "@");
            assert!(Stats::of(&text).at_sign, "@ at {at}");
            assert!(Stats::of(&text[..at + 1]).at_sign, "@ last of {} bytes", at + 1);
            assert!(!Stats::of(&text[..at]).at_sign, "no @ in {at} bytes");
        }
    }

    #[test]
    fn luhn_accepts_test_cards_only() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("5500-0000-0000-0004"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("123"));
    }
}
