"""``insieme chat``: a terminal chat with a running insieme (or any Together/OpenAI) server.

A plain ``input()`` loop, with readline editing where Python has it. Replies stream as they are
generated and the conversation is kept until ``/reset``. Ctrl-C during a reply closes the
connection, which is what makes the server cancel the sequence, and returns to the prompt.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import httpx
from rich.console import Console

try:  # line editing and history for input(); absent on some platforms
    import readline  # noqa: F401
except ImportError:  # pragma: no cover
    pass

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
PROMPT = "> "
CONTINUATION = "... "
FENCE = '"""'

HELP = f"""\
Commands:
  /system TEXT   set the system prompt (/system alone removes it)
  /reset         forget the conversation (the system prompt stays)
  /model NAME    talk to another model (/model alone lists the server's models)
  /help          show this help
  /exit          leave (so do Ctrl-D and Ctrl-C at the prompt)
Multi-line messages: end a line with \\ to go on to the next one, or type {FENCE} on a line
of its own, then the message, then {FENCE} again to send it.
Start a message with // to send it as text beginning with /.
Ctrl-C while a reply streams stops it and keeps the part that arrived."""


def add_chat_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``insieme chat`` to the CLI."""
    p = sub.add_parser("chat", help="chat with a running server in the terminal",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default=None,
                   help="the server's API root (default: INSIEME_BASE_URL, TOGETHER_BASE_URL "
                        f"or {DEFAULT_BASE_URL})")
    p.add_argument("--model", default=None, help="default: the first model the server lists")
    p.add_argument("--api-key", default=None,
                   help="the server's key (default: INSIEME_API_KEY or TOGETHER_API_KEY)")
    p.add_argument("--system", default=None, help="a system prompt to start with")
    p.add_argument("--temperature", type=float, default=None)
    p.add_argument("--max-tokens", type=int, default=None)
    p.set_defaults(handler=run_chat)


def base_url_from(value: str | None) -> str:
    """The API root: flag, then environment, then the local default; a bare host gets /v1."""
    url = (value or os.environ.get("INSIEME_BASE_URL") or os.environ.get("TOGETHER_BASE_URL")
           or DEFAULT_BASE_URL).rstrip("/")
    return url if httpx.URL(url).path not in ("", "/") else url + "/v1"


@dataclass(slots=True)
class ReplyStats:
    """How one reply went, for the line printed under it."""

    started: float
    first_token: float | None = None
    ended: float = 0.0
    chunks: int = 0
    completion_tokens: int | None = None
    finish_reason: str | None = None
    stopped: bool = False

    def summary(self) -> str:
        parts = []
        if self.first_token is not None:
            ttft = self.first_token - self.started
            parts.append(f"TTFT {ttft * 1000:.0f} ms" if ttft < 1 else f"TTFT {ttft:.2f} s")
            tokens = self.completion_tokens if self.completion_tokens is not None else self.chunks
            parts.append(f"{tokens} token{'s' if tokens != 1 else ''}")
            decode = self.ended - self.first_token
            if tokens > 1 and decode > 0:
                # Decode speed: the tokens after the first, over the time since the first.
                parts.append(f"{(tokens - 1) / decode:.1f} tok/s")
        if self.finish_reason == "length":
            parts.append("max tokens reached")
        if self.stopped:
            parts.append("stopped")
        return " · ".join(parts)


def _error_message(response: httpx.Response) -> str:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text.strip() or response.reason_phrase
    hint = ""
    if response.status_code == 401:
        hint = " (pass --api-key, or set INSIEME_API_KEY or TOGETHER_API_KEY)"
    elif response.status_code == 429:
        hint = f" (retry in {response.headers.get('retry-after', 'a few')} s)"
    return f"the server answered {response.status_code}: {message}{hint}"


class ChatSession:
    """One conversation with one server: history, system prompt, model and sampling."""

    def __init__(self, base_url: str, api_key: str | None, console: Console, *,
                 system: str | None = None, temperature: float | None = None,
                 max_tokens: int | None = None) -> None:
        self.base_url = base_url
        self.api_key = api_key
        self.console = console
        self.system = system
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.model = ""
        self.history: list[dict[str, str]] = []
        self.client = self._connect()

    def _connect(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return httpx.Client(base_url=self.base_url, headers=headers,
                            timeout=httpx.Timeout(10.0, read=600.0))

    def close(self) -> None:
        self.client.close()

    def unreachable(self) -> str:
        return f"cannot reach the server at {self.base_url} (is `insieme serve` running?)"

    def models(self) -> list[str]:
        """The served model ids; raises httpx errors for the caller to word."""
        response = self.client.get("models")
        if response.status_code != 200:
            raise httpx.HTTPStatusError(_error_message(response), request=response.request,
                                        response=response)
        body = response.json()
        cards = body if isinstance(body, list) else body.get("data", [])
        return [card["id"] for card in cards]

    def request_body(self) -> dict[str, Any]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        body: dict[str, Any] = {"model": self.model, "messages": system + self.history,
                                "stream": True}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body

    def ask(self, text: str) -> None:
        """Send one user message and stream the reply to the terminal."""
        turn = {"role": "user", "content": text}
        self.history.append(turn)
        stats = ReplyStats(started=time.perf_counter())
        pieces: list[str] = []
        problem = None
        try:
            problem = self._stream(stats, pieces)
        except KeyboardInterrupt:
            stats.stopped = True
            # The half-read connection must not go back to the pool: start afresh.
            self.client.close()
            self.client = self._connect()
        except httpx.ConnectError:
            problem = self.unreachable()
        except httpx.HTTPError as exc:
            problem = f"the connection to the server broke: {exc or type(exc).__name__}"
        stats.ended = time.perf_counter()
        text_out = "".join(pieces)
        if text_out:
            if not text_out.endswith("\n"):
                self.console.file.write("\n")
            # A stopped reply keeps what arrived, so the conversation stays consistent.
            self.history.append({"role": "assistant", "content": text_out})
            self.console.print(stats.summary(), style="dim", markup=False)
        else:
            self.history.remove(turn)
            if stats.stopped:
                self.console.print("stopped before the first token", style="dim")
        if problem:
            self.console.print(f"error: {problem}", style="red", markup=False)

    def _stream(self, stats: ReplyStats, pieces: list[str]) -> str | None:
        with self.client.stream("POST", "chat/completions", json=self.request_body()) as response:
            if response.status_code != 200:
                response.read()
                return _error_message(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators and ": ping" comments
                data = line[5:].strip()
                if data == "[DONE]":
                    return None
                chunk = json.loads(data)
                if "error" in chunk:
                    return f"the server stopped the reply: {chunk['error'].get('message')}"
                choices = chunk.get("choices") or []
                piece = (choices[0].get("delta") or {}).get("content") if choices else None
                if piece:
                    stats.first_token = stats.first_token or time.perf_counter()
                    stats.chunks += 1
                    pieces.append(piece)
                    self.console.file.write(piece)
                    self.console.file.flush()
                if choices and choices[0].get("finish_reason"):
                    stats.finish_reason = choices[0]["finish_reason"]
                if chunk.get("usage"):
                    stats.completion_tokens = chunk["usage"].get("completion_tokens")
        return "the server ended the stream before the reply finished"

    def command(self, line: str) -> bool:
        """Run a /command; False means leave."""
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        say = self.console.print
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            say(HELP, markup=False, highlight=False)
        elif name == "/reset":
            self.history.clear()
            say("Conversation cleared.", style="dim")
        elif name == "/system":
            self.system = arg or None
            say("System prompt set." if arg else "System prompt removed.", style="dim")
        elif name == "/model":
            self._switch_model(arg)
        else:
            say(f"Unknown command {name}: /help lists them.", style="red", markup=False)
        return True

    def _switch_model(self, name: str) -> None:
        try:
            served = self.models()
        except httpx.ConnectError:
            served = []
            self.console.print(f"error: {self.unreachable()}", style="red", markup=False)
        except httpx.HTTPError as exc:
            served = []
            self.console.print(f"error: {exc}", style="red", markup=False)
        if not name:
            for model in served:
                mark = "*" if model == self.model else " "
                self.console.print(f" {mark} {model}", markup=False)
            return
        if served and name not in served:
            self.console.print(f"{name} is not served here; try one of: {', '.join(served)}",
                               style="red", markup=False)
            return
        self.model = name
        self.console.print(f"Now talking to {name}.", style="dim", markup=False)


def read_message() -> str:
    """One message from the prompt: a line, lines joined by a trailing \\, or a fenced block."""
    line = input(PROMPT)
    if line.strip() == FENCE:
        lines = []
        while (line := input(CONTINUATION)).strip() != FENCE:
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = input(CONTINUATION)
    lines.append(line)
    return "\n".join(lines)


def run_chat(args: argparse.Namespace) -> int:
    """The ``insieme chat`` command."""
    console = Console(highlight=False, soft_wrap=True)
    errors = Console(stderr=True, highlight=False, soft_wrap=True)
    api_key = (args.api_key or os.environ.get("INSIEME_API_KEY")
               or os.environ.get("TOGETHER_API_KEY"))
    session = ChatSession(base_url_from(args.base_url), api_key, console, system=args.system,
                          temperature=args.temperature, max_tokens=args.max_tokens)
    try:
        try:
            served = session.models()
        except httpx.ConnectError:
            errors.print(f"insieme chat: {session.unreachable()}", style="red", markup=False)
            return 1
        except httpx.HTTPError as exc:
            if args.model is None or (isinstance(exc, httpx.HTTPStatusError)
                                      and exc.response.status_code == 401):
                errors.print(f"insieme chat: {exc}", style="red", markup=False)
                return 1
            served = []
        if not served and args.model is None:
            errors.print("insieme chat: the server lists no models", style="red")
            return 1
        session.model = args.model or served[0]
        console.print(f"insieme chat · {session.model} at {session.base_url}", style="bold",
                      markup=False)
        console.print("Type /help for commands. Ctrl-C stops a reply; Ctrl-D leaves.",
                      style="dim")
        return _loop(session)
    finally:
        session.close()


def _loop(session: ChatSession) -> int:
    while True:
        try:
            text = read_message()
        except (EOFError, KeyboardInterrupt):
            session.console.print()
            return 0
        if not text.strip():
            continue
        if text.startswith("/") and not text.startswith("//"):
            if not session.command(text.strip()):
                return 0
            continue
        session.ask(text[1:] if text.startswith("//") else text)
