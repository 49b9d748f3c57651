"""The engine tests' session-wide pieces."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session", autouse=True)
def _stop_the_ray_cluster() -> Iterator[None]:
    """The Ray tests and the conformance suite's Ray backend share one cluster, started by
    whichever needs it first: stop it, if one was started, when the session ends."""
    yield
    from tests.engine.ray.cluster import shutdown_shared

    shutdown_shared()
