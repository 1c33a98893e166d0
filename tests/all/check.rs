//! `weir check`: zero for a good config; non-zero naming the offending key for a bad one.

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
    let cases: [(&str, &str, &[&str]); 9] = [
        ("workers = 4", "workers = 0", &["providers[0].pool.workers"]),
        ("overflow = \"reject\"", "overflow = \"sometimes\"", &["sometimes", "overflow"]),
        ("queue_timeout = \"2s\"", "queue_timeout = \"soon\"", &["queue_timeout"]),
        ("models = [\"gpt-4o-mini\"]", "models = [\"gpt-4o-mini\"]\ncolour = \"red\"", &["colour"]),
        ("base_url = \"http://127.0.0.1:9/v1\"", "base_url = \"ftp://x\"", &["providers[0].base_url"]),
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
