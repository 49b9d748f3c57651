"""Chat templates render in a sandbox; template errors are client errors, not crashes."""

from __future__ import annotations

import pytest

from insieme.engine.chat_template import ChatTemplate
from insieme.errors import InvalidRequestError


def test_chatml_fallback_renders_roles() -> None:
    text = ChatTemplate(None).render([{"role": "system", "content": "S"},
                                      {"role": "user", "content": "U"}])
    assert text == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n" \
                   "<|im_start|>assistant\n"


def test_raise_exception_becomes_invalid_request() -> None:
    template = ChatTemplate("{% if messages[0]['role'] != 'user' %}"
                            "{{ raise_exception('first message must be from the user') }}"
                            "{% endif %}ok")
    assert template.render([{"role": "user", "content": "x"}]) == "ok"
    with pytest.raises(InvalidRequestError) as caught:
        template.render([{"role": "assistant", "content": "x"}])
    assert caught.value.param == "messages"


def test_sandbox_blocks_attribute_escapes() -> None:
    template = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(InvalidRequestError):
        template.render([{"role": "user", "content": "x"}])
