"""`edgead run`: the camera inspection loop (frames in, JSON lines and anomaly images out)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    SensitivityOption,
    ThresholdOption,
    err_console,
    handle_errors,
    trusted_keys_or_none,
)


@handle_errors
def run(
    model: Annotated[
        Path,
        typer.Argument(
            help="Bundle (.edgead) to run.", exists=True, dir_okay=False, resolve_path=True
        ),
    ],
    source: Annotated[
        str,
        typer.Option(
            "--source",
            "-s",
            help="Camera index, /dev/videoN, rtsp/http URL, video file or image folder "
            "(sensor bundles: a .csv/.parquet file, '-' for stdin, or mqtt://host:port/topic).",
        ),
    ],
    device: Annotated[
        str,
        typer.Option(
            help="auto | cpu | cuda | gpu | npu, or a device profile name (see `edgead devices`)."
        ),
    ] = "auto",
    backend: Annotated[
        str | None,
        typer.Option(help="onnxruntime | openvino | tensorrt (default: the device's best)."),
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for the backend.")] = None,
    roi: Annotated[str | None, typer.Option(help="Crop x,y,w,h (px) before scoring.")] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Folder for results.jsonl, anomalies/ and "
            "summary.json (default: JSON lines on "
            "stdout)."
        ),
    ] = None,
    drop: Annotated[
        str | None,
        typer.Option(
            help="When scoring falls behind: oldest | newest | "
            "none (default: oldest for live sources, none for "
            "files and folders)."
        ),
    ] = None,
    http: Annotated[
        int | None,
        typer.Option(help="Serve /healthz and /metrics on this port.", min=0, max=65535),
    ] = None,
    http_host: Annotated[str, typer.Option(help="Address for --http.")] = "127.0.0.1",
    max_frames: Annotated[int | None, typer.Option(help="Stop after N frames read.")] = None,
    status_every: Annotated[
        float, typer.Option(help="Seconds between status lines (0: off).")
    ] = 10.0,
    loop: Annotated[
        bool, typer.Option("--loop", help="Replay a video file or folder at its end.")
    ] = False,
    fps: Annotated[
        float | None,
        typer.Option(
            help="Deliver file/folder frames at this rate, "
            "as a camera would (default: as fast as they "
            "decode)."
        ),
    ] = None,
    open_retries: Annotated[int, typer.Option(help="Attempts to open the source at start.")] = 3,
    backoff: Annotated[
        float, typer.Option(help="First reconnect delay, s (doubles, max 10 s).")
    ] = 0.5,
    save_anomalies: Annotated[
        bool, typer.Option(help="Save anomalous frames with heat maps.")
    ] = True,
    threshold: ThresholdOption = None,
    sensitivity: SensitivityOption = None,
    mqtt: Annotated[
        list[str] | None,
        typer.Option(help="Publish every result (QoS 1) to mqtt://host:port/topic (repeatable)."),
    ] = None,
    webhook: Annotated[
        list[str] | None, typer.Option(help="POST every result as JSON to this URL (repeatable).")
    ] = None,
    outbox: Annotated[
        Path | None,
        typer.Option(help="Disk buffer for --mqtt/--webhook while down (default OUT/outbox)."),
    ] = None,
    max_pending: Annotated[
        int, typer.Option(help="Results buffered per output before the oldest is dropped.")
    ] = 100_000,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume", help="Folder source: skip files that already have a result in --out."
        ),
    ] = False,
    rotate_mb: Annotated[
        float, typer.Option(help="Rotate results.jsonl at this size, MB (0: never).")
    ] = 100.0,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Score a camera, stream, video or folder frame by frame; Ctrl-C or SIGTERM stops cleanly.

    Sensor-window bundles take rows instead: --source FILE.csv (replayed at --fps rows/s), '-'
    (JSON lines on stdin) or mqtt://host:port/topic (one JSON row per message); one JSON line
    per scored row.
    """
    import sys
    import threading

    from edgead.cli._series import is_window_bundle, run_rows_command

    if is_window_bundle(model, trusted_keys_or_none(trusted_key)):
        device, backend, threads = _resolve_device(device, backend, threads)
        sinks = _sink_factories(mqtt or [], webhook or [], out, outbox, max_pending)
        run_rows_command(
            model,
            source,
            device=device,
            backend=backend,
            threads=threads,
            out=out,
            max_rows=max_frames,
            rate_hz=fps,
            trusted_keys=trusted_keys_or_none(trusted_key),
            sink_factories=sinks,
        )
        return

    from edgead.runtime.loop import LoopConfig, parse_roi, run_inspection, stop_on_signals

    device, backend, threads = _resolve_device(device, backend, threads)
    config = LoopConfig(
        roi=parse_roi(roi),
        out_dir=out,
        save_anomalies=save_anomalies,
        status_every_s=status_every,
        rotate_bytes=int(rotate_mb * 1024**2) if rotate_mb > 0 else None,
    )
    sinks = _sink_factories(mqtt or [], webhook or [], out, outbox, max_pending)
    stop = threading.Event()
    with stop_on_signals(stop):
        summary = run_inspection(
            model,
            source,
            device=device,
            backend=backend,
            threads=threads,
            config=config,
            drop=drop,
            loop_source=loop,
            max_frames=max_frames,
            pace_fps=fps,
            open_retries=open_retries,
            backoff_initial_s=backoff,
            http_port=http,
            http_host=http_host,
            stream=sys.stdout if out is None else None,
            stop_event=stop,
            trusted_keys=trusted_keys_or_none(trusted_key),
            threshold=threshold,
            sensitivity=sensitivity,
            resume=resume,
            sink_factories=sinks,
        )
    fallbacks = "".join(
        f"\n  fallback at frame {f.frame_index}: {f.from_backend} -> {f.to_backend} ({f.reason})"
        for f in summary.runtime_fallbacks
    )
    lat = summary.latency_ms
    err_console.print(
        f"[bold]{summary.stop_reason}[/]: read {summary.read}, scored {summary.scored}, "
        f"dropped {summary.dropped}, corrupt {summary.corrupt}, anomalies {summary.anomalies}, "
        f"reconnects {summary.reconnects}; {summary.fps:.1f} fps, latency p50 "
        f"{lat.get('p50', float('nan')):.1f} ms p95 {lat.get('p95', float('nan')):.1f} ms; "
        f"backend {summary.backend}{fallbacks}",
        highlight=False,
    )
    if summary.stop_reason in ("error", "source_lost"):
        raise typer.Exit(code=1)


def _sink_factories(
    mqtt: list[str], webhook: list[str], out: Path | None, outbox: Path | None, max_pending: int
) -> list[Callable[[str], Any]]:
    """One factory(run_id) -> ResultSink per --mqtt / --webhook URL (URLs checked now)."""
    from edgead.runtime.outputs import (
        check_webhook_url,
        mqtt_sink,
        outbox_dir,
        parse_mqtt_url,
        webhook_sink,
    )

    def folder(kind: str, i: int, n: int) -> Path:
        base = outbox_dir(out, outbox, kind)
        return base / str(i) if n > 1 else base

    factories: list[Callable[[str], Any]] = []
    for i, url in enumerate(mqtt):
        parse_mqtt_url(url)
        spool = folder("mqtt", i, len(mqtt))
        factories.append(
            lambda run_id, url=url, spool=spool: mqtt_sink(
                url, spool, f"edgead-{run_id}", max_pending=max_pending
            )
        )
    for i, url in enumerate(webhook):
        check_webhook_url(url)
        spool = folder("webhook", i, len(webhook))
        factories.append(
            lambda run_id, url=url, spool=spool: webhook_sink(url, spool, max_pending=max_pending)
        )
    return factories


def _resolve_device(
    device: str, backend: str | None, threads: int | None
) -> tuple[str, str | None, int | None]:
    """(device, backend, threads) for Detector.load; a profile name maps to its first backend."""
    from edgead.devices import list_profiles, load_profile

    if device.lower() in ("auto", "cpu", "cuda", "gpu", "npu"):
        return device.lower(), backend, threads
    if device not in list_profiles():
        from edgead.errors import unknown_name_error

        raise unknown_name_error(
            "device or profile", device, ["auto", "cpu", "cuda", "gpu", "npu", *list_profiles()]
        )
    profile = load_profile(device)
    first = profile.backends[0]
    if first.backend == "openvino":
        mapped = {"CPU": "cpu", "GPU": "gpu", "NPU": "npu"}.get(first.device or "CPU", "auto")
    elif first.backend == "tensorrt" or first.provider in (
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
    ):
        mapped = "cuda"
    else:
        mapped = "cpu"
    return mapped, backend, threads if threads is not None else (profile.threads or None)
