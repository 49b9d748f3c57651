"""BenchSettings checks itself and shapes the request body."""

from __future__ import annotations

import math

import pytest

from insieme.bench.prompts import Prompt
from insieme.bench.settings import BenchSettings, Level
from insieme.errors import ConfigError


def test_normalises_url_and_levels() -> None:
    s = BenchSettings(base_url=" http://h:8000/v1/ ", model="m", concurrency=(16, 1, 4, 4))
    assert s.base_url == "http://h:8000/v1"
    assert s.chat_url == "http://h:8000/v1/chat/completions"
    assert s.concurrency == (1, 4, 16)


@pytest.mark.parametrize(("changes", "message"), [
    ({"base_url": "localhost:8000/v1"}, "--base-url"),
    ({"model": ""}, "--model"),
    ({"concurrency": (0, 2)}, "--concurrency"),
    ({"concurrency": (32,), "requests": 8}, "--requests"),
    ({"max_tokens": 0}, "--max-tokens"),
    ({"temperature": 3.0}, "--temperature"),
    ({"timeout": 0}, "--timeout"),
    ({"prompts": ()}, "no prompts"),
    ({"request_rate": (0.0,)}, "--request-rate needs one or more rates"),
    ({"request_rate": (2.0, -1.0)}, "each more than 0"),
    ({"request_rate": (math.nan,)}, "--request-rate"),
    ({"request_rate": ()}, "--request-rate"),
    ({"request_rate": (2.0,), "concurrency": (4,)}, "two ways to load the server"),
    ({"max_concurrency": 4}, "--max-concurrency caps the open loop"),
    ({"request_rate": (2.0,), "max_concurrency": 0}, "--max-concurrency must be at least 1"),
    ({"request_rate": (2.0,), "requests": 0}, "--requests must be at least 1"),
    ({"dataset": "sharegpt"}, "--dataset must be one of builtin, random"),
    ({"dataset": "jsonl"}, "--dataset jsonl needs --prompts"),
    ({"random_input_len": 0}, "--random-input-len"),
    ({"random_output_len": -2}, "--random-output-len"),
    ({"random_range_ratio": 1.0}, "--random-range-ratio must be at least 0 and less than 1"),
    ({"random_range_ratio": -0.1}, "--random-range-ratio"),
    ({"turns": 0}, "--turns must be at least 1"),
    ({"dataset": "multi-turn", "requests": 18, "turns": 4}, r"multiple of --turns \(4\)"),
    ({"dataset": "multi-turn", "requests": 16, "turns": 4, "concurrency": (8,)},
     r"\(4 conversations\) must be at least the highest --concurrency \(8\)"),
    ({"slo_ttft_ms": 0.0}, "--slo-ttft must be a positive number"),
    ({"slo_tpot_ms": -5.0}, "--slo-tpot must be a positive number"),
    ({"slo_tpot_ms": math.inf}, "--slo-tpot"),
])
def test_rejects_bad_values(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"base_url": "http://h/v1", "model": "m", **changes}
    with pytest.raises(ConfigError, match=message):
        BenchSettings(**fields)  # type: ignore[arg-type]


def test_payload_cycles_prompts_and_sends_extensions_only_when_asked() -> None:
    prompts = (({"role": "user", "content": "a"},), ({"role": "user", "content": "b"},))
    s = BenchSettings(base_url="http://h/v1", model="m", prompts=prompts, api_key="k")
    assert [s.payload(i)["messages"][0]["content"] for i in range(3)] == ["a", "b", "a"]
    assert "ignore_eos" not in s.payload(0)
    assert s.headers() == {"Authorization": "Bearer k"}
    eos = BenchSettings(base_url="http://h/v1", model="m", ignore_eos=True)
    assert eos.payload(0)["ignore_eos"] is True and eos.headers() == {}


def test_levels_are_concurrencies_or_rates() -> None:
    closed = BenchSettings(base_url="http://h/v1", model="m")
    assert closed.concurrency == (1, 4, 16) and not closed.open_loop
    assert closed.levels == (Level(1), Level(4), Level(16))
    assert closed.levels[1].name == "concurrency 4"
    # The open loop needs no more requests than clients: it has no clients.
    opened = BenchSettings(base_url="http://h/v1", model="m", request_rate=(math.inf, 0.5, 2),
                           max_concurrency=8, requests=3)
    assert opened.concurrency is None and opened.open_loop
    assert opened.levels == (Level(8, 0.5), Level(8, 2.0), Level(8, math.inf))
    assert [level.name for level in opened.levels] == [
        "rate 0.5 req/s (max 8)", "rate 2 req/s (max 8)", "rate inf (max 8)"]


def test_slo_and_dataset_params() -> None:
    s = BenchSettings(base_url="http://h/v1", model="m", slo_ttft_ms=200.0)
    assert s.slo is not None and (s.slo.ttft_ms, s.slo.tpot_ms) == (200.0, None)
    assert BenchSettings(base_url="http://h/v1", model="m").slo is None
    random = BenchSettings(base_url="http://h/v1", model="m", dataset="random",
                           random_input_len=64, random_range_ratio=0.25)
    assert random.dataset_params() == {"input_len": 64, "output_len": 128, "range_ratio": 0.25}
    chats = BenchSettings(base_url="http://h/v1", model="m", dataset="multi-turn", turns=2,
                          requests=32)
    assert chats.dataset_params() == {"turns": 2, "conversations": 16, "context_words": 0,
                                    "system_prompt": True}


def test_a_prompts_own_max_tokens_and_ignore_eos_win() -> None:
    prompts = (Prompt(({"role": "user", "content": "a"},), max_tokens=9, ignore_eos=True),
               ({"role": "user", "content": "b"},))
    s = BenchSettings(base_url="http://h/v1", model="m", prompts=prompts, max_tokens=5)
    assert (s.payload(0)["max_tokens"], s.payload(0)["ignore_eos"]) == (9, True)
    assert s.payload(1)["max_tokens"] == 5 and "ignore_eos" not in s.payload(1)
    assert s.payload(0, max_tokens=4)["max_tokens"] == 4  # the warm-up's
