//! The kinds served by the OpenAI implementation besides `openai`: Azure OpenAI (deployments,
//! `api-version`, `api-key`, content-filter errors) and the presets (a known base URL, a key
//! where the service needs one).

use serde_json::json;

use crate::support::{MockUpstream, Reply, SseReader, Weir, chat, client, post, weir_check};

/// The mock's origin: Azure's `base_url` is the resource endpoint, without `/v1`.
fn origin(up: &MockUpstream) -> String {
    up.base_url().trim_end_matches("/v1").to_owned()
}

fn azure_toml(up: &MockUpstream, deployments: &str) -> String {
    format!(
        "[[providers]]\nname = \"az\"\nkind = \"azure\"\nbase_url = \"{}\"\napi_version = \"2024-10-21\"\n\
         keys = [{{ value = \"az-test-key-1\" }}]\ndeployments = {{ {deployments} }}\n",
        origin(up)
    )
}

#[tokio::test]
async fn azure_sends_each_model_to_its_deployment_with_api_key_and_version() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&azure_toml(&up, r#""gpt-4o" = "prod-4o""#)).await;

    let body = chat("gpt-4o", "hello azure");
    let reply = post(&weir.url("/v1/chat/completions"), &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "hello azure");
    assert_eq!(reply.header("x-weir-provider"), Some("az"));
    let seen = &up.seen()[0];
    assert_eq!(seen.path, "/openai/deployments/prod-4o/chat/completions");
    assert_eq!(seen.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(seen.headers["api-key"], "az-test-key-1");
    assert!(seen.authorization.is_none(), "Azure takes its key in api-key only");
    assert_eq!(seen.body, body, "the body passes through in OpenAI's format");

    // A model outside the map is served by the deployment of its own name.
    let embed = json!({"model": "az/text-embedding-3-small", "input": ["a"]});
    let reply = post(&weir.url("/v1/embeddings"), &embed).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let seen = up.seen();
    assert_eq!(seen.last().unwrap().path, "/openai/deployments/text-embedding-3-small/embeddings");

    // Streams too.
    let mut body = chat("gpt-4o", "one two");
    body["stream"] = json!(true);
    let resp = client().post(weir.url("/v1/chat/completions")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let events = SseReader::new(resp).rest().await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.len() >= 3, "{events:?}");

    // `/v1/models` lists the deployments' models; a name no deployment can take is refused.
    let models = Reply::read(client().get(weir.url("/v1/models")).send().await.unwrap()).await;
    assert_eq!(models.json()["data"][0]["id"], "gpt-4o");
    assert_eq!(models.json()["data"][0]["owned_by"], "az");
    let reply = post(&weir.url("/v1/chat/completions"), &chat("az/has space", "x")).await;
    assert_eq!((reply.status, reply.error_code()), (404, "model_not_found".to_owned()), "{}", reply.text);
}

#[tokio::test]
async fn an_azure_content_filter_refusal_keeps_its_code() {
    let up = MockUpstream::start().await;
    let weir = Weir::start(&azure_toml(&up, r#""m;status=400;code=content_filter" = "filtered""#)).await;

    let reply = post(&weir.url("/v1/chat/completions"), &chat("m;status=400;code=content_filter", "x")).await;

    assert_eq!(reply.status, 400, "{}", reply.text);
    assert_eq!(reply.error_code(), "content_filter");
    assert!(reply.error_message().contains("provider az returned 400"), "{}", reply.text);
    assert_eq!(up.seen()[0].path, "/openai/deployments/filtered/chat/completions");
}

#[tokio::test]
async fn a_preset_with_its_base_url_overridden_serves_like_openai_and_shows_its_kind() {
    let up = MockUpstream::start().await;
    let admin_port = free_port();
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"admin-token\"\nwatch = false\n\
         [[providers]]\nname = \"fast\"\nkind = \"groq\"\nbase_url = \"{}\"\n\
         keys = [{{ value = \"gsk-test-key-1\" }}]\nmodels = [\"llama-3.3-70b-versatile\"]\n",
        up.base_url()
    );
    let weir = Weir::start(&config).await;

    let reply = post(&weir.url("/v1/chat/completions"), &chat("llama-3.3-70b-versatile", "hi groq")).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["choices"][0]["message"]["content"], "hi groq");
    assert_eq!(up.chats()[0].authorization.as_deref(), Some("Bearer gsk-test-key-1"));

    let admin = client()
        .get(format!("http://127.0.0.1:{admin_port}/admin/config"))
        .header("authorization", "Bearer admin-token")
        .send()
        .await
        .unwrap();
    let admin = Reply::read(admin).await;
    assert_eq!(admin.status, 200, "{}", admin.text);
    let shown = admin.json();
    let provider = shown["providers"].as_array().unwrap().iter().find(|p| p["name"] == "fast").unwrap().clone();
    assert_eq!(provider["kind"], "groq");
    assert_eq!(provider["keys"][0]["value"], "<redacted>");
    drop(weir);
}

#[test]
fn weir_check_refuses_a_preset_without_the_key_its_service_needs() {
    let out = weir_check("[[providers]]\nname = \"ds\"\nkind = \"deepseek\"\nmodels = [\"deepseek-chat\"]\n", &[]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("providers[0].keys") && text.contains("deepseek"), "{text}");
    // A local server needs none.
    let out = weir_check("[[providers]]\nname = \"local\"\nkind = \"ollama\"\nmodels = [\"llama3\"]\n", &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
