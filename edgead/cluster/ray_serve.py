"""`edgead serve --ray`: the `ScoringService` API as a Ray Serve deployment. Imports Ray.

    HTTP -> Ray Serve proxy (every node with a replica) -> EdgeadDeployment replica (one Detector
    each, `--replicas N`) -> ScoringService.handle -> the same JSON as the one-process server

The replicas count into one named stats actor (`edgead-serve-stats`, a `LocalStats` held by
Ray), so /metrics and /healthz report the whole deployment whichever replica answers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path
from typing import Any

import ray
from ray import serve

from edgead.cluster.ray_batch import ray_connection
from edgead.cluster.service import LocalStats, ScoringService
from edgead.runtime.loop import stop_on_signals

logger = logging.getLogger(__name__)

STATS_ACTOR = "edgead-serve-stats"
APP_NAME = "edgead"


class RemoteStats:
    """ServiceStats that forward to the stats actor; counting does not wait for it."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def record(self, latency_ms: float, score: float, is_anomaly: bool, items: int = 1) -> None:
        """Count `items` scored items (fire and forget)."""
        self.actor.record.remote(latency_ms, score, is_anomaly, items)

    def add_request(self, rejected: bool) -> None:
        """Count one request (fire and forget)."""
        self.actor.add_request.remote(rejected)

    def collect(self) -> dict[str, Any]:
        """The deployment-wide counters (waits for the actor)."""
        return ray.get(self.actor.collect.remote(), timeout=10)


@serve.deployment(name="edgead", max_ongoing_requests=4)
class EdgeadDeployment:
    """One replica: a ScoringService whose counts go to the shared stats actor."""

    def __init__(self, bundle: str, device: str, backend: str | None, threads: int | None):
        stats = RemoteStats(ray.get_actor(STATS_ACTOR))
        self.service = ScoringService(
            bundle, device=device, backend=backend, threads=threads, stats=stats
        )

    async def __call__(self, request: Any) -> Any:
        """Answer a starlette request through ScoringService.handle."""
        from starlette.responses import Response

        body = await request.body()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        ctype = request.headers.get("content-type", "application/octet-stream")
        reply = await asyncio.to_thread(self.service.handle, request.method, target, body, ctype)
        return Response(reply.body, status_code=reply.status, media_type=reply.content_type)


def serve_on_ray(
    bundle: str | Path,
    *,
    address: str,
    replicas: int,
    port: int,
    host: str = "127.0.0.1",
    device: str = "cpu",
    backend: str | None = None,
    threads: int | None = None,
    stop_event: threading.Event,
    ready: threading.Event | None = None,
) -> None:
    """Deploy `bundle` on Ray Serve at http://host:port/ and serve until `stop_event` is set.

    Args:
        bundle: `.edgead` bundle (readable at the same path on every node).
        address: "local", "auto" or "host:port" of a running Ray head (see `ray_connection`).
        replicas: Serve replicas; each holds one Detector with `threads` threads (1 when None)
            and asks Ray for as many CPUs.
        port, host: where the Serve HTTP proxy listens.
        stop_event: set it to stop (SIGINT/SIGTERM set it too); Serve is shut down before
            returning.
        ready: set once the deployment answers.
    """
    threads = threads or 1
    # signal handlers after ray.init (which installs its own SIGTERM handler in the driver) and
    # before the deployment, so a stop request while it starts still shuts Serve down cleanly
    with ray_connection(address) as ray_mod, stop_on_signals(stop_event):
        stats = ray_mod.remote(num_cpus=0)(LocalStats).options(name=STATS_ACTOR).remote()
        try:
            serve.start(http_options={"host": host, "port": port})
            app = EdgeadDeployment.options(
                num_replicas=replicas, ray_actor_options={"num_cpus": threads}
            ).bind(str(bundle), device, backend, threads)
            serve.run(app, name=APP_NAME, route_prefix="/")
            logger.info(
                "serving %s on http://%s:%d with %d Ray Serve replica(s)",
                bundle,
                host,
                port,
                replicas,
            )
            if ready is not None:
                ready.set()
            stop_event.wait()
        finally:
            serve.shutdown()
            ray_mod.kill(stats)
