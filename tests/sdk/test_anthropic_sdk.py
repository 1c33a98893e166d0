"""The official `anthropic` Python SDK (and the `openai` one) against the real weir binary,
served by an `anthropic` provider (a mock Anthropic Messages API on 127.0.0.1, in Anthropic's
wire shape) and by the built-in OpenAI-format mock provider (translated)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anthropic
import openai
import pytest

from conftest import start_weir

TEXT = ["Hello", " from", " Anthropic"]
USAGE = {"input_tokens": 20, "output_tokens": 9, "cache_read_input_tokens": 6, "cache_creation_input_tokens": 2}


def _answer(model, tools):
    content = [{"type": "text", "text": "".join(TEXT)}]
    if tools:
        content.append({"type": "tool_use", "id": "toolu_01Py", "name": tools[0]["name"], "input": {"city": "Oslo"}})
    return {
        "id": "msg_01Py", "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None, "usage": USAGE,
    }


def _events(model, tools):
    start = {"id": "msg_01Py", "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": {**USAGE, "output_tokens": 1}}
    yield {"type": "message_start", "message": start}
    yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    yield {"type": "ping"}
    for t in TEXT:
        yield {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}}
    yield {"type": "content_block_stop", "index": 0}
    if tools:
        block = {"type": "tool_use", "id": "toolu_01Py", "name": tools[0]["name"], "input": {}}
        yield {"type": "content_block_start", "index": 1, "content_block": block}
        for part in ['{"city": ', '"Oslo"}']:
            yield {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": part}}
        yield {"type": "content_block_stop", "index": 1}
    reason = "tool_use" if tools else "end_turn"
    yield {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
           "usage": {"output_tokens": USAGE["output_tokens"]}}
    yield {"type": "message_stop"}


class _Anthropic(BaseHTTPRequestHandler):
    """`POST /v1/messages` as Anthropic answers it; `;status=429` in the model asks for an error."""

    seen = []

    def log_message(self, *args):
        pass

    def _send(self, status, body, content_type="application/json", headers=()):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, json.dumps({"data": [{"type": "model", "id": "claude-mock"}], "has_more": False}).encode())

    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _Anthropic.seen.append((dict(self.headers), req))
        model = req["model"]
        if model.endswith(";status=429"):
            err = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
            return self._send(429, json.dumps(err).encode(), headers=[("retry-after", "0")])
        tools = req.get("tools")
        if req.get("stream"):
            body = "".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n" for e in _events(model, tools))
            return self._send(200, body.encode(), "text/event-stream")
        self._send(200, json.dumps(_answer(model, tools)).encode())


@pytest.fixture(scope="module")
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Anthropic)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = f"""
[[providers]]
name = "ant"
kind = "anthropic"
base_url = "http://127.0.0.1:{server.server_address[1]}/v1"
keys = [{{ value = "sk-ant-sdk-test-key" }}]
models = ["claude-mock"]
discover_models = false

[[providers]]
name = "mock"
kind = "mock"
models = ["mock-1"]
"""
    try:
        with start_weir(config) as base:
            yield base
    finally:
        server.shutdown()


@pytest.fixture
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway, api_key="sk-unused", max_retries=0, timeout=20)


# (model, the text its provider answers "one two three" with)
SERVED = [("claude-mock", "".join(TEXT)), ("mock-1", "one two three")]
WEATHER = {"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}


@pytest.mark.parametrize("model,text", SERVED)
def test_anthropic_messages(claude, model, text):
    msg = claude.messages.create(
        model=model, max_tokens=64, system="be brief", messages=[{"role": "user", "content": "one two three"}]
    )
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].text == text
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens > 0


@pytest.mark.parametrize("model,text", SERVED)
def test_anthropic_stream(claude, model, text):
    with claude.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        got = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert got == text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_anthropic_tools(claude):
    msg = claude.messages.create(
        model="claude-mock", max_tokens=64, tools=[WEATHER], tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "weather in Oslo?"}],
    )
    call = next(b for b in msg.content if b.type == "tool_use")
    assert (call.name, call.input) == ("get_weather", {"city": "Oslo"})
    assert msg.stop_reason == "tool_use"
    with claude.messages.stream(
        model="claude-mock", max_tokens=64, tools=[WEATHER], messages=[{"role": "user", "content": "Oslo?"}]
    ) as stream:
        final = stream.get_final_message()
    call = next(b for b in final.content if b.type == "tool_use")
    assert call.input == {"city": "Oslo"}
    headers, _ = _Anthropic.seen[-1]
    assert headers.get("x-api-key") == "sk-ant-sdk-test-key"


def test_anthropic_errors(claude):
    with pytest.raises(anthropic.NotFoundError) as e:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["type"] == "error"
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(
            model="ant/claude-mock;status=429", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(anthropic.BadRequestError) as e:
        claude.messages.create(model="mock-1", max_tokens=0, messages=[{"role": "user", "content": "x"}])
    assert "max_tokens" in e.value.message


def test_openai_sdk_served_by_anthropic(gateway):
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="sk-unused", max_retries=0, timeout=20)
    resp = client.chat.completions.create(model="claude-mock", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "".join(TEXT)
    assert resp.usage.prompt_tokens == 28 and resp.usage.completion_tokens == 9
    stream = client.chat.completions.create(
        model="claude-mock", messages=[{"role": "user", "content": "hi"}], stream=True,
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "".join(TEXT)
    args = "".join(
        tc.function.arguments or ""
        for c in chunks if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
    )
    assert json.loads(args) == {"city": "Oslo"}
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="ant/claude-mock;status=429", messages=[{"role": "user", "content": "x"}])


def test_openai_responses_api_served_by_anthropic_and_by_the_mock(gateway):
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="sk-unused", max_retries=0, timeout=20)
    resp = client.responses.create(model="claude-mock", instructions="Be brief.", input="hi")
    assert resp.output_text == "".join(TEXT)
    assert resp.status == "completed"
    assert resp.usage.input_tokens == 28 and resp.usage.output_tokens == 9
    assert resp.usage.input_tokens_details.cached_tokens == 6
    _, sent = _Anthropic.seen[-1]
    assert sent["system"] == "Be brief."

    resp = client.responses.create(model="mock-1", input="one two three")
    assert resp.output_text == "one two three"

    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    stream = client.responses.create(model="claude-mock", input="weather?", tools=tools, stream=True)
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "".join(TEXT)
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert json.loads(args) == {"city": "Oslo"}
    done = events[-1].response
    calls = [item for item in done.output if item.type == "function_call"]
    assert calls and calls[0].name == "get_weather"

    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="claude-mock", input="x", previous_response_id="resp_1")
    assert "previous_response_id" in e.value.message
