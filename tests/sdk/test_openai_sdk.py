"""The official `openai` Python SDK against the real weir binary (built-in mock provider)."""

import base64
import struct

import openai
import pytest


def test_chat_completion(client):
    resp = client.chat.completions.create(
        model="mock-1", messages=[{"role": "user", "content": "hello from the sdk"}]
    )
    assert resp.object == "chat.completion"
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == "hello from the sdk"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 4
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_completion_raw_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model="echo", messages=[{"role": "user", "content": "hi"}]
    )
    assert int(raw.headers["x-weir-overhead-us"]) >= 0
    assert raw.headers["x-weir-provider"] == "mock"
    assert raw.parse().choices[0].message.content == "hi"


def test_streaming(client):
    stream = client.chat.completions.create(
        model="mock-1",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 4
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_embeddings_default_base64(client):
    # The SDK asks for base64 by default and decodes it into floats.
    resp = client.embeddings.create(model="mock-embed", input=["alpha", "beta"])
    assert [d.index for d in resp.data] == [0, 1]
    assert all(len(d.embedding) == 8 for d in resp.data)
    assert resp.data[0].embedding != resp.data[1].embedding
    norm = sum(x * x for x in resp.data[0].embedding)
    assert abs(norm - 1.0) < 1e-3


def test_embeddings_float_matches_base64(client):
    floats = client.embeddings.create(model="mock-embed", input="alpha", encoding_format="float")
    raw = client.embeddings.with_raw_response.create(model="mock-embed", input="alpha", encoding_format="base64")
    encoded = raw.http_response.json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(floats.data[0].embedding)}f", base64.b64decode(encoded))
    assert list(decoded) == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    for want in ("mock-1", "mock-embed", "echo"):
        assert want in ids
    assert client.models.retrieve("mock-1").owned_by == "mock"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404
    assert err.value.code == "model_not_found"
    assert "no-such-model" in err.value.message
    assert err.value.param == "model"


def test_invalid_request_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="mock-1", messages=[{"role": "robot", "content": "x"}])
    assert err.value.status_code == 400
    assert err.value.param == "messages[0].role"
