//! A provider's API keys ([`KeyRing`]): the header each kind sends its key in, the value's form
//! (`Bearer KEY` or the bare key), and the weighted random choice per request.

use http::{HeaderName, HeaderValue, header};

use crate::config::KeyConfig;

/// How a key is written in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFormat {
    /// `Bearer KEY` (OpenAI and compatible APIs, in `Authorization`).
    Bearer,
    /// The key as it is (`x-api-key`, `api-key`, `x-goog-api-key`).
    Plain,
}

/// The keys of one provider, marked sensitive, with cumulative weights for the random choice.
#[derive(Debug, Clone)]
pub struct KeyRing {
    header: HeaderName,
    keys: Vec<(u64, HeaderValue)>,
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
        Self { header: header::AUTHORIZATION, keys: Vec::new() }
    }

    /// Keys `keys` written as `format` in header `header`; weight 0 leaves a key out.
    ///
    /// # Errors
    /// A message naming the key (by index) that is no valid header value.
    pub fn new(header: HeaderName, format: KeyFormat, keys: &[KeyConfig]) -> Result<Self, String> {
        let mut ring = Vec::with_capacity(keys.len());
        let mut total = 0u64;
        for (i, k) in keys.iter().enumerate() {
            if k.weight == 0 {
                continue;
            }
            total += u64::from(k.weight);
            let text = match format {
                KeyFormat::Bearer => format!("Bearer {}", k.value),
                KeyFormat::Plain => k.value.clone(),
            };
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| format!("keys[{i}] contains characters not allowed in a header"))?;
            value.set_sensitive(true);
            ring.push((total, value));
        }
        Ok(Self { header, keys: ring })
    }

    /// The header the key goes in.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// A key by weighted random choice; `None` without keys.
    pub fn pick(&self) -> Option<&HeaderValue> {
        let total = self.keys.last()?.0;
        let roll = fastrand::u64(0..total);
        self.keys.iter().find(|(cum, _)| roll < *cum).map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(value: &str, weight: u32) -> KeyConfig {
        KeyConfig { value: value.into(), weight }
    }

    #[test]
    fn keys_are_written_in_their_kinds_form_and_marked_sensitive() {
        let ring = KeyRing::bearer(&[key("sk-1", 1)]).unwrap();
        assert_eq!(ring.header(), header::AUTHORIZATION);
        let v = ring.pick().unwrap();
        assert_eq!(v, "Bearer sk-1");
        assert!(v.is_sensitive());
        let ring = KeyRing::plain("x-api-key", &[key("sk-ant", 1)]).unwrap();
        assert_eq!(ring.header(), "x-api-key");
        assert_eq!(ring.pick().unwrap(), "sk-ant");
    }

    #[test]
    fn a_zero_weight_key_is_never_chosen_and_a_bad_one_is_named() {
        let ring = KeyRing::plain("api-key", &[key("off", 0), key("on", 3)]).unwrap();
        for _ in 0..50 {
            assert_eq!(ring.pick().unwrap(), "on");
        }
        assert!(KeyRing::none().pick().is_none());
        let e = KeyRing::bearer(&[key("ok", 1), key("bad\nkey", 1)]).unwrap_err();
        assert!(e.contains("keys[1]") && !e.contains("bad"), "{e}");
    }
}
