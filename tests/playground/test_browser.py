"""The playground in a real browser: headless Chromium, driven by Playwright, against a live
server on the fake engine (which streams one word every 50 ms)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Error, Page, Route, expect

from insieme.config import BUNDLED_MODEL_NAME
from tests.playground.conftest import API_KEY, REPLIES, LiveServer

# Records the length of the newest reply on every DOM change, to show it arrived in pieces.
RECORD_UPDATES = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const replies = document.querySelectorAll('.msg.assistant .content');
    const last = replies[replies.length - 1];
    if (last) window.__lengths.push(last.textContent.length);
  }).observe(document.getElementById('messages'),
             {childList: true, subtree: true, characterData: true});
}"""


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(5000)
    page = context.new_page()
    uncaught: list[Error] = []
    page.on("pageerror", lambda error: uncaught.append(error))
    yield page
    context.close()
    assert not uncaught, f"the page threw: {uncaught}"


def open_playground(page: Page, server: LiveServer, key: str | None = API_KEY) -> None:
    if key is not None:
        seed = f"localStorage.setItem('insieme.playground.apiKey', {json.dumps(key)})"
        page.add_init_script(seed)
    page.goto(server.url + "/")


def send(page: Page, text: str) -> None:
    page.locator("#prompt").fill(text)
    page.locator("#prompt").press("Enter")


def running(server: LiveServer) -> int:
    health = httpx.get(server.url + "/health", timeout=5).json()
    return int(health["running"])


def test_page_loads_asks_for_the_key_and_keeps_it(page: Page, live_server: LiveServer) -> None:
    open_playground(page, live_server, key=None)
    expect(page).to_have_title("insieme playground")
    # The server has keys and none was given: the page says so instead of failing silently.
    expect(page.locator(".error")).to_contain_text("rejected the API key (401)")

    page.locator("#api-key").fill(API_KEY)
    expect(page.locator("#model")).to_have_value(BUNDLED_MODEL_NAME)
    expect(page.locator(".error")).to_have_count(0)

    page.reload()
    expect(page.locator("#api-key")).to_have_value(API_KEY)
    expect(page.locator("#model")).to_have_value(BUNDLED_MODEL_NAME)
    # Everything the page loads comes from the server itself: no CDN.
    origin = live_server.url
    urls = page.evaluate("""() => [...document.querySelectorAll('[src], link[href]')]
                                  .map(e => e.src || e.href)""")
    assert urls and all(u.startswith(origin) or u.startswith("data:") for u in urls), urls


def test_enter_sends_and_shift_enter_adds_a_line(page: Page, live_server: LiveServer) -> None:
    open_playground(page, live_server)
    prompt = page.locator("#prompt")
    prompt.fill("line one")
    prompt.press("Shift+Enter")
    prompt.press_sequentially("line two")
    expect(prompt).to_have_value("line one\nline two")
    expect(page.locator(".msg")).to_have_count(0)
    prompt.press("Enter")
    expect(page.locator(".msg.user .content")).to_have_text("line one\nline two")
    expect(prompt).to_have_value("")
    expect(page.locator(".msg.assistant .meta")).to_contain_text("tok/s")
    page.locator("#new-chat").click()
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#empty")).to_be_visible()


def test_reply_streams_in_over_several_updates(
    page: Page, live_server: LiveServer, tmp_path: Path
) -> None:
    open_playground(page, live_server)
    expect(page.locator("#model")).to_have_value(BUNDLED_MODEL_NAME)
    page.locator("#system").fill("You are a concise assistant.")
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda r: bodies.append(r.post_data_json)
            if r.url.endswith("/v1/chat/completions") else None)

    send(page, "What is insieme?")
    first = page.locator(".msg.assistant").nth(0)
    expect(first.locator(".meta")).to_contain_text("tok/s")
    expect(first.locator(".content")).to_have_text(REPLIES["What is insieme?"])

    page.evaluate(RECORD_UPDATES)
    send(page, "How does streaming work?")
    second = page.locator(".msg.assistant").nth(1)
    page.wait_for_function(
        "() => document.querySelectorAll('.msg.assistant .content')[1]?.textContent.length > 110"
    )
    # Mid-stream, on the scripted engine; the README's picture is the real model's
    # (test_real_model.py).
    page.screenshot(path=str(tmp_path / "playground.png"), animations="disabled")
    expect(second).to_have_class("msg assistant streaming")  # the screenshot is mid-stream

    meta = second.locator(".meta")
    expect(meta).to_contain_text("tok/s", timeout=10000)
    expect(meta).to_contain_text("TTFT")
    expect(meta).to_contain_text("tokens")
    expect(second.locator(".content")).to_have_text(REPLIES["How does streaming work?"])
    lengths = page.evaluate("window.__lengths")
    growing = sorted(set(lengths))
    assert len(growing) >= 10, f"the reply arrived in {len(growing)} updates: {growing}"
    assert growing[-1] == len(REPLIES["How does streaming work?"])

    # Multi-turn: the second request carries the system prompt and the first exchange.
    assert [m["role"] for m in bodies[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert bodies[1]["messages"][2]["content"] == REPLIES["What is insieme?"]
    assert bodies[1]["stream"] is True and bodies[1]["model"] == BUNDLED_MODEL_NAME
    assert {"temperature", "top_p", "max_tokens"} <= bodies[1].keys()


def test_stop_ends_the_stream_and_the_server_cancels(page: Page, live_server: LiveServer) -> None:
    open_playground(page, live_server)
    send(page, "Tell me something long")
    reply = page.locator(".msg.assistant")
    page.wait_for_function(
        "() => document.querySelector('.msg.assistant .content')?.textContent.length > 40"
    )
    assert running(live_server) == 1
    aborted_before = len(live_server.engine.aborted)

    page.locator("#stop").click()
    expect(reply).not_to_have_class("msg assistant streaming", timeout=1000)
    expect(reply.locator(".meta")).to_contain_text("stopped")
    expect(page.locator("#send")).to_be_visible()
    expect(page.locator("#stop")).to_be_hidden()

    # The long reply would take 20 s: a sequence gone within 2 s was cancelled.
    deadline = time.monotonic() + 2
    while running(live_server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(live_server) == 0
    assert len(live_server.engine.aborted) == aborted_before + 1
    length = len(reply.locator(".content").text_content() or "")
    page.wait_for_timeout(300)
    assert len(reply.locator(".content").text_content() or "") == length


def test_wrong_key_shows_the_error(page: Page, live_server: LiveServer) -> None:
    open_playground(page, live_server, key="not-the-key")
    send(page, "hello")
    error = page.locator(".error")
    expect(error).to_contain_text("rejected the API key (401)")
    expect(error).to_contain_text("Invalid or missing API key")
    # Nothing was answered: the turn is taken back and the text returned for a retry.
    expect(page.locator(".msg")).to_have_count(0)
    expect(page.locator("#prompt")).to_have_value("hello")


@pytest.mark.parametrize(
    ("failure", "shown"),
    [
        ("server down", "Cannot reach the server"),
        ("queue full", "The server's queue is full (429)"),
    ],
)
def test_server_errors_are_shown_plainly(
    page: Page, live_server: LiveServer, failure: str, shown: str
) -> None:
    def answer(route: Route) -> None:
        if failure == "server down":
            route.abort("connectionrefused")
        else:
            body = {"error": {"message": "the server's queue is full; retry shortly",
                              "type": "rate_limit_error", "param": None, "code": "queue_full"}}
            route.fulfill(status=429, headers={"Retry-After": "3"}, json=body)

    open_playground(page, live_server)
    expect(page.locator("#model")).to_have_value(BUNDLED_MODEL_NAME)
    page.route("**/v1/chat/completions", answer)
    send(page, "hello")
    expect(page.locator(".error")).to_contain_text(shown)
    if failure == "queue full":
        expect(page.locator(".error")).to_contain_text("Try again in 3 s")
    expect(page.locator("#send")).to_be_visible()


def test_phone_sized_window(browser: Browser, live_server: LiveServer, tmp_path: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                                  has_touch=True, device_scale_factor=2)
    try:
        page = context.new_page()
        open_playground(page, live_server)
        expect(page.locator("#model")).to_have_value(BUNDLED_MODEL_NAME)
        settings = page.locator("#settings")
        toggle = page.locator("#settings-toggle")
        assert (settings.bounding_box() or {"x": 0})["x"] >= 390  # tucked away off-screen
        toggle.click()
        expect(toggle).to_have_attribute("aria-expanded", "true")
        page.wait_for_function("() => document.getElementById('settings')"
                               ".getBoundingClientRect().right <= window.innerWidth")
        toggle.click()
        send(page, "What is insieme?")
        expect(page.locator(".msg.assistant .meta")).to_contain_text("tok/s")
        composer = page.locator("#composer").bounding_box()
        assert composer is not None and composer["y"] + composer["height"] <= 844
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
        page.screenshot(path=str(tmp_path / "phone.png"))
    finally:
        context.close()
