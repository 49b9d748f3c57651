"""Embeddings and rerank scores for the llama.cpp engine, on a thread of their own.

What the model can do follows from the pooling type its GGUF declares:
- none (a generative model, like the bundled chat model): embeddings by mean pooling, and
  rerank scores by asking the model whether each document answers the query
  (``insieme.engine.judge``);
- mean, CLS or last (an embedding model): embeddings, L2-normalised;
- rank (a reranker such as bge-reranker): rerank scores from its classification head, on
  query and document joined as the GGUF's rerank template says, else as
  ``BOS query EOS SEP document EOS`` (llama-server's layout), through a sigmoid.

The pooling context (``pooling.PoolingContext``) is made on first use and only ever touched
by this module's one worker thread, so it never races the generation context's thread.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import llama_cpp as llama
import numpy as np

from insieme.engine import judge
from insieme.engine.chat_template import ChatTemplate
from insieme.engine.llama.pooling import MEAN, NONE, RANK, PoolingContext, normalized
from insieme.engine.llama.runtime import LlamaRuntime
from insieme.engine.types import Capability, Embedded, Scored
from insieme.errors import InvalidRequestError, QueueFullError

MAX_POOL_TOKENS = 2048  # the longest input, and the most tokens pooled in one decode
# A generative model's pooling context also computes logits for every token (llama.cpp
# outputs all rows when pooling): n_vocab floats a token, 100 MB for the bundled model's
# 49k vocabulary at 512 tokens, and as much again of compute buffer.
MAX_POOL_TOKENS_GENERATIVE = 512
MAX_POOL_SEQS = 64  # the most inputs in one decode

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Frame:
    """A rerank prompt around its query and document: ``head query middle document tail``."""

    head: list[int]
    middle: list[int]
    tail: list[int]


class Retrieval:
    """Embeddings and rerank for one loaded model; ``capabilities`` says which it offers."""

    def __init__(self, runtime: LlamaRuntime, template: ChatTemplate, *, pooling: int | None,
                 max_len: int, n_threads: int, max_queue: int) -> None:
        self.runtime = runtime
        self.template = template
        self.generative = pooling is None or pooling == NONE
        self.pooling = MEAN if self.generative else int(pooling)  # type: ignore[arg-type]
        self.max_len = min(max_len, MAX_POOL_TOKENS_GENERATIVE if self.generative
                           else MAX_POOL_TOKENS)
        self._n_threads = n_threads
        self._max_queue = max_queue
        vocab = runtime.vocab
        eos = int(llama.llama_vocab_eos(vocab))
        self._sep = int(llama.llama_vocab_sep(vocab))
        self._eos = eos if eos >= 0 else self._sep
        self._add_eos = bool(llama.llama_vocab_get_add_eos(vocab))
        self._add_sep = bool(llama.llama_vocab_get_add_sep(vocab))
        self._yes = self._single_tokens(judge.YES)
        self._no = self._single_tokens(judge.NO)
        self.embedding_size = int(llama.llama_model_n_embd_out(runtime.model))
        capabilities = set()
        if self.pooling != RANK:
            capabilities.add(Capability.EMBEDDINGS)
        if self.pooling == RANK or (self.generative and self._yes and self._no):
            capabilities.add(Capability.RERANK)
        self.capabilities = frozenset(capabilities)
        self._context: PoolingContext | None = None
        self._frame: Frame | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="insieme-pooling")
        self._pending = 0

    # -- the event loop's side --------------------------------------------------------------

    async def embed(self, inputs: list[str | list[int]], truncate: int | None) -> Embedded:
        return await self._run(self._embed, inputs, truncate)

    async def rerank(self, query: str, documents: list[str]) -> Scored:
        return await self._run(self._rerank, query, documents)

    async def _run(self, work: Callable[..., T], *args: object) -> T:
        if self._pending >= self._max_queue:
            raise QueueFullError(f"the server is busy: {self._pending} embedding or rerank "
                                 "requests are waiting; retry shortly", retry_after=1)
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, work, *args)
        finally:
            self._pending -= 1

    def close(self) -> None:
        """Free the pooling context (after the work queued before it); blocks."""
        self._thread.submit(self._close).result()
        self._thread.shutdown(wait=True)

    # -- the worker thread ------------------------------------------------------------------

    def _close(self) -> None:
        if self._context is not None:
            self._context.close()
            self._context = None

    def _ctx(self) -> PoolingContext:
        if self._context is None:
            self._context = PoolingContext(self.runtime, pooling=self.pooling,
                                           n_tokens=self.max_len, n_seq_max=MAX_POOL_SEQS,
                                           n_threads=self._n_threads)
        return self._context

    def _embed(self, inputs: list[str | list[int]], truncate: int | None) -> Embedded:
        limit = self.max_len
        if truncate is not None and not (truncate == -1 or 1 <= truncate <= limit):
            raise InvalidRequestError(
                f"truncate_prompt_tokens is {truncate}; this model embeds at most {limit} "
                "tokens (-1 keeps that many)", param="truncate_prompt_tokens")
        sequences = [self._input(i, value, truncate) for i, value in enumerate(inputs)]
        rows = normalized(self._ctx().pooled(sequences))
        return Embedded(rows.tolist(), sum(map(len, sequences)))

    def _input(self, index: int, value: str | list[int], truncate: int | None) -> list[int]:
        """One input's tokens with the model's BOS and EOS; cut from the front to
        ``truncate`` tokens if asked, else refused when longer than the model takes."""
        runtime = self.runtime
        if isinstance(value, str):
            content = runtime.tokenize(value, add_special=False, parse_special=False)
        else:
            if any(not 0 <= t < runtime.n_vocab for t in value):
                raise InvalidRequestError(f"input {index} has a token id outside the "
                                          f"vocabulary (0 to {runtime.n_vocab - 1})",
                                          param="input")
            content = list(value)
        head = [runtime.bos_id] if runtime.add_bos and content[:1] != [runtime.bos_id] else []
        tail = [self._eos] if self._add_eos and content[-1:] != [self._eos] else []
        keep = self.max_len if truncate in (None, -1) else truncate
        room = max(1, keep - len(head) - len(tail))
        if len(content) > room:
            if truncate is None:
                raise InvalidRequestError(
                    f"input {index} has {len(content) + len(head) + len(tail)} tokens; this "
                    f"model embeds at most {self.max_len}. Shorten it, or send "
                    "truncate_prompt_tokens", param="input", code="context_length_exceeded")
            content = content[len(content) - room:]
        return head + content + tail

    def _rerank(self, query: str, documents: list[str]) -> Scored:
        runtime = self.runtime
        frame = self._frame or self._make_frame()
        self._frame = frame
        query_tokens = runtime.tokenize(query, add_special=False, parse_special=False)
        fixed = [*frame.head, *query_tokens, *frame.middle]
        room = self.max_len - len(fixed) - len(frame.tail)
        if room < 1:
            raise InvalidRequestError(
                f"the query has {len(query_tokens)} tokens, which leaves no room for a "
                f"document in the {self.max_len} tokens this model ranks at once",
                param="query", code="context_length_exceeded")
        sequences = []
        for document in documents:  # a document too long is cut at its end
            tokens = runtime.tokenize(document, add_special=False, parse_special=False)
            sequences.append(fixed + tokens[:room] + frame.tail)
        ctx = self._ctx()
        if self.pooling == RANK:
            rows = ctx.pooled(sequences)[:, 0].astype(np.float64)
            # One logit: a sigmoid makes it a probability; several (Qwen3's yes/no head):
            # llama.cpp has already put them through a softmax.
            scores = (1.0 / (1.0 + np.exp(-rows)) if ctx.n_cls_out == 1 else rows).tolist()
        else:
            yes, no = len(self._yes), len(self._no)
            suffixes = [tokens[len(fixed):] for tokens in sequences]
            logits = ctx.last_logits(fixed, suffixes, self._yes + self._no).astype(np.float64)
            scores = [judge.relevance(judge.logsumexp(row[:yes].tolist()),
                                      judge.logsumexp(row[yes:yes + no].tolist()))
                      for row in logits]
        return Scored([float(s) if math.isfinite(s) else 0.0 for s in scores],
                      sum(map(len, sequences)))

    def _make_frame(self) -> Frame:
        runtime = self.runtime

        def marked(text: str) -> list[int]:  # template text: its special tokens are markup
            return runtime.tokenize_marked(text, text)

        if self.pooling != RANK:
            head, middle, tail = judge.split(self.template.render(judge.messages()))
            head_tokens = marked(head)
            if runtime.add_bos and head_tokens[:1] != [runtime.bos_id]:
                head_tokens.insert(0, runtime.bos_id)
            return Frame(head_tokens, marked(middle), marked(tail))
        template = runtime.meta("tokenizer.chat_template.rerank")
        if template and "{query}" in template and "{document}" in template:
            head, _, rest = template.partition("{query}")
            middle, _, tail = rest.partition("{document}")
            return Frame(marked(head), marked(middle), marked(tail))
        eos = [self._eos] if self._add_eos else []
        return Frame([runtime.bos_id] if runtime.add_bos else [],
                     eos + ([self._sep] if self._add_sep else []), eos)

    def _single_tokens(self, spellings: tuple[str, ...]) -> list[int]:
        found: list[int] = []
        for text in spellings:
            tokens = self.runtime.tokenize(text, add_special=False, parse_special=False)
            if len(tokens) == 1 and tokens[0] not in found:
                found.append(tokens[0])
        return found
