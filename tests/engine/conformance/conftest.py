"""Fixtures of the conformance suite: every test runs once per backend in ``BACKENDS``.

``engine`` is one started engine per backend, shared by the whole package (a real model
takes seconds to load). An engine keeps the event loop it started on (the llama.cpp engine
hands outputs over with ``call_soon_threadsafe``), so the fixture and every test here run on
the package's loop: each module sets ``pytestmark = pytest.mark.asyncio(loop_scope="package")``.
A test that changes an engine's state (drain, stop) builds its own from ``backend``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from insieme.engine.base import Engine
from tests.engine.conformance.backends import BACKENDS, Backend, started


@pytest.fixture(scope="package",
                params=[pytest.param(name, marks=backend.marks, id=name)
                        for name, backend in BACKENDS.items()])
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def engine(backend: Backend) -> AsyncIterator[Engine]:
    ready = await started(await backend.make())
    yield ready
    await ready.stop()
