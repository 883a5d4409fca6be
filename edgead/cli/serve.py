"""`edgead serve BUNDLE --port P [--ray ADDRESS --replicas N]`: score images or rows over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import TRUSTED_KEY_HELP, handle_errors, trusted_keys_or_none


@handle_errors
def serve(
    bundle: Annotated[
        Path,
        typer.Argument(help="Bundle (.edgead).", exists=True, dir_okay=False, resolve_path=True),
    ],
    port: Annotated[int, typer.Option(help="TCP port for POST /score, /healthz, /metrics.")],
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Deploy on Ray Serve: 'local', 'auto' or host:port of a running head. "
            "Default: one process, no Ray.",
        ),
    ] = None,
    replicas: Annotated[int, typer.Option(help="Ray Serve replicas (with --ray).")] = 1,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | gpu | npu")] = "auto",
    backend: Annotated[str | None, typer.Option(help="onnxruntime | openvino | tensorrt")] = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads per Detector (default 1 per Ray replica).")
    ] = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Serve a bundle over HTTP until Ctrl-C or SIGTERM (POST /score: image bytes or JSON rows)."""
    import threading

    from edgead.errors import ConfigError
    from edgead.runtime.loop import stop_on_signals

    if replicas < 1:
        raise ConfigError(f"--replicas must be >= 1, got {replicas}")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {port}")
    stop = threading.Event()
    if ray is not None and trusted_key:
        raise ConfigError(
            "--trusted-key is not supported with --ray yet (each replica loads the bundle on "
            "its node); serve without --ray, or verify with `edgead predict --trusted-key`"
        )
    if ray is not None:
        from edgead.cluster import require_module

        require_module("ray.serve", "--ray")
        from edgead.cluster.ray_serve import serve_on_ray

        serve_on_ray(  # installs the signal handlers itself, after Ray's
            bundle,
            address=ray,
            replicas=replicas,
            port=port,
            host=host,
            device=device,
            backend=backend,
            threads=threads,
            stop_event=stop,
        )
        return
    with stop_on_signals(stop):
        from edgead.cluster.service import HttpServer, ScoringService

        service = ScoringService(
            bundle,
            device=device,
            backend=backend,
            threads=threads,
            trusted_keys=trusted_keys_or_none(trusted_key),
        )
        server = HttpServer(service, port, host).start()
        try:
            stop.wait()
        finally:
            server.close()
