"""Last in the package: stopping ``insieme serve`` removes its replicas from the cluster,
and stopping the cluster leaves no Ray process behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import Server, stop_server
from tests.engine.ray.cluster import LocalCluster, require_ray

require_ray()
pytestmark = pytest.mark.model


def replica_processes(cluster: LocalCluster) -> set[int]:
    def command(pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""

    return {pid for pid in cluster.processes() if "ServeReplica" in command(pid)}


def test_shutdown_leaves_nothing_behind(ray_cluster: LocalCluster, ray_server: Server) -> None:
    assert replica_processes(ray_cluster)
    stop_server(ray_server)
    assert ray_server.process is not None and ray_server.process.returncode == 0
    deadline = time.monotonic() + 30
    while replica_processes(ray_cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not replica_processes(ray_cluster), "insieme serve left its replicas running"
    assert ray_cluster.processes()
    assert ray_cluster.shutdown() == set(), "Ray processes outlived the cluster's shutdown"
    assert not ray_cluster.processes()
