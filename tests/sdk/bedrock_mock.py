"""A mock Amazon Bedrock Runtime on 127.0.0.1 for the SDK tests: Converse JSON and
ConverseStream event-stream frames (encoded here from the published frame layout), AWS error
answers, and a SigV4 check that recomputes each request's signature (403 like AWS when it
does not match). The model id picks behaviour: `...;error=ThrottlingException`."""

import hashlib
import hmac
import json
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

REGION = "us-east-1"
ACCESS_KEY = "AKIAMOCKSDKTEST0001"
SECRET_KEY = "sdk/Mock+Secret-Key-0123456789abcdef"
USAGE = {"inputTokens": 9, "outputTokens": 4, "totalTokens": 13}
STATUS = {"ThrottlingException": 429, "ValidationException": 400, "ModelNotReadyException": 503}


def _frame(message_type, type_header, payload):
    headers = b""
    for name, value in ((":message-type", message_type), type_header, (":content-type", "application/json")):
        n, v = name.encode(), value.encode()
        headers += struct.pack(">B", len(n)) + n + b"\x07" + struct.pack(">H", len(v)) + v
    body = json.dumps(payload).encode()
    total = 12 + len(headers) + len(body) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    message = prelude + headers + body
    return message + struct.pack(">I", zlib.crc32(message))


def _event(kind, payload):
    return _frame("event", (":event-type", kind), payload)


def _sign_ok(method, path, headers, body):
    auth = headers.get("authorization", "")
    date = headers.get("x-amz-date", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return False
    fields = dict(p.split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(", "))
    scope = f"{date[:8]}/{REGION}/bedrock/aws4_request"
    if fields.get("Credential") != f"{ACCESS_KEY}/{scope}":
        return False
    signed = fields["SignedHeaders"].split(";")
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in signed)
    uri = "".join(c if c.isalnum() or c in "-._~/" else "%{:02X}".format(ord(c)) for c in path)
    creq = "\n".join([method, uri, "", canonical_headers, ";".join(signed), hashlib.sha256(body).hexdigest()])
    sts = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    key = ("AWS4" + SECRET_KEY).encode()
    for part in (date[:8], REGION, "bedrock", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.compare_digest(hmac.new(key, sts.encode(), hashlib.sha256).hexdigest(), fields.get("Signature", ""))


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _json(self, status, value, error_type=None):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-errortype", error_type)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        if not _sign_ok("POST", self.path, headers, body):
            return self._json(403, {"message": "signature mismatch"}, "InvalidSignatureException")
        _, _, model, op = self.path.split("/")
        model = unquote(model)
        if ";error=" in model:
            kind = model.split(";error=")[1]
            return self._json(STATUS.get(kind, 500), {"message": f"{kind} from the mock"}, kind)
        req = json.loads(body)
        last = req["messages"][-1]["content"]
        tools = req.get("toolConfig", {}).get("tools", [])
        if tools and not any("toolResult" in b for b in last):
            name = tools[0]["toolSpec"]["name"]
            content = [{"toolUse": {"toolUseId": "tooluse_sdk01", "name": name, "input": {"city": "Paris"}}}]
            stop = "tool_use"
        else:
            words = [b["text"] for b in last if "text" in b] or [
                b["toolResult"]["content"][0]["text"] for b in last if "toolResult" in b
            ]
            content = [{"text": "echo: " + " ".join(words)}]
            stop = "end_turn"
        if op == "converse":
            return self._json(200, {"output": {"message": {"role": "assistant", "content": content}},
                                    "stopReason": stop, "usage": USAGE, "metrics": {"latencyMs": 1}})
        frames = [_event("messageStart", {"role": "assistant"})]
        for i, block in enumerate(content):
            if "text" in block:
                for n, word in enumerate(block["text"].split(" ")):
                    piece = word if n == 0 else " " + word
                    frames.append(_event("contentBlockDelta", {"contentBlockIndex": i, "delta": {"text": piece}}))
            else:
                tu = block["toolUse"]
                start = {"toolUse": {"toolUseId": tu["toolUseId"], "name": tu["name"]}}
                frames.append(_event("contentBlockStart", {"contentBlockIndex": i, "start": start}))
                for piece in ('{"city":', '"Paris"}'):
                    delta = {"toolUse": {"input": piece}}
                    frames.append(_event("contentBlockDelta", {"contentBlockIndex": i, "delta": delta}))
            frames.append(_event("contentBlockStop", {"contentBlockIndex": i}))
        frames.append(_event("messageStop", {"stopReason": stop}))
        frames.append(_event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 1}}))
        self.send_response(200)
        self.send_header("content-type", "application/vnd.amazon.eventstream")
        self.send_header("connection", "close")
        self.end_headers()
        for f in frames:
            # Each frame in two writes: the gateway must decode frames split across reads.
            self.wfile.write(f[: len(f) // 2])
            self.wfile.flush()
            self.wfile.write(f[len(f) // 2:])
            self.wfile.flush()
        self.close_connection = True


def start():
    """Starts the mock; returns (server, base_url). `server.shutdown()` stops it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
