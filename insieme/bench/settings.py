"""What a benchmark measures and how: one frozen, self-checking dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from insieme.bench.prompts import Messages, builtin_prompts
from insieme.errors import ConfigError


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """What to measure and how; checks itself (bad values raise ``ConfigError``)."""

    base_url: str
    model: str
    concurrency: tuple[int, ...] = (1, 4, 16)
    requests: int = 64  # per concurrency level
    max_tokens: int = 128
    temperature: float = 0.0
    api_key: str | None = None
    prompts: tuple[Messages, ...] = field(default_factory=lambda: tuple(builtin_prompts()))
    prompts_source: str = "built-in"
    label: str | None = None  # names the server in tables and plots
    timeout: float = 300.0  # seconds without a byte before a request fails
    ignore_eos: bool = False  # an extension (vLLM, llama-server); other servers ignore it

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(f"--base-url must be an http(s) URL, not {self.base_url!r}")
        object.__setattr__(self, "base_url", url)
        if not self.model:
            raise ConfigError("--model must name the model to request")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ConfigError("--concurrency needs one or more levels, each at least 1")
        # Sorted and unique, so tables and plots read left to right.
        object.__setattr__(self, "concurrency", tuple(sorted(set(self.concurrency))))
        if self.requests < max(self.concurrency):
            raise ConfigError(
                f"--requests ({self.requests}) must be at least the highest --concurrency "
                f"({max(self.concurrency)}), or some clients would never send one"
            )
        if self.max_tokens < 1:
            raise ConfigError("--max-tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError("--temperature must be between 0 and 2")
        if self.timeout <= 0:
            raise ConfigError("--timeout must be positive")
        if not self.prompts:
            raise ConfigError("there are no prompts to send")

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def payload(self, index: int, max_tokens: int | None = None) -> dict[str, Any]:
        """The request body for the index-th request (prompts are used in turn)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in self.prompts[index % len(self.prompts)]],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        return body
