"""One log line per request, in text or JSON; X-Request-ID accepted and echoed; prompts and
keys stay out of the log unless asked for."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from insieme.api.keys import hash_key
from insieme.api.requestlog import JsonFormatter, TextFormatter
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from tests.conftest import MODEL, InProcessServer

SECRET_PROMPT = "my secret plans for tuesday"


def request_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "insieme.requests"]


def serve_and_ask(caplog: pytest.LogCaptureFixture, tmp_path: Path,
                  **config: object) -> list[logging.LogRecord]:
    keys = tmp_path / "keys.toml"
    keys.write_text(f'[keys.alice]\nsha256 = "{hash_key("alice-secret")}"\n')
    caplog.set_level(logging.INFO, logger="insieme.requests")
    with InProcessServer(FakeEngine(), ServerConfig(api_keys_file=str(keys), **config)) as srv:
        auth = {"Authorization": "Bearer alice-secret"}
        body = {"model": MODEL, "messages": [{"role": "user", "content": SECRET_PROMPT}],
                "max_tokens": 3}
        first = httpx.post(f"{srv.root}/v1/chat/completions", json=body,
                           headers={**auth, "X-Request-ID": "trace-42"})
        assert first.headers["x-request-id"] == "trace-42"
        second = httpx.post(f"{srv.root}/v1/chat/completions", json={**body, "stream": True},
                            headers=auth)
        assert second.headers["x-request-id"].startswith("chatcmpl-")
        denied = httpx.get(f"{srv.root}/v1/models", headers={"X-Request-ID": "bad id\x7f"})
        assert denied.status_code == 401 and denied.headers["x-request-id"] != "bad id\x7f"
        assert httpx.get(f"{srv.root}/health").status_code == 200
    return request_lines(caplog)


def test_one_line_per_request(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    lines = serve_and_ask(caplog, tmp_path)
    assert len(lines) == 3  # the health probe is not logged
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["request_id"] == "trace-42"
    assert fields["key"] == "alice"
    assert fields["model"] == MODEL
    assert fields["status"] == 200
    assert fields["prompt_tokens"] > 0 and fields["completion_tokens"] == 3
    assert fields["cached_tokens"] == 0
    assert fields["finish_reason"] == "length"
    assert fields["ttft"] is not None and fields["duration"] >= fields["ttft"]
    streamed = lines[1].fields  # type: ignore[attr-defined]
    assert streamed["request_id"] == streamed["id"]
    assert lines[2].fields["status"] == 401  # type: ignore[attr-defined]
    rendered = "\n".join(TextFormatter().format(line) for line in lines)
    assert "request_id=trace-42" in rendered and "key=alice" in rendered
    assert SECRET_PROMPT not in rendered and "alice-secret" not in rendered


def test_prompts_only_when_asked(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    lines = serve_and_ask(caplog, tmp_path, log_prompts=True)
    assert lines[0].fields["prompt"][0]["content"] == SECRET_PROMPT  # type: ignore[attr-defined]
    assert "alice-secret" not in TextFormatter().format(lines[0])


def test_json_format() -> None:
    record = logging.LogRecord("insieme.requests", logging.INFO, __file__, 1, "request", None,
                               None)
    record.fields = {"request_id": "r1", "key": None, "status": 200, "ttft": 0.01}
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "info" and entry["logger"] == "insieme.requests"
    assert entry["time"].endswith("+00:00")
    assert entry["request_id"] == "r1" and entry["key"] is None and entry["status"] == 200
    text = TextFormatter().format(record)
    assert text.endswith("request request_id=r1 key=- status=200 ttft=0.01")
