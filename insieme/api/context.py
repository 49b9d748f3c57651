"""What every route needs: the engine and the server's config."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from insieme.config import ServerConfig
from insieme.engine.base import Engine


@dataclass(slots=True)
class AppContext:
    engine: Engine
    config: ServerConfig
    started_at: int = field(default_factory=lambda: int(time.time()))
