"""The official `openai` Python SDK against the real weir binary served by a `bedrock` provider
(the mock Bedrock Runtime in bedrock_mock.py, which verifies SigV4 signatures)."""

import json
import os
import subprocess
import tempfile
from pathlib import Path

import openai
import pytest

import bedrock_mock
from conftest import WEIR, _free_port, _wait_healthy

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def bedrock_client():
    """An SDK client for a weir whose only provider is the mock Bedrock, credentials from the
    AWS environment variables."""
    assert WEIR.exists(), f"{WEIR} not found: run `cargo build -p weir` first"
    server, base_url = bedrock_mock.start()
    config = f'[[providers]]\nname = "br"\nkind = "bedrock"\nbase_url = "{base_url}"\nmodels = ["{MODEL}"]\n'
    env = {
        **os.environ,
        "NO_PROXY": "127.0.0.1",
        "AWS_REGION": bedrock_mock.REGION,
        "AWS_ACCESS_KEY_ID": bedrock_mock.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": bedrock_mock.SECRET_KEY,
    }
    env.pop("AWS_SESSION_TOKEN", None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weir.toml"
        path.write_text(config)
        log = Path(tmp) / "weir.log"
        for _ in range(5):
            base = f"http://127.0.0.1:{_free_port()}"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    [str(WEIR), "serve", "--config", str(path), "--listen", base.removeprefix("http://")],
                    stdout=out, stderr=subprocess.STDOUT, env=env,
                )
            if _wait_healthy(proc, base):
                break
            proc.kill()
            proc.wait()
        else:
            pytest.fail(f"weir did not start:\n{log.read_text()}")
        try:
            yield openai.OpenAI(base_url=f"{base}/v1", api_key="sk-unused", max_retries=0, timeout=20)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
            server.shutdown()
            assert bedrock_mock.SECRET_KEY not in log.read_text()


def test_chat_through_bedrock(bedrock_client):
    resp = bedrock_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi bedrock"}])
    assert resp.choices[0].message.content == "echo: hi bedrock"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 9 and resp.usage.completion_tokens == 4


def test_stream_through_bedrock(bedrock_client):
    stream = bedrock_client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_tools_through_bedrock(bedrock_client):
    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather of a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    resp = bedrock_client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [resp.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    resp = bedrock_client.chat.completions.create(model=MODEL, messages=messages, tools=tools)
    assert resp.choices[0].message.content == "echo: sunny"

    stream = bedrock_client.chat.completions.create(model=MODEL, messages=messages[:1], tools=tools, stream=True)
    args = ""
    names = []
    for c in stream:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            if tc.function and tc.function.name:
                names.append(tc.function.name)
            args += (tc.function.arguments or "") if tc.function else ""
    assert names == ["weather"] and json.loads(args) == {"city": "Paris"}


def test_throttling_is_a_rate_limit_error(bedrock_client):
    with pytest.raises(openai.RateLimitError) as e:
        bedrock_client.chat.completions.create(
            model=f"br/{MODEL};error=ThrottlingException", messages=[{"role": "user", "content": "x"}]
        )
    assert e.value.status_code == 429
    assert "ThrottlingException from the mock" in str(e.value)


def test_n_above_one_is_a_bad_request(bedrock_client):
    with pytest.raises(openai.BadRequestError) as e:
        bedrock_client.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 400
