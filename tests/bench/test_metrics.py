"""The metric math on synthetic timings, checked against hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from insieme.bench.metrics import (
    Distribution,
    RequestRecord,
    Slo,
    percentile,
    summarize,
    token_source,
)


def record(chunk_times: list[float], e2e: float, output_tokens: int | None = None,
           prompt_tokens: int | None = None) -> RequestRecord:
    return RequestRecord(chunk_times=chunk_times, e2e=e2e, output_tokens=output_tokens,
                         prompt_tokens=prompt_tokens)


def failed(kind: str, message: str = "boom") -> RequestRecord:
    return RequestRecord(error=kind, error_message=message)


@pytest.mark.parametrize("q", [0, 1, 10, 50, 90, 99, 100])
@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 7.5]])
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(sorted(values), q) == pytest.approx(np.percentile(values, q))


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_one_request_ttft_itl_tpot_e2e() -> None:
    # First content at 0.1 s, then chunks 0.02 s apart; 5 tokens per usage.
    r = record([0.1, 0.12, 0.14, 0.16, 0.18], e2e=0.2, output_tokens=5)
    assert r.ttft == pytest.approx(0.1)
    assert r.itl == pytest.approx([0.02, 0.02, 0.02, 0.02])
    # vllm: TPOT = (e2e - TTFT) / (output tokens - 1)
    assert r.tpot == pytest.approx((0.2 - 0.1) / 4)


def test_tpot_uses_usage_tokens_not_chunks() -> None:
    # A server that packs two tokens into each chunk: TPOT follows the token count.
    r = record([0.1, 0.2, 0.3], e2e=0.3, output_tokens=6)
    assert r.output_len == 6
    assert r.tpot == pytest.approx(0.2 / 5)


def test_without_usage_output_tokens_are_content_chunks() -> None:
    r = record([0.1, 0.2, 0.3], e2e=0.35)
    assert r.output_len == 3
    assert r.tpot == pytest.approx(0.25 / 2)


def test_single_token_requests_have_no_tpot() -> None:
    assert record([0.1], e2e=0.1, output_tokens=1).tpot is None
    assert record([], e2e=0.1, output_tokens=0).tpot is None


def test_level_summary() -> None:
    records = [
        record([0.1, 0.2, 0.3], e2e=0.3, output_tokens=3, prompt_tokens=10),
        record([0.2, 0.3, 0.5], e2e=0.6, output_tokens=3, prompt_tokens=20),
        failed("500", "engine fell over"),
        failed("timeout"),
        failed("500", "again"),
    ]
    m = summarize(records, concurrency=2, duration_s=2.0)
    assert (m.concurrency, m.requests, m.completed, m.failed) == (2, 5, 2, 3)
    assert m.errors == {"500": 2, "timeout": 1}
    assert m.error_examples == {"500": "engine fell over", "timeout": "boom"}
    assert m.request_throughput == pytest.approx(1.0)  # 2 completed in 2 s
    assert m.output_throughput == pytest.approx(3.0)  # 6 tokens in 2 s
    assert m.total_output_tokens == 6
    assert m.total_input_tokens == 30
    assert m.output_tokens_source == "usage"
    # TTFT 100 and 200 ms; ITL pooled: 100, 100, 100, 200 ms.
    assert m.ttft_ms == Distribution(2, 150.0, 150.0, 190.0, 199.0)
    assert m.itl_ms.count == 4
    assert m.itl_ms.mean == pytest.approx(125.0)
    assert m.itl_ms.p50 == pytest.approx(100.0)
    assert m.itl_ms.p99 == pytest.approx(197.0)
    # TPOT: (300-100)/2 = 100 ms and (600-200)/2 = 200 ms.
    assert m.tpot_ms.mean == pytest.approx(150.0)
    assert m.e2e_ms.p50 == pytest.approx(450.0)
    assert m.e2e_ms.p90 == pytest.approx(570.0)


def test_percentiles_are_ordered() -> None:
    records = [record([0.01 * i, 0.01 * i + 0.005], e2e=0.01 * i + 0.01, output_tokens=2)
               for i in range(1, 50)]
    m = summarize(records, concurrency=4, duration_s=1.0)
    for dist in (m.ttft_ms, m.tpot_ms, m.itl_ms, m.e2e_ms):
        assert dist.p50 is not None and dist.p90 is not None and dist.p99 is not None
        assert dist.p50 <= dist.p90 <= dist.p99


def test_a_level_where_everything_failed() -> None:
    m = summarize([failed("connection")], concurrency=1, duration_s=0.5)
    assert m.completed == 0 and m.errors == {"connection": 1}
    assert m.request_throughput == 0.0 and m.output_throughput == 0.0
    assert m.ttft_ms == Distribution(0, None, None, None, None)
    assert m.total_input_tokens is None
    assert m.output_tokens_source == "none"


def test_token_source_says_where_counts_came_from() -> None:
    with_usage = record([0.1], e2e=0.1, output_tokens=1)
    without = record([0.1], e2e=0.1)
    assert token_source([with_usage, with_usage]) == "usage"
    assert token_source([without]) == "chunks"
    assert token_source([with_usage, without]) == "mixed"


def test_slo_checks_ttft_and_tpot() -> None:
    # TTFT 100 ms, TPOT (300 - 100) / 4 = 50 ms.
    r = record([0.1, 0.15, 0.2, 0.25, 0.3], e2e=0.3, output_tokens=5)
    assert Slo(ttft_ms=100.0).met_by(r) and not Slo(ttft_ms=99.0).met_by(r)
    assert Slo(tpot_ms=50.0).met_by(r) and not Slo(tpot_ms=49.0).met_by(r)
    assert Slo(ttft_ms=150.0, tpot_ms=60.0).met_by(r)
    assert not Slo(ttft_ms=150.0, tpot_ms=40.0).met_by(r)  # every SLO, not any
    assert not Slo(ttft_ms=1e9).met_by(failed("500"))
    # One token has no TPOT to miss (as vllm counts it).
    assert Slo(tpot_ms=1.0).met_by(record([0.1], e2e=0.1, output_tokens=1))


def test_goodput_counts_the_requests_that_met_every_slo() -> None:
    records = [
        record([0.1, 0.2, 0.3], e2e=0.3, output_tokens=3),  # TTFT 100, TPOT 100: met
        record([0.4, 0.45, 0.5], e2e=0.5, output_tokens=3),  # TTFT 400: missed
        record([0.1, 0.5, 0.9], e2e=0.9, output_tokens=3),  # TPOT 400: missed
        record([0.2, 0.25], e2e=0.25, output_tokens=2),  # TTFT 200, TPOT 50: met
        failed("timeout"),  # never meets anything
    ]
    m = summarize(records, concurrency=2, duration_s=4.0, slo=Slo(ttft_ms=250, tpot_ms=150))
    assert m.slo_met == 2
    assert m.goodput == pytest.approx(0.5)  # 2 requests in 4 s
    assert m.request_throughput == pytest.approx(1.0)  # 4 completed in 4 s
    assert m.slo_attainment == pytest.approx(2 / 5)  # the failed one counts as missed
    plain = summarize(records, concurrency=2, duration_s=4.0)
    assert (plain.goodput, plain.slo_met, plain.slo_attainment) == (None, None, None)


def test_an_open_loop_level_keeps_its_rate() -> None:
    m = summarize([record([0.1], e2e=0.1)], concurrency=None, duration_s=1.0, request_rate=2.5)
    assert (m.concurrency, m.request_rate) == (None, 2.5)
