"""What every route needs: the models and the server's config, and what watches over them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from insieme.api.keys import KeyRing, RateLimiter
from insieme.api.lifecycle import Lifecycle
from insieme.api.metrics import Metrics
from insieme.api.registry import ModelRegistry
from insieme.config import ServerConfig
from insieme.engine.base import Engine
from insieme.errors import ServiceUnavailable
from insieme.ledger import UsageLedger


@dataclass(slots=True)
class AppContext:
    models: ModelRegistry  # routes get their engine through insieme.api.routing
    config: ServerConfig
    metrics: Metrics
    keys: KeyRing = field(default_factory=lambda: KeyRing([]))
    limiter: RateLimiter = field(default_factory=RateLimiter)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    ledger: UsageLedger | None = None  # opened when the app starts
    started_at: int = field(default_factory=lambda: int(time.time()))

    @property
    def engine(self) -> Engine:
        """The default model's engine, if it is loaded (for callers that know one model)."""
        engine = self.models.default.engine
        if engine is None:
            raise ServiceUnavailable(f"the model '{self.models.default.name}' is not loaded")
        return engine
