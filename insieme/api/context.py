"""What every route needs: the engine and the server's config, and what watches over them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from insieme.api.keys import KeyRing, RateLimiter
from insieme.api.lifecycle import Lifecycle
from insieme.api.metrics import Metrics
from insieme.config import ServerConfig
from insieme.engine.base import Engine
from insieme.ledger import UsageLedger


@dataclass(slots=True)
class AppContext:
    engine: Engine
    config: ServerConfig
    metrics: Metrics
    keys: KeyRing = field(default_factory=lambda: KeyRing([]))
    limiter: RateLimiter = field(default_factory=RateLimiter)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    ledger: UsageLedger | None = None  # opened when the app starts
    started_at: int = field(default_factory=lambda: int(time.time()))
