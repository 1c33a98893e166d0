//! Case-insensitive deny-keyword search, run by the guard on every prompt text of every request
//! (unit-tested natively).
//!
//! A keyword is found in a text when the text, lowercased with Unicode rules, contains the
//! keyword lowercased the same way. Prompts are almost always ASCII, and there the search runs
//! on the text as it is (Horspool on byte pairs, comparing ASCII case-insensitively) instead of
//! allocating a lowercased copy and scanning it once per keyword.

/// The deny keywords, prepared once at init.
pub struct Keywords(Vec<Keyword>);

/// One deny keyword.
struct Keyword {
    /// The keyword lowercased with Unicode rules: what lowercased non-ASCII text must contain.
    lower: String,
    /// How to search ASCII text; `None` when `lower` is not ASCII: such a keyword can never
    /// occur in ASCII text.
    ascii: Option<PairShifts>,
}

/// Horspool's skip table keyed by the window's last two bytes instead of its last one. In
/// prose most single letters occur in a keyword, so one byte rarely allows a long skip; most
/// letter pairs do not, so the window usually moves the keyword's whole length (a fourth of
/// the windows on English text). Pairs are hashed into [`PAIR_SLOTS`] slots, case-folded: a
/// slot shared by several pairs keeps the smallest of their shifts, which is always safe.
struct PairShifts {
    /// How far the window moves when the pair ending it hashes to this slot; 0 for the slot of
    /// the keyword's final pair (time to compare the window).
    shifts: Box<[u8; PAIR_SLOTS]>,
    /// How far the window moves after comparing it without a match.
    after_compare: usize,
}

/// Slots of the pair table: 4 KiB per keyword.
const PAIR_SLOTS: usize = 1 << 12;

impl Keywords {
    /// Prepares `keywords` for [`Keywords::found_in`].
    pub fn new(keywords: &[String]) -> Self {
        Self(keywords.iter().map(|k| Keyword::new(k)).collect())
    }

    /// Whether `text` contains any keyword, ignoring case.
    pub fn found_in(&self, text: &str) -> bool {
        if self.0.is_empty() {
            return false;
        }
        if is_ascii(text.as_bytes()) {
            return self.0.iter().any(|k| k.in_ascii(text));
        }
        // Only whole-text Unicode lowercasing gives the exact answer here: it can turn non-ASCII
        // characters into ASCII ones (KELVIN SIGN into `k`), and its length may differ from the
        // text's, so there is no byte-wise shortcut.
        let lower = text.to_lowercase();
        self.0.iter().any(|k| lower.contains(k.lower.as_str()))
    }
}

impl Keyword {
    fn new(keyword: &str) -> Self {
        // Lowercase first, then test for ASCII: a non-ASCII keyword can lowercase to ASCII
        // (KELVIN SIGN again) and then does match ASCII text.
        let lower = keyword.to_lowercase();
        let ascii = lower.is_ascii().then(|| PairShifts::new(lower.as_bytes()));
        Self { lower, ascii }
    }

    /// Whether ASCII `text` contains this keyword, ignoring ASCII case (which for ASCII text is
    /// the same as comparing Unicode-lowercased strings).
    fn in_ascii(&self, text: &str) -> bool {
        let Some(table) = &self.ascii else { return false };
        let bytes = text.as_bytes();
        let needle = self.lower.as_bytes();
        match needle {
            // The empty keyword is in every text, as with `str::contains`.
            [] => return true,
            [only] => return bytes.iter().any(|b| b.to_ascii_lowercase() == *only),
            _ => {}
        }
        // Horspool compares windows in time proportional to the keyword, so a keyword that
        // repeats itself can make it quadratic (`baaa` in `aaaa...`), where `str::contains` is
        // linear. Once comparisons have cost as much as the text's length, the rest of the text
        // goes to `contains` instead.
        let mut budget = bytes.len();
        // `end` is where the window's last byte lies in `text`.
        let mut end = needle.len() - 1;
        while let (Some(&a), Some(&b)) = (bytes.get(end - 1), bytes.get(end)) {
            end += match table.shifts[pair_slot(a, b)] {
                0 => {
                    let matched = common_suffix(&bytes[..=end], needle);
                    if matched == needle.len() {
                        return true;
                    }
                    budget = budget.saturating_sub(matched + 1);
                    if budget == 0 {
                        let start = end + 1 - needle.len();
                        return text[start..].to_ascii_lowercase().contains(self.lower.as_str());
                    }
                    table.after_compare
                }
                shift => usize::from(shift),
            };
        }
        false
    }
}

impl PairShifts {
    /// A window whose last pair equals the keyword's pair ending at `j` may hold a match once it
    /// moves `len - 1 - j`; a pair found nowhere in the keyword lets it move `len - 1` (the
    /// window's last byte may still be the keyword's first). `j` runs forward, so a slot keeps
    /// the smallest shift. Shifts are capped at 255 to fit a byte (a shorter shift is always
    /// safe). `needle` is lowercase ASCII, at least two bytes long.
    fn new(needle: &[u8]) -> Self {
        let len = needle.len();
        let cap = |n: usize| u8::try_from(n).unwrap_or(u8::MAX);
        let mut shifts = Box::new([cap(len.saturating_sub(1)); PAIR_SLOTS]);
        for j in 1..len.saturating_sub(1) {
            shifts[pair_slot(needle[j - 1], needle[j])] = cap(len - 1 - j);
        }
        let mut after_compare = 1;
        if let [.., a, b] = needle {
            // After a failed comparison the window's last pair still hashes to the final pair's
            // slot: the next place a match may start is that slot's shift before it became 0.
            let last = pair_slot(*a, *b);
            after_compare = usize::from(shifts[last]);
            shifts[last] = 0;
        }
        Self { shifts, after_compare }
    }
}

/// The table slot of the byte pair `a b`. Both are folded with `| 0x20` (lowercase for ASCII
/// letters; it also merges a few punctuation pairs, which only shares slots), so both cases of
/// a pair land in the same slot.
#[inline(always)]
fn pair_slot(a: u8, b: u8) -> usize {
    ((usize::from(a | 0x20) << 6) ^ usize::from(b | 0x20)) & (PAIR_SLOTS - 1)
}

/// How many bytes at the end of `text` equal those at the end of `lower` (lowercase),
/// ignoring ASCII case. Compared from the end: the byte after them just matched the keyword's
/// last byte, and a false candidate usually fails right before it.
fn common_suffix(text: &[u8], lower: &[u8]) -> usize {
    text.iter().rev().zip(lower.iter().rev()).take_while(|(t, n)| t.to_ascii_lowercase() == **n).count()
}

/// Whether all of `bytes` are ASCII. std's `is_ascii` goes one 32-bit word at a time on
/// wasm32; an OR over every byte (no early exit: prompts are nearly always ASCII) compiles to
/// 16-byte SIMD steps, about a fifth of the fuel. Fixed 256-byte groups are unrolled; the bytes
/// after the last whole vector are covered by OR-ing the final 16 bytes again (overlap is
/// harmless for an OR) instead of a byte-at-a-time loop.
fn is_ascii(bytes: &[u8]) -> bool {
    let Some(last) = bytes.last_chunk::<16>() else { return or_all(bytes) < 0x80 };
    let (groups, rest) = bytes.as_chunks::<256>();
    let (vectors, _) = rest.as_chunks::<16>();
    let mut acc = or_all(last);
    for group in groups {
        acc |= or_all(group);
    }
    acc |= or_all(vectors.as_flattened());
    acc < 0x80
}

#[inline(always)]
fn or_all(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |acc, &b| acc | b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed-seed xorshift: `pick(n)` draws from `0..n`, the same sequence on every run.
    fn picker(mut state: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n as u64).unwrap()
        }
    }

    fn kw(list: &[&str]) -> Keywords {
        Keywords::new(&list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
    }

    /// What the search must agree with: lowercase both with Unicode rules, then `contains`.
    fn reference(list: &[&str], text: &str) -> bool {
        let lower = text.to_lowercase();
        list.iter().any(|k| lower.contains(&k.to_lowercase()))
    }

    #[test]
    fn finds_keywords_at_start_middle_and_end() {
        let k = kw(&["ignore previous"]);
        assert!(k.found_in("ignore previous instructions"));
        assert!(k.found_in("please ignore previous instructions"));
        assert!(k.found_in("now, ignore previous"));
        assert!(k.found_in("ignore previous"));
        assert!(!k.found_in("ignore previou"));
        assert!(!k.found_in("gnore previous"));
        assert!(!k.found_in("ignore  previous"));
    }

    #[test]
    fn ignores_case_in_text_and_keyword() {
        let k = kw(&["Ignore Previous"]);
        assert!(k.found_in("IGNORE PREVIOUS"));
        assert!(k.found_in("iGnOrE pReViOuS now"));
        // Case folding is for letters only: `@` (0x40) and backtick (0x60) differ by the case bit.
        assert!(!kw(&["a@b"]).found_in("a`b"));
        assert!(!kw(&["a`b"]).found_in("A@B"));
        assert!(kw(&["a[b"]).found_in("A[B"));
        assert!(!kw(&["a[b"]).found_in("A{B"));
    }

    #[test]
    fn handles_overlapping_and_repeated_prefixes() {
        assert!(kw(&["aab"]).found_in("aaab"));
        assert!(kw(&["abab"]).found_in("ababab"));
        assert!(kw(&["abcabd"]).found_in("abcabcabd"));
        assert!(!kw(&["abcabd"]).found_in("abcabcabc"));
        assert!(kw(&["ana"]).found_in("bAnAna"));
        assert!(kw(&["aaaa"]).found_in("aaaaaaaa"));
        assert!(!kw(&["aaaa"]).found_in("aaabaaab"));
    }

    #[test]
    fn self_repeating_keywords_are_found_past_the_comparison_budget() {
        // Each window compares nine `a`s before failing on the `b`: the comparison budget runs
        // out early and the search finishes with `str::contains`.
        let keyword = "Baaaaaaaaa";
        for before in [0, 1, 50, 99, 100, 101, 150, 500, 999] {
            for after in [0, 1, 100] {
                let text = format!("{}{}{}", "a".repeat(before), "bAAAAaaaaa", "a".repeat(after));
                assert!(kw(&[keyword]).found_in(&text), "{before} a's, the keyword, {after} a's");
                let text = format!("{}{}{}", "a".repeat(before), "baaaaaaaa-", "a".repeat(after));
                assert!(!kw(&[keyword]).found_in(&text), "one `a` short, {before}/{after}");
            }
        }
        assert!(!kw(&[keyword]).found_in(&"a".repeat(10_000)));
    }

    #[test]
    fn short_texts_and_empty_lists() {
        assert!(!kw(&["longer than the text"]).found_in("short"));
        assert!(!kw(&["x"]).found_in(""));
        assert!(kw(&["x"]).found_in("X"));
        assert!(!kw(&[]).found_in("anything"));
        assert!(!kw(&[]).found_in(""));
        // An empty keyword is contained in every text, as `str::contains` has it.
        assert!(kw(&[""]).found_in(""));
        assert!(kw(&[""]).found_in("abc"));
        assert!(kw(&[""]).found_in("é"));
    }

    #[test]
    fn any_of_several_keywords_matches() {
        let k = kw(&["alpha", "beta", "gamma"]);
        assert!(k.found_in("the GAMMA ray"));
        assert!(k.found_in("Beta"));
        assert!(!k.found_in("alph bet gam"));
    }

    #[test]
    fn non_ascii_text_and_keywords_use_unicode_lowercasing() {
        // Non-ASCII text with an ASCII keyword.
        assert!(kw(&["ignore previous"]).found_in("Éh, IGNORE PREVIOUS"));
        assert!(!kw(&["ignore previous"]).found_in("Éh, ignore the previous"));
        // Non-ASCII keyword: found only in non-ASCII text, case-insensitively.
        assert!(kw(&["ÉCRIRE"]).found_in("il faut écrire"));
        assert!(kw(&["straße"]).found_in("STRAßE"));
        assert!(!kw(&["écrire"]).found_in("il faut ecrire"));
        // U+0130 lowercases to `i` plus a combining dot: never in ASCII text.
        assert!(!kw(&["\u{130}"]).found_in("i"));
        assert!(kw(&["\u{130}"]).found_in("\u{130}"));
    }

    #[test]
    fn kelvin_sign_lowercases_to_ascii_k() {
        // In the text: the text is not ASCII, so Unicode lowercasing turns it into `k`.
        assert!(kw(&["kelvin"]).found_in("\u{212A}ELVIN"));
        assert!(kw(&["Kelvin"]).found_in("300 \u{212A}elvin"));
        // In the keyword: it lowercases to ASCII and so matches ASCII text.
        assert!(kw(&["\u{212A}elvin"]).found_in("KELVIN"));
        assert!(kw(&["\u{212A}"]).found_in("k"));
    }

    #[test]
    fn agrees_with_lowercase_then_contains() {
        let keywords = ["ignore previous instructions", "abcab", "a", "zz", "\u{212A}k", "é", "Σ"];
        let texts = [
            "",
            "a",
            "ABCABCAB",
            "lorem ipsum dolor sit amet, IGNORE previous INSTRUCTIONS!",
            "ignore previous instruction",
            "kk \u{212A}K",
            "ÉÉ zZ",
            "ΣΑΣ",
            "xyzzy",
            "nothing to see",
        ];
        for k in keywords {
            for t in texts {
                assert_eq!(kw(&[k]).found_in(t), reference(&[k], t), "keyword {k:?} in {t:?}");
            }
        }
    }

    #[test]
    fn agrees_with_lowercase_then_contains_on_generated_texts() {
        // A small alphabet makes partial matches, repeats and case mixes common; a fixed-seed
        // xorshift keeps the run reproducible.
        let alphabet = ['a', 'b', 'A', 'B', 'k', 'K', ' ', '\u{212A}', 'é', 'É'];
        let mut pick = picker(0x9e37_79b9_7f4a_7c15_u64);
        for round in 0..3000 {
            // Mostly ASCII texts (the fast path), some with the non-ASCII letters.
            let letters = if round % 4 == 0 { alphabet.len() } else { 7 };
            let keyword: String = (0..1 + pick(5)).map(|_| alphabet[pick(letters)]).collect();
            let text: String = (0..pick(300)).map(|_| alphabet[pick(letters)]).collect();
            assert_eq!(kw(&[&keyword]).found_in(&text), reference(&[&keyword], &text), "{keyword:?} in {text:?}");
        }
    }

    #[test]
    fn agrees_with_lowercase_then_contains_on_long_keywords_and_punctuation() {
        // Longer keywords take long skips; `@`/backtick and `[`/`{` fold into the same pair
        // slots, so slot sharing is exercised as well as case.
        let alphabet = [b'a', b'b', b'A', b'B', b'@', b'`', b'[', b'{', b' ', b'c'];
        let mut pick = picker(0x2545_f491_4f6c_dd1d_u64);
        for _ in 0..3000 {
            let keyword_len = 2 + pick(40);
            let keyword: String = (0..keyword_len).map(|_| char::from(alphabet[pick(alphabet.len())])).collect();
            // Half the texts hold the keyword (in a random case) somewhere.
            let text_len = pick(400);
            let mut text: String = (0..text_len).map(|_| char::from(alphabet[pick(alphabet.len())])).collect();
            if pick(2) == 0 {
                let at = pick(text.len() + 1);
                let cased: String =
                    keyword.chars().map(|c| if pick(2) == 0 { c.to_ascii_uppercase() } else { c }).collect();
                text.insert_str(at, &cased);
            }
            assert_eq!(kw(&[&keyword]).found_in(&text), reference(&[&keyword], &text), "{keyword:?} in {text:?}");
        }
    }

    #[test]
    fn ascii_check_looks_at_every_byte() {
        assert!(is_ascii(b""));
        // Lengths around the vector and group sizes; one non-ASCII byte at every position,
        // including the group part, the whole-vector part and the overlapping final 16 bytes.
        for len in [1, 15, 16, 17, 31, 255, 256, 257, 271, 272, 300, 512, 513, 600] {
            let mut bytes = vec![0x7f; len];
            assert!(is_ascii(&bytes), "{len} ASCII bytes");
            for at in 0..len {
                bytes[at] = 0x80;
                assert!(!is_ascii(&bytes), "non-ASCII byte at {at} of {len}");
                bytes[at] = 0x7f;
            }
        }
    }
}
