"""One log line per request, as ``key=value`` text or JSON (``--log-format``).

The line carries who and what (request id, key name, model, route, status), what it cost
(prompt, completion and cached tokens) and how long it took (TTFT, duration). Prompt text is
logged only with ``--log-prompts``; a key's secret never is, only its name.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import time
from datetime import UTC, datetime
from logging.handlers import QueueHandler, QueueListener
from typing import Any

from insieme.api.tracking import RequestRecord

log = logging.getLogger("insieme.requests")

# Probes, scrapes and the playground's files: not logged (a load balancer polls /health).
QUIET_PATHS = frozenset({"/health", "/metrics", "/", "/openapi.json", "/docs", "/favicon.ico"})


def request_fields(record: RequestRecord, model: str, *, log_prompts: bool) -> dict[str, Any]:
    """The fields of a request's log line, in a stable order."""
    now = time.monotonic()
    fields: dict[str, Any] = {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "status": record.status,
        "key": record.key.name if record.key else None,
    }
    if record.completion_id is not None:
        fields.update(
            id=record.completion_id,
            model=model,
            prompt_tokens=record.prompt_tokens,
            completion_tokens=record.completion_tokens,
            cached_tokens=record.cached_tokens,
            ttft=_seconds(record.first_token_at, record.arrived),
            finish_reason=record.finish_reason,
        )
    fields["duration"] = round(now - record.arrived, 4)
    if record.error_message is not None:
        fields["error"] = record.error_message
    if log_prompts and record.body is not None:
        fields["prompt"] = _prompt_of(bytes(record.body))
    return fields


def should_log(record: RequestRecord) -> bool:
    return record.path not in QUIET_PATHS and not record.path.startswith("/static/")


def _seconds(later: float | None, earlier: float) -> float | None:
    return None if later is None else round(later - earlier, 4)


def _prompt_of(body: bytes) -> Any:
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    if isinstance(data, dict):
        return data.get("messages", data.get("prompt"))
    return data


class TextFormatter(logging.Formatter):
    """``time level logger message key=value ...`` (values with spaces are JSON-quoted)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
        return line


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str) and value and not any(c.isspace() or c in '"=' for c in value):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then the request's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def configure_logging(log_format: str, level: str = "info") -> QueueListener:
    """Send insieme's own logs (the request lines among them) to stderr in ``log_format``.

    Records go through a queue to a writer thread: a slow or stalled stderr (a full pipe, a
    paused terminal) never blocks the event loop. Stop the returned listener to flush.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = QueueListener(records, handler)
    root = logging.getLogger("insieme")
    root.handlers[:] = [QueueHandler(records)]
    root.setLevel(level.upper())
    root.propagate = False
    listener.start()
    return listener


def uvicorn_log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's own loggers in the same format as insieme's."""
    factory = f"{__name__}.{'JsonFormatter' if log_format == 'json' else 'TextFormatter'}"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"insieme": {"()": factory}},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "insieme",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
                    "uvicorn.error": {"level": "INFO"},
                    "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}},
    }


def log_request(record: RequestRecord, model: str, *, log_prompts: bool) -> None:
    if should_log(record):
        fields = request_fields(record, model, log_prompts=log_prompts)
        log.info("request", extra={"fields": fields})
