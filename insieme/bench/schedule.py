"""When open-loop requests arrive: a Poisson process, as ``vllm bench serve --request-rate``.

The gaps between arrivals are exponential with mean 1/rate, drawn from a generator seeded by
``--seed``. They are drawn at rate 1 and then scaled, so every rate of one run replays the same
pattern of bursts and lulls, only faster or slower, and the levels differ only by the rate.
"""

from __future__ import annotations

import math
import random


def arrival_times(count: int, rate: float, seed: int = 0) -> list[float]:
    """Seconds from the level's start at which each of ``count`` requests is due.

    The first is due at once; ``rate`` is requests per second, and ``math.inf`` makes every
    request due at once.
    """
    if not rate > 0:
        raise ValueError(f"the request rate must be more than 0, not {rate}")
    if math.isinf(rate):
        return [0.0] * count
    rng = random.Random(f"arrivals:{seed}")
    times, now = [], 0.0
    for _ in range(count):
        times.append(now)
        now += rng.expovariate(1.0) / rate
    return times
