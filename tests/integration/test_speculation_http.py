"""Speculative decoding as a user of the real server sees it: a copy task drafts and keeps
tokens (the counters say so), and the text is the one the default, `--speculative off`,
gives."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import MODEL, Server, read_metrics, start_real_server, stop_server

TEXT = ("The committee met on Tuesday to review the budget for the new library. After a long "
        "discussion, the members agreed to fund the reading room, the children's corner and a "
        "small cafe, but they postponed the decision on the rooftop garden until next spring.")
BODY = {"model": MODEL, "temperature": 0, "max_tokens": 80,
        "messages": [{"role": "user", "content": f"Repeat the following text exactly:\n\n{TEXT}"}]}

pytestmark = pytest.mark.model


def counters(server: Server) -> dict[str, float]:
    metrics = read_metrics(server.root)
    return {name: metrics[f"insieme:spec_decode_num_{name}_total"]
            for name in ("drafts", "draft_tokens", "accepted_tokens")}


def test_a_copy_task_is_drafted_and_its_text_is_unchanged(real_server: Server) -> None:
    drafting = start_real_server("--speculative", "ngram")
    try:
        before = counters(drafting)
        answer = httpx.post(f"{drafting.base_url}/chat/completions", json=BODY, timeout=120)
        assert answer.status_code == 200, answer.text
        after = counters(drafting)
    finally:
        stop_server(drafting)
    accepted = after["accepted_tokens"] - before["accepted_tokens"]
    drafted = after["draft_tokens"] - before["draft_tokens"]
    assert after["drafts"] > before["drafts"]
    assert 0 < accepted <= drafted
    usage = answer.json()["usage"]
    assert accepted < usage["completion_tokens"]  # each step samples one token of its own

    # The shared server runs with the default, no speculation.
    again = httpx.post(f"{real_server.base_url}/chat/completions", json=BODY, timeout=120)
    assert counters(real_server)["drafts"] == 0
    assert again.json()["choices"][0]["message"]["content"] == \
        answer.json()["choices"][0]["message"]["content"]
