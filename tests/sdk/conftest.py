"""Starts the real `weir` binary (target/debug/weir, built by `cargo test`) on a free
127.0.0.1 port with the built-in mock provider, and hands tests an official OpenAI client."""

import contextlib
import os
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import pytest

ROOT = Path(__file__).resolve().parents[2]
WEIR = Path(os.environ.get("WEIR_BIN", ROOT / "target" / "debug" / "weir"))

CONFIG = """
[[providers]]
name = "mock"
kind = "mock"
models = ["mock-1", "mock-embed"]
aliases = { echo = "mock-1" }
chunk_delay = "5ms"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(proc: subprocess.Popen, base: str) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=1) as r:
                if r.status == 200:
                    return True
        except OSError:
            time.sleep(0.05)
    return False


@contextlib.contextmanager
def start_weir(config_text: str, env: dict | None = None, secrets: tuple = ()):
    """Runs `weir serve` with `config_text` (and `env` added to the environment); yields its
    base URL (without /v1). SIGTERM after, then none of `secrets` may be in its log."""
    assert WEIR.exists(), f"{WEIR} not found: run `cargo build -p weir` first"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "weir.toml"
        config.write_text(config_text)
        log = Path(tmp) / "weir.log"
        for _ in range(5):  # a port freed by _free_port may be taken again: retry
            base = f"http://127.0.0.1:{_free_port()}"
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    [str(WEIR), "serve", "--config", str(config), "--listen", base.removeprefix("http://")],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "NO_PROXY": "127.0.0.1", **(env or {})},
                )
            if _wait_healthy(proc, base):
                break
            proc.kill()
            proc.wait()
        else:
            pytest.fail(f"weir did not start:\n{log.read_text()}")
        try:
            yield base
        finally:
            proc.terminate()
            try:
                code = proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
            assert code == 0, f"weir exited with {code}:\n{log.read_text()}"
            for secret in secrets:
                assert secret not in log.read_text(), "a secret reached weir's log"


@pytest.fixture(scope="session")
def weir_url():
    """Base URL (without /v1) of a running weir; stopped with SIGTERM after the session."""
    with start_weir(CONFIG) as base:
        yield base


@pytest.fixture
def client(weir_url):
    """The official SDK, unchanged, pointed at weir."""
    return openai.OpenAI(base_url=f"{weir_url}/v1", api_key="sk-unused", max_retries=0, timeout=20)


def anthropic_client_beside(openai_client):
    """The official `anthropic` SDK pointed at the same weir as `openai_client` (its /v1 front doors)."""
    import anthropic

    base = str(openai_client.base_url).rstrip("/").removesuffix("/v1")
    return anthropic.Anthropic(base_url=base, api_key="sk-unused", max_retries=0, timeout=20)
