"""`edgead run`: the camera inspection loop (frames in, JSON lines and anomaly images out)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import TRUSTED_KEY_HELP, err_console, handle_errors, trusted_keys_or_none


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
            help="Camera index, /dev/videoN, rtsp/http URL, video file or image folder.",
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
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Score a camera, stream, video or folder frame by frame; Ctrl-C or SIGTERM stops cleanly."""
    import sys
    import threading

    from edgead.runtime.loop import LoopConfig, parse_roi, run_inspection, stop_on_signals

    device, backend, threads = _resolve_device(device, backend, threads)
    config = LoopConfig(
        roi=parse_roi(roi), out_dir=out, save_anomalies=save_anomalies, status_every_s=status_every
    )
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
