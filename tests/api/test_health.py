"""GET /health: 503 in the contract's body while the model loads, 200 once it serves."""

from __future__ import annotations

import httpx

from insieme.config import ServerConfig
from insieme.engine.fake import FakeEngine
from insieme.engine.types import EngineState
from tests.api.test_errors import check_error
from tests.conftest import MODEL, InProcessServer


class LoadingEngine(FakeEngine):
    """A fake whose model 'loads' until the test says it is done."""

    loaded = True  # so the server's start-up wait passes; the test flips it

    @property  # type: ignore[override]
    def state(self) -> EngineState:
        return EngineState.READY if self.loaded else EngineState.LOADING

    @state.setter
    def state(self, value: EngineState) -> None:
        pass


def test_health_follows_loading() -> None:
    engine = LoadingEngine()
    with InProcessServer(engine, ServerConfig()) as srv:
        engine.loaded = False
        error = check_error(httpx.get(f"{srv.root}/health"), 503, None)
        assert error["code"] == "service_unavailable" and "loading" in error["message"]
        engine.loaded = True
        health = httpx.get(f"{srv.root}/health").json()
        assert health["status"] == "ok" and health["model"] == MODEL
        assert health["running"] == health["waiting"] == 0
