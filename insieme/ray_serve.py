"""insieme on a Ray cluster: the ``serve`` flags that spread engine replicas over it, and the
Serve application for ``serve deploy`` (the insieme API as the Serve ingress in front of them).

Ray is imported only when a Ray flag is used (``pip install 'insieme[ray]'``).
"""

from __future__ import annotations

import argparse
from typing import Any

from insieme.config import EngineConfig
from insieme.engine.base import Engine
from insieme.errors import ConfigError


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``serve`` flags of the Ray backend, as one argument group."""
    group = parser.add_argument_group(
        "Ray: engine replicas on a cluster (pip install 'insieme[ray]')")
    group.add_argument("--ray-address", default=None, metavar="ADDR",
                       help="serve with engine replicas on the Ray cluster at ADDR (HOST:PORT, "
                       "auto, ray://...), or 'local' to start Ray here; this process stays the "
                       "HTTP ingress")
    group.add_argument("--replicas", type=int, default=1, metavar="N",
                       help="engine replicas, each --threads threads (default: %(default)s)")
    group.add_argument("--min-replicas", type=int, default=None, metavar="N",
                       help="with --max-replicas: scale between them on queue depth")
    group.add_argument("--max-replicas", type=int, default=None, metavar="N")
    group.add_argument("--target-ongoing-requests", type=float, default=None, metavar="N",
                       help="autoscaling: requests per replica to aim for "
                       "(default: --max-num-seqs)")
    group.add_argument("--upscale-delay", type=float, default=None, metavar="S",
                       help="autoscaling: seconds of load above target before a replica is "
                       "added (default: Serve's, 30)")
    group.add_argument("--downscale-delay", type=float, default=None, metavar="S",
                       help="autoscaling: seconds below target before one is removed "
                       "(default: Serve's, 600)")
    group.add_argument("--replica-cpus", type=float, default=None, metavar="N",
                       help="CPUs Ray reserves per replica, 0 for none (default: --threads, "
                       "else 1)")
    group.add_argument("--replica-gpus", type=float, default=0.0, metavar="N",
                       help="GPUs Ray reserves per replica (default: %(default)s)")
    group.add_argument("--max-replicas-per-node", type=int, default=None, metavar="N")
    group.add_argument("--ray-router", choices=("prefix", "pow2", "round-robin"),
                       default="prefix",
                       help="prefix: to the replica holding the prompt's prefix, least loaded "
                       "when none does; pow2: Serve's least loaded of two; round-robin: each "
                       "replica in turn (default: %(default)s)")
    group.add_argument("--ray-app-name", default="insieme", metavar="NAME",
                       help="the Serve application of the replicas: one per model served "
                       "from one cluster (default: %(default)s)")
    group.add_argument("--ray-max-queued", type=int, default=64, metavar="N",
                       help="requests that may wait while every replica is full; beyond, 429 "
                       "(default: %(default)s)")


def ray_config(args: argparse.Namespace) -> Any:
    from insieme.engine.ray.config import RayConfig

    return RayConfig(
        address=args.ray_address, replicas=args.replicas, min_replicas=args.min_replicas,
        max_replicas=args.max_replicas, target_ongoing=args.target_ongoing_requests,
        upscale_delay=args.upscale_delay, downscale_delay=args.downscale_delay,
        num_cpus=args.replica_cpus if args.replica_cpus is not None else (args.threads or 1),
        num_gpus=args.replica_gpus,
        router=args.ray_router, max_queued=args.ray_max_queued,
        max_replicas_per_node=args.max_replicas_per_node, app_name=args.ray_app_name)


def ray_engine(args: argparse.Namespace, engine: EngineConfig) -> Engine | None:
    """A ``RayEngine`` when ``--ray-address`` is given, else None."""
    if getattr(args, "ray_address", None) is None:
        return None
    if engine.vllm is not None and engine.vllm.distributed_executor_backend == "ray":
        return None  # vLLM's own Ray executor spreads this one engine over the cluster
    try:
        from insieme.engine.ray.engine import RayEngine
        from insieme.engine.ray.sources import LaunchedReplicas
    except ImportError as exc:
        raise ConfigError(f"--ray-address needs Ray: pip install 'insieme[ray]' ({exc})") from exc
    return RayEngine(LaunchedReplicas(engine, ray_config(args)))


def build_app(options: dict[str, Any]) -> Any:
    """The Serve application for ``serve deploy`` (``import_path: insieme.ray_serve:build_app``):
    ``options`` are ``insieme serve`` flags, spelt as in a config file (``threads: 1``,
    ``replicas: 2``, ``api_key: ...``). The ingress deployment runs the insieme API; the
    replicas run behind it."""
    from ray import serve

    from insieme.cli import serve_parser, server_config
    from insieme.engine.ray.deploy import engine_application

    parser = serve_parser()
    known = {action.dest for action in parser._actions}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown insieme serve options: {', '.join(unknown)}")
    parser.set_defaults(**options, ray_address="serve")
    args = parser.parse_args([])
    config = server_config(args)
    replicas = engine_application(config.engine, ray_config(args))
    # The API reserves no CPU: Ray's CPUs are the engines' (--threads each).
    ingress = serve.deployment(serve.ingress()(InsiemeIngress)).options(
        name="InsiemeIngress", ray_actor_options={"num_cpus": 0})
    return ingress.bind(replicas, config, ray_config(args).app_name)


class InsiemeIngress:
    """The insieme API as a Serve ingress deployment, over a ``RayEngine`` bound to the
    replicas (keys, ledger, metrics and admission all stay here)."""

    def __init__(self, replicas: Any, config: Any, app_name: str) -> None:
        self._replicas = replicas
        self._config = config
        self._app_name = app_name

    def __serve_build_asgi_app__(self) -> Any:
        from insieme.api.app import create_app
        from insieme.engine.ray.engine import RayEngine
        from insieme.engine.ray.sources import BoundReplicas

        return create_app(RayEngine(BoundReplicas(self._replicas, self._app_name)),
                          self._config)
