"""Fuzzing with schemathesis against the server's own /openapi.json: whatever the body, no
5xx, every response as documented, and every error in the contract's body.

The fake engine answers, so the examples are many and quick; the number per route is bounded
(and derandomized) so that CI time is too.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from insieme.api.app import create_app
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from tests.conftest import InProcessServer

EXAMPLES = 40



def _document() -> dict[str, Any]:
    return create_app(FakeEngine(), ServerConfig()).fastapi.openapi()


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    with InProcessServer(FakeEngine(), ServerConfig()) as srv:
        # The document the cases come from is the one the server serves.
        assert httpx.get(f"{srv.root}/openapi.json").json() == _document()
        yield srv.root


def contract_error_body(ctx: Any, response: Any, case: Any) -> bool | None:
    """PROTOCOL.md: every error is {"error": {"message", "type", "param", "code"}}."""
    if response.status_code < 400:
        return None
    body = json.loads(response.content)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    return True


# Loaded at import, as parametrize needs; the fixture above checks it is /openapi.json.
schema = schemathesis.openapi.from_dict(_document())


@schema.include(
    path_regex="^/v1/(chat/completions|completions|models|embeddings|rerank)$").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_holds_its_contract(root: str, case: Any) -> None:
    case.call_and_validate(
        base_url=root,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
        additional_checks=[contract_error_body],
    )
