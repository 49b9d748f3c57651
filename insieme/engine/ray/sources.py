"""Where a ``RayEngine`` gets its replicas: it starts them itself on the cluster it joins
(``insieme serve --ray-address``), or a Serve application hands it their handle (the ingress
deployment of ``serve deploy``)."""

from __future__ import annotations

import contextlib
import logging

import ray
from ray import serve
from ray.serve.handle import DeploymentHandle

from insieme.config import EngineConfig
from insieme.engine.ray.board import board_name
from insieme.engine.ray.config import RayConfig
from insieme.engine.ray.deploy import engine_application

log = logging.getLogger("insieme.engine.ray")


_connected = 0  # LaunchedReplicas open in this process: Ray is left connected until the last


class LaunchedReplicas:
    """Joins the Ray cluster at ``address`` (or starts a local one), runs the replicas as a
    Serve application without Serve's HTTP proxy (this process is the HTTP ingress), and on
    ``close`` deletes them again, and the local Ray instance if it started one."""

    def __init__(self, engine: EngineConfig, ray_config: RayConfig) -> None:
        self.app_name = ray_config.app_name
        self._engine = engine
        self._ray_config = ray_config
        self._started_ray = False
        self._opened = False

    def open(self) -> DeploymentHandle:
        global _connected
        _connected += 1
        self._opened = True
        if not ray.is_initialized():
            address = self._ray_config.address
            ray.init(address=None if address == "local" else address,
                     namespace="insieme", include_dashboard=False, log_to_driver=False,
                     configure_logging=False)
            self._started_ray = address == "local"
        serve.start(proxy_location="Disabled")
        log.info("starting the engine replicas on Ray (%s)", self._ray_config.address)
        return serve.run(engine_application(self._engine, self._ray_config),
                         name=self.app_name, route_prefix=None)

    def close(self) -> None:
        global _connected
        if not self._opened or not ray.is_initialized():
            return
        self._opened = False
        _connected -= 1
        with contextlib.suppress(Exception):
            serve.delete(self.app_name)
        with contextlib.suppress(Exception):
            ray.kill(ray.get_actor(board_name(self.app_name), namespace="insieme"))
        if _connected == 0:
            if self._started_ray:
                serve.shutdown()
            ray.shutdown()


class BoundReplicas:
    """Replicas a Serve application started and bound to this ingress; they outlive it."""

    def __init__(self, handle: DeploymentHandle, app_name: str) -> None:
        self.app_name = app_name
        self._handle = handle

    def open(self) -> DeploymentHandle:
        return self._handle

    def close(self) -> None:
        pass
