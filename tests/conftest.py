"""Shared fixtures: an in-process server on the fake engine, and a real `insieme serve`
subprocess on the bundled model, both on free loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn

from insieme.api.app import create_app
from insieme.config import ServerConfig
from insieme.engine.fake import ALL_CAPABILITIES, FakeEngine
from tests.deps import MISSING

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
SEED_MODEL = "meta-llama/Meta-Llama-3.1-8B-Instruct-Turbo"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base_url: str  # ends in /v1
    root: str
    engine: FakeEngine | None = None
    process: subprocess.Popen[bytes] | None = None
    output: list[str] = field(default_factory=list)  # a real server's log, read as it comes
    reader: threading.Thread | None = None

    def log(self) -> str:
        """Everything the server printed; waits for it to exit first."""
        if self.reader is not None:
            self.reader.join(timeout=30)
        return "".join(self.output)


def _drain(process: subprocess.Popen[bytes], into: list[str]) -> threading.Thread:
    # A pipe nobody reads fills up, and then the server blocks on its next log line.
    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            into.append(line.decode(errors="replace"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


class InProcessServer:
    """uvicorn on a thread, serving ``create_app`` on a fake engine."""

    def __init__(self, engine: FakeEngine, config: ServerConfig) -> None:
        port = free_port()
        self.config = uvicorn.Config(create_app(engine, config), host="127.0.0.1", port=port,
                                     log_level="warning", lifespan="on", http="h11")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.root = f"http://127.0.0.1:{port}"

    def __enter__(self) -> InProcessServer:
        self.thread.start()
        wait_healthy(self.root)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_healthy(
    root: str, timeout: float = 120.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{root}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{root} did not become healthy")


@pytest.fixture(autouse=True, scope="session")
def _isolated_usage_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Servers started by the tests keep their usage ledger in a temporary directory."""
    previous = os.environ.get("INSIEME_USAGE_DB")
    os.environ["INSIEME_USAGE_DB"] = str(tmp_path_factory.mktemp("ledger") / "usage.sqlite3")
    yield
    if previous is None:
        del os.environ["INSIEME_USAGE_DB"]
    else:
        os.environ["INSIEME_USAGE_DB"] = previous


@pytest.fixture
def fake_server() -> Iterator[Server]:
    engine = FakeEngine(token_delay=0.001, capabilities=ALL_CAPABILITIES)
    with InProcessServer(engine, ServerConfig()) as srv:
        yield Server(base_url=f"{srv.root}/v1", root=srv.root, engine=engine)


def start_real_server(*extra: str, env: dict[str, str] | None = None,
                      named: bool = True, timeout: float = 120.0) -> Server:
    """`insieme serve` on the bundled model; ``named=False`` leaves out the served names
    and context (for a config file that gives its own)."""
    port = free_port()
    cmd = [sys.executable, "-m", "insieme", "serve", "--port", str(port), *(
        ("--served-model-name", MODEL, SEED_MODEL, "--max-model-len", "1024") if named
        else ()), *extra]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    root = f"http://127.0.0.1:{port}"
    server = Server(base_url=f"{root}/v1", root=root, process=process)
    server.reader = _drain(process, server.output)
    try:
        wait_healthy(root, timeout=timeout, process=process)
    except RuntimeError:
        process.kill()
        raise RuntimeError(f"insieme serve did not start:\n{server.log()}") from None
    return server


def stop_server(server: Server) -> None:
    assert server.process is not None
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.reader is not None:
        server.reader.join(timeout=10)
    if server.process.stdout:
        server.process.stdout.close()


@pytest.fixture(scope="session")
def real_server() -> Iterator[Server]:
    """`insieme serve` on the bundled model, shared by the integration tests."""
    server = start_real_server()
    yield server
    stop_server(server)


def read_metrics(root: str) -> dict[str, float]:
    """GET /metrics as {"name{label=value,...}": value}, leaving out the model_name label."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{root}/metrics").text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())
                              if k != "model_name")
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


_missing_dependency_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and isinstance(report.longrepr, tuple) and MISSING in report.longrepr[2]:
        _missing_dependency_skips.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # CI installs every optional backend: a test skipped for a missing one there is a failure.
    if os.environ.get("CI") and _missing_dependency_skips:
        print(f"\nCI: {len(_missing_dependency_skips)} tests skipped for a missing dependency, "
              f"e.g. {_missing_dependency_skips[0]}")
        session.exitstatus = 1
