"""The request routers of the replicas: prefix affinity (Ray's own
``PrefixCacheAffinityRouter``) and round robin.

It keeps a prefix tree of the prompts each replica has been sent (in a Ray actor) and sends a
request to the replica with the longest match, to the least loaded one when the best match
covers less than ``match_rate_threshold`` of the prompt, and falls back to Serve's
power-of-two-choices when the replicas' queues differ by more than ``imbalanced_threshold``.
It reads a ``prompt`` attribute off the call's argument: ``RoutedRequest.prompt`` is the
prompt's tokens, one character each (``messages.token_text``).

``ray.serve.llm.request_router`` re-exports it, but that module imports Ray's LLM server
models, which refuse to import without vLLM or SGLang; the class itself needs neither, so it
is taken from where it is defined, and from the public name only if that moves.
"""

from __future__ import annotations

from typing import Any

from ray.serve._private.request_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import RequestRouter

from insieme.engine.ray.messages import RoutedRequest

try:
    from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
        PrefixCacheAffinityRouter,
    )
except ImportError:  # a Ray release that moved it
    from ray.serve.llm.request_router import PrefixCacheAffinityRouter


class PrefixRouter(PrefixCacheAffinityRouter):  # type: ignore[misc, valid-type]
    """Ray's prefix-affinity router for ``generate``; the calls without a prompt (tokenize,
    render_chat, info) go by load alone. Ray's router would refuse them, and a router that
    raises leaves its call waiting for good."""

    async def choose_replicas(self, candidate_replicas: list[Any],
                              pending_request: Any = None) -> list[list[Any]]:
        # One replica: nothing to choose, so no round trips to the prefix tree's actor.
        if len(candidate_replicas) < 2 or not _has_prompt(pending_request):
            return await PowerOfTwoChoicesRequestRouter.choose_replicas(  # type: ignore[no-any-return]
                self, candidate_replicas=candidate_replicas, pending_request=pending_request)
        return await super().choose_replicas(  # type: ignore[no-any-return]
            candidate_replicas=candidate_replicas, pending_request=pending_request)

    def on_request_routed(self, pending_request: Any, replica_id: Any, result: Any) -> None:
        if _has_prompt(pending_request):
            super().on_request_routed(pending_request, replica_id, result)


class RoundRobinRouter(RequestRouter):  # type: ignore[misc]
    """Each ``generate`` to the next replica in turn (ordered by id), to another when that
    one is full; the calls without a prompt go by load alone and do not take a turn. What
    a router that knows nothing of prompts does: the baseline prefix affinity is measured
    against, and a fair spread where prompts share nothing."""

    def initialize_state(self, **kwargs: Any) -> None:
        self._turn = 0

    async def choose_replicas(self, candidate_replicas: list[Any],
                              pending_request: Any = None) -> list[list[Any]]:
        if not candidate_replicas:
            return []
        ordered = sorted(candidate_replicas, key=lambda replica: replica.replica_id.unique_id)
        if not _has_prompt(pending_request):
            return [ordered]  # the least loaded of all
        # Every replica full: Serve asks again after a backoff, and the turn moves on.
        chosen = ordered[self._turn % len(ordered)]
        self._turn += 1
        return [[chosen], [replica for replica in ordered if replica is not chosen]]


def _has_prompt(pending_request: Any) -> bool:
    args = getattr(pending_request, "args", None) or ()
    return any(isinstance(arg, RoutedRequest) and arg.request.prompt_tokens for arg in args)


__all__ = ["PrefixRouter", "RoundRobinRouter"]
