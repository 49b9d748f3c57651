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
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from insieme.api.app import create_app
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine

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


class InProcessServer:
    """uvicorn on a thread, serving ``create_app`` on a fake engine."""

    def __init__(self, engine: FakeEngine, config: ServerConfig) -> None:
        port = free_port()
        self.config = uvicorn.Config(create_app(engine, config), host="127.0.0.1", port=port,
                                     log_level="warning", lifespan="on")
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


@pytest.fixture
def fake_server() -> Iterator[Server]:
    engine = FakeEngine(token_delay=0.001)
    with InProcessServer(engine, ServerConfig()) as srv:
        yield Server(base_url=f"{srv.root}/v1", root=srv.root, engine=engine)


def start_real_server(*extra: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    cmd = [
        sys.executable, "-m", "insieme", "serve", "--port", str(port),
        "--served-model-name", MODEL, SEED_MODEL, "--max-model-len", "1024", *extra,
    ]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env={**os.environ, **(env or {})})
    root = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(root, process=process)
    except RuntimeError:
        process.kill()
        output = process.stdout.read().decode() if process.stdout else ""
        raise RuntimeError(f"insieme serve did not start:\n{output}") from None
    return Server(base_url=f"{root}/v1", root=root, process=process)


def stop_server(server: Server) -> None:
    assert server.process is not None
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    if server.process.stdout:
        server.process.stdout.close()


@pytest.fixture(scope="session")
def real_server() -> Iterator[Server]:
    """`insieme serve` on the bundled model, shared by the integration tests."""
    server = start_real_server()
    yield server
    stop_server(server)
