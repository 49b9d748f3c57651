"""A benchmark run: check and warm the server, then every level in turn (``loops``), then
the results document (``report``).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import httpx

from insieme.bench.client import BenchError, ModelList, auth_error, list_models, stream_chat
from insieme.bench.datasets import Conversation, build_workload
from insieme.bench.loops import ProgressSink, run_level
from insieme.bench.metrics import LevelMetrics, RequestRecord, summarize
from insieme.bench.report import build_results, json_rate
from insieme.bench.settings import BenchSettings, Level

__all__ = ["ProgressSink", "bench", "run_bench", "run_level_records"]

# A short request before the first level: it checks the model and key, and warms the server.
WARMUP_MAX_TOKENS = 4


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
    workload = build_workload(settings)
    async with _client(settings, _connections(settings), transport) as client:
        models = await list_models(client, settings.base_url, settings.headers())
        await _warm_up(client, settings, models)
        levels = []
        for level in settings.levels:
            levels.append(await _run_level(client, settings, level, workload, progress))
    server = {
        "label": settings.label or _default_label(settings, models),
        "base_url": settings.base_url,
        "model": settings.model,
        "models": list(models.ids) if models else None,
        "server_header": models.server_header if models else None,
    }
    return build_results(_settings_dict(settings), server, levels)


async def run_level_records(
    settings: BenchSettings, concurrency: int | Level
) -> tuple[list[RequestRecord], float]:
    """One level (a closed loop of ``concurrency`` clients, or a ``Level``) on a fresh client,
    warmed up first: its requests' records and its wall time, for callers that pool several
    runs (``benchmarks/side_by_side.py``)."""
    level = concurrency if isinstance(concurrency, Level) else Level(concurrency)
    connections = level.concurrency if level.concurrency is not None else None
    async with _client(settings, connections) as client:
        models = await list_models(client, settings.base_url, settings.headers())
        await _warm_up(client, settings, models)
        return await run_level(client, settings, level, build_workload(settings))


def _connections(settings: BenchSettings) -> int | None:
    """The most requests in flight at once (None: as many as the open loop makes)."""
    if settings.open_loop:
        return settings.max_concurrency
    return max(settings.concurrency or (1,))


def _client(settings: BenchSettings, clients: int | None,
            transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """One connection per request in flight, kept alive between requests, as a real client
    would; never fewer, or the open loop would queue on the client instead of the server."""
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
    level: Level,
    workload: tuple[Conversation, ...],
    progress: ProgressSink | None,
) -> LevelMetrics:
    if progress is not None:
        progress.level_started(level, settings.requests)
    records, duration = await run_level(client, settings, level, workload, progress)
    metrics = summarize(records, concurrency=level.concurrency, duration_s=duration,
                        request_rate=level.request_rate, slo=settings.slo)
    if progress is not None:
        progress.level_done(metrics)
    return metrics


# owned_by values that name no server (llama-cpp-python answers "me"): use host:port instead.
_PLACEHOLDER_OWNERS = frozenset({"me", "user", "system", "organization-owner"})


def _default_label(settings: BenchSettings, models: ModelList | None) -> str:
    owner = models.owned_by.get(settings.model) if models else None
    if owner and owner.lower() not in _PLACEHOLDER_OWNERS:
        return owner
    return urlsplit(settings.base_url).netloc


def _settings_dict(settings: BenchSettings) -> dict[str, Any]:
    """What the run did, enough to run it again. Never the API key: results files get shared."""
    fields = asdict(settings)
    for secret_or_bulky in ("api_key", "prompts", "base_url", "model", "label", "random_input_len",
                            "random_output_len", "random_range_ratio", "turns"):
        fields.pop(secret_or_bulky)
    fields["arrivals"] = "poisson" if settings.open_loop else "closed-loop"
    fields["concurrency"] = list(settings.concurrency) if settings.concurrency else None
    # JSON has no infinity: "inf" is how --request-rate spells it, and float() reads it back.
    fields["request_rate"] = ([json_rate(rate) for rate in settings.request_rate]
                              if settings.request_rate else None)
    fields["prompt_count"] = len(settings.prompts)
    fields["dataset_params"] = settings.dataset_params()
    return fields
