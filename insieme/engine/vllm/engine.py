"""vLLM's ``AsyncLLM``, in process, behind the ``Engine`` protocol.

vLLM runs its engine core (and workers) in processes of its own; this side adds requests,
reads their outputs on the event loop and turns token ids into insieme's outputs
(``insieme.engine.vllm.decode``). Each choice of a request is its own vLLM request, so a
stop string or a client that goes away ends exactly what it should.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from insieme.config import EngineConfig
from insieme.engine.states import EngineLife
from insieme.engine.stream import RequestStream
from insieme.engine.types import (
    Capability,
    ChatPrompt,
    EngineState,
    EngineStats,
    GenerationRequest,
    ModelInfo,
)
from insieme.engine.vllm.args import apply_environment, engine_arguments
from insieme.engine.vllm.choices import ChoiceRun, start_choices
from insieme.engine.vllm.install import require
from insieme.engine.vllm.stats import SchedulerCounters, stat_logger_factory
from insieme.engine.vllm.tokens import Tokens
from insieme.errors import ConfigError, InvalidRequestError, QueueFullError

log = logging.getLogger("insieme.engine")

CAPABILITIES = frozenset({Capability.TOOLS, Capability.LOGPROBS, Capability.PROMPT_LOGPROBS,
                          Capability.CONSTRAINTS, Capability.REGEX})


class VllmEngine(EngineLife):
    """``insieme serve --engine vllm``: see the module's docstring."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.info = ModelInfo(name=os.path.basename(config.model_path.rstrip("/")),
                              max_model_len=config.max_model_len or 0, n_vocab=0,
                              max_num_seqs=config.max_num_seqs, capabilities=CAPABILITIES)
        self.state = EngineState.LOADING
        self.failure: str | None = None
        self._llm: Any = None
        self._tokens: Tokens | None = None
        self._counters = SchedulerCounters()
        self._runs: dict[str, list[ChoiceRun]] = {}
        self._streams: dict[str, RequestStream] = {}
        self._load_task: asyncio.Task[None] | None = None
        self._aborts: set[asyncio.Task[None]] = set()

    # -- life cycle -----------------------------------------------------------------------

    async def _load(self) -> None:
        try:
            llm, tokens = await asyncio.to_thread(self._load_blocking)
        except Exception as exc:
            self.state = EngineState.FAILED
            self.failure = f"could not load {self.config.model_path}: {exc}"
            log.error("%s", self.failure)
            raise ConfigError(self.failure) from exc
        if self.state is not EngineState.LOADING:  # stopped while loading
            llm.shutdown()
            return
        self._llm, self._tokens = llm, tokens
        model = llm.model_config
        self.info = ModelInfo(name=self.info.name, max_model_len=model.max_model_len,
                              n_vocab=tokens.n_vocab, max_num_seqs=self.config.max_num_seqs,
                              capabilities=CAPABILITIES)
        self.state = EngineState.READY

    def _load_blocking(self) -> tuple[Any, Tokens]:
        async_llm = require("vllm.v1.engine.async_llm")
        arg_utils = require("vllm.engine.arg_utils")
        platforms = require("vllm.platforms")
        transformers = require("transformers")
        apply_environment(self.config)
        tokenizer = transformers.AutoTokenizer.from_pretrained(self.config.model_path)
        model_config = transformers.AutoConfig.from_pretrained(self.config.model_path)
        arguments = engine_arguments(
            self.config, on_cpu=platforms.current_platform.is_cpu(),
            model_len=getattr(model_config, "max_position_embeddings", None))
        llm = async_llm.AsyncLLM.from_engine_args(
            arg_utils.AsyncEngineArgs(**arguments),
            stat_loggers=[stat_logger_factory(self._counters)])
        try:
            tokens = Tokens(tokenizer, n_vocab=llm.model_config.get_vocab_size())
        except Exception:
            llm.shutdown()
            raise
        return llm, tokens

    async def stop(self) -> None:
        self._mark_stopped()
        if self._load_task is not None and not self._load_task.done():
            try:  # the load runs on a thread: let it finish, then shut vLLM down
                await asyncio.shield(self._load_task)
            except ConfigError:
                pass
        for request_id in list(self._streams):
            self._abort(request_id)
        if self._aborts:
            await asyncio.gather(*self._aborts, return_exceptions=True)
        if self._llm is not None:
            llm, self._llm = self._llm, None
            await asyncio.to_thread(llm.shutdown)

    # -- requests -------------------------------------------------------------------------

    def _require(self) -> tuple[Any, Tokens]:
        self._refuse_unless_ready(self._llm is not None and self._tokens is not None)
        assert self._llm is not None and self._tokens is not None
        return self._llm, self._tokens

    async def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        _, tokens = self._require()
        return await asyncio.to_thread(tokens.encode, text, add_special=add_special)

    async def render_chat(
        self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None
    ) -> ChatPrompt:
        _, tokens = self._require()
        return await asyncio.to_thread(tokens.chat, messages, tools)

    async def submit(self, request: GenerationRequest) -> RequestStream:
        llm, tokens = self._require()
        flags = self.config.vllm
        engines = flags.data_parallel_size if flags else 1
        if request.n > self.config.max_num_seqs:
            raise InvalidRequestError(
                f"n is {request.n}, but this server decodes at most {self.config.max_num_seqs} "
                "sequences at once (--max-num-seqs)", param="n", code="n_too_large")
        if len(self._streams) >= self.config.max_num_seqs * engines + self.config.max_queue:
            raise QueueFullError(
                f"the server is busy: {len(self._streams)} requests are running or waiting; "
                "retry shortly", retry_after=1)
        stream = RequestStream(request.request_id, request.n, self._abort)
        runs = await start_choices(llm, tokens, request, stream, on_dead=self._on_death)
        self._streams[request.request_id] = stream
        self._runs[request.request_id] = runs
        for run in runs:
            run.task.add_done_callback(lambda _, rid=request.request_id: self._forget(rid))
        return stream

    def _forget(self, request_id: str) -> None:
        runs = self._runs.get(request_id)
        if runs is not None and all(run.task.done() for run in runs):
            self._runs.pop(request_id, None)
            self._streams.pop(request_id, None)

    def _abort(self, request_id: str) -> None:
        """The client went away: stop reading its choices and abort them in vLLM."""
        self._streams.pop(request_id, None)
        runs = self._runs.pop(request_id, [])
        live = [run.vllm_id for run in runs if not run.task.done()]
        for run in runs:
            run.task.cancel()
        if live and self._llm is not None:
            task = asyncio.get_running_loop().create_task(self._llm.abort(live, internal=True))
            self._aborts.add(task)
            task.add_done_callback(self._aborts.discard)

    def _on_death(self, reason: str) -> None:
        """vLLM's engine died: every request ends with the reason, and the server says so."""
        if self.state is EngineState.FAILED:
            return
        self.state = EngineState.FAILED
        self.failure = f"the vLLM engine died: {reason}"
        log.error("%s", self.failure)
        for request_id, runs in list(self._runs.items()):
            stream = self._streams.get(request_id)
            for run in runs:
                run.task.cancel()
                if stream is not None and not run.decoder.finished:
                    stream.put(run.decoder.fail(self.failure))
        self._runs.clear()
        self._streams.clear()

    async def stats(self) -> EngineStats:
        counters = self._counters
        open_choices = sum(1 for runs in self._runs.values() for run in runs
                           if not run.decoder.finished)
        # vLLM counts after its steps; a request aborted since is not running any more.
        running = min(counters.running, open_choices)
        total = 0
        if self._llm is not None:
            cache = self._llm.vllm_config.cache_config
            total = (cache.num_gpu_blocks or 0) * cache.block_size
        return EngineStats(
            running=running,
            waiting=open_choices - running,
            kv_cells_used=round(counters.kv_usage * total) if open_choices else 0,
            kv_cells_total=total,
            kv_sequences=running,
            open_requests=len(self._streams),
        )
