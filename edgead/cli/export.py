"""`edgead export RUN --target onnx|openvino|tensorrt [--precision ..] --out MODEL.edgead`.

Nearest-neighbour detectors also take `--index flat|fp16|sq8|pq|pq4|ivfpq|hnsw|auto|FACTORY`,
`--index-dim N`, `--index-reduce pca|rr`, `--index-rerank R` and `--max-auroc-drop X`;
`--device NAME` picks target and precision from a device profile (explicit options win).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edgead.cli._common import console, err_console, handle_errors, print_json, progress_bars


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
    target: Annotated[
        str | None,
        typer.Option(
            help="onnx | openvino | tensorrt (alias engine) (default: --device's, else onnx)"
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="fp32 | fp16 (fp16: openvino, tensorrt; default: --device's, else fp32)"),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(
            "--device",
            help="Device profile name (see `edgead devices`): sets target and precision "
            "unless given, and is recorded in the manifest.",
        ),
    ] = None,
    index: Annotated[
        str | None,
        typer.Option(
            "--index",
            help="Nearest-neighbour index: flat | fp16 | sq8 | pq | pq4 | ivfpq | hnsw | auto | "
            "a faiss index_factory string (default: pq4 for PatchCore, flat for kNN/LOF).",
        ),
    ] = None,
    index_dim: Annotated[
        int | None, typer.Option("--index-dim", help="Reduce bank vectors to N dims in the index.")
    ] = None,
    index_reduce: Annotated[
        str, typer.Option("--index-reduce", help="pca | rr (random rotation), with --index-dim.")
    ] = "pca",
    index_rerank: Annotated[
        int,
        typer.Option(
            "--index-rerank", help="Re-rank the top R candidates exactly (ships an fp16 bank copy)."
        ),
    ] = 0,
    max_auroc_drop: Annotated[
        float,
        typer.Option(
            "--max-auroc-drop",
            help="Fail export when the index loses more image/pixel AUROC than this vs exact.",
        ),
    ] = 0.005,
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

    if device is not None:
        from edgead.devices import profile_export_settings

        profile_target, profile_precision = profile_export_settings(device)
        if target is None and _profile_target(run_dir, device, profile_target) != profile_target:
            profile_target, profile_precision = "onnx", "fp32"
        # the profile's precision goes with its target; an explicit other target keeps fp32
        # unless --precision says otherwise
        if precision is None and (target is None or target.lower() == profile_target):
            precision = profile_precision
        target = target or profile_target
        device_profile = device_profile or device
    # only options the user changed: detectors without an index refuse any index option
    index_options = {
        "index": index,
        "index_dim": index_dim,
        "reduce": index_reduce.lower(),
        "rerank": index_rerank,
        "max_auroc_drop": max_auroc_drop,
    }
    with progress_bars(not json_out) as progress:
        manifest = export_run(
            run_dir,
            target=(target or "onnx").lower(),
            precision=(precision or "fp32").lower(),
            out=out,
            device_profile=device_profile,
            index=_given(index_options),
            progress=progress,
            data=data,
        )
    summary: dict[str, Any] = {
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
        "index": manifest.export.get("index"),
        "calibration": manifest.export.get("calibration"),
        "device_profile": manifest.export.get("device_profile"),
    }
    if json_out:
        print_json(summary)
        return
    from rich.table import Table

    table = Table(title=f"exported {manifest.detector} -> {out}", show_header=False)
    for key in ("target", "precision", "device_profile", "size_mb", "threshold"):
        table.add_row(key, str(summary[key]))
    for name, entry in summary["parity"].items():
        table.add_row(
            f"parity {name}",
            f"outputs {entry['max_rel_err']}, scores {entry['score_max_rel_err']:.2e} (relative)",
        )
    if summary["index"]:
        for label, text in _index_rows(summary["index"]):
            table.add_row(label, text)
    calibration = summary["calibration"]
    if calibration and calibration.get("method") != "none":
        table.add_row(
            "threshold re-fit",
            f"{calibration.get('run_threshold')} -> {calibration.get('threshold')} "
            f"({calibration.get('method')})",
        )
    for key, value in manifest.metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def _profile_target(run_dir: Path, device: str, profile_target: str) -> str:
    """The profile's target, except tensorrt for a tabular run: onnx, with a warning saying why."""
    from edgead.rundir import read_run_meta

    if profile_target == "tensorrt" and read_run_meta(run_dir).get("modality") == "tabular":
        err_console.print(
            f"[yellow]profile {device} prefers --target tensorrt, but a tabular graph gains "
            "nothing from TensorRT; exporting --target onnx (ONNX Runtime runs it on the CPU)[/]"
        )
        return "onnx"
    return profile_target


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The index options that differ from `IndexOptions`' defaults (None = not given)."""
    from edgead.export.index import IndexOptions

    defaults = IndexOptions()
    return {
        key: value
        for key, value in options.items()
        if value is not None and (key == "index" or value != getattr(defaults, key))
    }


def _index_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows of the index report for the CLI table."""
    rows = [
        (
            "index",
            f"{report.get('factory')} ({report.get('name')}), {report.get('n_vectors')} x "
            f"{report.get('dim')}",
        ),
        (
            "index bytes",
            f"{report.get('bytes')} ({report.get('compression_ratio', 0.0):.1f}x "
            f"smaller than fp32)",
        ),
        ("index recall@1", f"{report.get('recall_at_1', float('nan')):.4f}"),
        (
            "index search ms/frame",
            f"{report.get('search_ms_per_frame', float('nan')):.2f} (exact "
            f"{report.get('exact_search_ms_per_frame', float('nan')):.2f})",
        ),
    ]
    for key in ("image_auroc", "pixel_auroc"):
        if f"{key}_drop" in report:
            rows.append(
                (
                    f"index {key} change",
                    f"{-report[f'{key}_drop']:+.4f} (exact {report[f'{key}_exact']:.4f})",
                )
            )
    if not any(k.endswith("_drop") for k in report):
        rows.append(("index AUROC change", f"not measured ({report.get('measured_on')} data)"))
    return rows
