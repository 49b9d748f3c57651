"""Built-in prompts and JSONL prompt files."""

from __future__ import annotations

from pathlib import Path

import pytest

from insieme.bench.prompts import builtin_prompts, load_prompts
from insieme.errors import ConfigError


def test_builtin_prompts_are_varied_chats() -> None:
    prompts = builtin_prompts()
    assert len(prompts) >= 8
    assert all(chat[-1]["role"] == "user" and chat[-1]["content"] for chat in prompts)
    assert any(chat[0]["role"] == "system" for chat in prompts)
    assert any(chat[0]["role"] == "user" for chat in prompts)
    lengths = sorted(sum(len(m["content"]) for m in chat) for chat in prompts)
    assert lengths[-1] > 4 * lengths[0]  # short and long prompts both


def test_jsonl_takes_messages_and_prompts(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"messages": [{"role": "system", "content": "be brief"}, '
        '{"role": "user", "content": "hi"}]}\n'
        "\n"
        '{"prompt": "tell me a joke", "extra": 1}\n',
        encoding="utf-8",
    )
    assert load_prompts(path) == [
        ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}),
        ({"role": "user", "content": "tell me a joke"},),
    ]


@pytest.mark.parametrize(("text", "message"), [
    ('{"prompt": "ok"}\nnot json\n', "line 2"),
    ('{"question": "?"}\n', "line 1: expected"),
    ('{"messages": [{"role": "user"}]}\n', "line 1: each message"),
    ("\n\n", "has no prompts"),
])
def test_bad_prompt_files_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_prompts(path)


def test_missing_prompt_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_prompts(tmp_path / "absent.jsonl")
