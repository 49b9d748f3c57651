"""One two-node Ray cluster for the whole session, and one ``insieme serve --ray-address``
in front of it with a replica on each node: Ray takes tens of seconds to start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import Server, start_real_server, stop_server
from tests.engine.ray.cluster import LocalCluster, shared_cluster


@pytest.fixture(scope="session")
def ray_cluster() -> LocalCluster:
    return shared_cluster()


@pytest.fixture(scope="session")
def ray_server(ray_cluster: LocalCluster) -> Iterator[Server]:
    """Two replicas of one thread each, one per node, behind one address."""
    server = start_real_server(
        "--ray-address", ray_cluster.address, "--replicas", "2", "--threads", "1",
        "--max-replicas-per-node", "1", "--max-num-seqs", "4", "--no-usage-db",
        timeout=240.0)
    yield server
    stop_server(server)
