"""The official `openai` Python SDK against the real weir binary served by a `bedrock` provider
(the mock Bedrock Runtime in bedrock_mock.py, which verifies SigV4 signatures)."""

import json
import os

import openai
import pytest

import bedrock_mock
from conftest import start_weir

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def bedrock_client():
    """An SDK client for a weir whose only provider is the mock Bedrock, credentials from the
    AWS environment variables."""
    server, base_url = bedrock_mock.start()
    config = f'[[providers]]\nname = "br"\nkind = "bedrock"\nbase_url = "{base_url}"\nmodels = ["{MODEL}"]\n'
    env = {
        "AWS_REGION": bedrock_mock.REGION,
        "AWS_ACCESS_KEY_ID": bedrock_mock.ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": bedrock_mock.SECRET_KEY,
    }
    # No session token: the variable must be absent, not inherited from the environment.
    saved = os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        with start_weir(config, env=env, secrets=(bedrock_mock.SECRET_KEY,)) as base:
            yield openai.OpenAI(base_url=f"{base}/v1", api_key="sk-unused", max_retries=0, timeout=20)
    finally:
        server.shutdown()
        if saved is not None:
            os.environ["AWS_SESSION_TOKEN"] = saved


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


def test_anthropic_sdk_served_by_bedrock(bedrock_client):
    import anthropic

    from conftest import anthropic_client_beside

    claude = anthropic_client_beside(bedrock_client)
    msg = claude.messages.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "hi bedrock"}])
    assert msg.content[0].text == "echo: hi bedrock" and msg.stop_reason == "end_turn"
    with claude.messages.stream(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        assert "".join(stream.text_stream) == "echo: one two three"
    tools = [{"name": "weather", "description": "Weather of a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    msg = claude.messages.create(
        model=MODEL, max_tokens=64, tools=tools, messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    call = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and call.name == "weather" and call.input == {"city": "Paris"}
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model=f"br/{MODEL};error=ThrottlingException", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
