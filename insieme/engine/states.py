"""The part of an engine's life that every backend lives the same way: ``drain``, the move to
``STOPPED``, and refusing requests unless ready (``ServiceUnavailable``, saying why)."""

from __future__ import annotations

from insieme.engine.types import EngineState, require_serving
from insieme.errors import ServiceUnavailable


class EngineLife:
    """Mixin for an engine with ``state`` and ``failure`` (see ``insieme.engine.base``)."""

    state: EngineState
    failure: str | None

    def drain(self) -> None:
        if self.state in (EngineState.LOADING, EngineState.READY):
            self.state = EngineState.DRAINING

    def _mark_stopped(self) -> None:
        if self.state is not EngineState.FAILED:
            self.state = EngineState.STOPPED

    def _refuse_unless_ready(self, loaded: bool) -> None:
        """Raise the ``ServiceUnavailable`` a request meets unless the engine is ready and
        ``loaded`` (what it runs requests on is in place)."""
        require_serving(self.state, self.failure)
        if not loaded:
            raise ServiceUnavailable("the model is still loading; retry shortly")
