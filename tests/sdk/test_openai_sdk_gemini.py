"""The official `openai` Python SDK against the real weir binary served by a `gemini` provider:
a mock Google AI Gemini API on 127.0.0.1 (generateContent, streamGenerateContent?alt=sse,
Google's error shape) written from the public API reference."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from conftest import start_weir

KEY = "AIzaSDK-gemini-test-key-0123"
USAGE = {"promptTokenCount": 9, "candidatesTokenCount": 3, "totalTokenCount": 12}
SEEN = []


def _candidate(parts, finish=None):
    c = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        c["finishReason"] = finish
    return c


class _Gemini(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body, ctype="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self._send(200, json.dumps({"models": [{"name": "models/gemini-2.0-flash"}]}))

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        path, _, query = self.path.partition("?")
        SEEN.append({"path": path, "query": query, "key": self.headers.get("x-goog-api-key"), "body": body})
        model, _, action = path.removeprefix("/v1beta/models/").partition(":")
        if self.headers.get("x-goog-api-key") != KEY:
            return self._send(403, json.dumps({"error": {"code": 403, "message": "no", "status": "PERMISSION_DENIED"}}))
        if model == "err429":
            err = {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED"}
            return self._send(429, json.dumps({"error": err}))
        last = body["contents"][-1]["parts"]
        results = [p["functionResponse"] for p in last if "functionResponse" in p]
        tools = body.get("tools", [{}])[0].get("functionDeclarations", [])
        if results:
            parts = [{"text": "result " + json.dumps(results[0]["response"], separators=(",", ":"))}]
        elif tools:
            parts = [{"functionCall": {"name": tools[0]["name"], "args": {"city": "Paris"}}}]
        else:
            parts = [{"text": "echo " + "".join(p.get("text", "") for p in last)}]
        if action == "generateContent":
            answer = {"candidates": [_candidate(parts, "STOP")], "usageMetadata": USAGE, "modelVersion": model}
            return self._send(200, json.dumps(answer))
        events = []
        if "text" in parts[0]:
            words = parts[0]["text"].split(" ")
            for i, w in enumerate(words):
                last_one = i == len(words) - 1
                text = w if last_one else w + " "
                events.append({"candidates": [_candidate([{"text": text}], "STOP" if last_one else None)]})
        else:
            events.append({"candidates": [_candidate(parts, "STOP")]})
        events[-1]["usageMetadata"] = USAGE
        sse = "".join(f"data: {json.dumps(e)}\r\n\r\n" for e in events)
        self._send(200, sse, "text/event-stream")


@pytest.fixture(scope="module")
def gemini_client():
    """The official SDK, unchanged, pointed at weir in front of the mock Gemini API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gemini)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config_text = f"""
[[providers]]
name = "gem"
kind = "gemini"
base_url = "http://127.0.0.1:{server.server_address[1]}/v1beta"
keys = [{{ value = "{KEY}" }}]
models = ["gemini-2.0-flash", "err429"]
discover_models = false
"""
    try:
        with start_weir(config_text, secrets=(KEY,)) as base:
            yield openai.OpenAI(base_url=f"{base}/v1", api_key="sk-unused", max_retries=0, timeout=20)
    finally:
        server.shutdown()


def test_gemini_chat(gemini_client):
    resp = gemini_client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello sdk"}],
    )
    assert resp.choices[0].message.content == "echo hello sdk"
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (9, 3, 12)
    sent = SEEN[-1]
    assert sent["path"] == "/v1beta/models/gemini-2.0-flash:generateContent"
    assert sent["key"] == KEY
    assert sent["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_gemini_stream(gemini_client):
    stream = gemini_client.chat.completions.create(
        model="gemini-2.0-flash",
        messages=[{"role": "user", "content": "one two three"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert SEEN[-1]["query"] == "alt=sse"


def test_gemini_tools_round_trip(gemini_client):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    messages = [{"role": "user", "content": "weather in Paris?"}]
    resp = gemini_client.chat.completions.create(model="gemini-2.0-flash", messages=messages, tools=tools)
    assert resp.choices[0].finish_reason == "tool_calls"
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages.append(resp.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    resp = gemini_client.chat.completions.create(model="gemini-2.0-flash", messages=messages, tools=tools)
    assert resp.choices[0].message.content == 'result {"output":"sunny"}'
    result = SEEN[-1]["body"]["contents"][-1]["parts"][0]["functionResponse"]
    assert result["name"] == "get_weather"


def test_gemini_error_is_raised_with_status(gemini_client):
    with pytest.raises(openai.RateLimitError) as err:
        gemini_client.chat.completions.create(model="err429", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 429
    assert "RESOURCE_EXHAUSTED" in err.value.message
    with pytest.raises(openai.BadRequestError) as err:
        gemini_client.chat.completions.create(
            model="gemini-2.0-flash", n=2, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.param == "n"


def test_anthropic_sdk_served_by_gemini(gemini_client):
    import anthropic

    from conftest import anthropic_client_beside

    claude = anthropic_client_beside(gemini_client)
    msg = claude.messages.create(
        model="gemini-2.0-flash", max_tokens=64, system="Be brief.",
        messages=[{"role": "user", "content": "hello sdk"}],
    )
    assert msg.content[0].text == "echo hello sdk" and msg.stop_reason == "end_turn"
    assert SEEN[-1]["body"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    with claude.messages.stream(
        model="gemini-2.0-flash", max_tokens=64, messages=[{"role": "user", "content": "one two three"}]
    ) as stream:
        assert "".join(stream.text_stream) == "echo one two three"
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    msg = claude.messages.create(
        model="gemini-2.0-flash", max_tokens=64, tools=tools,
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    call = next(b for b in msg.content if b.type == "tool_use")
    assert msg.stop_reason == "tool_use" and call.name == "get_weather" and call.input == {"city": "Paris"}
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="err429", max_tokens=8, messages=[{"role": "user", "content": "x"}])
