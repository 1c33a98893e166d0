//! How config values are written: durations and listen addresses, and the example of a valid
//! value that every type error shows (`"soon"` or `30` for a timeout says to write `"30s"`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use humantime_serde::re::humantime;
use serde::{Deserialize as _, Deserializer, Serializer, de};

/// What a valid duration looks like, shown in every duration error.
const DURATION_EXAMPLE: &str = r#"a duration such as "30s", "250ms" or "1m 30s""#;

/// `#[serde(with = "values::duration")]`: a humantime string such as `"30s"`.
pub mod duration {
    use super::*;

    /// Parses `"30s"`, `"250ms"`, `"1m 30s"`.
    ///
    /// # Errors
    /// Not a string, or not a duration; the message shows a valid one.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_EXAMPLE)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                humantime::parse_duration(v)
                    .map_err(|e| E::custom(format!("invalid duration {v:?} ({e}): expected {DURATION_EXAMPLE}")))
            }
        }
        d.deserialize_str(Visitor)
    }

    /// Writes the humantime form (`"30s"`).
    ///
    /// # Errors
    /// Only the serializer's own.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    /// `#[serde(default, with = "values::duration::option")]`: a duration that may be left out.
    pub mod option {
        use super::*;

        /// As [`super::deserialize`], for a key that is present.
        ///
        /// # Errors
        /// See [`super::deserialize`].
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }

        /// Writes the humantime form; `None` is left out by `skip_serializing_if`.
        ///
        /// # Errors
        /// Only the serializer's own.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }
    }
}

/// `#[serde(deserialize_with = "values::listen")]`: an address to listen on.
///
/// # Errors
/// See [`parse_listen`].
pub fn listen<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    parse_listen(&text).map_err(de::Error::custom)
}

/// An IP address and port (`127.0.0.1:8080`, `[::1]:8080`), or `localhost:<port>`, which
/// means 127.0.0.1. Other host names are refused rather than resolved: a listener bound to
/// whatever DNS says at startup could end up on a public interface.
///
/// # Errors
/// A message with examples of valid addresses.
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:").and_then(|p| p.parse::<u16>().ok()) {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    Err(format!(
        "invalid listen address {text:?}: expected an IP address and port such as \"127.0.0.1:8080\", \
         \"0.0.0.0:8080\" or \"[::1]:8080\" (or \"localhost:8080\"; other host names are not resolved)"
    ))
}

/// What a valid value looks like for a type mismatch, from serde's message (serde reports a
/// mismatch only as text: `invalid type: string "4", expected usize`).
pub(super) fn type_hint(message: &str) -> Option<&'static str> {
    if !message.starts_with("invalid type") {
        return None;
    }
    match message.rsplit("expected ").next()? {
        "usize" | "u64" | "u32" | "u16" | "u8" | "i64" | "i32" => {
            Some("write a whole number without quotes, such as `workers = 64`")
        }
        "a boolean" => Some("write true or false, without quotes"),
        "a string" => Some("write a quoted string, such as `name = \"mock\"`"),
        "a sequence" => Some("write a list, such as `models = [\"mock-1\", \"mock-2\"]`"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_ips_and_localhost_only() {
        assert_eq!(parse_listen("0.0.0.0:80").unwrap(), SocketAddr::from(([0, 0, 0, 0], 80)));
        assert_eq!(parse_listen("[::1]:8080").unwrap().port(), 8080);
        assert_eq!(parse_listen("localhost:8080").unwrap(), SocketAddr::from(([127, 0, 0, 1], 8080)));
        let err = parse_listen("gateway.example:8080").unwrap_err();
        assert!(err.contains("IP address") && err.contains("127.0.0.1:8080"), "{err}");
        assert!(parse_listen("localhost").is_err());
    }

    #[test]
    fn type_mismatches_get_an_example() {
        assert!(type_hint("invalid type: string \"4\", expected usize").unwrap().contains("whole number"));
        assert!(type_hint("invalid type: string \"no\", expected a boolean").unwrap().contains("true or false"));
        assert_eq!(type_hint("unknown field `colour`"), None);
    }
}
