//! `${ENV}` interpolation for secrets and URLs. Runs once at load; a missing variable is a
//! config error that names the key and the variable (never a value).

use std::cell::RefCell;

use super::{Config, ConfigError, ProviderKind};

/// The values substituted from the environment into one provider's header values or one
/// plugin's config: secrets by rule (`crate::secrets`). Never printed nor serialised.
#[derive(Clone, Default, PartialEq)]
pub struct EnvValues(Vec<String>);

impl EnvValues {
    /// The values.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether `text` holds one of the values (it was interpolated from the environment).
    pub fn found_in(&self, text: &str) -> bool {
        self.0.iter().any(|v| text.contains(v.as_str()))
    }
}

impl std::fmt::Debug for EnvValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EnvValues(<{} redacted>)", self.0.len())
    }
}

/// Replaces `${NAME}` (or `${NAME:-fallback}`) in every string that may hold a secret or URL:
/// provider `base_url`, key values, header values, and string values of plugin configs. The
/// values taken from the environment for header values and plugin configs are noted in
/// `header_env` / `config_env`, as secrets. Runs once the kinds are sorted out: only an `openai`
/// provider has these settings.
pub(super) fn interpolate_all(cfg: &mut Config, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    let noted = RefCell::new(Vec::new());
    // The same lookup, noting each non-empty value it hands out.
    let noting = |name: &str| {
        let v = lookup(name).filter(|v| !v.is_empty());
        if let Some(v) = &v {
            noted.borrow_mut().push(v.clone());
        }
        v
    };
    for (i, p) in cfg.providers.iter_mut().enumerate() {
        if let ProviderKind::Bedrock(b) = &mut p.kind {
            b.resolve(&format!("providers[{i}]"), &|v, key| interpolate(v, key, &lookup), &lookup)?;
            continue;
        }
        let Some(o) = p.kind.http_mut() else { continue };
        o.base_url = interpolate(&o.base_url, &format!("providers[{i}].base_url"), &lookup)?;
        for (j, k) in o.keys.iter_mut().enumerate() {
            k.value = interpolate(&k.value, &format!("providers[{i}].keys[{j}].value"), &lookup)?;
        }
        for (name, v) in o.headers.iter_mut() {
            *v = interpolate(v, &format!("providers[{i}].headers.{name}"), &noting)?;
        }
        o.header_env = EnvValues(noted.take());
    }
    if let Some(token) = &mut cfg.admin.token {
        *token = interpolate(token, "admin.token", &lookup)?;
    }
    if let Some(url) = &mut cfg.state.redis_url {
        *url = interpolate(url, "state.redis_url", &lookup)?;
    }
    for (i, k) in cfg.keys.iter_mut().enumerate() {
        k.value = interpolate(&k.value, &format!("keys[{i}].value"), &lookup)?;
    }
    if let Some(t) = &mut cfg.tracing {
        t.endpoint = interpolate(&t.endpoint, "tracing.endpoint", &lookup)?;
        for (name, v) in t.headers.iter_mut() {
            *v = interpolate(v, &format!("tracing.headers.{name}"), &lookup)?;
        }
    }
    for (i, s) in cfg.events.sinks.iter_mut().enumerate() {
        if let Some(e) = &mut s.endpoint {
            *e = interpolate(e, &format!("events.sinks[{i}].endpoint"), &lookup)?;
        }
        for (name, v) in s.headers.iter_mut() {
            *v = interpolate(v, &format!("events.sinks[{i}].headers.{name}"), &lookup)?;
        }
    }
    for (i, p) in cfg.plugins.iter_mut().enumerate() {
        for (k, v) in p.config.iter_mut() {
            interpolate_value(v, &format!("plugins[{i}].config.{k}"), &noting)?;
        }
        p.config_env = EnvValues(noted.take());
    }
    Ok(())
}

fn interpolate_value(
    v: &mut toml::Value,
    key: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match v {
        toml::Value::String(s) => *s = interpolate(s, key, lookup)?,
        toml::Value::Array(a) => {
            for (i, item) in a.iter_mut().enumerate() {
                interpolate_value(item, &format!("{key}[{i}]"), lookup)?;
            }
        }
        toml::Value::Table(t) => {
            for (k, item) in t.iter_mut() {
                interpolate_value(item, &format!("{key}.{k}"), lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Interpolates one string. `$${` is a literal `${`.
pub(super) fn interpolate(s: &str, key: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    if !s.contains("${") {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find("${") {
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let Some(end) = after.find('}') else {
            return Err(ConfigError::invalid(key, "unterminated ${...}"));
        };
        let expr = &after[..end];
        let (name, fallback) = match expr.split_once(":-") {
            Some((n, f)) => (n, Some(f)),
            None => (expr, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::invalid(key, format!("invalid environment variable name {name:?}")));
        }
        match lookup(name).filter(|v| !v.is_empty()).or_else(|| fallback.map(str::to_owned)) {
            Some(v) => out.push_str(&v),
            None => {
                return Err(ConfigError::invalid(key, format!("environment variable {name} is not set")));
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
