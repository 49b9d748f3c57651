"""What a benchmark measures and how: one frozen, self-checking dataclass."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from insieme.bench.metrics import Slo
from insieme.bench.prompts import Messages, Prompt, as_prompt, builtin_prompts
from insieme.errors import ConfigError

DEFAULT_CONCURRENCY = (1, 4, 16)
DATASETS = ("builtin", "random", "multi-turn", "grounded", "jsonl")


@dataclass(frozen=True, slots=True)
class Level:
    """One load level: a closed loop of ``concurrency`` clients, or (``request_rate`` set)
    open-loop arrivals at that many requests/s, capped at ``concurrency`` in flight if set."""

    concurrency: int | None = None
    request_rate: float | None = None  # math.inf: every request at once

    @property
    def open_loop(self) -> bool:
        return self.request_rate is not None

    @property
    def name(self) -> str:
        if self.request_rate is None:
            return f"concurrency {self.concurrency}"
        cap = f" (max {self.concurrency})" if self.concurrency is not None else ""
        return f"rate {format_rate(self.request_rate)}{cap}"


def format_rate(rate: float) -> str:
    """``2 req/s``, ``0.5 req/s``, or ``inf`` (all at once)."""
    return "inf" if math.isinf(rate) else f"{rate:g} req/s"


@dataclass(frozen=True, slots=True)
class BenchSettings:
    """What to measure and how; checks itself (bad values raise ``ConfigError``).

    The load is a closed loop per ``concurrency`` level (the default), or open-loop Poisson
    arrivals per ``request_rate`` level; ``requests`` are sent per level either way.
    """

    base_url: str
    model: str
    concurrency: tuple[int, ...] | None = None  # closed-loop levels; None: 1,4,16
    requests: int = 64  # per level
    max_tokens: int = 128  # for requests whose dataset sets none
    temperature: float = 0.0
    api_key: str | None = None
    prompts: tuple[Messages | Prompt, ...] = field(
        default_factory=lambda: tuple(builtin_prompts()))  # the builtin and jsonl datasets
    prompts_source: str = "built-in"
    label: str | None = None  # names the server in tables and plots
    timeout: float = 300.0  # seconds without a byte before a request fails
    ignore_eos: bool = False  # an extension (vLLM, llama-server); other servers ignore it
    request_rate: tuple[float, ...] | None = None  # open-loop levels, requests/s
    max_concurrency: int | None = None  # open loop: at most this many requests in flight
    seed: int = 0  # arrivals and generated datasets
    dataset: str = "builtin"
    random_input_len: int = 256
    random_output_len: int = 128
    random_range_ratio: float = 0.0
    turns: int = 4  # multi-turn: requests per conversation
    context_words: int = 0  # multi-turn: words of each conversation's own document
    system_prompt: bool = True  # multi-turn: conversations open with the shared system prompt
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None

    def __post_init__(self) -> None:
        url = self.base_url.strip().rstrip("/")
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise ConfigError(f"--base-url must be an http(s) URL, not {self.base_url!r}")
        object.__setattr__(self, "base_url", url)
        if not self.model:
            raise ConfigError("--model must name the model to request")
        if self.request_rate is not None:
            self._check_open_loop()
        else:
            self._check_closed_loop()
        if self.max_tokens < 1:
            raise ConfigError("--max-tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise ConfigError("--temperature must be between 0 and 2")
        if not self.timeout > 0:
            raise ConfigError("--timeout must be positive")
        if not self.prompts:
            raise ConfigError("there are no prompts to send")
        self._check_dataset()
        for flag, slo in (("--slo-ttft", self.slo_ttft_ms), ("--slo-tpot", self.slo_tpot_ms)):
            if slo is not None and not (slo > 0 and math.isfinite(slo)):
                raise ConfigError(f"{flag} must be a positive number of milliseconds, not {slo}")

    def _check_open_loop(self) -> None:
        if self.concurrency is not None:
            raise ConfigError("--request-rate (open loop) and --concurrency (closed loop) are "
                              "two ways to load the server: give one of them")
        if not self.request_rate or not all(rate > 0 for rate in self.request_rate):
            raise ConfigError("--request-rate needs one or more rates in requests/s, each more "
                              "than 0 (inf sends every request at once)")
        object.__setattr__(self, "request_rate", tuple(sorted(set(self.request_rate))))
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ConfigError("--max-concurrency must be at least 1")
        if self.requests < 1:
            raise ConfigError("--requests must be at least 1")

    def _check_closed_loop(self) -> None:
        if self.max_concurrency is not None:
            raise ConfigError("--max-concurrency caps the open loop (--request-rate); in the "
                              "closed loop, --concurrency is the number in flight")
        levels = DEFAULT_CONCURRENCY if self.concurrency is None else self.concurrency
        if not levels or min(levels) < 1:
            raise ConfigError("--concurrency needs one or more levels, each at least 1")
        # Sorted and unique, so tables and plots read left to right.
        object.__setattr__(self, "concurrency", tuple(sorted(set(levels))))
        if self.requests < max(levels):
            raise ConfigError(
                f"--requests ({self.requests}) must be at least the highest --concurrency "
                f"({max(levels)}), or some clients would never send one"
            )

    def _check_dataset(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"--dataset must be one of {', '.join(DATASETS)}, "
                              f"not {self.dataset!r}")
        if self.dataset == "jsonl" and self.prompts_source == "built-in":
            raise ConfigError("--dataset jsonl needs --prompts FILE.jsonl")
        if self.random_input_len < 1 or self.random_output_len < 1:
            raise ConfigError("--random-input-len and --random-output-len must be at least 1")
        if not 0.0 <= self.random_range_ratio < 1.0:
            raise ConfigError("--random-range-ratio must be at least 0 and less than 1, "
                              f"not {self.random_range_ratio}")
        if self.turns < 1:
            raise ConfigError("--turns must be at least 1")
        if self.context_words < 0:
            raise ConfigError("--context-words must be 0 or more")
        if self.dataset != "multi-turn":
            return
        if self.requests % self.turns:
            raise ConfigError(f"--requests ({self.requests}) must be a multiple of --turns "
                              f"({self.turns}): each conversation sends --turns requests")
        conversations = self.requests // self.turns
        if self.concurrency and conversations < max(self.concurrency):
            raise ConfigError(
                f"--requests / --turns ({conversations} conversations) must be at least the "
                f"highest --concurrency ({max(self.concurrency)}): a conversation has one "
                "request in flight at a time")

    @property
    def open_loop(self) -> bool:
        return self.request_rate is not None

    @property
    def levels(self) -> tuple[Level, ...]:
        """The levels to run, in order."""
        if self.request_rate is not None:
            return tuple(Level(self.max_concurrency, rate) for rate in self.request_rate)
        return tuple(Level(c) for c in self.concurrency or ())

    @property
    def slo(self) -> Slo | None:
        if self.slo_ttft_ms is None and self.slo_tpot_ms is None:
            return None
        return Slo(self.slo_ttft_ms, self.slo_tpot_ms)

    def dataset_params(self) -> dict[str, Any]:
        """The parameters that, with the seed, make the dataset again."""
        if self.dataset == "random":
            return {"input_len": self.random_input_len, "output_len": self.random_output_len,
                    "range_ratio": self.random_range_ratio}
        if self.dataset == "multi-turn":
            return {"turns": self.turns, "conversations": self.requests // self.turns,
                    "context_words": self.context_words, "system_prompt": self.system_prompt}
        if self.dataset in ("builtin", "jsonl"):
            return {"source": self.prompts_source, "prompt_count": len(self.prompts)}
        return {}

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def prompt_at(self, index: int) -> Prompt:
        """The index-th of ``prompts``, used in turn."""
        return as_prompt(self.prompts[index % len(self.prompts)])

    def payload(self, index: int, max_tokens: int | None = None) -> dict[str, Any]:
        """The request body for the index-th of ``prompts``."""
        prompt = self.prompt_at(index)
        return self.body(prompt.messages, max_tokens or prompt.max_tokens, prompt.ignore_eos)

    def body(self, messages: Messages, max_tokens: int | None = None,
             ignore_eos: bool = False) -> dict[str, Any]:
        """A streamed chat request for ``messages`` (``max_tokens`` None: ``--max-tokens``)."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in messages],
            "max_tokens": max_tokens or self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos or ignore_eos:
            body["ignore_eos"] = True
        return body
