"""The replicas' notice board: each replica posts its state and gauges every second, and the
ingress reads them all at once for /health and /metrics. Serve routes a call to one replica of
its choosing; this is how the ingress sees every replica, and notices one that went silent."""

from __future__ import annotations

import time
from typing import Any

import ray

from insieme.engine.types import ReplicaStats

REPORT_SECONDS = 1.0
SILENT_SECONDS = 3.0  # a replica that posted nothing for this long shows as unreachable
FORGET_SECONDS = 60.0  # and is forgotten after this long (Serve has replaced it by then)


def board_name(app_name: str) -> str:
    return f"insieme-board-{app_name}"


@ray.remote(num_cpus=0)
class ReplicaBoard:
    def __init__(self) -> None:
        self._posts: dict[str, tuple[float, ReplicaStats]] = {}

    def post(self, stats: ReplicaStats) -> None:
        self._posts[stats.replica] = (time.monotonic(), stats)

    def leave(self, replica: str) -> None:
        self._posts.pop(replica, None)

    def read(self) -> list[ReplicaStats]:
        now = time.monotonic()
        self._posts = {name: post for name, post in self._posts.items()
                       if now - post[0] < FORGET_SECONDS}
        return [stats if now - posted < SILENT_SECONDS else ReplicaStats(
                    stats.replica, stats.node, stats.pid, "unreachable")
                for posted, stats in self._posts.values()]


def get_board(app_name: str) -> Any:
    """The board of ``app_name``, made by whoever asks first. Detached, so it outlives the
    replica or ingress that happened to make it; ``RayEngine.stop`` removes it."""
    return ReplicaBoard.options(  # type: ignore[attr-defined]
        name=board_name(app_name), namespace="insieme", get_if_exists=True,
        lifetime="detached").remote()
