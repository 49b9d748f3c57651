"""The seed's three snippets (Python `together`, TypeScript `together-ai`, curl) run against
insieme with only TOGETHER_BASE_URL changed — the project's first acceptance test."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server

pytestmark = pytest.mark.model

JS_DIR = Path(__file__).resolve().parent.parent / "js"

PYTHON_SNIPPET = '''
import os
from together import Together

client = Together()

stream = client.chat.completions.create(
    model="meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
    messages=[
        {
            "role": "user",
            "content": "What are some fun things to do in New York?",
        }
    ],
    stream=True,
    max_tokens=32,
)

for chunk in stream:
    print(chunk.choices[0].delta.content or "", end="", flush=True)
'''


def env_for(server: Server) -> dict[str, str]:
    return {**os.environ, "TOGETHER_BASE_URL": server.base_url, "TOGETHER_API_KEY": "local",
            "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "local"}


def test_python_snippet(real_server: Server) -> None:
    result = subprocess.run([sys.executable, "-c", PYTHON_SNIPPET], env=env_for(real_server),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 5


def _node_ready() -> bool:
    return shutil.which("node") is not None and (JS_DIR / "node_modules" / "together-ai").is_dir()


@pytest.mark.skipif(not _node_ready(), reason="node or tests/js/node_modules missing")
def test_typescript_snippet(real_server: Server) -> None:
    result = subprocess.run(["node", "seed_stream.mjs"], cwd=JS_DIR, env=env_for(real_server),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.split()) >= 5


@pytest.mark.skipif(not _node_ready(), reason="node or tests/js/node_modules missing")
def test_openai_node_sdk(real_server: Server) -> None:
    result = subprocess.run(["node", "openai_stream.mjs"], cwd=JS_DIR, env=env_for(real_server),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    # Sampled at the default temperature: it may end before max_tokens.
    assert output["text"] and 0 < output["usage"]["completion_tokens"] <= 16


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl missing")
def test_curl_snippet(real_server: Server) -> None:
    # The seed's curl sets no max_tokens: --default-max-tokens bounds the answer.
    body = json.dumps({
        "model": "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo",
        "messages": [{"role": "user", "content": "What are some fun things to do in New York?"}],
        "stream": True,
    })
    result = subprocess.run(
        ["curl", "-sS", "-N", "-X", "POST", f"{real_server.base_url}/chat/completions",
         "-H", "Authorization: Bearer local", "-H", "Content-Type: application/json",
         "-d", body],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    events = [line[6:] for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["finish_reason"] in ("stop", "length")
    assert 0 < last["usage"]["completion_tokens"] <= 512
