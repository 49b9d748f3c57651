"""An in-process insieme on the fake engine, served over real HTTP from a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from insieme.api.app import create_app
from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine


@contextmanager
def serve(config: ServerConfig, engine: FakeEngine | None = None) -> Iterator[str]:
    """Serve the app on a free port; yields its base URL (ending in /v1)."""
    app = create_app(engine or FakeEngine(token_delay=0.005), config)
    # Port 0, bound by uvicorn itself: a socket made here with socket.socket() has proto 0,
    # so asyncio would not set TCP_NODELAY on its connections and Nagle's algorithm would
    # bunch the streamed chunks together, hiding the very timings the bench measures.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with serve(ServerConfig()) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_base_url() -> Iterator[str]:
    with serve(ServerConfig(api_key="k")) as url:
        yield url


@pytest.fixture(autouse=True)
def no_ambient_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own keys must not leak into a test's requests."""
    monkeypatch.delenv("TOGETHER_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def closed_port_url() -> str:
    """A URL nothing listens on: bind a port, then let it go."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/v1"
