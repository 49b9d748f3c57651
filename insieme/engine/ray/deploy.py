"""The engine replicas as a Serve application: resources, scaling, queue bounds, routing."""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application
from ray.serve.config import RequestRouterConfig

from insieme.config import EngineConfig
from insieme.engine.ray.config import RayConfig
from insieme.engine.ray.replica import EngineReplica

DEPLOYMENT_NAME = "EngineReplica"


def replica_options(engine: EngineConfig, ray_config: RayConfig) -> dict[str, Any]:
    """``serve.deployment`` options for the replicas of ``engine``."""
    # One request in Serve's count is one engine request, whatever its n: a replica takes as
    # many as its engine runs and queues, and Serve holds the rest in front of the replicas
    # (up to max_queued, then BackPressureError, a 429) instead of sending them to be refused.
    capacity = engine.max_num_seqs + engine.max_queue
    options: dict[str, Any] = {
        "name": DEPLOYMENT_NAME,
        "ray_actor_options": {"num_cpus": engine.threads if ray_config.num_cpus is None
                              else ray_config.num_cpus,
                              "num_gpus": ray_config.num_gpus},
        "max_ongoing_requests": capacity,
        "max_queued_requests": ray_config.max_queued,
        # A replica's process can die at any time: notice it within seconds, not Serve's 10 s.
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 10.0,
        "graceful_shutdown_timeout_s": 5.0,
    }
    if ray_config.max_replicas_per_node is not None:
        options["max_replicas_per_node"] = ray_config.max_replicas_per_node
    if ray_config.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": ray_config.min_replicas,
            "max_replicas": ray_config.max_replicas,
            # Queue depth: a replica that has more than a batch to do wants a sibling.
            "target_ongoing_requests": ray_config.target_ongoing or engine.max_num_seqs,
        }
        for key, value in (("upscale_delay_s", ray_config.upscale_delay),
                           ("downscale_delay_s", ray_config.downscale_delay)):
            if value is not None:
                options["autoscaling_config"][key] = value
    else:
        options["num_replicas"] = ray_config.replicas
    if ray_config.router == "prefix":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class="insieme.engine.ray.routing.PrefixRouter",
            request_router_kwargs={
                # Past this many more requests than another replica, go by load alone.
                "imbalanced_threshold": max(2, engine.max_num_seqs // 2),
                # Follow a match only when it covers at least half the prompt, else go by
                # load: a first turn shares a system prompt with every other conversation
                # (a large part of it), a later turn's history is most of its prompt. With
                # Ray's default (10%) every new conversation went to the first replica that
                # had seen the system prompt, until the queues differed enough to send
                # conversations away from their caches (SGLang's gateway uses 30%).
                "match_rate_threshold": 0.5,
            })
    elif ray_config.router == "round-robin":
        options["request_router_config"] = RequestRouterConfig(
            request_router_class="insieme.engine.ray.routing.RoundRobinRouter")
    return options


def engine_application(engine: EngineConfig, ray_config: RayConfig) -> Application:
    """The replicas of ``engine`` as a Serve application (bound, not yet running)."""
    deployment = serve.deployment(EngineReplica).options(**replica_options(engine, ray_config))
    return deployment.bind(engine, ray_config.app_name)
