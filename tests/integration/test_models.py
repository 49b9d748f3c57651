"""Several models in one `insieme serve` on the bundled model file (playing two chat models
under two names with different settings, beside a broken file), with --max-loaded-models 1:
the SDKs chat with both and list all, alternating requests all succeed with the process's
memory bounded, a request in flight is never unloaded under it, an unknown model is a 404
and a broken one a 500 naming its file while the others serve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import together

from insieme.config import bundled_model_path
from tests.conftest import Server, free_port, start_real_server, stop_server

pytestmark = pytest.mark.model

USER = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def broken_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model cut short: its header reads, its tensors are not all there."""
    path = tmp_path_factory.mktemp("models") / "broken.gguf"
    with bundled_model_path().open("rb") as f:
        path.write_bytes(f.read(4 * 2**20))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, broken_file: Path) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("config") / "insieme.toml"
    config.write_text(f"""
max-loaded-models = 1
threads = 2
model-load-timeout = 600  # a busy test machine: waits run long, never into a 503

[models.a]
served-model-name = ["smol-a", "HuggingFaceTB/SmolLM2-135M-Instruct"]
max-model-len = 1024
max-num-seqs = 4

[models.b]
served-model-name = "smol-b"
max-model-len = 512
max-num-seqs = 2

[models.broken]
model = "{broken_file}"
""")
    srv = start_real_server("--config", str(config), named=False)
    yield srv
    stop_server(srv)


def rss_mib(server: Server) -> float:
    assert server.process is not None
    for line in Path(f"/proc/{server.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def loaded(server: Server) -> dict[str, bool]:
    return {m["id"]: m["loaded"] for m in httpx.get(f"{server.base_url}/models").json()["data"]}


def test_sdks_chat_with_two_models_and_list_all(server: Server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    for model in ("smol-a", "smol-b"):
        reply = client.chat.completions.create(model=model, messages=USER, max_tokens=8,
                                               temperature=0)
        assert reply.model == model and reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens <= 8
    tog = together.Together(base_url=server.base_url, api_key="unused", max_retries=0)
    for model in ("smol-a", "smol-b"):  # streamed: the switch shows as pings first
        chunks = list(tog.chat.completions.create(model=model, messages=USER, max_tokens=8,
                                                  temperature=0, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    openai_ids = [m.id for m in client.models.list()]
    assert openai_ids == ["smol-a", "HuggingFaceTB/SmolLM2-135M-Instruct", "smol-b", "broken"]
    # together 3.x's models.list() is its /v2 project API; 1.x and 2.x read /v1/models as a
    # bare list, as a Together User-Agent gets it.
    bare = httpx.get(f"{server.base_url}/models",
                     headers={"User-Agent": "Together/v1 PythonBindings/1.5.35"}).json()
    assert [m["id"] for m in bare] == openai_ids and {m["type"] for m in bare} == {"chat"}
    cards = {m["id"]: m for m in httpx.get(f"{server.base_url}/models").json()["data"]}
    assert cards["smol-a"]["context_length"] == 1024
    assert cards["smol-b"]["context_length"] == 512


def test_alternating_models_stay_within_one_loaded(server: Server) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    rss = []
    for i in range(6):
        model = ("smol-a", "smol-b")[i % 2]
        reply = client.chat.completions.create(model=model, messages=USER, max_tokens=2,
                                               temperature=0)
        assert reply.model == model
        assert sum(loaded(server).values()) <= 2  # one model, under its two names at most
        rss.append(rss_mib(server))
    states = {m["id"]: m["state"] for m in httpx.get(f"{server.root}/health").json()["models"]}
    assert (states["smol-a"], states["smol-b"]) == ("unloaded", "loaded")
    # Each switch frees the model it unloads: no growth with the number of switches.
    assert max(rss[3:]) < max(rss[:3]) + 48, rss


def test_a_request_in_flight_is_never_unloaded(server: Server) -> None:
    httpx.post(f"{server.base_url}/chat/completions", timeout=120,
               json={"model": "smol-a", "messages": USER, "max_tokens": 1})
    ended: dict[str, float] = {}
    other: dict[str, httpx.Response] = {}

    def ask_b() -> None:
        other["b"] = httpx.post(f"{server.base_url}/chat/completions", timeout=120,
                                json={"model": "smol-b", "messages": USER, "max_tokens": 4})
        ended["b"] = time.monotonic()

    tokens = 0
    with httpx.stream("POST", f"{server.base_url}/chat/completions", timeout=120,
                      json={"model": "smol-a", "messages": USER, "max_tokens": 24,
                            "ignore_eos": True, "stream": True}) as stream:
        lines = stream.iter_lines()
        thread = threading.Thread(target=ask_b)
        for line in lines:
            if not line.startswith("data: {"):
                continue
            chunk = json.loads(line[6:])
            tokens += sum(1 for c in chunk["choices"] if c["delta"].get("content") is not None)
            if tokens == 1:
                thread.start()  # smol-b needs a's place while a streams
            finish = chunk["choices"][0]["finish_reason"] if chunk["choices"] else None
        ended["a"] = time.monotonic()
    thread.join(timeout=120)
    assert finish == "length" and tokens == 24  # a streamed to its end, never cut off
    assert other["b"].status_code == 200 and other["b"].json()["model"] == "smol-b"
    assert ended["b"] > ended["a"]  # b waited for a's request to end, then took its place


def test_unknown_and_broken_models(server: Server, broken_file: Path) -> None:
    client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=USER, max_tokens=4)
    assert "smol-a, HuggingFaceTB/SmolLM2-135M-Instruct, smol-b, broken" in str(missing.value)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="broken", messages=USER, max_tokens=4)
    assert str(broken_file) in str(failed.value)
    reply = client.chat.completions.create(model="smol-b", messages=USER, max_tokens=4)
    assert reply.choices[0].message.content is not None  # the rest of the server serves
    health = httpx.get(f"{server.root}/health")
    assert health.status_code == 200
    broken = {m["id"]: m for m in health.json()["models"]}["broken"]
    assert broken["state"] == "failed" and str(broken_file) in broken["error"]


def test_the_only_model_failing_still_exits_1(broken_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "insieme", "serve", "--port", str(free_port()), "--model",
         str(broken_file)], capture_output=True, text=True, timeout=120,
        env={**os.environ})
    assert result.returncode == 1
    assert str(broken_file) in result.stderr.splitlines()[-1]
