"""Schemathesis against the real engine: the same contract checks as tests/api/test_openapi.py
(no 5xx, every response as documented, every error in the contract's body), with the bundled
model answering. A small --max-tokens-cap keeps each generated request quick."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.test_openapi import contract_error_body, schema
from tests.conftest import start_real_server, stop_server

pytestmark = pytest.mark.model

EXAMPLES = 30


@pytest.fixture(scope="module")
def root() -> Iterator[str]:
    srv = start_real_server("--threads", "1", "--max-num-seqs", "4", "--max-tokens-cap", "8",
                            "--default-max-tokens", "8")
    yield srv.root
    health = httpx.get(f"{srv.root}/health").json()
    stop_server(srv)
    assert health["running"] == 0 and health["waiting"] == 0, health


@schema.include(path_regex="^/v1/(chat/completions|completions|models)$").parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_real_engine_holds_the_contract(root: str, case: Any) -> None:
    case.call_and_validate(
        base_url=root,
        checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance],
        additional_checks=[contract_error_body],
        timeout=60,
    )
