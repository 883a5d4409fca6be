"""`edgead export RUN --target onnx|openvino|tensorrt [--precision ..] --out MODEL.edgead`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edgead.cli._common import console, handle_errors, print_json, progress_bars


@handle_errors
def export(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="Run directory made by `edgead train`.",
            exists=True,
            file_okay=False,
            resolve_path=True,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle file to write (MODEL.edgead).")],
    target: Annotated[str, typer.Option(help="onnx | openvino | tensorrt")] = "onnx",
    precision: Annotated[str, typer.Option(help="fp32 | fp16 (fp16: openvino, tensorrt)")] = "fp32",
    data: Annotated[
        Path | None,
        typer.Option(
            help="Data for the parity check and export metrics (default: the run's data)."
        ),
    ] = None,
    device_profile: Annotated[
        str | None,
        typer.Option("--device-profile", help="Device profile the bundle is meant for (recorded)."),
    ] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the manifest summary as JSON.")
    ] = False,
) -> None:
    """Export a trained run to one self-contained bundle, checked for parity with the run."""
    from edgead.export import export_run

    with progress_bars(not json_out) as progress:
        manifest = export_run(
            run_dir,
            target=target.lower(),
            precision=precision.lower(),
            out=out,
            device_profile=device_profile,
            progress=progress,
            data=data,
        )
    summary = {
        "bundle": str(out),
        "size_mb": round(out.stat().st_size / 1e6, 3),
        "detector": manifest.detector,
        "target": manifest.target,
        "precision": manifest.precision,
        "graphs": manifest.graphs,
        "threshold": manifest.threshold,
        "parity": {
            name: {
                "backend": entry.get("backend"),
                "max_rel_err": {k: v["max_rel_err"] for k, v in entry.get("outputs", {}).items()},
                "score_max_rel_err": entry.get("score", {}).get("max_rel_err"),
            }
            for name, entry in manifest.export.get("parity", {}).items()
            if "outputs" in entry
        },
        "metrics": manifest.metrics,
    }
    if json_out:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"exported {manifest.detector} -> {out}", show_header=False)
    for key in ("target", "precision", "size_mb", "threshold"):
        table.add_row(key, str(summary[key]))
    for name, entry in summary["parity"].items():
        table.add_row(
            f"parity {name}",
            f"outputs {entry['max_rel_err']}, scores {entry['score_max_rel_err']:.2e} (relative)",
        )
    for key, value in manifest.metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
