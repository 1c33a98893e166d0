use super::*;
use std::time::Duration;

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
    assert_eq!(cfg.server.send_timeout, Duration::from_secs(60));
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
fn a_zero_send_timeout_is_refused() {
    let err = parse(&format!("[server]\nsend_timeout = \"0s\"\n{MIN}")).unwrap_err().to_string();
    assert!(err.contains("server.send_timeout"), "{err}");
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
fn values_from_the_environment_are_noted_as_secrets_and_redacted() {
    let text = r#"
        [[providers]]
        name = "o"
        kind = "openai"
        base_url = "${BASE:-http://x/v1}"
        headers = { x-org = "org ${ORG}", x-team = "${TEAM:-blue}" }
        [[plugins]]
        name = "p"
        path = "p.wasm"
        config = { key = "Bearer ${PK}", level = "${LEVEL:-info}", deep = { list = ["${PK}", "plain"] } }
    "#;
    let mut cfg = Config::try_from(toml::from_str::<ConfigFile>(text).unwrap()).unwrap();
    let lookup = |n: &str| match n {
        "ORG" => Some("org-value-1".to_string()),
        "PK" => Some("plugin-key-1".to_string()),
        _ => None,
    };
    env::interpolate_all(&mut cfg, lookup).unwrap();
    let ProviderKind::OpenAi(o) = &cfg.providers[0].kind else { panic!("not openai") };
    assert_eq!(o.header_env.iter().collect::<Vec<_>>(), ["org-value-1"], "fallbacks are not secrets");
    assert_eq!(cfg.plugins[0].config_env.iter().collect::<Vec<_>>(), ["plugin-key-1", "plugin-key-1"]);
    assert!(!format!("{:?}", cfg.plugins[0].config_env).contains("plugin-key-1"), "Debug never prints them");
    let shown = serde_json::to_value(cfg.redacted()).unwrap();
    let config = &shown["plugins"][0]["config"];
    assert_eq!(config["key"], "<redacted>");
    assert_eq!(config["level"], "info");
    assert_eq!(config["deep"]["list"], serde_json::json!(["<redacted>", "plain"]));
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
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/weir.toml");
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

#[test]
fn server_limits_have_defaults_and_are_validated() {
    let cfg = parse(MIN).unwrap();
    assert_eq!(cfg.server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(cfg.server.body_read_timeout, Duration::from_secs(60));
    assert_eq!(cfg.server.idle_timeout, Duration::from_secs(60));
    assert_eq!(cfg.server.max_connections, 0);
    assert_eq!(cfg.server.overload.memory_critical_bytes, 1024 * 1024 * 1024);
    assert_eq!(cfg.server.overload.retry_after_secs(), 1);
    let err = parse(&format!("[server]\nbody_read_timeout = \"0s\"\n{MIN}")).unwrap_err().to_string();
    assert!(err.contains("server.body_read_timeout"), "{err}");
    let err = parse(&format!("[server.overload]\nmemory_warning_bytes = 20\nmemory_critical_bytes = 10\n{MIN}"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.overload.memory_warning_bytes"), "{err}");
    let err = parse(&format!("[server.overload]\nmemory_critcal_bytes = 1\n{MIN}")).unwrap_err().to_string();
    assert!(err.contains("memory_critcal_bytes"), "{err}");
}

#[test]
fn each_kind_gets_its_own_settings_with_defaults() {
    let cfg = parse(&format!("{MIN}latency = \"20ms\"\n{OPENAI}")).unwrap();
    assert_eq!(
        cfg.providers[0].kind,
        ProviderKind::Mock(MockConfig { latency: Duration::from_millis(20), chunk_delay: Duration::ZERO })
    );
    let ProviderKind::OpenAi(o) = &cfg.providers[1].kind else { panic!("not openai") };
    assert_eq!((o.base_url.as_str(), o.connect_timeout), ("http://x/v1", Duration::from_secs(10)));
    assert!(o.keys.is_empty() && o.headers.is_empty());
}

const OPENAI: &str = "[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\n";

#[test]
fn a_setting_of_another_kind_is_refused_by_name() {
    let cases = [
        (
            format!("{OPENAI}latency = \"1s\"\n"),
            "providers[0].latency",
            "only kind = \"mock\"",
            "\"o\" is kind = \"openai\"",
        ),
        (format!("{OPENAI}chunk_delay = \"1s\"\n"), "providers[0].chunk_delay", "kind = \"mock\"", "\"openai\""),
        (
            format!("{MIN}keys = [{{ value = \"sk-1\" }}]\n"),
            "providers[0].keys",
            "only kind = \"openai\"",
            "is kind = \"mock\"",
        ),
        (format!("{MIN}base_url = \"http://x/v1\"\n"), "providers[0].base_url", "kind = \"openai\"", "\"m\""),
        (format!("{MIN}headers = {{}}\n"), "providers[0].headers", "kind = \"openai\"", "\"mock\""),
        (
            format!("{OPENAI}{MIN}connect_timeout = \"1s\"\n"),
            "providers[1].connect_timeout",
            "kind = \"openai\"",
            "\"m\"",
        ),
    ];
    for (text, key, owner, is) in cases {
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")) && err.contains(owner) && err.contains(is), "{text}: {err}");
    }
    let err = parse(&format!("{OPENAI}keys = [{{ value = \"sk-SECRET\" }}]\nlatency = \"1s\"\n")).unwrap_err();
    assert!(!err.to_string().contains("sk-SECRET"), "{err}");
}

#[test]
fn an_unknown_kind_is_a_parse_error_naming_the_kinds() {
    let err = parse("[[providers]]\nname = \"b\"\nkind = \"bedrok\"\n").unwrap_err().to_string();
    assert!(err.contains("bedrok") && err.contains("openai") && err.contains("mock"), "{err}");
}

#[test]
fn the_redacted_config_shows_each_kind_its_own_settings_and_loads_again() {
    let text = format!(
        "{MIN}chunk_delay = \"5ms\"\n{OPENAI}keys = [{{ value = \"sk-123\" }}]\nheaders = {{ x-org = \"acme\" }}\n"
    );
    let cfg = parse(&text).unwrap();
    let shown = serde_json::to_value(cfg.redacted()).unwrap();
    let (mock, openai) = (&shown["providers"][0], &shown["providers"][1]);
    assert_eq!((&mock["kind"], &mock["latency"], &mock["chunk_delay"]), (&"mock".into(), &"0s".into(), &"5ms".into()));
    assert!(mock.get("base_url").is_none() && mock.get("keys").is_none(), "{mock}");
    assert_eq!(openai["keys"][0]["value"], "<redacted>");
    assert_eq!((&openai["headers"]["x-org"], &openai["connect_timeout"]), (&"<redacted>".into(), &"10s".into()));
    assert!(openai.get("latency").is_none(), "{openai}");
    let again = parse(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(again.providers, cfg.providers);
}

#[test]
fn gemini_defaults_to_google_needs_a_key_and_redacts_it() {
    let base = "[[providers]]\nname = \"g\"\nkind = \"gemini\"\nmodels = [\"gemini-2.0-flash\"]\n";
    let err = parse(base).unwrap_err().to_string();
    assert!(err.contains("providers[0].keys"), "{err}");
    let cfg = parse(&format!("{base}keys = [{{ value = \"AIzaSECRET-123\" }}]\n")).unwrap();
    let ProviderKind::Gemini(g) = &cfg.providers[0].kind else { panic!("not gemini") };
    assert_eq!(g.base_url, GEMINI_BASE_URL);
    assert_eq!(g.connect_timeout, Duration::from_secs(10));
    let shown = toml::to_string(&cfg.redacted()).unwrap();
    assert!(!shown.contains("AIzaSECRET") && shown.contains("kind = \"gemini\""), "{shown}");
    let err = parse(&format!("{base}keys = [{{ value = \"k\" }}]\nlatency = \"1s\"\n")).unwrap_err().to_string();
    assert!(err.contains("providers[0].latency") && err.contains("\"mock\""), "{err}");
}

#[test]
fn an_anthropic_provider_has_defaults_and_its_errors_name_the_key() {
    let cfg = parse("[[providers]]\nname = \"a\"\nkind = \"anthropic\"\nkeys = [{ value = \"sk-ant-1234567890\" }]\n")
        .unwrap();
    let ProviderKind::Anthropic(a) = &cfg.providers[0].kind else { panic!("not anthropic") };
    assert_eq!(a.http.base_url, "https://api.anthropic.com/v1");
    assert_eq!((a.anthropic_version.as_str(), a.default_max_tokens), ("2023-06-01", 4096));
    let shown = serde_json::to_value(cfg.redacted()).unwrap();
    assert_eq!(shown["providers"][0]["keys"][0]["value"], "<redacted>");
    for (extra, key) in [
        ("keys = [{ value = \"\" }]", "providers[0].keys[0].value"),
        ("default_max_tokens = 0", "providers[0].default_max_tokens"),
        ("anthropic_version = \"\"", "providers[0].anthropic_version"),
        ("base_url = \"ftp://x\"", "providers[0].base_url"),
        ("latency = \"1s\"", "providers[0].latency"),
    ] {
        let err = parse(&format!("[[providers]]\nname = \"a\"\nkind = \"anthropic\"\n{extra}\n")).unwrap_err();
        assert!(err.to_string().contains(key), "{extra}: {err}");
    }
    let err =
        parse("[[providers]]\nname = \"o\"\nkind = \"openai\"\nbase_url = \"http://x/v1\"\ndefault_max_tokens = 5\n")
            .unwrap_err();
    assert!(err.to_string().contains("providers[0].default_max_tokens"), "{err}");
}
