"""Clients that leave: the engine stops their work, the log says so, and nothing is logged as
a server error."""

from __future__ import annotations

import logging
import time

import httpx
import pytest

from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from tests.conftest import MODEL, InProcessServer, read_metrics

BODY = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_is_aborted_quietly(caplog: pytest.LogCaptureFixture,
                                                 stream: bool) -> None:
    caplog.set_level(logging.INFO)
    engine = FakeEngine(token_delay=0.1)  # 16 tokens: 1.6 s
    with InProcessServer(engine, ServerConfig()) as srv:
        if stream:  # leave after the second event
            with httpx.stream("POST", f"{srv.root}/v1/chat/completions",
                              json={**BODY, "stream": True}) as response:
                events = (line for line in response.iter_lines() if line.startswith("data:"))
                next(events), next(events)
        else:  # give up waiting for the JSON body
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{srv.root}/v1/chat/completions", json=BODY, timeout=0.35)
        deadline = time.monotonic() + 5
        while engine._tasks and time.monotonic() < deadline:  # noqa: SLF001
            time.sleep(0.05)
        assert len(engine.aborted) == 1
        metrics = read_metrics(srv.root)
        assert metrics["insieme:request_success_total{finished_reason=abort}"] == 1
        assert "insieme:request_errors_total{status=500}" not in metrics
    lines = [r for r in caplog.records if r.name == "insieme.requests"]
    assert len(lines) == 1
    fields = lines[0].fields  # type: ignore[attr-defined]
    assert fields["finish_reason"] == "abort"
    assert fields["status"] == (200 if stream else 499)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
