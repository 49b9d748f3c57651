"""A two-node Ray cluster on this machine (127.0.0.2 head, 127.0.0.3 worker, one CPU each),
and the processes it started, found by PID so the tests can end them and check they ended."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import pytest


def require_ray() -> None:
    """Skip a module without Ray installed; in CI, where it must be, fail instead."""
    if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must install insieme[ray]: the Ray tests cannot be skipped",
                        pytrace=False)
        pytest.skip("Ray is not installed (pip install 'insieme[ray]')",
                    allow_module_level=True)


def children(pid: int) -> set[int]:
    """``pid``'s descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, pending = set(), [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            if child not in found:
                found.add(child)
                pending.append(child)
    return found


def alive(pids: set[int]) -> set[int]:
    def running(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    return {pid for pid in pids if running(pid)}


class LocalCluster:
    """``ray.cluster_utils.Cluster`` with its two nodes on their own loopback addresses (Ray
    refuses a second node on 127.0.0.1) and its files in a short temporary folder (Ray's
    socket paths must stay under 108 bytes)."""

    def __init__(self, num_cpus: int = 1) -> None:
        from ray.cluster_utils import Cluster

        self.folder = tempfile.mkdtemp(prefix="insieme-ray-", dir="/tmp")
        self._previous_tmpdir = os.environ.get("RAY_TMPDIR")
        os.environ["RAY_TMPDIR"] = self.folder
        self._cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": "127.0.0.2", "num_cpus": num_cpus, "include_dashboard": False})
        self._cluster.add_node(node_ip_address="127.0.0.3", num_cpus=num_cpus)
        self.address: str = self._cluster.address
        self._closed = False
        self._roots = {process.process.pid for node in self._cluster.list_all_nodes()
                       for processes in node.all_processes.values() for process in processes}

    @property
    def closed(self) -> bool:
        return self._closed

    def processes(self) -> set[int]:
        """Every process the cluster started that still runs (its workers included)."""
        found = set(self._roots)
        for pid in self._roots:
            found |= children(pid)
        return alive(found)

    def shutdown(self) -> set[int]:
        """Stop the cluster; return the PIDs that outlived it by 10 s (then killed)."""
        if self._closed:
            return set()
        self._closed = True
        started = self.processes()
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():  # this process joined it (conformance)
            ray.shutdown()
        self._cluster.shutdown()
        deadline = time.monotonic() + 10
        while alive(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = alive(started)
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        if self._previous_tmpdir is None:
            os.environ.pop("RAY_TMPDIR", None)
        else:
            os.environ["RAY_TMPDIR"] = self._previous_tmpdir
        shutil.rmtree(self.folder, ignore_errors=True)
        return survivors


_shared: LocalCluster | None = None


def shared_cluster() -> LocalCluster:
    """The session's one cluster, started by whoever needs it first (the Ray tests and the
    conformance suite's Ray backend); ``tests/engine/conftest.py`` stops it at the end."""
    global _shared
    if _shared is None or _shared.closed:
        _shared = LocalCluster()
    return _shared


def shutdown_shared() -> set[int]:
    return _shared.shutdown() if _shared is not None else set()
