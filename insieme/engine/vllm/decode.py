"""One choice's outputs from vLLM's token ids: text held back at stop strings and never half
a UTF-8 character (``insieme.engine.text``, as the llama.cpp engine does), logprobs in the
engine's types, and the finish with its counters.

vLLM is asked for token ids only (``detokenize=False``): the text, and so the stop strings,
are insieme's, which ends a choice at a stop string itself and aborts its vLLM request.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from insieme.engine.text import StopMatcher, Utf8Assembler
from insieme.engine.types import (
    FinishReason,
    PromptToken,
    StepOutput,
    TokenInfo,
    TopLogprob,
)
from insieme.engine.vllm.tokens import Tokens

_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH}


def top_logprobs(tokens: Tokens, entries: Mapping[int, Any] | None,
                 k: int) -> tuple[TopLogprob, ...]:
    """The ``k`` most likely of vLLM's logprob entries (``{id: Logprob}``), by rank."""
    if not entries or k <= 0:
        return ()
    ranked = sorted(((e.rank, token_id, e.logprob) for token_id, e in entries.items()
                     if e.rank is not None and e.rank <= k))
    return tuple(TopLogprob(token_id, tokens.pieces[token_id], logprob)
                 for _, token_id, logprob in ranked[:k])


def prompt_tokens(tokens: Tokens, ids: list[int], scored: list[Any] | None,
                  k: int | None) -> tuple[PromptToken, ...]:
    """``echo``: the prompt's tokens, scored (logprob and ``k`` alternatives) when vLLM
    scored them; the first one never is."""
    out = []
    for i, token_id in enumerate(ids):
        entries = scored[i] if scored is not None and i < len(scored) else None
        if not entries or token_id not in entries:
            out.append(PromptToken(token_id, tokens.pieces[token_id]))
            continue
        out.append(PromptToken(token_id, tokens.pieces[token_id], entries[token_id].logprob,
                               top_logprobs(tokens, entries, k or 0)))
    return tuple(out)


class ChoiceDecoder:
    """Turns one choice's new token ids (with their logprobs) into ``StepOutput``s."""

    def __init__(self, tokens: Tokens, index: int, prompt_len: int, stop: Iterable[str],
                 logprobs: int | None) -> None:
        self.tokens = tokens
        self.index = index
        self.prompt_len = prompt_len
        self.k = logprobs
        self.utf8 = Utf8Assembler()
        self.stops = StopMatcher(tuple(stop)) if stop else None
        self.generated = 0
        self.cached_tokens = 0
        self.finished = False

    def _release(self) -> str:
        """Text still held back when the choice ends for a reason other than a stop string."""
        tail = self.utf8.flush()
        if self.stops is None:
            return tail
        text, stopped = self.stops.feed(tail)
        return text if stopped else text + self.stops.flush()

    def _finish(self, token: TokenInfo | None, text: str, reason: FinishReason,
                error: str | None = None) -> StepOutput:
        self.finished = True
        return StepOutput(index=self.index, token=token, text=text, finish_reason=reason,
                          prompt_tokens=self.prompt_len, completion_tokens=self.generated,
                          cached_tokens=self.cached_tokens, error=error)

    def fail(self, message: str) -> StepOutput:
        return self._finish(None, "", FinishReason.ERROR, message)

    def step(self, token_ids: list[int], logprobs: Any, finish_reason: str | None
             ) -> list[StepOutput]:
        """The outputs for the tokens of one vLLM delta; the last one finishes the choice
        when vLLM finished it or a stop string appeared (the tokens after it are dropped)."""
        outputs: list[StepOutput] = []
        last = len(token_ids) - 1
        for i, token_id in enumerate(token_ids):
            self.generated += 1
            entries = logprobs[i] if logprobs is not None and i < len(logprobs) else None
            entry = entries.get(token_id) if entries else None
            info_args = {"id": token_id, "logprob": entry.logprob if entry else 0.0,
                         "piece": self.tokens.pieces[token_id] if self.k is not None else b"",
                         "top_logprobs": top_logprobs(self.tokens, entries, self.k or 0)}
            vllm_finish = finish_reason if i == last else None
            if token_id in self.tokens.special_ids:
                text = self._release() if vllm_finish else ""
                info = TokenInfo(text="", special=True, **info_args)
            else:
                text = self.utf8.feed(self.tokens.pieces[token_id])
                if self.stops is not None:
                    text, stopped = self.stops.feed(text)
                    if stopped:
                        info = TokenInfo(text=text, special=False, **info_args)
                        outputs.append(self._finish(info, text, FinishReason.STOP))
                        return outputs
                if vllm_finish:
                    text += self._release()
                info = TokenInfo(text=text, special=False, **info_args)
            if vllm_finish:
                reason = _FINISH.get(vllm_finish)
                if reason is None:  # vLLM's own abort or error: the client must hear of it
                    outputs.append(self._finish(info, text, FinishReason.ERROR,
                                                f"vLLM ended the request ({vllm_finish})"))
                else:
                    outputs.append(self._finish(info, text, reason))
                return outputs
            outputs.append(StepOutput(index=self.index, token=info, text=text))
        if finish_reason and not token_ids:  # a finish that comes without a token
            reason = _FINISH.get(finish_reason)
            outputs.append(self._finish(None, self._release(), reason) if reason else
                           self.fail(f"vLLM ended the request ({finish_reason})"))
        return outputs
