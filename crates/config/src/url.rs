//! The rules a provider `base_url` must follow, checked at load and again when a provider
//! builds a request target from it.

use http::Uri;

/// What a provider `base_url` must be: absolute, `http` or `https`, with a host, and without
/// credentials (they belong in `keys` or `headers`, where they are kept out of logs).
///
/// # Errors
/// A message saying which rule is broken.
pub fn check_base_url(uri: &Uri) -> Result<(), String> {
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err("must start with http:// or https://".into());
    }
    let Some(authority) = uri.authority() else { return Err("has no host".into()) };
    if authority.as_str().contains('@') {
        return Err("must not embed credentials (use keys or headers)".into());
    }
    if authority.host().is_empty() {
        return Err("has no host".into());
    }
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_rules_name_what_is_wrong() {
        let check = |s: &str| check_base_url(&s.parse().unwrap());
        assert!(check("https://api.openai.com/v1").is_ok());
        assert!(check("ftp://x/v1").unwrap_err().contains("http://"));
        assert!(check("/v1").unwrap_err().contains("http://"));
        assert!(check("http://user:secret@host/v1").unwrap_err().contains("credentials"));
        assert!(check("http://host/v1?x=1").unwrap_err().contains("query"));
    }
}
