"""The closed loop: at each concurrency level, that many clients, each sending its next
request as soon as its last one finished, until the level's requests are spent.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import asdict
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from insieme.bench.client import BenchError, ModelList, auth_error, list_models, stream_chat
from insieme.bench.metrics import LevelMetrics, RequestRecord, summarize
from insieme.bench.report import build_results
from insieme.bench.settings import BenchSettings

# A short request before the first level: it checks the model and key, and warms the server.
WARMUP_MAX_TOKENS = 4


class ProgressSink(Protocol):
    """Told as the benchmark goes; the CLI's rich progress bar is one."""

    def level_started(self, concurrency: int, requests: int) -> None: ...

    def request_done(self, record: RequestRecord) -> None: ...

    def level_done(self, metrics: LevelMetrics) -> None: ...


def run_bench(
    settings: BenchSettings,
    *,
    progress: ProgressSink | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """Run every level against the server and return the results (the JSON document).

    Raises ``BenchError`` when the server cannot be reached, refuses the key or does not
    serve the model. ``transport`` replaces the network (httpx's ``MockTransport`` in tests).
    """
    return asyncio.run(bench(settings, progress=progress, transport=transport))


async def bench(
    settings: BenchSettings,
    *,
    progress: ProgressSink | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Any]:
    """``run_bench`` for callers already inside an event loop."""
    async with _client(settings, max(settings.concurrency), transport) as client:
        models = await list_models(client, settings.base_url, settings.headers())
        await _warm_up(client, settings, models)
        levels = []
        for concurrency in settings.concurrency:
            levels.append(await _run_level(client, settings, concurrency, progress))
    server = {
        "label": settings.label or _default_label(settings, models),
        "base_url": settings.base_url,
        "model": settings.model,
        "models": list(models.ids) if models else None,
        "server_header": models.server_header if models else None,
    }
    return build_results(_settings_dict(settings), server, levels)


async def run_level_records(
    settings: BenchSettings, concurrency: int
) -> tuple[list[RequestRecord], float]:
    """One closed-loop level on a fresh client (warmed up first): its requests' records and
    its wall time, for callers that pool several runs (``benchmarks/side_by_side.py``)."""
    async with _client(settings, concurrency) as client:
        models = await list_models(client, settings.base_url, settings.headers())
        await _warm_up(client, settings, models)
        return await _collect(client, settings, concurrency, None)


def _client(settings: BenchSettings, clients: int,
            transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """One connection per client, kept alive between its requests, as a real client would."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    timeout = httpx.Timeout(settings.timeout, connect=min(settings.timeout, 10.0))
    return httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport)


async def _warm_up(client: httpx.AsyncClient, settings: BenchSettings,
                   models: ModelList | None) -> None:
    record = await stream_chat(client, settings.chat_url,
                               settings.payload(0, WARMUP_MAX_TOKENS), settings.headers())
    if record.ok:
        return
    url, message = settings.base_url, record.error_message or ""
    if record.error in ("401", "403"):
        raise auth_error(url, int(record.error), message, sent_key=bool(settings.api_key))
    if record.error == "404" and models is not None and settings.model not in models.ids:
        raise BenchError(f"{url} does not serve the model '{settings.model}'; it serves: "
                         f"{', '.join(models.ids) or 'nothing'}")
    if record.error == "404":
        raise BenchError(f"{settings.chat_url} answered HTTP 404: {message} "
                         "(does --base-url end in /v1?)")
    if record.error == "connection":
        raise BenchError(f"cannot reach {url}: {message}")
    if record.error == "timeout":
        raise BenchError(f"{url} did not answer within {settings.timeout:g}s")
    kind = f"HTTP {record.error}" if (record.error or "").isdigit() else record.error
    raise BenchError(f"the first request to {settings.chat_url} failed ({kind}): {message}")


async def _run_level(
    client: httpx.AsyncClient,
    settings: BenchSettings,
    concurrency: int,
    progress: ProgressSink | None,
) -> LevelMetrics:
    if progress is not None:
        progress.level_started(concurrency, settings.requests)
    records, duration = await _collect(client, settings, concurrency, progress)
    metrics = summarize(records, concurrency=concurrency, duration_s=duration)
    if progress is not None:
        progress.level_done(metrics)
    return metrics


async def _collect(
    client: httpx.AsyncClient,
    settings: BenchSettings,
    concurrency: int,
    progress: ProgressSink | None,
) -> tuple[list[RequestRecord], float]:
    # Single-threaded asyncio: a shared counter hands out request numbers without a lock.
    numbers = itertools.count()
    records: list[RequestRecord] = []

    async def client_loop() -> None:
        while (index := next(numbers)) < settings.requests:
            record = await stream_chat(client, settings.chat_url, settings.payload(index),
                                       settings.headers())
            records.append(record)
            if progress is not None:
                progress.request_done(record)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(client_loop())
    return records, time.perf_counter() - started


# owned_by values that name no server (llama-cpp-python answers "me"): use host:port instead.
_PLACEHOLDER_OWNERS = frozenset({"me", "user", "system", "organization-owner"})


def _default_label(settings: BenchSettings, models: ModelList | None) -> str:
    owner = models.owned_by.get(settings.model) if models else None
    if owner and owner.lower() not in _PLACEHOLDER_OWNERS:
        return owner
    return urlsplit(settings.base_url).netloc


def _settings_dict(settings: BenchSettings) -> dict[str, Any]:
    # Never the API key: results files get shared.
    fields = asdict(settings)
    for secret_or_bulky in ("api_key", "prompts", "base_url", "model", "label"):
        fields.pop(secret_or_bulky)
    fields["concurrency"] = list(settings.concurrency)
    fields["prompt_count"] = len(settings.prompts)
    return fields
