"""The Ray flags as Serve sees them: replica resources, scaling, routing, and the refusals of
settings that cannot work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.engine.ray.cluster import require_ray

require_ray()

ROOT = Path(__file__).resolve().parents[3]

from insieme.cli import serve_parser, server_config  # noqa: E402
from insieme.engine.ray.deploy import replica_options  # noqa: E402
from insieme.errors import ConfigError  # noqa: E402
from insieme.ray_serve import ray_config  # noqa: E402


def options(*argv: str) -> dict[str, Any]:
    args = serve_parser().parse_args(["--ray-address", "local", "--no-usage-db", *argv])
    return replica_options(server_config(args).engine, ray_config(args))


def test_fixed_replicas_reserve_their_threads() -> None:
    found = options("--replicas", "3", "--threads", "2", "--max-num-seqs", "8")
    assert found["num_replicas"] == 3 and "autoscaling_config" not in found
    assert found["ray_actor_options"] == {"num_cpus": 2, "num_gpus": 0.0}
    assert found["max_ongoing_requests"] >= 8
    assert found["request_router_config"].request_router_class.endswith(".PrefixRouter")


def test_autoscaling_passes_serve_its_bounds_and_delays() -> None:
    found = options("--min-replicas", "1", "--max-replicas", "4", "--max-num-seqs", "8",
                    "--upscale-delay", "2", "--downscale-delay", "30")
    assert "num_replicas" not in found
    assert found["autoscaling_config"] == {
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 8,
        "upscale_delay_s": 2.0, "downscale_delay_s": 30.0}
    # Serve's own defaults when the delays are not given.
    assert "upscale_delay_s" not in options("--min-replicas", "0", "--max-replicas",
                                            "2")["autoscaling_config"]


@pytest.mark.parametrize(("router", "suffix"), [("round-robin", ".RoundRobinRouter"),
                                                ("prefix", ".PrefixRouter")])
def test_routers_by_name(router: str, suffix: str) -> None:
    found = options("--replicas", "2", "--ray-router", router)
    assert found["request_router_config"].request_router_class.endswith(suffix)
    assert "request_router_config" not in options("--replicas", "2", "--ray-router", "pow2")


@pytest.mark.parametrize(("argv", "says"), [
    (("--upscale-delay", "5"), "--upscale-delay needs --min-replicas"),
    (("--min-replicas", "1", "--max-replicas", "2", "--downscale-delay", "-1"),
     "--downscale-delay must be 0 or more"),
    (("--min-replicas", "1"), "go together"),
    (("--min-replicas", "3", "--max-replicas", "2"), "min <= max"),
])
def test_settings_that_cannot_work_are_refused(argv: tuple[str, ...], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        options(*argv)


def test_the_serve_deploy_recipe_builds() -> None:
    """deploy/serve.yaml's application, as `serve deploy` would build it from its args: the
    insieme API as the ingress deployment, bound to the engine replicas."""
    import yaml
    from ray.serve import Application

    from insieme.ray_serve import build_app

    config = yaml.safe_load((ROOT / "deploy" / "serve.yaml").read_text())
    (application,) = config["applications"]
    assert application["import_path"] == "insieme.ray_serve:build_app"
    assert isinstance(build_app(application["args"]), Application)
    with pytest.raises(ConfigError, match="unknown insieme serve options: thread"):
        build_app({**application["args"], "thread": 2})


def test_the_ingress_reads_serve_throughput_mode_without_passing_it_on() -> None:
    # The ingress process: Serve's handles route on the caller's loop over gRPC; the
    # variable is gone again, so a Ray instance it starts keeps the replicas' default mode.
    # A value the user gave is theirs.
    probe = ("import os, insieme.engine.ray; from ray.serve._private import constants as c; "
             "print(c.RAY_SERVE_USE_GRPC_BY_DEFAULT, c.RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP, "
             "os.environ.get('RAY_SERVE_THROUGHPUT_OPTIMIZED'))")
    env = {k: v for k, v in os.environ.items() if k != "RAY_SERVE_THROUGHPUT_OPTIMIZED"}
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.split()
    assert found == ["True", "False", "None"]
    env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] = "0"
    found = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                           text=True, check=True, cwd=ROOT).stdout.split()
    assert found == ["False", "True", "0"]
