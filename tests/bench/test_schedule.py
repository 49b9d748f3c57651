"""Open-loop arrival times: a seeded Poisson process."""

from __future__ import annotations

import math

import pytest

from insieme.bench.schedule import arrival_times


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gaps_are_exponential_with_mean_one_over_the_rate(seed: int) -> None:
    rate = 8.0
    between = gaps(arrival_times(4001, rate, seed))
    mean = sum(between) / len(between)
    assert mean == pytest.approx(1 / rate, rel=0.05)
    # An exponential's standard deviation equals its mean, and 1 - 1/e of it lies below.
    std = math.sqrt(sum((g - mean) ** 2 for g in between) / len(between))
    assert std / mean == pytest.approx(1.0, abs=0.08)
    assert sum(g < mean for g in between) / len(between) == pytest.approx(1 - 1 / math.e,
                                                                          abs=0.03)


def test_the_first_is_due_at_once_and_the_rest_in_order() -> None:
    times = arrival_times(50, 3.0)
    assert times[0] == 0.0
    assert all(g >= 0 for g in gaps(times)) and times[-1] > 0


def test_a_seed_makes_the_same_times_and_every_rate_the_same_pattern() -> None:
    assert arrival_times(20, 2.0, seed=7) == arrival_times(20, 2.0, seed=7)
    assert arrival_times(20, 2.0, seed=7) != arrival_times(20, 2.0, seed=8)
    slow, fast = arrival_times(20, 1.0, seed=7), arrival_times(20, 4.0, seed=7)
    assert fast == pytest.approx([t / 4 for t in slow])


def test_an_infinite_rate_sends_everything_at_once() -> None:
    assert arrival_times(5, math.inf) == [0.0] * 5


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan])
def test_the_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="more than 0"):
        arrival_times(3, rate)
