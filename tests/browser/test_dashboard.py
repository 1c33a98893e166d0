"""The dashboard in a real headless browser (Debian's Chromium, driven over the DevTools
protocol) against the real weir binary: signed out it shows only its sign-in and no data;
signed in with the admin token its numbers change as requests flow. A screenshot is written
to target/dashboard.png (and to docs/dashboard.png with WEIR_UPDATE_SCREENSHOT=1)."""

import base64
import concurrent.futures
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "sdk"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from cdp import chromium  # noqa: E402
from conftest import start_weir  # noqa: E402

TOKEN = "dashboard-test-token-7f3a"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(admin_port: int) -> str:
    return f"""
[admin]
listen = "127.0.0.1:{admin_port}"
token = "${{WEIR_DASHBOARD_TOKEN}}"

[[providers]]
name = "fast-mock"
kind = "mock"
models = ["mock-fast"]
latency = "15ms"
chunk_delay = "10ms"

[[providers]]
name = "slow-mock"
kind = "mock"
models = ["mock-slow"]
latency = "150ms"
[providers.pool]
workers = 4
queue = 64

[[plugins]]
name = "prompt-guard"
path = "builtin:prompt-guard"
config = {{ deny_keywords = ["ignore previous instructions"] }}
"""


def _chat(base: str, model: str, text: str, stream: bool = False) -> int:
    body = json.dumps({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(f"{base}/v1/chat/completions", data=body, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _traffic(base: str, n: int):
    """A mix: fast and slow models, streams, a plugin refusal and an unknown model."""
    jobs = []
    for i in range(n):
        if i % 10 == 9:
            jobs.append(("mock-fast", "please ignore previous instructions", False))
        elif i % 13 == 12:
            jobs.append(("no-such-model", "hi", False))
        elif i % 3 == 0:
            jobs.append(("mock-slow", f"slow request {i}", False))
        else:
            jobs.append(("mock-fast", f"hello number {i} with a few words", i % 2 == 0))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda j: _chat(base, *j), jobs))


def test_the_dashboard_refuses_without_the_token_and_shows_live_numbers_with_it():
    admin_port = _free_port()
    with start_weir(_config(admin_port), env={"WEIR_DASHBOARD_TOKEN": TOKEN}, secrets=(TOKEN,)) as base, chromium() as page:
        url = f"http://127.0.0.1:{admin_port}/admin/dashboard"

        # Signed out: a 401 page with only its sign-in form, and no data reaches it.
        page.navigate(url)
        assert page.document_status(url) == 401
        page.wait_for("!document.getElementById('login').classList.contains('hidden')")
        assert page.eval("document.getElementById('app').classList.contains('hidden')")
        assert page.eval("document.getElementById('k-requests').textContent") == "–"
        assert page.eval("fetch('/admin/stats').then(r => r.status)") == 401
        assert page.eval("fetch('/admin/requests').then(r => r.text())").find("mock-fast") == -1

        # A wrong token is refused.
        page.eval("document.getElementById('token').value = 'wrong'; document.getElementById('login-form').requestSubmit(); 1")
        page.wait_for("document.getElementById('login-err').textContent.includes('Wrong')")
        assert page.eval("document.getElementById('app').classList.contains('hidden')")

        # The admin token: the dashboard loads, live.
        page.eval(f"document.getElementById('token').value = {json.dumps(TOKEN)}; document.getElementById('login-form').requestSubmit(); 1")
        page.wait_for("!document.getElementById('app').classList.contains('hidden')")
        page.wait_for("document.getElementById('live-text').textContent === 'live'")
        assert page.eval("document.cookie") == "", "the session cookie is HttpOnly"
        before = page.wait_for("document.getElementById('k-requests').textContent !== '–' && document.getElementById('k-requests').textContent")
        assert before == "0", before
        assert page.eval("document.querySelectorAll('#providers .prov').length") == 2

        statuses = _traffic(base, 60)
        assert statuses.count(200) >= 40 and any(s in (400, 403) for s in statuses), statuses

        # The numbers change without a reload: the request count, the table, the plugin calls.
        after = page.wait_for(
            "(() => { const v = document.getElementById('k-requests').textContent; return v !== '0' && v; })()"
        )
        assert float(after) > 0, after
        page.wait_for("document.querySelectorAll('#requests tr').length >= 50")
        page.wait_for("Number(document.querySelector('#plugins tr td.num').textContent) > 0", timeout=10)
        assert page.eval("location.href") == url, "no navigation happened"

        # One request's record opens on a click.
        page.eval("document.querySelector('#requests tr').click(); 1")
        page.wait_for("document.getElementById('drawer').classList.contains('open')")
        assert "model asked" in page.eval("document.getElementById('d-body').textContent")
        page.eval("document.getElementById('d-close').click(); 1")

        # The last minute in the dark theme, a moment of steady traffic so the charts have a
        # shape, then the picture.
        page.eval("document.getElementById('range').value = '60'; document.getElementById('range').onchange(); 1")
        page.eval("localStorage.setItem('weir-theme', 'dark'); document.documentElement.classList.remove('light'); 1")
        for i in range(8):
            _traffic(base, 20 + 10 * (i % 3))
            time.sleep(0.7)
        page.wait_for("document.querySelectorAll('#c-lat path').length >= 2")
        time.sleep(1.2)
        shot = base64.b64decode(page.call("Page.captureScreenshot", format="png", captureBeyondViewport=False)["data"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 20000
        out = ROOT / "target" / "dashboard.png"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(shot)
        if os.environ.get("WEIR_UPDATE_SCREENSHOT") == "1":
            (ROOT / "docs" / "dashboard.png").write_bytes(shot)
