"""GET /metrics: Prometheus metrics named after vLLM's, under an ``insieme:`` prefix.

Latencies and token counts are measured here, in the API layer, as outputs reach a request;
the gauges (running, waiting, KV cache) are read from each loaded engine at scrape time. The prefix
cache counters are in tokens, as vLLM's are: a request queries all of its prompt tokens and
hits the ones it found already computed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from insieme.api.registry import ModelRegistry, ModelState
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


class ModelMetrics:
    """One model's latency histograms and counters (its ``model_name`` label bound)."""

    def __init__(self, metrics: Metrics, model_name: str) -> None:
        self.model_name = model_name
        self.time_to_first_token: Histogram = metrics._ttft.labels(model_name)
        self.inter_token_latency: Histogram = metrics._itl.labels(model_name)
        self.e2e_request_latency: Histogram = metrics._e2e.labels(model_name)
        self.request_queue_time: Histogram = metrics._queue.labels(model_name)
        self.prompt_tokens: Counter = metrics._prompt.labels(model_name)
        self.generation_tokens: Counter = metrics._generation.labels(model_name)
        self.prefix_cache_queries: Counter = metrics._cache_queries.labels(model_name)
        self.prefix_cache_hits: Counter = metrics._cache_hits.labels(model_name)
        self._metrics = metrics

    def request_success(self, finished_reason: str) -> None:
        self._metrics._success.labels(self.model_name, finished_reason).inc()

    def request_error(self, status: int) -> None:
        self._metrics._errors.labels(self.model_name, str(status)).inc()


class Metrics:
    """The server's metrics, in a registry of its own (one per app, so tests can run many).

    Every series carries the model's first served name as ``model_name``, as vLLM's do;
    ``model(name)`` is one model's view. The engine gauges are read from each loaded model's
    engine at scrape time, the registry's (loaded, in flight, loads) from the registry.
    """

    def __init__(self, models: ModelRegistry) -> None:
        self.registry = CollectorRegistry()
        self.models = models
        model = ["model_name"]

        def histogram(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(f"insieme:{name}", doc, model, buckets=buckets,
                             registry=self.registry)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"insieme:{name}", doc, model, registry=self.registry)

        self._ttft = histogram(
            "time_to_first_token_seconds", "Arrival to the first generated token.", TTFT_BUCKETS)
        self._itl = histogram(
            "inter_token_latency_seconds", "Time between two tokens of one choice.", ITL_BUCKETS)
        self._e2e = histogram(
            "e2e_request_latency_seconds", "Arrival to the last token of a finished request.",
            E2E_BUCKETS)
        self._queue = histogram(
            "request_queue_time_seconds", "Time a request waited for a KV slot.", QUEUE_BUCKETS)
        self._prompt = counter("prompt_tokens_total", "Prompt tokens of requests run.")
        self._generation = counter("generation_tokens_total", "Tokens generated.")
        self._cache_queries = counter(
            "prefix_cache_queries_total", "Prompt tokens looked up in the prefix cache.")
        self._cache_hits = counter(
            "prefix_cache_hits_total", "Prompt tokens found in the prefix cache.")
        self._success = Counter("insieme:request_success_total",
                                "Requests that ended, by finish reason (abort: client left).",
                                ["model_name", "finished_reason"], registry=self.registry)
        self._errors = Counter("insieme:request_errors_total",
                               "Requests answered with an error, by HTTP status (for an error "
                               "event inside a stream, the status it stands for).",
                               ["model_name", "status"], registry=self.registry)
        self._views: dict[str, ModelMetrics] = {}
        # Each loaded model's engine gauges as of the scrape (``render`` reads them).
        self.engine_stats: dict[str, EngineStats] = {}
        self.registry.register(EngineCollector(self))
        self.model(models.default.name)  # its series exist before its first request

    def model(self, name: str | None = None) -> ModelMetrics:
        """The view of model ``name`` (a registered model's first name; None: the default)."""
        name = name or self.models.default.name
        view = self._views.get(name)
        if view is None:
            view = self._views[name] = ModelMetrics(self, name)
        return view

    async def render(self) -> bytes:
        stats = {}
        for entry in self.models.entries:
            if entry.engine is not None and entry.state is ModelState.LOADED:
                stats[entry.name] = await entry.engine.stats()
        self.engine_stats = stats
        return generate_latest(self.registry)


class EngineCollector(Collector):
    """Gauges from each loaded engine's ``stats()`` and from the model registry."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        every = self._metrics.engine_stats
        gauges: list[tuple[str, str, Callable[[EngineStats], float]]] = [
            ("num_requests_running", "Sequences in the running batch.", lambda s: s.running),
            ("num_requests_waiting", "Requests waiting for a KV slot.", lambda s: s.waiting),
            ("kv_cache_usage_perc", "Fraction of KV cache cells in use (1 = full), cached "
             "prefixes included.",
             lambda s: s.kv_cells_used / s.kv_cells_total if s.kv_cells_total else 0.0),
            ("kv_cache_sequences", "Sequences holding KV cache cells now.",
             lambda s: s.kv_sequences),
            ("engine_open_requests", "Requests the engine still tracks.",
             lambda s: s.open_requests),
        ]
        for name, doc, read in gauges:
            family = GaugeMetricFamily(f"insieme:{name}", doc, labels=["model_name"])
            for model, stats in every.items():
                family.add_metric([model], float(read(stats)))
            yield family
        counters: list[tuple[str, str, Callable[[EngineStats], float]]] = [
            ("spec_decode_num_drafts", "Speculative drafts verified.", lambda s: s.spec_drafts),
            ("spec_decode_num_draft_tokens", "Tokens in speculative drafts.",
             lambda s: s.spec_draft_tokens),
            ("spec_decode_num_accepted_tokens", "Draft tokens kept (accepted).",
             lambda s: s.spec_accepted_tokens),
        ]
        for name, doc, read in counters:
            counter = CounterMetricFamily(f"insieme:{name}", doc, labels=["model_name"])
            for model, stats in every.items():
                counter.add_metric([model], float(read(stats)))
            yield counter
        yield from self._registry_metrics()
        yield from self._replica_gauges()

    def _registry_metrics(self) -> Iterator[Metric]:
        entries = self._metrics.models.entries
        loaded = GaugeMetricFamily("insieme:model_loaded",
                                   "1 while the model is loaded, else 0.", labels=["model_name"])
        in_flight = GaugeMetricFamily("insieme:model_requests_in_flight",
                                      "Requests holding the model in use.", labels=["model_name"])
        loads = CounterMetricFamily("insieme:model_loads", "Times the model was loaded.",
                                    labels=["model_name"])
        unloads = CounterMetricFamily("insieme:model_unloads", "Times the model was unloaded.",
                                      labels=["model_name"])
        failures = CounterMetricFamily("insieme:model_load_failures",
                                       "Loads of the model that failed.", labels=["model_name"])
        for entry in entries:
            labels = [entry.name]
            loaded.add_metric(labels, float(entry.state is ModelState.LOADED))
            in_flight.add_metric(labels, float(entry.in_flight))
            loads.add_metric(labels, float(entry.loads))
            unloads.add_metric(labels, float(entry.unloads))
            failures.add_metric(labels, float(entry.load_failures))
        yield from (loaded, in_flight, loads, unloads, failures)

    def _replica_gauges(self) -> Iterator[Metric]:
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
        every = [(model, r) for model, stats in self._metrics.engine_stats.items()
                 for r in stats.replicas]
        for model, replica in every:
            names = [model, replica.replica, replica.node]
            up.add_metric([*names, replica.state], float(replica.state == "ready"))
            gauges["running"].add_metric(names, float(replica.running))
            gauges["waiting"].add_metric(names, float(replica.waiting))
            total = replica.kv_cells_total
            gauges["kv"].add_metric(names, replica.kv_cells_used / total if total else 0.0)
        served = CounterMetricFamily("insieme:replica_requests", "Requests the replica's "
                                     "engine has taken since it started.", labels=labels)
        for model, replica in every:
            served.add_metric([model, replica.replica, replica.node],
                              float(replica.served))
        yield up
        yield from gauges.values()
        yield served

    def describe(self) -> Iterator[Metric]:
        return iter(())  # collected fresh on every scrape, never at registration


async def metrics_endpoint(request: Request) -> Response:
    metrics: Metrics = request.app.state.ctx.metrics
    return Response(await metrics.render(), media_type=CONTENT_TYPE_LATEST)
