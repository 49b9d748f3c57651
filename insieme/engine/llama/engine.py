"""The llama.cpp engine behind the ``Engine`` interface: loads the model off the event loop,
runs ``EngineCore`` on its own thread, and hands each request's outputs to its stream."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from insieme.config import MAX_DEFAULT_MODEL_LEN, EngineConfig
from insieme.engine import tool_prompt
from insieme.engine.chat_template import ChatTemplate
from insieme.engine.llama.core import EngineCore
from insieme.engine.llama.grammar import compile_constraint
from insieme.engine.llama.pooling import model_pooling
from insieme.engine.llama.retrieval import Retrieval
from insieme.engine.llama.runtime import ContextShape, LlamaRuntime
from insieme.engine.llama.speculation import SpeculationConfig
from insieme.engine.states import EngineLife
from insieme.engine.stream import RequestStream
from insieme.engine.types import (
    Capability,
    ChatPrompt,
    Embedded,
    EngineState,
    EngineStats,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Scored,
    StepOutput,
)
from insieme.errors import ConfigError, InvalidRequestError, QueueFullError

log = logging.getLogger("insieme.engine")

CAPABILITIES = frozenset({Capability.TOOLS, Capability.LOGPROBS, Capability.PROMPT_LOGPROBS,
                          Capability.CONSTRAINTS, Capability.REGEX})


def max_model_len_for(config: EngineConfig, n_ctx_train: int) -> int:
    return config.max_model_len or min(n_ctx_train, MAX_DEFAULT_MODEL_LEN)


def context_shape(config: EngineConfig, n_ctx_train: int) -> ContextShape:
    """The context for a model trained on ``n_ctx_train`` tokens.

    By default every sequence id gets a stream of max_model_len cells (like llama-server
    with -np): a sequence's output does not depend on what else is in the batch, and it never
    runs out of cells. With kv_unified all sequences share one pool, which may be smaller
    than max_num_seqs x max_model_len; the scheduler then preempts when it runs short.
    """
    max_model_len = max_model_len_for(config, n_ctx_train)
    if config.kv_unified:
        cells = config.kv_cache_tokens or max(max_model_len, 1024 * config.max_num_seqs)
        if cells < max_model_len:
            raise ConfigError("--kv-cache-tokens must be at least --max-model-len")
    else:
        if config.kv_cache_tokens:
            raise ConfigError("--kv-cache-tokens sizes the shared pool of --kv-unified; "
                              "without it each sequence gets --max-model-len cells")
        cells = max_model_len * config.max_num_seqs
    return ContextShape(
        n_ctx=cells,
        n_batch=max(config.max_num_batched_tokens, config.max_num_seqs),
        n_seq_max=config.max_num_seqs,
        n_threads=config.threads,
        kv_unified=config.kv_unified,
    )


def _with_bos(runtime: LlamaRuntime, tokens: list[int]) -> list[int]:
    # A BOS when the model wants one, unless the prompt starts with it already (a template
    # that writes bos_token, a raw prompt that spells it): never two.
    if runtime.add_bos and tokens[:1] != [runtime.bos_id]:
        tokens.insert(0, runtime.bos_id)
    return tokens


def prompt_tokens(runtime: LlamaRuntime, text: str, *, add_special: bool = True) -> list[int]:
    """A raw prompt's tokens, special token text parsed (its caller wrote the whole prompt),
    with ``add_special`` a BOS first when the model wants one."""
    tokens = runtime.tokenize(text, add_special=False)
    return _with_bos(runtime, tokens) if add_special else tokens


def chat_prompt(runtime: LlamaRuntime, template: ChatTemplate, messages: list[dict[str, Any]],
                tools: list[dict[str, Any]] | None = None) -> ChatPrompt:
    """A conversation rendered and tokenised: only the template's own markup becomes special
    tokens, whatever the messages and tools spell; a BOS first when the model wants one."""
    messages, tools = tool_prompt.prepare(template, messages, tools)
    marked = template.render_marked(messages, tools=tools)
    tokens = runtime.tokenize_marked(marked.text, marked.markup)
    return ChatPrompt(marked.text, _with_bos(runtime, tokens))


class LlamaEngine(EngineLife):
    """Continuous-batching llama.cpp engine; see ``insieme.engine.llama.core`` for the loop."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.info = ModelInfo(name=os.path.basename(config.model_path),
                              max_model_len=config.max_model_len or 0, n_vocab=0,
                              max_num_seqs=config.max_num_seqs, capabilities=CAPABILITIES)
        self._runtime: LlamaRuntime | None = None
        self._core: EngineCore | None = None
        self._template: ChatTemplate | None = None
        self._retrieval: Retrieval | None = None  # embeddings and rerank, on their own thread
        self._streams: dict[str, RequestStream] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._load_task: asyncio.Task[None] | None = None
        self.state = EngineState.LOADING
        self.failure: str | None = None  # why, once the state is FAILED

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Begin loading; the server answers /health with 503 until the model is ready."""
        self._loop = asyncio.get_running_loop()  # outputs are handed over to this loop
        await super().start()

    async def _load(self) -> None:
        try:
            runtime, info, template, retrieval = await asyncio.to_thread(self._load_blocking)
        except Exception as exc:
            self.state = EngineState.FAILED
            self.failure = f"could not load {self.config.model_path}: {exc}"
            log.error("%s", self.failure)
            raise ConfigError(self.failure) from exc
        self._runtime = runtime
        self.info = info
        self._template = template
        self._retrieval = retrieval
        core = EngineCore(
            runtime,
            max_num_seqs=self.config.max_num_seqs,
            token_budget=max(self.config.max_num_batched_tokens, self.config.max_num_seqs),
            long_prefill_threshold=self.config.long_prefill_token_threshold,
            long_prefill_chunk=self.config.long_prefill_chunk,
            max_model_len=info.max_model_len,
            prefix_caching=self.config.enable_prefix_caching,
            speculation=None if self.config.speculative == "off" else SpeculationConfig(
                num_speculative_tokens=self.config.num_speculative_tokens,
                prompt_lookup_max=self.config.prompt_lookup_max,
                prompt_lookup_min=self.config.prompt_lookup_min),
            emit=self._emit,
            on_death=self._on_death,
        )
        core.start()
        self._core = core
        self.state = EngineState.READY

    def _load_blocking(self) -> tuple[LlamaRuntime, ModelInfo, ChatTemplate, Retrieval]:
        config = self.config
        runtime = LlamaRuntime(config.model_path, lambda n_train: context_shape(config, n_train))
        max_model_len = max_model_len_for(config, runtime.n_ctx_train)
        eos_id = runtime.meta("tokenizer.ggml.eos_token_id")
        template = ChatTemplate(
            runtime.meta("tokenizer.chat_template"),
            bos_token=runtime.token_text(runtime.bos_id) if runtime.bos_id >= 0 else "",
            eos_token=runtime.token_text(int(eos_id)) if eos_id else "",
            special_texts=runtime.control_texts)
        max_model_len = min(max_model_len, runtime.n_ctx_seq)
        retrieval = Retrieval(runtime, template, pooling=model_pooling(runtime),
                              max_len=max_model_len, n_threads=config.threads,
                              max_queue=config.max_queue)
        info = ModelInfo(
            name=runtime.meta("general.name") or os.path.basename(config.model_path),
            max_model_len=max_model_len,
            n_vocab=runtime.n_vocab,
            max_num_seqs=config.max_num_seqs,
            capabilities=CAPABILITIES | retrieval.capabilities,
            embedding_size=retrieval.embedding_size,
        )
        return runtime, info, template, retrieval

    async def stop(self) -> None:
        self._mark_stopped()
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self._core is not None:
            core, self._core = self._core, None
            await asyncio.to_thread(core.stop)
        if self._retrieval is not None:
            retrieval, self._retrieval = self._retrieval, None
            await asyncio.to_thread(retrieval.close)
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    # -- requests -------------------------------------------------------------------------

    def _require(self) -> tuple[LlamaRuntime, EngineCore]:
        self._refuse_unless_ready(self._runtime is not None and self._core is not None)
        assert self._runtime is not None and self._core is not None
        return self._runtime, self._core

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        runtime, _ = self._require()
        # Off the event loop: a long prompt takes a while.
        return await asyncio.to_thread(prompt_tokens, runtime, text, add_special=add_special)

    async def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        runtime, _ = self._require()
        assert self._template is not None
        return await asyncio.to_thread(chat_prompt, runtime, self._template, messages, tools)

    async def submit(self, request: GenerationRequest) -> RequestStream:
        _, core = self._require()
        if request.n > self.config.max_num_seqs:
            # Its n sequences would never fit at once, and it would hold up the queue for good.
            raise InvalidRequestError(
                f"n is {request.n}, but this server decodes at most {self.config.max_num_seqs} "
                "sequences at once (--max-num-seqs)", param="n", code="n_too_large")
        if len(self._streams) >= self.config.max_num_seqs + self.config.max_queue:
            raise QueueFullError(
                f"the server is busy: {len(self._streams)} requests are running or waiting; "
                "retry shortly",
                retry_after=1,
            )
        constraint = request.sampling.constraint
        grammar = None if constraint is None else await asyncio.to_thread(
            compile_constraint, constraint, max_bytes=self.config.max_grammar_bytes)
        _, core = self._require()  # still ready after the compile
        stream = RequestStream(request.request_id, request.n, self._abort)
        self._streams[request.request_id] = stream
        core.add(request, grammar)
        return stream

    async def embed(self, inputs: list[str | list[int]], *,
                    truncate: int | None = None) -> Embedded:
        return await self._retrieval_for(Capability.EMBEDDINGS).embed(inputs, truncate)

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        return await self._retrieval_for(Capability.RERANK).rerank(query, documents)

    def _retrieval_for(self, capability: Capability) -> Retrieval:
        self._require()
        if self._retrieval is None or capability not in self.info.capabilities:
            raise InvalidRequestError(f"the model {self.info.name} does not do {capability}",
                                      param="model", code="model_not_supported")
        return self._retrieval

    def _inject_fault(self, request_id: str, after_tokens: int, *, fatal: bool = False) -> None:
        """The hook ``insieme.engine.faults`` uses (tests only): fail the request in the
        core's own per-sequence path, or with ``fatal`` kill the engine thread there."""
        _, core = self._require()
        core.inject_fault(request_id, after_tokens, fatal=fatal)

    def _on_death(self, reason: str) -> None:
        # Engine thread, as it dies: from here on the server answers 503 with the reason.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._fail_streams, reason)

    def _fail_streams(self, reason: str) -> None:
        self.state = EngineState.FAILED
        self.failure = reason
        streams, self._streams = self._streams, {}
        for stream in streams.values():
            for index in stream.open_choices():
                stream.put(StepOutput(index=index, token=None, text="",
                                      finish_reason=FinishReason.ERROR, error=reason))

    def _abort(self, request_id: str) -> None:
        if self._streams.pop(request_id, None) is not None and self._core is not None:
            self._core.abort(request_id)

    def _emit(self, outputs: list[tuple[str, StepOutput]]) -> None:
        # Engine thread: one hop to the event loop per step, whatever the batch size.
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._deliver, outputs)

    def _deliver(self, outputs: list[tuple[str, StepOutput]]) -> None:
        for request_id, output in outputs:
            stream = self._streams.get(request_id)
            if stream is None:
                continue  # aborted meanwhile
            stream.put(output)
            if stream.delivered:
                del self._streams[request_id]

    async def stats(self) -> EngineStats:
        core = self._core
        if core is None:
            return EngineStats(running=0, waiting=0)
        scheduler, spec = core.scheduler, core.speculator
        return EngineStats(
            running=scheduler.num_running,
            waiting=scheduler.num_waiting,
            kv_cells_used=core.slots.cells_in_use(),
            kv_cells_total=core.runtime.n_ctx,
            kv_sequences=self.config.max_num_seqs - core.slots.free,
            open_requests=len(self._streams),
            spec_drafts=spec.drafts if spec else 0,
            spec_draft_tokens=spec.draft_tokens if spec else 0,
            spec_accepted_tokens=spec.accepted_tokens if spec else 0,
        )
