"""Plain dataclasses the engine speaks: what a request asks for and what it yields."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from insieme.engine.constraints import Constraint


class EngineState(enum.StrEnum):
    """Where an engine is in its life: it serves only while ``READY``."""

    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"  # the model did not load, or the engine died; ``failure`` says why
    DRAINING = "draining"  # shutting down: the requests running finish, no new ones
    STOPPED = "stopped"


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
    # What the output must be (a JSON schema, a choice, a tool call...): sampling only ever
    # picks tokens that keep it possible. Backend-neutral; each backend compiles it.
    constraint: Constraint | None = None
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, added to its logit)
    # None: no logprob extras. k >= 0: each token carries its piece and the k most likely
    # alternatives (raw logits, before any sampler), at the cost of a top-k per token.
    logprobs: int | None = None
    # echo: the first output of choice 0 carries the prompt tokens; prompt_logprobs (k >= 0)
    # scores them too, with k alternatives each.
    echo: bool = False
    prompt_logprobs: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0

    @property
    def plain_greedy(self) -> bool:
        """The most likely raw logit, nothing between: no bias, penalty or constraint."""
        return (self.greedy and not self.logit_bias and self.constraint is None
                and self.repetition_penalty == 1.0 and not self.frequency_penalty
                and not self.presence_penalty)


@dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A conversation rendered with the chat template: ``text`` as rendered (what ``echo``
    shows) and its ``tokens``, in which only the template's own markup is special tokens."""

    text: str
    tokens: list[int]


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
    # False when the client sees nothing before the whole answer (not ``stream``): a backend
    # that loses the request half-way (a Ray replica died) may then run it again elsewhere.
    streamed: bool = True


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One of the most likely tokens at a position, with its log probability."""

    id: int
    piece: bytes  # the token's own bytes (a special token's text spelled out)
    logprob: float


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """The sampled token, as the seed's ``token`` field shows it.

    ``piece`` and ``top_logprobs`` are filled only when the request asked for logprobs.
    """

    id: int
    text: str
    logprob: float
    special: bool
    piece: bytes = b""
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class PromptToken:
    """A prompt token for ``echo``; ``logprob`` is None for the first one, or when unscored."""

    id: int
    piece: bytes
    logprob: float | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


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
    prompt: tuple[PromptToken, ...] | None = None  # echo: on the first output of choice 0
    queue_seconds: float | None = None  # on the last output: arrival to first KV slot


class Capability(enum.StrEnum):
    """What a backend can do beyond plain generation."""

    TOOLS = "tools"  # tool calls (the prompt and, with a constraint, the call itself)
    LOGPROBS = "logprobs"  # per-token logprobs and top alternatives
    PROMPT_LOGPROBS = "prompt_logprobs"  # echo with the prompt scored
    CONSTRAINTS = "constraints"  # JSON schema, JSON object, choice, tool-call constraints
    REGEX = "regex"  # the Regex constraint
    EMBEDDINGS = "embeddings"  # a vector per input (``Engine.embed``)
    RERANK = "rerank"  # a relevance score per document for a query (``Engine.rerank``)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What every backend can say about the model it serves."""

    name: str  # the model's own name (the API serves it under its configured names)
    max_model_len: int  # prompt plus completion, in tokens
    n_vocab: int
    max_num_seqs: int  # sequences it decodes at once: the largest ``n``
    capabilities: frozenset[Capability] = frozenset()
    embedding_size: int = 0  # the length of ``embed``'s vectors; 0 without EMBEDDINGS


@dataclass(frozen=True, slots=True)
class Embedded:
    """``Engine.embed``'s answer: one vector per input, in order, and the tokens they took."""

    vectors: list[list[float]]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class Scored:
    """``Engine.rerank``'s answer: each document's relevance to the query, between 0 and 1
    (higher is more relevant), in the documents' order, and the tokens it took."""

    scores: list[float]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """One replica of an engine spread over machines (the Ray backend): who and where it is,
    whether it answers, and its own gauges."""

    replica: str
    node: str
    pid: int
    state: str  # "ready", "loading", "failed", "unreachable" (no report for seconds)
    running: int = 0
    waiting: int = 0
    kv_cells_used: int = 0
    kv_cells_total: int = 0
    served: int = 0  # requests its engine has taken since it started


@dataclass(frozen=True, slots=True)
class EngineStats:
    running: int
    waiting: int
    kv_cells_used: int = 0  # running sequences and cached prefixes
    kv_cells_total: int = 0
    kv_sequences: int = 0  # sequences that hold KV cells now (0 when idle)
    open_requests: int = 0  # requests the engine still tracks (0 when idle)
    # Speculative decoding, since start: drafts verified, tokens drafted, drafted tokens kept.
    spec_drafts: int = 0
    spec_draft_tokens: int = 0
    spec_accepted_tokens: int = 0
    # An engine made of replicas: each one's state and gauges (the fields above are sums).
    replicas: tuple[ReplicaStats, ...] = ()
