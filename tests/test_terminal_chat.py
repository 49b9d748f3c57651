"""`insieme chat` driven through a pseudo-terminal against an in-process server on the fake
engine (one word every 50 ms, so a reply visibly streams and can be stopped)."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pexpect
import pytest

from insieme.cli import main
from insieme.config import BUNDLED_MODEL_NAME, ServerConfig
from insieme.engine.fake import FakeEngine
from tests.conftest import InProcessServer

API_KEY = "chat-test-key"
PROMPT = "\n> "
LONG_REPLY = " ".join(["This reply goes on and on so that there is time to stop it."] * 30)


def reply_to(prompt: str) -> str:
    """Says what the server saw, so the tests can check history, lines and system prompt."""
    turns = prompt.count("<|im_start|>user\n")
    last = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    if "long" in last:
        return LONG_REPLY
    system = "yes" if "<|im_start|>system" in prompt else "no"
    lines = last.count("\n") + 1
    return (f"Reply number {turns}: {lines} line(s), system prompt {system}. "
            "This sentence goes on a little, so that the reply takes a while. Done.")


@dataclass
class ChatServer:
    base_url: str
    root: str
    engine: FakeEngine

    def running(self) -> int:
        return int(httpx.get(f"{self.root}/health", timeout=5).json()["running"])


@pytest.fixture(scope="module")
def server() -> Iterator[ChatServer]:
    engine = FakeEngine(reply_to, token_delay=0.05)
    with InProcessServer(engine, ServerConfig(api_key=API_KEY)) as live:
        yield ChatServer(f"{live.root}/v1", live.root, engine)


@pytest.fixture
def chat(server: ChatServer) -> Iterator[pexpect.spawn]:
    """`insieme chat` on a pseudo-terminal, at its first prompt."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith(("_API_KEY", "_BASE_URL"))}
    env.update(INSIEME_API_KEY=API_KEY, NO_COLOR="1", TERM="dumb")
    child = pexpect.spawn(
        sys.executable, ["-m", "insieme", "chat", "--base-url", server.base_url],
        env=env, encoding="utf-8", timeout=5, dimensions=(40, 200),
        # A terminal's Ctrl-C, even when the tests run in a background job (which starts with
        # SIGINT ignored, and a child would inherit that).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        child.expect_exact(f"insieme chat · {BUNDLED_MODEL_NAME}")
        child.expect_exact(PROMPT)
        yield child
    finally:
        child.close(force=True)


def say(child: pexpect.spawn, line: str) -> None:
    child.sendline(line)


def test_a_reply_streams_in(chat: pexpect.spawn) -> None:
    say(chat, "hello")
    chat.expect_exact("Reply number 1")
    first_word_at = time.monotonic()
    chat.expect_exact("Done.")
    # Fifteen more words at 50 ms each: printed all at once, this gap would be near zero.
    assert time.monotonic() - first_word_at > 0.3
    chat.expect(r"TTFT \d+ ms · 22 tokens · [\d.]+ tok/s")
    chat.expect_exact(PROMPT)


def test_the_conversation_is_kept_until_reset(chat: pexpect.spawn) -> None:
    say(chat, "one")
    chat.expect_exact("Reply number 1:")
    chat.expect_exact(PROMPT)
    say(chat, "two")
    chat.expect_exact("Reply number 2:")
    chat.expect_exact(PROMPT)
    say(chat, "/reset")
    chat.expect_exact("Conversation cleared.")
    say(chat, "three")
    chat.expect_exact("Reply number 1:")


def test_ctrl_c_stops_the_reply_and_not_the_chat(
    chat: pexpect.spawn, server: ChatServer
) -> None:
    aborted_before = len(server.engine.aborted)
    say(chat, "tell me something long")
    chat.expect_exact("so that there is time")
    assert server.running() == 1
    chat.sendintr()
    chat.expect_exact("stopped")
    chat.expect_exact(PROMPT)
    # The long reply would take 20 s: gone within 2 s means the server cancelled it.
    deadline = time.monotonic() + 2
    while server.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.running() == 0
    assert len(server.engine.aborted) == aborted_before + 1
    # Still chatting, and the stopped turn is part of the conversation.
    say(chat, "and now?")
    chat.expect_exact("Reply number 2:")
    assert chat.isalive()


def test_system_prompt_and_multi_line_messages(chat: pexpect.spawn) -> None:
    say(chat, "/system Answer briefly.")
    chat.expect_exact("System prompt set.")
    say(chat, "first line\\")
    say(chat, "second line")
    chat.expect_exact("2 line(s), system prompt yes.")
    chat.expect_exact(PROMPT)
    for line in ['"""', "a", "b", "c", '"""']:
        say(chat, line)
    chat.expect_exact("3 line(s), system prompt yes.")
    chat.expect_exact(PROMPT)
    say(chat, "/system")
    chat.expect_exact("System prompt removed.")
    say(chat, "hi")
    chat.expect_exact("system prompt no.")


def test_model_command(chat: pexpect.spawn) -> None:
    say(chat, "/model")
    chat.expect_exact(f"* {BUNDLED_MODEL_NAME}")
    say(chat, "/model nope/nothing")
    chat.expect_exact("nope/nothing is not served here")
    say(chat, "/help")
    chat.expect_exact("/reset")


@pytest.mark.parametrize("leave", ["eof", "ctrl-c", "/exit"])
def test_leaving_at_the_prompt(chat: pexpect.spawn, leave: str) -> None:
    if leave == "eof":
        chat.sendeof()
    elif leave == "ctrl-c":
        chat.sendintr()
    else:
        say(chat, leave)
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_unreachable_server_is_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    assert main(["chat", "--base-url", f"http://127.0.0.1:{port}/v1"]) == 1
    err = capsys.readouterr().err
    assert f"cannot reach the server at http://127.0.0.1:{port}/v1" in err
    assert "insieme serve" in err


def test_wrong_key_is_a_clear_message(
    server: ChatServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("INSIEME_API_KEY", raising=False)
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    assert main(["chat", "--base-url", server.base_url, "--api-key", "wrong"]) == 1
    err = capsys.readouterr().err
    assert "401" in err and "Invalid or missing API key" in err and "--api-key" in err
