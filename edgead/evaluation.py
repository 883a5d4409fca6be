"""Evaluation on labelled data, of a run directory (the fitted model) or of a bundle (the device
runtime): one module above data, models and runtime, so the device runtime itself loads no data
sets and no scikit-learn.

Both paths share the data loading, the scoring loop, the metric keys and the panels, so they
return the same JSON keys (docs/ARCHITECTURE.md):
images -> image_auroc, image_auprc, image_f1, f1_threshold, threshold, n_test, n_anomalous,
precision/recall_at_threshold (+ pixel_auroc, aupro with masks), seconds_per_image;
tabular -> auroc, auprc, f1, f1_threshold, threshold, n_test, n_anomalous,
precision/recall_at_threshold, seconds_per_row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edgead import metrics
from edgead.errors import ConfigError, DataError
from edgead.ops.progress import Progress, no_progress

if TYPE_CHECKING:
    from edgead.runtime.detector import Result

#: images -> (raw scores float32 (B,), anomaly maps float32 (B, S, S) or None).
ScoreImages = Callable[[list[np.ndarray]], tuple[np.ndarray, np.ndarray | None]]

#: test images scored per call (bounds the memory held for maps).
EVAL_BATCH = 16
MAPS_SELECTIONS = ("all", "extremes")


def load_eval_data(
    data: str | Path,
    meta: dict[str, Any],
    modality: str,
    with_train: bool = False,
    image_size: int | tuple[int, int] | None = None,
) -> tuple[Any, Any, np.ndarray, Any]:
    """(train inputs or None, test inputs, labels int64 (N,), masks or None) from `data`.

    Images: an MVTec-layout folder (or "elpv") loaded at `image_size` (default: the config's),
    inputs uint8 RGB (S, S, 3) lazy sequences; masks bool (S, S) or None. Tabular: a table file;
    test = the ADBench split (seed from `meta["seed"]`, 0 if absent) when the file has labels.
    """
    if modality == "image":
        from edgead.data.datasets import load_image_dataset

        size = image_size or int((meta.get("config") or {}).get("image_size", 0))
        if not size:
            raise DataError("cannot tell the image size to evaluate at; the bundle/run has none")
        # the resize the run was trained with (recorded since issue 12); None: the loader default
        interpolation = (meta.get("data") or {}).get("interpolation")
        dataset = load_image_dataset(data, size, interpolation=interpolation)
        test = dataset.test_set()
        train = dataset.train_images() if with_train else None
        return train, test.images, np.asarray(test.labels), test.masks
    if modality == "timeseries":
        return _series_eval_data(data, meta, with_train)
    table_x, labels, train_x = _tabular_test_split(data, meta, with_train)
    return train_x, table_x, labels, None


def _series_eval_data(
    data: str | Path, meta: dict[str, Any], with_train: bool
) -> tuple[Any, Any, np.ndarray, Any]:
    """(train windows or None, test windows (M, L, D), labels of their last rows, None).

    Test windows end at the rows after the run's fit_rows (all rows when the run fitted every
    row of another file); train windows end inside the fitted rows.
    """
    from edgead.data.timeseries import fit_row_count, load_run_series, test_windows

    info = meta.get("data") or {}
    options = dict(info.get("options") or {})
    series = load_run_series(data, options, info.get("label_column"))
    if series.labels is None:
        raise DataError(f"{data} has no labels; evaluation needs a 0/1 label column")
    window = int((meta.get("config") or {}).get("window", 0))
    same = str(data) in (info.get("spec"), info.get("path"))
    start = fit_row_count(series, options) if same else 0
    start = 0 if start >= series.n_rows else start
    windows, labels = test_windows(series, window, start)
    train = None
    if with_train:
        train = test_windows(series, window, 0)[0][: max(start - window + 1, 1)]
    return train, windows, np.asarray(labels), None


def _tabular_test_split(
    data: str | Path, meta: dict[str, Any], with_train: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(test rows, test labels, train rows or None): the run's ADBench split of `data`."""
    from edgead.data.tabular import adbench_split, load_table

    table = load_table(data, (meta.get("data") or {}).get("label_column"))
    if table.y is None:
        raise DataError(f"{data} has no labels (y); evaluation needs 0/1 labels")
    train_idx, test_idx = adbench_split(table.y, seed=int(meta.get("seed", 0)))
    train = table.X[train_idx] if with_train else None
    return table.X[test_idx], np.asarray(table.y[test_idx], dtype=np.int64), train


def _metric_report(
    labels: np.ndarray, scores: np.ndarray, threshold: float | None, modality: str
) -> dict[str, Any]:
    """The shared keys: AUROC/AUPRC/F1 (prefixed "image_" for images), thresholds, counts and
    precision/recall at `threshold` (the F1-optimal one when None)."""
    result = metrics.image_metrics(labels, scores)
    prefix = "image_" if modality == "image" else ""
    threshold = float(result["f1_threshold"] if threshold is None else threshold)
    predicted = scores >= threshold
    true_pos = int(np.sum(predicted & (labels == 1)))
    return {
        f"{prefix}auroc": result["auroc"],
        f"{prefix}auprc": result["auprc"],
        f"{prefix}f1": result["f1"],
        "f1_threshold": result["f1_threshold"],
        "threshold": threshold,
        "n_test": int(len(labels)),
        "n_anomalous": int(labels.sum()),
        "precision_at_threshold": true_pos / max(int(predicted.sum()), 1),
        "recall_at_threshold": true_pos / max(int(labels.sum()), 1),
    }


@dataclass(frozen=True)
class PanelOptions:
    """Where and which heat-map panels to write (images only)."""

    folder: Path
    selection: str = "all"  # "all" | "extremes"
    n_extremes: int = 3


def evaluate_images(
    score_images: ScoreImages,
    test: Any,
    threshold: float | None,
    normalisation: dict[str, Any],
    *,
    panels: PanelOptions | None = None,
    batch: int = EVAL_BATCH,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Image metrics of `score_images` on the labelled `test` (`edgead.data.base.ImageTestSet`).

    Args:
        score_images: the model or the runtime, as a `ScoreImages` callable.
        threshold: the operating threshold (raw units); None: the F1-optimal one.
        normalisation: the run's / bundle's normalisation (panel colours).
        panels: write "image | heat-map overlay | mask" PNGs; None: none.
    """
    labels = np.asarray(test.labels, dtype=np.int64)
    n_test = len(labels)
    keep_maps = test.masks is not None
    write_all = panels is not None and panels.selection == "all"
    scores = np.empty(n_test, dtype=np.float32)
    maps: list[np.ndarray] = []
    written: list[str] = []
    t0 = time.perf_counter()
    for start in range(0, n_test, batch):
        idx = range(start, min(start + batch, n_test))
        chunk = [test.images[i] for i in idx]
        raw, chunk_maps = score_images(chunk)
        scores[start : start + len(chunk)] = raw
        if keep_maps and chunk_maps is not None:
            maps.append(chunk_maps)
        if write_all and chunk_maps is not None:
            for j, i in enumerate(idx):
                args = (chunk[j], chunk_maps[j], float(raw[j]), normalisation)
                written.append(str(_write_panel(panels.folder, test, i, *args)))  # type: ignore[union-attr]
        progress(start + len(chunk), n_test, "evaluate")
    seconds = time.perf_counter() - t0
    result = _metric_report(labels, scores, threshold, "image")
    if keep_maps and maps:
        result.update(metrics.pixel_metrics(test.masks_array(), np.concatenate(maps)))
    result["seconds_per_image"] = seconds / max(n_test, 1)
    if panels is not None and panels.selection == "extremes":
        cut = result["threshold"]
        for i in _extreme_cases(labels, scores, panels.n_extremes):
            raw, one_map = score_images([test.images[i]])
            if one_map is None:
                continue
            tag = _case_tag(int(labels[i]), float(scores[i]), cut)
            args = (test.images[i], one_map[0], float(raw[0]), normalisation)
            written.append(str(_write_panel(panels.folder, test, i, *args, tag=tag)))
    if panels is not None:
        result["panels"] = written
        result["panels_dir"] = str(panels.folder)
    return result


def evaluate_rows(
    score_rows: Callable[[np.ndarray], np.ndarray],
    rows: np.ndarray,
    labels: np.ndarray,
    threshold: float | None,
) -> dict[str, Any]:
    """Tabular metrics of `score_rows` (float32 (N, D) -> raw scores (N,)) on labelled rows."""
    t0 = time.perf_counter()
    scores = np.asarray(score_rows(rows), dtype=np.float32)
    seconds = time.perf_counter() - t0
    result = _metric_report(np.asarray(labels, dtype=np.int64), scores, threshold, "tabular")
    result["seconds_per_row"] = seconds / max(len(labels), 1)
    return result


# ------------------------------------------------------------------------------ run directories


def evaluate_run(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    save_maps: str | Path | None = None,
    maps_selection: str = "all",
    n_extremes: int = 3,
    data_options: dict[str, Any] | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Metrics of the run in `run_dir` on labelled test data.

    Args:
        run_dir: a directory written by `edgead.training.train_run`.
        data: images: MVTec-layout folder or "elpv"; tabular: a labelled table. None: the data
            the run was trained on (its test split).
        save_maps: folder for "image | heat-map overlay | mask" PNG panels (images only).
        maps_selection: "all" (one panel per test image) or "extremes" (the `n_extremes`
            highest-scored anomalies, highest-scored normals and lowest-scored anomalies).
        data_options: image loader options (ELPV caps); None: those stored with the run when
            `data` is the run's own data, else none.
        progress: progress(done, total, description).

    Returns:
        The keys of the module docstring, plus "panels" (files) when saved. When the data is the
        run's own, the scalar metrics are also stored in run.json ("metrics"), where
        `edgead export` compares the bundle against them.

    Raises:
        DataError: not a run, test data without both classes, masks that do not fit.
        ConfigError: bad maps_selection, or save_maps for a tabular run.
    """
    from edgead.rundir import load_run

    if maps_selection not in MAPS_SELECTIONS:
        raise ConfigError(f"maps_selection must be 'all' or 'extremes', got {maps_selection!r}")
    detector, meta = load_run(run_dir)
    run_data = meta.get("data", {})
    spec = data if data is not None else run_data.get("spec") or run_data.get("path")
    if spec is None:
        raise DataError(f"run {run_dir} does not record its data; pass --data")
    same = data is None or str(data) in (run_data.get("spec"), run_data.get("path"))
    if data_options is None:
        data_options = dict(run_data.get("options") or {}) if same else {}
    threshold = float(meta["threshold"]["value"])
    if detector.modality != "image":
        if save_maps is not None:
            raise ConfigError(
                f"--save-maps needs an image detector; this run is {detector.modality}"
            )
        run_meta = {**meta, "data": {**run_data, "options": data_options or {}}}
        _, rows, labels, _ = load_eval_data(spec, run_meta, detector.modality)
        result = evaluate_rows(lambda x: detector.score(x).scores, rows, labels, threshold)
    else:
        from edgead.data.datasets import load_image_dataset
        from edgead.training import image_load_size, run_tiling, score_images_of

        tiling = run_tiling(meta)
        size = image_load_size(detector, tiling)
        options = {"interpolation": run_data.get("interpolation"), **data_options}
        dataset = load_image_dataset(spec, size, **options)
        test = dataset.test_set()
        if len(test.labels) == 0:
            raise DataError(
                f"{spec} has no labelled test images (good parts only); evaluate with --data "
                "pointing at an MVTec folder with test/, or calibrate the bundle on site with "
                "`edgead calibrate BUNDLE --good DIR`"
            )

        def score_images(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
            out = score_images_of(detector, images, tiling)
            return out.scores, out.anomaly_maps

        panels = None
        if save_maps is not None:
            panels = PanelOptions(Path(save_maps), maps_selection, n_extremes)
        result = evaluate_images(
            score_images,
            test,
            threshold,
            meta["normalisation"],
            panels=panels,
            progress=progress,
        )
    if same and data_options == dict(run_data.get("options") or {}):
        _record_metrics(Path(run_dir), result)
    return result


def _record_metrics(run_dir: Path, result: dict[str, Any]) -> None:
    """Store the scalar metrics on the run's own test split in run.json under "metrics"."""
    from edgead._io import write_json_atomic
    from edgead.rundir import RUN_JSON, read_run_meta

    meta = read_run_meta(run_dir)
    meta["metrics"] = {
        k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    write_json_atomic(run_dir / RUN_JSON, meta)


# ---------------------------------------------------------------------------------- bundles


def evaluate_bundle(
    bundle_path: str | Path,
    data: str | Path | None = None,
    device: str = "cpu",
    backend: str | None = None,
    save_maps: str | Path | None = None,
    progress: Progress = no_progress,
    threads: int | None = None,
    trusted_keys: list[Any] | None = None,
) -> dict[str, Any]:
    """Metrics of the bundle at `bundle_path` on labelled test data, scored by the runtime.

    Args:
        bundle_path: a `.edgead` file.
        data: images: MVTec-layout folder (or "elpv"); tabular: a .npz/.csv/.parquet with
            labels (test rows = the ADBench split with the run's seed, as `evaluate_run`).
            None: the data the run was trained on, as recorded at export.
        device, backend, threads, trusted_keys: as for `Detector.load`.
        save_maps: folder for heat-map panels of every test image (images only).

    Returns:
        The keys `evaluate_run` returns, plus "runtime": {"backend", "fallbacks"}.

    Raises:
        DataError: no data given or recorded, unlabelled data, one class only.
    """
    from edgead.runtime.detector import Detector

    with Detector.load(
        bundle_path, device=device, backend=backend, threads=threads, trusted_keys=trusted_keys
    ) as det:
        m = det.manifest
        run = m.export.get("run") or {}
        run_data = run.get("data") or {}
        if data is None:
            data = run_data.get("spec") or run_data.get("path")
            if data is None:
                raise DataError(f"{bundle_path} does not record its data; pass labelled data")
        meta = {"config": m.config, "seed": run.get("seed") or 0, "data": run_data}
        if m.modality in ("tabular", "timeseries"):
            if save_maps is not None:
                raise DataError(f"--save-maps needs an image bundle; this one is {m.modality}")
            _, rows, labels, _ = load_eval_data(data, meta, m.modality)
            scorer = det.score_windows if m.modality == "timeseries" else det.score_rows
            result = evaluate_rows(lambda x: scorer(x).raw_scores, rows, labels, m.threshold)
        else:
            from edgead.data.datasets import load_image_dataset

            size: Any = int(m.input.image_size[0]) if m.input.image_size else 0
            tiling = m.postprocess.get("tiling")
            if tiling:  # a tiled bundle takes frames at its frame size and tiles them itself
                height, width = (int(v) for v in tiling["frame_size"])
                size = height if height == width else (height, width)
            test = load_image_dataset(data, size).test_set()
            if len(test.labels) == 0:
                raise DataError(
                    f"{data} has no labelled test data (good parts only); pass an MVTec folder "
                    "with test/ or a labelled table"
                )

            def score_images(images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
                results = cast("list[Result]", det(images, channel_order="RGB"))
                raw = np.array([r.raw_score for r in results], dtype=np.float32)
                maps = [r.anomaly_map for r in results if r.anomaly_map is not None]
                return raw, None if len(maps) != len(results) else np.stack(maps)

            panels = PanelOptions(Path(save_maps)) if save_maps is not None else None
            result = evaluate_images(
                score_images, test, m.threshold, m.normalisation, panels=panels, progress=progress
            )
        result["runtime"] = {"backend": det.backend, "fallbacks": det.fallbacks}
    return result


# ---------------------------------------------------------------------------------- panels


def _extreme_cases(labels: np.ndarray, scores: np.ndarray, n: int) -> list[int]:
    """Indices: the n highest-scored anomalies, n highest-scored normals, n lowest anomalies."""
    order = np.argsort(-scores, kind="stable")
    anomalous = [int(i) for i in order if labels[i] == 1]
    normal = [int(i) for i in order if labels[i] == 0]
    chosen = anomalous[:n] + normal[:n] + anomalous[::-1][:n]
    return list(dict.fromkeys(chosen))  # unique, order kept


def _case_tag(label: int, score: float, threshold: float) -> str:
    """'tp' / 'fp' / 'fn' / 'tn' of one test item at `threshold`."""
    flagged = score >= threshold
    if label == 1:
        return "tp" if flagged else "fn"
    return "fp" if flagged else "tn"


def _write_panel(
    folder: Path,
    test: Any,
    i: int,
    image: np.ndarray,
    anomaly_map: np.ndarray,
    raw_score: float,
    normalisation: dict[str, Any],
    tag: str = "",
) -> Path:
    """PNG panel of test item i, coloured on the normalised-score scale (threshold mid-scale)."""
    from edgead.ops.overlay import save_panel, score_panel
    from edgead.ops.postprocess import normalise_scores

    defect = test.defect_types[i]
    stem = Path(test.paths[i]).stem
    mask = test.masks[i] if test.masks is not None else None
    if "threshold" in normalisation:
        score = float(normalise_scores(np.array([raw_score]), normalisation)[0])
        verdict = "ANOMALY" if raw_score >= float(normalisation["threshold"]) else "normal"
        title = f"{defect}/{stem}  score {score:.2f} (raw {raw_score:.3g})  -> {verdict}"
    else:
        title = f"{defect}/{stem}  raw {raw_score:.3g}"
    panel = score_panel(image, anomaly_map, normalisation, title, mask)
    prefix = f"{tag}_" if tag else ""
    return save_panel(folder / f"{prefix}{i:04d}_{defect}_{stem}.png", panel)
