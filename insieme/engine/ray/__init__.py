"""The Ray backend: engine replicas as a Ray Serve deployment, one engine each (built by
``insieme.engine.factory``), and ``RayEngine``, the ``Engine`` the API layer talks to in front
of them. Ray is imported only when this package is used (``pip install 'insieme[ray]'``)."""

import os

# Read when Ray is imported: Ray's C++ handler for SIGTERM chains to the server's graceful
# shutdown, then leaves this process's Ray half shut, and the next Ray call (deleting the
# replicas) aborts it. The server handles SIGTERM itself.
os.environ.setdefault("RAY_DISABLE_FAILURE_SIGNAL_HANDLER", "1")


def _serve_throughput_optimized() -> None:
    """Ray Serve's throughput-optimized mode for this process, the ingress: its handles' router
    runs on the caller's event loop and calls the replicas over Serve's inter-deployment gRPC
    (every replica serves it). Measured at concurrency 1, the ingress then added 5-11 ms to
    TTFT p50 against 13-21 ms without (BENCHMARKS.md). Serve reads the switch once, when it is
    imported; it is taken back out of the environment afterwards, so that a Ray instance this
    process starts (``--ray-address local``) runs its replicas in Serve's default mode: with
    the replicas in that mode too, ``insieme serve`` was seen to hang at shutdown deleting
    them. A value the user set is left as it is."""
    key = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
    if key in os.environ:
        return
    os.environ[key] = "1"
    try:
        import ray.serve._private.constants  # noqa: F401 - reads the switch now
    finally:
        del os.environ[key]


_serve_throughput_optimized()
