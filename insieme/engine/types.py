"""Plain dataclasses the engine speaks: what a request asks for and what it yields."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class FinishReason(enum.StrEnum):
    STOP = "stop"  # end-of-generation token or a stop string
    LENGTH = "length"  # max_tokens or the context ran out
    ABORT = "abort"  # cancelled (client went away); never reaches a client
    ERROR = "error"  # the engine failed on this request


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Per-request sampling; defaults are llama-server's, except greedy when temperature is 0."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass(slots=True)
class GenerationRequest:
    """One prompt to complete ``n`` times.

    ``prompt_tokens`` is already tokenised (the API layer renders the chat template and
    tokenises through the engine, so it can check the length before queueing).
    """

    request_id: str
    prompt_tokens: list[int]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """The sampled token, as the seed's ``token`` field shows it."""

    id: int
    text: str
    logprob: float
    special: bool


@dataclass(frozen=True, slots=True)
class StepOutput:
    """What one sequence (choice ``index``) produced in one engine step.

    ``text`` is the new text safe to show (stop-string look-ahead already held back,
    never half a UTF-8 character); it may be empty while text is held back. On the last
    output of a choice ``finish_reason`` is set and the counters are final.
    """

    index: int
    token: TokenInfo | None
    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What the API layer needs to know about the loaded model."""

    path: str
    n_ctx_train: int
    max_model_len: int
    n_vocab: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: int
    waiting: int
    kv_cells_used: int = 0
    kv_cells_total: int = 0
