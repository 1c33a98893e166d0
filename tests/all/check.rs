//! `weir check`: zero for a good config; non-zero naming the offending key for a bad one.

use crate::support::plugins::{plugin_toml, runtime_toml};
use crate::support::weir_check;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1048576
shutdown_timeout = "5s"

[[providers]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
keys = [{ value = "${WEIR_E2E_CHECK_KEY}", weight = 1 }]
models = ["gpt-4o-mini"]
[providers.pool]
workers = 4
queue = 16
overflow = "reject"
queue_timeout = "2s"
request_timeout = "30s"

[[providers]]
name = "mock"
kind = "mock"
models = ["mock-1"]
"#;

#[test]
fn good_config_passes() {
    let out = weir_check(GOOD, &[("WEIR_E2E_CHECK_KEY", "sk-test-SECRET123")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("config ok: 2 provider(s)"), "{stdout}");
    assert!(!stdout.contains("SECRET123"));
}

#[test]
fn bad_configs_fail_naming_the_key() {
    let key = ("WEIR_E2E_CHECK_KEY", "sk-test-SECRET123");
    let cases: [(&str, &str, &[&str]); 10] = [
        ("workers = 4", "workers = 0", &["providers[0].pool.workers"]),
        ("overflow = \"reject\"", "overflow = \"sometimes\"", &["sometimes", "overflow"]),
        ("queue_timeout = \"2s\"", "queue_timeout = \"soon\"", &["queue_timeout"]),
        ("models = [\"gpt-4o-mini\"]", "models = [\"gpt-4o-mini\"]\ncolour = \"red\"", &["colour"]),
        ("base_url = \"http://127.0.0.1:9/v1\"", "base_url = \"ftp://x\"", &["providers[0].base_url"]),
        (
            "models = [\"gpt-4o-mini\"]",
            "models = [\"gpt-4o-mini\"]\nlatency = \"1s\"",
            &["`providers[0].latency`", "only kind = \"mock\"", "provider \"openai\" is kind = \"openai\""],
        ),
        ("name = \"mock\"", "name = \"openai\"", &["providers[1].name", "duplicate"]),
        ("${WEIR_E2E_CHECK_KEY}", "${WEIR_E2E_UNSET_VAR}", &["providers[0].keys[0].value", "WEIR_E2E_UNSET_VAR"]),
        ("max_body_bytes = 1048576", "max_body_bytes = 0", &["server.max_body_bytes"]),
        ("max_body_bytes = 1048576", "max_body_bytes = 1048576\nthreads = 10000", &["server.threads", "256"]),
    ];
    for (from, to, expected) in cases {
        assert!(GOOD.contains(from), "bad test case: {from}");
        let out = weir_check(&GOOD.replacen(from, to, 1), &[key]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to:?} was accepted");
        for want in expected {
            assert!(stderr.contains(want), "{to:?}: error does not name {want:?}:\n{stderr}");
        }
        assert!(!stderr.contains("SECRET123"), "key leaked: {stderr}");
    }
    let out = weir_check("this is [not toml", &[]);
    assert!(!out.status.success());
}

/// A mock-only config for the plugin cases (no `${ENV}` needed).
const MOCK_ONLY: &str = "[[providers]]\nname = \"mock\"\nkind = \"mock\"\nmodels = [\"mock-1\"]\n";

#[test]
fn check_refuses_a_plugin_file_that_does_not_exist() {
    let config = format!("{MOCK_ONLY}\n[[plugins]]\nname = \"ghost\"\npath = \"/nonexistent/ghost.wasm\"\n");
    let out = weir_check(&config, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a missing plugin file was accepted:\n{stderr}");
    assert!(stderr.contains("plugin ghost") && stderr.contains("/nonexistent/ghost.wasm"), "{stderr}");
}

#[test]
fn check_runs_plugin_init_with_its_config() {
    let ok = format!("{MOCK_ONLY}{}{}", runtime_toml(), plugin_toml("guard", "prompt-guard", "instances = 1"));
    let out = weir_check(&ok, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 plugin(s)"));

    let refused = format!(
        "{MOCK_ONLY}{}{}",
        runtime_toml(),
        plugin_toml("guard", "prompt-guard", "instances = 1\nconfig = { deny_keywords = \"not a list\" }")
    );
    let out = weir_check(&refused, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a config the plugin's init refuses was accepted:\n{stderr}");
    assert!(stderr.contains("plugin guard") && stderr.contains("init refused"), "{stderr}");
}

#[test]
fn listen_accepts_localhost_and_asks_for_an_ip_otherwise() {
    let with_listen = |listen: &str| GOOD.replacen("listen = \"127.0.0.1:0\"", &format!("listen = \"{listen}\""), 1);
    let key = ("WEIR_E2E_CHECK_KEY", "sk-test-SECRET123");
    let out = weir_check(&with_listen("localhost:8080"), &[key]);
    assert!(out.status.success(), "localhost was refused: {}", String::from_utf8_lossy(&out.stderr));

    let out = weir_check(&with_listen("gateway.example:8080"), &[key]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a host name was accepted");
    assert!(
        stderr.contains("listen") && stderr.contains("IP address") && stderr.contains("127.0.0.1:8080"),
        "{stderr}"
    );
}

#[test]
fn duration_and_type_errors_show_a_valid_example() {
    let key = ("WEIR_E2E_CHECK_KEY", "sk-test-SECRET123");
    let cases: [(&str, &str, &str); 4] = [
        ("queue_timeout = \"2s\"", "queue_timeout = \"soon\"", "\"30s\""),
        ("queue_timeout = \"2s\"", "queue_timeout = 2", "\"30s\""),
        ("workers = 4", "workers = \"4\"", "a whole number"),
        ("models = [\"mock-1\"]", "models = [\"mock-1\"]\ndiscover_models = \"no\"", "true or false"),
    ];
    for (from, to, example) in cases {
        assert!(GOOD.contains(from), "bad test case: {from}");
        let out = weir_check(&GOOD.replacen(from, to, 1), &[key]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{to:?} was accepted");
        assert!(stderr.contains(example), "{to:?}: error shows no example like {example}:\n{stderr}");
    }
}

#[test]
fn a_network_facing_admin_listener_is_warned_about() {
    let key = ("WEIR_E2E_CHECK_KEY", "sk-test-SECRET123");
    let exposed = format!("{GOOD}\n[admin]\nlisten = \"0.0.0.0:0\"\ntoken = \"admin-SECRET\"\nwatch = false\n");
    let out = weir_check(&exposed, &[key]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("warning") && stderr.contains("admin.listen"), "no warning:\n{stderr}");
    assert!(!stderr.contains("admin-SECRET"), "{stderr}");
    // On loopback there is nothing to warn about.
    let out = weir_check(&exposed.replace("0.0.0.0:0", "127.0.0.1:0"), &[key]);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("admin.listen"));
}
