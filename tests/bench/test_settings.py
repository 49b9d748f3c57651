"""BenchSettings checks itself and shapes the request body."""

from __future__ import annotations

import pytest

from insieme.bench.settings import BenchSettings
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
