"""What travels between the ingress and a replica: plain, picklable objects."""

from __future__ import annotations

from dataclasses import dataclass

from insieme.engine.types import GenerationRequest
from insieme.errors import APIError


def token_text(tokens: list[int]) -> str:
    """Tokens as a string, one character per token id, so that a shared string prefix is a
    shared token prefix: what a prefix router compares is then exactly what a replica's KV
    cache can reuse (the rendered text would match where the tokens differ, and vice versa)."""
    return "".join(map(chr, tokens))


@dataclass(slots=True)
class RoutedRequest:
    """A request on its way to a replica. ``prompt`` is what Ray's prefix router reads (it
    looks for a ``prompt`` or ``messages`` attribute on the call's arguments); it is computed
    when asked, so it never crosses the wire."""

    request: GenerationRequest

    @property
    def prompt(self) -> str:
        return token_text(self.request.prompt_tokens)


@dataclass(frozen=True, slots=True)
class Accepted:
    """A replica's first answer: its engine took the request (outputs follow)."""

    replica: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A replica's only answer: its engine refused the request, with the typed error the API
    layer turns into the response (429, 400, 503)."""

    error: APIError
