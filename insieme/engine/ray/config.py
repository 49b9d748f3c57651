"""How the replicas are spread: the Ray cluster, how many replicas, what each one gets."""

from __future__ import annotations

from dataclasses import dataclass

from insieme.errors import ConfigError

ROUTERS = ("prefix", "pow2", "round-robin")


@dataclass(frozen=True, slots=True)
class RayConfig:
    """The Ray Serve deployment of the engine replicas.

    ``address`` is a running cluster (``HOST:PORT``, ``auto``, ``ray://...``) or ``local`` to
    start a Ray instance in this process. A fixed ``replicas`` count, or ``min_replicas`` to
    ``max_replicas`` scaled on queue depth (requests per replica beyond ``target_ongoing``).
    ``num_cpus`` and ``num_gpus`` are what Ray reserves per replica (default: the engine's
    threads, no GPU; 0 CPUs: Ray places replicas without counting CPUs). ``router`` picks a
    replica: ``prefix`` (the one most likely to hold the prompt's prefix, least loaded when
    the match is weak), ``pow2`` (Serve's default) or ``round-robin``. Autoscaling adds
    replicas after ``upscale_delay`` seconds of load above target, and removes them after
    ``downscale_delay`` seconds below. ``max_queued`` requests may wait in
    front of replicas that are all full; beyond, 429.
    """

    address: str = "local"
    replicas: int = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    target_ongoing: float | None = None  # None: the engine's batch, max_num_seqs
    upscale_delay: float | None = None  # None: Serve's own (30 s)
    downscale_delay: float | None = None  # None: Serve's own (600 s)
    num_cpus: float | None = None
    num_gpus: float = 0.0
    router: str = "prefix"
    max_queued: int = 64
    app_name: str = "insieme"
    max_replicas_per_node: int | None = None

    def __post_init__(self) -> None:
        if not self.address:
            raise ConfigError("--ray-address needs an address, or 'local'")
        if self.replicas < 1:
            raise ConfigError("--replicas must be at least 1")
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise ConfigError("--min-replicas and --max-replicas go together")
        if self.min_replicas is not None and self.max_replicas is not None and not (
                0 <= self.min_replicas <= self.max_replicas and self.max_replicas >= 1):
            raise ConfigError("--min-replicas and --max-replicas need 0 <= min <= max, max >= 1")
        if self.num_cpus is not None and self.num_cpus < 0:
            raise ConfigError("--replica-cpus must be 0 or more")
        if self.num_gpus < 0:
            raise ConfigError("--replica-gpus must be 0 or more")
        if self.router not in ROUTERS:
            raise ConfigError(f"--ray-router must be one of {', '.join(ROUTERS)}")
        if self.max_queued < 0:
            raise ConfigError("--ray-max-queued must be 0 or more")
        if self.target_ongoing is not None and self.target_ongoing <= 0:
            raise ConfigError("--target-ongoing-requests must be more than 0")
        for name, delay in (("--upscale-delay", self.upscale_delay),
                            ("--downscale-delay", self.downscale_delay)):
            if delay is not None and delay < 0:
                raise ConfigError(f"{name} must be 0 or more seconds")
            if delay is not None and not self.autoscaling:
                raise ConfigError(f"{name} needs --min-replicas and --max-replicas")
        if not self.app_name:
            raise ConfigError("--ray-app-name must not be empty")
        if self.max_replicas_per_node is not None and self.max_replicas_per_node < 1:
            raise ConfigError("--max-replicas-per-node must be at least 1")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None
