use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text)
}

const MIN: &str = r#"
[[providers]]
name = "m"
kind = "mock"
models = ["a"]
"#;

#[test]
fn embedded_default_is_valid() {
    let cfg = Config::from_toml(defaults::DEFAULT_TOML).unwrap();
    assert_eq!(cfg.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(cfg.providers[0].name, "mock");
}

#[test]
fn defaults_apply() {
    let cfg = parse(MIN).unwrap();
    assert_eq!(cfg.server.max_body_bytes, 10 * 1024 * 1024);
    assert_eq!(cfg.providers[0].pool.workers, 64);
    assert_eq!(cfg.providers[0].pool.overflow, Overflow::Block);
}

#[test]
fn unknown_key_is_named() {
    let err = parse(&format!("{MIN}\n[providers.pool]\nworkerz = 3\n")).unwrap_err().to_string();
    assert!(err.contains("workerz"), "{err}");
}

#[test]
fn invalid_value_names_key() {
    let err = parse(&format!("{MIN}\n[providers.pool]\nworkers = 0\n")).unwrap_err().to_string();
    assert!(err.contains("providers[0].pool.workers"), "{err}");
}

#[test]
fn bad_overflow_is_refused() {
    let err = parse(&format!("{MIN}\n[providers.pool]\noverflow = \"sometimes\"\n")).unwrap_err().to_string();
    assert!(err.contains("sometimes") || err.contains("overflow"), "{err}");
}

#[test]
fn openai_needs_base_url() {
    let err = parse("[[providers]]\nname = \"o\"\nkind = \"openai\"\n").unwrap_err().to_string();
    assert!(err.contains("providers[0].base_url"), "{err}");
}

#[test]
fn env_interpolation() {
    let lookup = |n: &str| (n == "K").then(|| "secret".to_string());
    assert_eq!(env::interpolate("Bearer ${K}", "k", &lookup).unwrap(), "Bearer secret");
    assert_eq!(env::interpolate("${NOPE:-x}", "k", &lookup).unwrap(), "x");
    assert_eq!(env::interpolate("$${K}", "k", &lookup).unwrap(), "${K}");
    let err = env::interpolate("${NOPE}", "providers[0].keys[0].value", &lookup).unwrap_err().to_string();
    assert!(err.contains("providers[0].keys[0].value") && err.contains("NOPE"), "{err}");
}

#[test]
fn redacted_hides_keys() {
    let text =
        "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\nkeys = [{ value = \"sk-123\" }]\n";
    let cfg = parse(text).unwrap();
    let out = toml::to_string(&cfg.redacted()).unwrap();
    assert!(!out.contains("sk-123"));
    assert!(!format!("{cfg:?}").contains("sk-123"));
}

#[test]
fn embedded_default_always_starts_even_without_built_plugins() {
    let text = format!("{MIN}\n[[plugins]]\nname = \"gone\"\npath = \"builtin:pii-redact\"\n");
    let mut cfg = parse(&text).unwrap();
    defaults::keep_embedded_plugins(&mut cfg, |_| Err("not embedded".into()));
    assert!(cfg.plugins.is_empty());
    let mut cfg = parse(&text).unwrap();
    defaults::keep_embedded_plugins(&mut cfg, |_| Ok(b"\0asm"));
    assert_eq!(cfg.plugins.len(), 1);
}

#[test]
fn reference_config_in_examples_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/weir.toml");
    let cfg = Config::load(&path).unwrap();
    assert_eq!(cfg.providers.len(), 2);
    let names: Vec<_> = cfg.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["request-log", "prompt-guard", "pii-redact", "model-alias"]);
    assert_eq!(cfg.plugins[0].on_error, OnError::FailOpen);
    assert_eq!(cfg.plugins[3].providers, ["openai"]);
}

#[test]
fn embedded_default_has_a_two_hook_chain() {
    let cfg = parse(include_str!("default.toml")).unwrap();
    let names: Vec<_> = cfg.plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["prompt-guard", "pii-redact"]);
    assert_eq!(cfg.plugins[1].config.get("responses").and_then(toml::Value::as_bool), Some(false));
}
