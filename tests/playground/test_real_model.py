"""The playground on the real engine: headless Chromium chatting with `insieme serve` on the
bundled model. The README's picture is taken here, so it shows what the model really answers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Error, expect

from tests.conftest import MODEL, Server
from tests.playground.conftest import DEFAULT_REPLY, REPLIES

pytestmark = pytest.mark.model

# Rewritten only when asked (INSIEME_SCREENSHOT=1), so that a test run leaves the tree as it
# found it.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "playground.png"
QUESTION = "What are some fun things to do in New York?"
MAX_TOKENS = 80


def test_real_model_reply_is_the_greedy_api_answer(
    browser: Browser, real_model_server: Server, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5000)
    page = context.new_page()
    uncaught: list[Error] = []
    page.on("pageerror", lambda error: uncaught.append(error))
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda r: bodies.append(r.post_data_json)
            if r.url.endswith("/v1/chat/completions") else None)
    try:
        page.goto(real_model_server.root + "/")
        expect(page.locator("#model")).to_have_value(MODEL)
        page.locator("#temperature").fill("0")
        expect(page.locator("#temperature-value")).to_have_text("0.00")
        page.locator("#max-tokens").fill(str(MAX_TOKENS))
        page.locator("#prompt").fill(QUESTION)
        page.locator("#prompt").press("Enter")

        reply = page.locator(".msg.assistant")
        meta = reply.locator(".meta")
        expect(meta).to_contain_text("tok/s", timeout=120_000)  # shown once the reply ends
        expect(reply).to_have_class("msg assistant")  # no longer streaming
        expect(meta).to_contain_text("TTFT")
        shown = reply.locator(".content").text_content() or ""
        stats = meta.text_content() or ""
        shot = tmp_path / "playground.png"
        page.screenshot(path=str(shot), animations="disabled")
    finally:
        context.close()
    assert not uncaught, f"the page threw: {uncaught}"

    assert len(bodies) == 1
    sent = bodies[0]
    assert sent["temperature"] == 0 and sent["max_tokens"] == MAX_TOKENS and sent["stream"]
    assert sent["messages"] == [{"role": "user", "content": QUESTION}]
    # The same request without streaming: greedy decoding gives the same text, token for token.
    answer = httpx.post(f"{real_model_server.base_url}/chat/completions",
                        json={**sent, "stream": False}, timeout=120).json()
    expected = answer["choices"][0]["message"]["content"]
    assert len(shown.split()) >= 10, shown
    assert shown not in (DEFAULT_REPLY, *REPLIES.values())  # the real model, not the script
    assert shown == expected
    assert f"{answer['usage']['completion_tokens']} tokens" in stats, stats
    if os.environ.get("INSIEME_SCREENSHOT"):  # only a picture of a reply that passed
        shutil.copyfile(shot, SCREENSHOT)
