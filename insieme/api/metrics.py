"""GET /metrics: Prometheus metrics named after vLLM's, under an ``insieme:`` prefix.

Latencies and token counts are measured here, in the API layer, as outputs reach a request;
the gauges (running, waiting, KV cache) are read from the engine at scrape time. The prefix
cache counters are in tokens, as vLLM's are: a request queries all of its prompt tokens and
hits the ones it found already computed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from insieme.engine.base import Engine
from insieme.engine.types import EngineStats

# vLLM's buckets, with finer steps at the low end where a small model on a CPU lives.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
               0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
E2E_BUCKETS = (0.01, 0.05, 0.1, 0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
               40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
QUEUE_BUCKETS = (0.0001, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The server's metrics, in a registry of its own (one per app, so tests can run many)."""

    def __init__(self, engine: Engine, model_name: str) -> None:
        self.registry = CollectorRegistry()
        model = ["model_name"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            metric = Histogram(f"insieme:{name}", doc, model, buckets=buckets,
                               registry=self.registry)
            return metric.labels(model_name)  # type: ignore[no-any-return]

        def counter(name: str, doc: str) -> Counter:
            metric = Counter(f"insieme:{name}", doc, model, registry=self.registry)
            return metric.labels(model_name)  # type: ignore[no-any-return]

        self.time_to_first_token = histogram(
            "time_to_first_token_seconds", "Arrival to the first generated token.", TTFT_BUCKETS)
        self.inter_token_latency = histogram(
            "inter_token_latency_seconds", "Time between two tokens of one choice.", ITL_BUCKETS)
        self.e2e_request_latency = histogram(
            "e2e_request_latency_seconds", "Arrival to the last token of a finished request.",
            E2E_BUCKETS)
        self.request_queue_time = histogram(
            "request_queue_time_seconds", "Time a request waited for a KV slot.", QUEUE_BUCKETS)
        self.prompt_tokens = counter("prompt_tokens_total", "Prompt tokens of requests run.")
        self.generation_tokens = counter("generation_tokens_total", "Tokens generated.")
        self.prefix_cache_queries = counter(
            "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.")
        self.prefix_cache_hits = counter(
            "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.")
        self._success = Counter("insieme:request_success_total",
                                "Requests that ended, by finish reason (abort: client left).",
                                ["model_name", "finished_reason"], registry=self.registry)
        self._errors = Counter("insieme:request_errors_total",
                               "Requests answered with an error, by HTTP status (for an error "
                               "event inside a stream, the status it stands for).",
                               ["model_name", "status"], registry=self.registry)
        self._model_name = model_name
        # The engine's gauges as of the scrape (``refresh`` reads them, asynchronously).
        self.engine_stats = EngineStats(running=0, waiting=0)
        self._engine = engine
        self.registry.register(EngineCollector(self, model_name))

    def request_success(self, finished_reason: str) -> None:
        self._success.labels(self._model_name, finished_reason).inc()

    def request_error(self, status: int) -> None:
        self._errors.labels(self._model_name, str(status)).inc()

    async def render(self) -> bytes:
        self.engine_stats = await self._engine.stats()
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """Gauges from ``Engine.stats()``, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics, model_name: str) -> None:
        self._metrics = metrics
        self._model_name = model_name

    def collect(self) -> Iterator[Metric]:
        stats = self._metrics.engine_stats
        total = stats.kv_cells_total
        gauges = [
            ("num_requests_running", "Sequences in the running batch.", stats.running),
            ("num_requests_waiting", "Requests waiting for a KV slot.", stats.waiting),
            ("kv_cache_usage_perc", "Fraction of KV cache cells in use (1 = full), cached "
             "prefixes included.", stats.kv_cells_used / total if total else 0.0),
            ("kv_cache_sequences", "Sequences holding KV cache cells now.", stats.kv_sequences),
            ("engine_open_requests", "Requests the engine still tracks.", stats.open_requests),
        ]
        for name, doc, value in gauges:
            family = GaugeMetricFamily(f"insieme:{name}", doc, labels=["model_name"])
            family.add_metric([self._model_name], float(value))
            yield family
        counters = [
            ("spec_decode_num_drafts", "Speculative drafts verified.", stats.spec_drafts),
            ("spec_decode_num_draft_tokens", "Tokens in speculative drafts.",
             stats.spec_draft_tokens),
            ("spec_decode_num_accepted_tokens", "Draft tokens kept (accepted).",
             stats.spec_accepted_tokens),
        ]
        for name, doc, value in counters:
            counter = CounterMetricFamily(f"insieme:{name}", doc, labels=["model_name"])
            counter.add_metric([self._model_name], float(value))
            yield counter
        if stats.replicas:
            yield from self._replica_gauges(stats)

    def _replica_gauges(self, stats: EngineStats) -> Iterator[Metric]:
        """An engine of replicas: each one's gauges, with a ``replica`` label (their sums are
        the gauges above), and its state."""
        labels = ["model_name", "replica", "node"]
        up = GaugeMetricFamily("insieme:replica_up", "1 while the replica is ready, else 0 "
                               "(state says why).", labels=[*labels, "state"])
        gauges = {
            "running": GaugeMetricFamily("insieme:replica_num_requests_running",
                                         "Sequences in the replica's running batch.",
                                         labels=labels),
            "waiting": GaugeMetricFamily("insieme:replica_num_requests_waiting",
                                         "Requests waiting for a KV slot on the replica.",
                                         labels=labels),
            "kv": GaugeMetricFamily("insieme:replica_kv_cache_usage_perc",
                                    "Fraction of the replica's KV cache cells in use.",
                                    labels=labels),
        }
        for replica in stats.replicas:
            names = [self._model_name, replica.replica, replica.node]
            up.add_metric([*names, replica.state], float(replica.state == "ready"))
            gauges["running"].add_metric(names, float(replica.running))
            gauges["waiting"].add_metric(names, float(replica.waiting))
            total = replica.kv_cells_total
            gauges["kv"].add_metric(names, replica.kv_cells_used / total if total else 0.0)
        served = CounterMetricFamily("insieme:replica_requests", "Requests the replica's "
                                     "engine has taken since it started.", labels=labels)
        for replica in stats.replicas:
            served.add_metric([self._model_name, replica.replica, replica.node],
                              float(replica.served))
        yield up
        yield from gauges.values()
        yield served

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected fresh on every scrape, never at registration


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.ctx.metrics
    return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)
