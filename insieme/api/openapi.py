"""/openapi.json as the routes really behave: their request bodies, their responses
(JSON or SSE), and the one error body every failure has.

The routes read their bodies themselves (to answer every mistake with the contract's 400), so
FastAPI cannot see the models; they are put into the document here, with shared definitions
under ``components/schemas`` where ``$ref`` can reach them.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from insieme.api.embeddings import EmbeddingRequest
from insieme.api.rerank import RerankRequest
from insieme.api.schemas import ChatCompletionRequest, CompletionRequest

REF = "#/components/schemas/{model}"


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class Usage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(_Out):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[dict[str, Any]] | None


class ChatChoice(_Out):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: Any = None


class ChatCompletion(_Out):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ChatChunkChoice(_Out):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None


class ChatCompletionChunk(_Out):
    """One event of a streamed chat completion (no choices in the include_usage one)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChunkChoice(_Out):
    index: int
    text: str
    finish_reason: str | None


class CompletionChunk(_Out):
    id: str
    # Together's name for a User-Agent starting with "Together", openai's for everyone else.
    object: Literal["completion.chunk", "text_completion"]
    created: int
    model: str
    choices: list[CompletionChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Out):
    index: int
    text: str
    finish_reason: str
    logprobs: Any = None


class Completion(_Out):
    id: str
    object: Literal["text.completion", "text_completion"]  # as for CompletionChunk
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class Pricing(_Out):
    input: float
    output: float
    hourly: float
    base: float
    finetune: float


class ModelCard(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: str
    context_length: int
    pricing: Pricing


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelCard]


class EmbeddingUsage(_Out):
    prompt_tokens: int
    total_tokens: int


class Embedding(_Out):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32


class EmbeddingList(_Out):
    object: Literal["list"]
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage


class RerankResult(_Out):
    index: int
    relevance_score: float
    document: dict[str, str] | None = None  # {"text": ...}, with return_documents


class Rerank(_Out):
    object: Literal["rerank"]
    id: str
    model: str
    results: list[RerankResult]  # most relevant first
    usage: Usage


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """Every error, at every status (PROTOCOL.md, "Errors")."""

    model_config = ConfigDict(extra="forbid")

    error: ErrorDetail


class Health(_Out):
    status: str
    model: str


_MODELS: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest, ChatCompletion,
                                  ChatCompletionChunk, Completion, CompletionChunk, ModelCard,
                                  ModelList, ErrorBody, Health, EmbeddingRequest, EmbeddingList,
                                  RerankRequest, Rerank]


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_ERRORS = {"default": {"description": "An error, in the contract's body.",
                       "content": _json(_ref(ErrorBody))}}


def _sse(chunk: type[BaseModel]) -> dict[str, Any]:
    """Each event: a JSON chunk, an error body (an error after the stream began), or the
    final ``[DONE]``."""
    event = {
        "type": "object",
        "required": ["data"],
        "properties": {"data": {
            "type": "string",
            "if": {"const": "[DONE]"},
            "else": {"contentMediaType": "application/json",
                     "contentSchema": {"anyOf": [_ref(chunk), _ref(ErrorBody)]}},
        }},
    }
    return {"text/event-stream": {"schema": event}}


def _generation(request: type[BaseModel], response: type[BaseModel],
                chunk: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {
            "200": {"description": "The completion; with stream: true, server-sent events.",
                    "content": {**_json(_ref(response)), **_sse(chunk)}},
            **_ERRORS,
        },
    }


def _plain(request: type[BaseModel], response: type[BaseModel], what: str) -> dict[str, Any]:
    return {
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {"200": {"description": what, "content": _json(_ref(response))},
                      **_ERRORS},
    }


OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): _generation(ChatCompletionRequest, ChatCompletion,
                                                  ChatCompletionChunk),
    ("post", "/v1/completions"): _generation(CompletionRequest, Completion, CompletionChunk),
    ("post", "/v1/embeddings"): _plain(EmbeddingRequest, EmbeddingList,
                                       "A vector per input, in the inputs' order."),
    ("post", "/v1/rerank"): _plain(RerankRequest, Rerank,
                                   "Each document's relevance, most relevant first."),
    ("get", "/v1/models"): {"responses": {
        "200": {"description": "The served models: a bare list for Together's SDKs "
                               "(User-Agent: Together...), else an OpenAI list object.",
                "content": _json({"anyOf": [{"type": "array", "items": _ref(ModelCard)},
                                            _ref(ModelList)]})},
        **_ERRORS}},
    ("get", "/health"): {"responses": {
        "200": {"description": "The model is loaded.", "content": _json(_ref(Health))},
        **_ERRORS}},
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (served at /openapi.json) describe the real bodies: the wire
    schemas' own JSON schemas, as pydantic writes them."""

    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes,
                                   description=app.description)
            _, definitions = models_json_schema([(m, "validation") for m in _MODELS],
                                                ref_template=REF)
            components = document.setdefault("components", {}).setdefault("schemas", {})
            components.update(definitions.get("$defs", {}))
            for (method, path), operation in OPERATIONS.items():
                document["paths"][path][method].update(operation)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = build  # type: ignore[method-assign]
