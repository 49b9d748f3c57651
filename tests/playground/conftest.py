"""A live insieme server on the fake engine (and one on the bundled model), and a headless
Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, sync_playwright

from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from tests.conftest import InProcessServer, Server, start_real_server, stop_server

CHROMIUM = os.environ.get("INSIEME_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
API_KEY = "playground-test-key"

# Replies keyed by the last user message, so the README screenshot shows a real-looking chat.
REPLIES = {
    "What is insieme?": (
        "insieme is a self-hosted inference server: it runs a GGUF model on llama.cpp and "
        "speaks the Together and OpenAI APIs, so existing clients work unchanged."
    ),
    "How does streaming work?": (
        "Each token is sent the moment it is sampled, as one server-sent event: a data: line "
        "with a JSON chunk. This page reads the body as a stream, appends every delta here, "
        "and times the first token. Press Stop and the server cancels the sequence."
    ),
}
LONG_REPLY = " ".join(["This reply goes on and on so that there is time to stop it."] * 30)
DEFAULT_REPLY = "Hello! I am the scripted fake engine, streaming one word at a time for you."


def scripted_reply(prompt: str) -> str:
    last_user = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    if "long" in last_user.lower():
        return LONG_REPLY
    return REPLIES.get(last_user.strip(), DEFAULT_REPLY)


@dataclass
class LiveServer:
    """The in-process server the page talks to, and its engine (to see cancellations)."""

    url: str
    engine: FakeEngine
    api_key: str | None


@pytest.fixture(scope="module")
def live_server() -> Iterator[LiveServer]:
    engine = FakeEngine(scripted_reply, token_delay=0.05)
    with InProcessServer(engine, ServerConfig(api_key=API_KEY)) as server:
        yield LiveServer(server.root, engine, API_KEY)


@pytest.fixture(scope="module")
def real_model_server() -> Iterator[Server]:
    """`insieme serve` on the bundled model: the page as a user sees it (and the README)."""
    server = start_real_server("--threads", "1")
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
