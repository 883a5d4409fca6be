"""`edgead batch BUNDLE --data ... --out results.parquet [--ray ADDRESS]`: score an archive."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    err_console,
    handle_errors,
    print_json,
    progress_bars,
    trusted_keys_or_none,
)


@handle_errors
def batch(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Image bundle (.edgead).", exists=True, dir_okay=False, resolve_path=True
        ),
    ],
    data: Annotated[
        str,
        typer.Option(
            help="Folder of images (recursive), glob pattern, text file of paths, or Parquet "
            "file with a 'path' column."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            help="Results Parquet file; an existing one is resumed (scored paths are skipped)."
        ),
    ],
    ray: Annotated[
        str | None,
        typer.Option(
            "--ray",
            help="Run on Ray: 'local' (start Ray here), 'auto' or host:port of a running head. "
            "Default: one process, no Ray.",
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Ray actors, one Detector each (with --ray).")] = 2,
    batch_size: Annotated[int, typer.Option(help="Images per scoring call / Ray batch.")] = 16,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | gpu | npu")] = "cpu",
    backend: Annotated[str | None, typer.Option(help="onnxruntime | openvino | tensorrt")] = None,
    threads: Annotated[
        int | None,
        typer.Option(help="CPU threads per Detector (default: all in one process, 1 per actor)."),
    ] = None,
    save_maps: Annotated[
        Path | None, typer.Option("--save-maps", help="Folder for anomaly-map overlays (PNG).")
    ] = None,
    flush_rows: Annotated[
        int, typer.Option(help="Rows per part file (the work a crash can lose).")
    ] = 1024,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Score every image of an archive into one Parquet file, resumably; on Ray with --ray."""
    from edgead.cluster.batch import BatchOptions, run_batch
    from edgead.errors import ConfigError

    options = BatchOptions(
        batch_size=batch_size,
        device=device,
        backend=backend,
        threads=threads,
        maps_dir=save_maps,
        flush_rows=flush_rows,
        trusted_keys=tuple(trusted_keys_or_none(trusted_key) or ()) or None,
    )
    options.validate()
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    with progress_bars(not json_out) as progress:
        if ray is None:
            summary = run_batch(bundle, data, out, options, progress=progress)
        else:
            from edgead.cluster.ray_batch import run_batch_ray

            summary = run_batch_ray(
                bundle, data, out, options, address=ray, workers=workers, progress=progress
            )
    report = {
        "out": str(out),
        "engine": summary.engine,
        "inputs": summary.inputs,
        "skipped": summary.skipped,
        "scored": summary.scored,
        "failed": summary.failed,
        "rows": summary.rows,
        "seconds": round(summary.seconds, 3),
        "images_per_s": round(summary.images_per_s, 3),
    }
    if json_out:
        print_json(report)
    else:
        err_console.print(
            f"[bold]{out}[/]: {summary.rows} rows; this run scored {summary.scored}, failed "
            f"{summary.failed}, skipped {summary.skipped} already scored; "
            f"{summary.images_per_s:.1f} images/s ({summary.engine})",
            highlight=False,
        )
    if summary.failed:
        raise typer.Exit(code=1)
