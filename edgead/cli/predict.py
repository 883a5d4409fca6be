"""`edgead predict MODEL.edgead IMAGE_OR_DIR... | ROWS.csv | -`: torch-free scoring."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from edgead.cli._common import (
    TRUSTED_KEY_HELP,
    SensitivityOption,
    ThresholdOption,
    console,
    handle_errors,
    print_json,
    trusted_keys_or_none,
)


@handle_errors
def predict(
    bundle: Annotated[
        Path,
        typer.Argument(
            help="Bundle made by `edgead export`.", exists=True, dir_okay=False, resolve_path=True
        ),
    ],
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Images or folders (image bundles); a .csv/.npz/.parquet table or '-' for JSON "
            "lines on stdin (tabular and sensor-window bundles)."
        ),
    ],
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | gpu | npu")] = "auto",
    backend: Annotated[str | None, typer.Option(help="onnxruntime | openvino | tensorrt")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for graph and search.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
    save_maps: Annotated[
        Path | None,
        typer.Option("--save-maps", help="Folder for anomaly-map overlays (PNG) of each image."),
    ] = None,
    label_column: Annotated[
        str | None, typer.Option(help="Label column to drop from a .csv/.parquet table.")
    ] = None,
    verify: Annotated[
        bool | None,
        typer.Option(
            "--verify/--no-verify",
            help="Check the backend against the bundle's reference outputs first "
            "(default: only TensorRT).",
        ),
    ] = None,
    threshold: ThresholdOption = None,
    sensitivity: SensitivityOption = None,
    trusted_key: Annotated[
        list[Path] | None,
        typer.Option("--trusted-key", help=TRUSTED_KEY_HELP, exists=True, dir_okay=False),
    ] = None,
) -> None:
    """Score images or rows with a bundle; prints one line (or JSON object) per item.

    An item that cannot be scored is reported with its error while the others are scored; the
    exit status is then 1.
    """
    from edgead.runtime import Detector

    modality = _input_modality(inputs)
    with Detector.load(
        bundle,
        device=device,
        backend=backend,
        threads=threads,
        trusted_keys=trusted_keys_or_none(trusted_key),
        verify=verify,
        threshold=threshold,
        sensitivity=sensitivity,
        modality=modality,
    ) as det:
        header = {"bundle": str(bundle), "backend": det.backend, "fallbacks": det.fallbacks}
        header["threshold"] = det.manifest.threshold
        if det.reference_check is not None:
            header["reference_check"] = det.reference_check.to_dict()
        if det.manifest.modality == "timeseries":
            from edgead.cli._series import predict_series

            items = predict_series(det, inputs, label_column)
        elif det.manifest.modality == "tabular":
            items = _predict_rows(det, inputs, label_column)
        else:
            items = _predict_images(det, inputs, save_maps)
    failed = sum("error" in item for item in items)
    if json_out:
        print_json({**header, "n_failed": failed, "results": items})
    else:
        _print_table(bundle, header["backend"], items)
    if failed:
        raise typer.Exit(code=1)


def _print_table(bundle: Path, backend: str, items: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title=f"{bundle.name} on {backend}")
    table.add_column("item", no_wrap=True)
    for col in ("raw_score", "score", "anomaly"):
        table.add_column(col, no_wrap=True)
    width = max(24, console.width - 40)
    for item in items:
        name = str(item["item"])
        name = name if len(name) <= width else "..." + name[-(width - 3) :]  # keep the file name
        if "error" in item:
            table.add_row(name, "-", "-", f"[red]error:[/] {item['error']}")
            continue
        table.add_row(
            name,
            f"{item['raw_score']:.5g}",
            f"{item['score']:.3f}",
            {True: "[red]yes[/]", False: "no", None: "?"}[item["is_anomaly"]],
        )
    console.print(table)


_TABLE_SUFFIXES = (".csv", ".npz", ".parquet", ".pq", ".tsv", ".txt", ".json", ".jsonl")


def _input_modality(inputs: list[str]) -> str | None:
    """ "tabular" for '-' or table files, "image" for image files / folders, None if mixed."""
    from edgead.ops.decode import IMAGE_SUFFIXES

    if inputs == ["-"]:
        return "tabular"
    kinds = set()
    for raw in inputs:
        path = Path(raw)
        suffix = path.suffix.lower()
        if path.is_dir() or suffix in IMAGE_SUFFIXES:
            kinds.add("image")
        elif suffix in _TABLE_SUFFIXES:
            kinds.add("tabular")
    return kinds.pop() if len(kinds) == 1 else None


def _image_paths(inputs: list[str]) -> list[Path]:
    from edgead.errors import DataError
    from edgead.ops.decode import IMAGE_SUFFIXES, list_image_files

    paths: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            paths.extend(list_image_files(path, recursive=True))
        elif path.is_file():
            paths.append(path)
        else:
            raise DataError(f"{raw} is neither an image file nor a folder")
    if not paths:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found in {inputs}")
    return paths


def _predict_images(det: Any, inputs: list[str], save_maps: Path | None) -> list[dict[str, Any]]:
    from edgead.errors import DataError
    from edgead.ops.decode import read_frame

    items: list[dict[str, Any]] = []
    for path in _image_paths(inputs):
        try:
            frame = read_frame(path)  # the decoder of training and `run`: gray (H, W) or BGR
            res = det(frame, channel_order="BGR")
        except DataError as exc:
            items.append({"item": str(path), "error": str(exc)})
            continue
        item = {
            "item": str(path),
            "raw_score": res.raw_score,
            "score": res.score,
            "is_anomaly": res.is_anomaly,
            "timings_ms": res.timings_ms,
        }
        if save_maps is not None and res.anomaly_map is not None:
            from edgead.ops.image import to_rgb
            from edgead.ops.overlay import save_panel, score_panel

            title = f"{path.name}  score {res.score:.2f} (raw {res.raw_score:.3g})"
            panel = score_panel(
                to_rgb(frame, "BGR"), res.anomaly_map, det.manifest.normalisation, title
            )
            item["map"] = str(save_panel(save_maps / f"{path.stem}_map.png", panel))
        items.append(item)
    return items


def _predict_rows(det: Any, inputs: list[str], label_column: str | None) -> list[dict[str, Any]]:
    import numpy as np

    from edgead.errors import DataError

    names = det.manifest.input.feature_names
    if inputs == ["-"]:
        rows = []
        for number, line in enumerate(sys.stdin, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                raise DataError(f"stdin line {number} is not JSON: {exc}") from exc
            if isinstance(value, dict):
                if names is None:
                    raise DataError("this bundle has no feature names; send rows as JSON lists")
                missing = [n for n in names if n not in value]
                if missing:
                    raise DataError(f"stdin line {number} lacks features {missing}")
                value = [value[n] for n in names]
            rows.append(value)
        X = np.asarray(rows, dtype=np.float64) if rows else np.zeros((0, 0))
        labels = [f"stdin:{i + 1}" for i in range(len(rows))]
    else:
        from edgead.data.tabular import check_columns, load_table

        if len(inputs) != 1:
            raise DataError("tabular bundles take one table file (or '-' for stdin)")
        table = load_table(inputs[0], label_column=label_column)
        if names is not None:
            check_columns(table, names)
        X = table.X
        labels = [f"{inputs[0]}:{i}" for i in range(table.n_rows)]
    if len(X) == 0:
        raise DataError("no rows to score")
    scores = det.score_rows(X)
    return [
        {"item": label, "raw_score": float(r), "score": float(s), "is_anomaly": bool(a)}
        for label, r, s, a in zip(
            labels, scores.raw_scores, scores.scores, scores.is_anomaly, strict=True
        )
    ]
