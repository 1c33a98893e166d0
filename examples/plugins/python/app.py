"""Prompt guard for Weir, in Python: rejects prompts that match a configured rule (a
case-insensitive regular expression) with a 400 naming the rule, tags every response it sees
with `x-guard: python`, and logs through the host's `log` import.

Config (the plugin's `config` table, as JSON): `{"rules": {"<name>": "<regex>", ...}}`.
Without `rules`, the built-in DEFAULT_RULES apply.
"""

import json
import re

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log, types

LANG = "python"
DEFAULT_RULES = {
    "injection": r"ignore (all )?previous instructions",
    "secret": r"BEGIN [A-Z ]*PRIVATE KEY",
}

# Compiled once per instance in `init`; instances are reused across calls.
_rules: list[tuple[str, re.Pattern[str]]] = []


def _messages(req: types.Request):
    """Yields the text of each message's `content`, read through the host by JSON pointer."""
    i = 0
    while True:
        raw = req.get(f"/messages/{i}/content")
        if raw is None:
            return
        value = json.loads(raw)
        if isinstance(value, str):
            yield value
        else:
            yield raw  # multi-part content: match the JSON text
        i += 1


class Handler(exports.Handler):
    def init(self, config: str) -> types.Hooks:
        try:
            rules = json.loads(config or "{}").get("rules", DEFAULT_RULES)
            compiled = [(name, re.compile(pattern, re.IGNORECASE)) for name, pattern in rules.items()]
        except (ValueError, AttributeError, re.error) as e:
            raise Err(f"invalid config: {e}")
        _rules.clear()
        _rules.extend(compiled)
        log.log(log.Level.INFO, f"guard ({LANG}) ready with {len(_rules)} rule(s)")
        return types.Hooks.ON_REQUEST | types.Hooks.ON_RESPONSE

    def on_request(self, req: types.Request) -> types.RequestAction:
        for text in _messages(req):
            for name, pattern in _rules:
                if pattern.search(text):
                    log.log(log.Level.WARN, f"guard ({LANG}) rejected request {req.id()}: rule `{name}` matched")
                    return types.RequestAction_Reject(
                        types.Rejection(
                            status=400,
                            message=f"prompt rejected by the {LANG} guard: it matches rule `{name}`",
                            code="prompt_rejected",
                        )
                    )
        return types.RequestAction_Continue()

    def on_response(self, req: types.Request, resp: types.Response) -> types.ResponseAction:
        resp.set_header("x-guard", LANG)
        return types.ResponseAction_Pass()

    def on_stream_chunk(self, req: types.Request, chunk: bytes) -> types.ChunkAction:
        return types.ChunkAction_Pass()
