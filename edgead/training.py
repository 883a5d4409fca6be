"""Training and evaluation glue for every detector: data in, run directory out, metrics back.

`train_run` builds a detector from the registry, loads the data for its modality, holds out
normal validation data, fits, sets the operating threshold and the score normalisation from the
validation scores, and saves a run directory (`edgead.rundir.save_run`). `evaluate_run` loads a
run and measures it on labelled test data.

Hold-out and threshold policy (recorded in run.json under "threshold" and "validation"):

- Images: a seeded `val_fraction` of the normal training images (the detector config's
  `val_fraction` when it has one, else 0.1), at least `MIN_VAL_IMAGES`, is held out and never
  fitted. PatchCore defaults to val_fraction 0: every image goes into the memory bank and the
  threshold comes from its cross-fitted scores (`threshold_folds`; each image scored against the
  bank without its fold's entries; see benchmarks/vs_anomalib.md for why).
- A run without any source of threshold scores (no hold-out, no cross-fitting, no labelled
  `val_data`) is refused by `check_threshold_source` before the backbone is built or any data
  is read.
- Tabular: with labels, the ADBench protocol's training part (a seeded 60 % of the normal rows,
  `edgead.data.tabular.adbench_split`) is used, so evaluation on the same file tests on the other
  rows; without labels every row counts as normal. A seeded `TABULAR_VAL_FRACTION` of those rows
  is held out.
- threshold = the 99th percentile of the validation scores (policy "percentile:99"), or, when
  `val_data` (labelled) is given, the F1-optimal threshold on it (policy "f1").
- normalisation = min / max of the validation scores with that threshold ("minmax_threshold").
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead import metrics
from edgead.config import from_dict
from edgead.errors import ConfigError, DataError
from edgead.models.base import BaseDetector, Progress, get_detector_class, no_progress
from edgead.rundir import load_run, save_run

logger = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1
TABULAR_VAL_FRACTION = 0.1
MIN_VAL_IMAGES = 2
MIN_VAL_ROWS = 5
THRESHOLD_PERCENTILE = 99.0
#: test images scored per chunk in `evaluate_run` (bounds the memory held for maps).
_EVAL_CHUNK = 32


@dataclass
class _Split:
    """Fit data, normal validation data and what to record about them."""

    fit_data: Any
    val_data: Any
    info: dict[str, Any]


def holdout_split(
    n_items: int, fraction: float, minimum: int, seed: int, what: str = "items"
) -> tuple[np.ndarray, np.ndarray]:
    """(fit_idx, val_idx) sorted int64: a seeded `fraction` (at least `minimum`) held out.

    This is the split `train_run` uses (images: minimum `MIN_VAL_IMAGES`); benchmarks use it
    to report numbers comparable with `edgead train`.

    Raises:
        DataError: too few items to hold out `minimum` and keep one for fitting.
    """
    return _seeded_split(n_items, _val_count(n_items, fraction, minimum, what), seed)


def _val_count(n_items: int, fraction: float, minimum: int, what: str) -> int:
    """Number of items to hold out: round(n * fraction), at least `minimum`, leaving >= 1."""
    if fraction <= 0.0:
        return 0
    n_val = max(minimum, int(round(n_items * fraction)))
    if n_val > n_items - 1:
        raise DataError(
            f"cannot hold out {n_val} validation {what} from {n_items}: at least "
            f"{n_val + 1} are needed; add data or set val_fraction=0 and pass "
            "labelled --val-data"
        )
    return n_val


def _seeded_split(n_items: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit_idx, val_idx) sorted int64 from a seeded permutation of range(n_items)."""
    order = np.random.default_rng(seed).permutation(n_items)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def check_threshold_source(
    detector_cls: type[BaseDetector], config: Any, val_data: str | Path | None
) -> None:
    """Refuse, before any backbone or data work, a run that could not set its threshold.

    A threshold needs normal scores the bank never saw: held-out normal images
    (`val_fraction` > 0), the detector's own cross-fitted scores (`threshold_folds` >= 2), or
    labelled `--val-data` (which must exist).

    Raises:
        ConfigError: no source of threshold scores; the message says what to pass.
        DataError: `val_data` names a file or folder that does not exist.
    """
    if val_data is not None:
        if str(val_data).strip().lower() != "elpv" and not Path(val_data).expanduser().exists():
            raise DataError(
                f"--val-data {val_data} does not exist; pass a labelled MVTec-layout folder "
                "(images) or a labelled table"
            )
        return
    if detector_cls.modality != "image":
        return  # tabular runs always hold out TABULAR_VAL_FRACTION of the rows
    fraction = float(getattr(config, "val_fraction", DEFAULT_VAL_FRACTION))
    folds = int(getattr(config, "threshold_folds", 0))
    if fraction <= 0.0 and folds < 2:
        raise ConfigError(
            f"{detector_cls.name}: no normal scores for the threshold: val_fraction is 0"
            + (" and threshold_folds < 2" if hasattr(config, "threshold_folds") else "")
            + " and no labelled --val-data was given; pass --val-data DIR (labelled data), "
            "or --set val_fraction=0.1"
            + (" or --set threshold_folds=10" if hasattr(config, "threshold_folds") else "")
        )


def _image_split(
    detector: BaseDetector, data: str | Path, seed: int, data_options: dict[str, Any]
) -> _Split:
    from edgead.data.images import load_image_dataset

    size = int(detector.config.image_size)
    dataset = load_image_dataset(data, size, **data_options)
    images = dataset.train_images()
    fraction = float(getattr(detector.config, "val_fraction", DEFAULT_VAL_FRACTION))
    fit_idx, val_idx = holdout_split(len(images), fraction, MIN_VAL_IMAGES, seed, "images")
    n_val = len(val_idx)
    describe = getattr(dataset, "describe", None)
    info = dict(describe()) if callable(describe) else {"path": str(data)}
    info.update(
        {
            "spec": str(data),
            "n_train": int(len(fit_idx)),
            "n_val": int(len(val_idx)),
            "val_fraction": fraction,
            "options": dict(data_options),
        }
    )
    if info.get("kind") == "mvtec_folder":
        info["path"] = str(Path(data).expanduser().resolve())
    return _Split(images[fit_idx], images[val_idx] if n_val else None, info)


def _tabular_split(data: str | Path, seed: int, label_column: str | None) -> _Split:
    from edgead.data.tabular import adbench_split, load_table

    table = load_table(data, label_column)
    if table.y is not None:
        rows, _ = adbench_split(table.y, seed=seed)
        protocol = "adbench: seeded 60 % of the normal rows"
    else:
        rows = np.arange(table.n_rows, dtype=np.int64)
        protocol = "all rows (no labels: every row is taken as normal)"
    n_val = _val_count(len(rows), TABULAR_VAL_FRACTION, MIN_VAL_ROWS, "rows")
    fit_pos, val_pos = _seeded_split(len(rows), n_val, seed + 1)
    info = {
        "path": str(Path(data).expanduser().resolve()),
        "spec": str(data),
        "kind": "table",
        "label_column": label_column,
        "n_rows": table.n_rows,
        "n_features": table.n_features,
        "feature_names": list(table.feature_names),
        "train_rows": protocol,
        "n_train": int(len(fit_pos)),
        "n_val": int(len(val_pos)),
        "val_fraction": TABULAR_VAL_FRACTION,
    }
    fit_rows = table.X[rows[fit_pos]]
    val_rows = table.X[rows[val_pos]] if n_val else None
    return _Split(fit_rows, val_rows, info)


def _labelled_validation(
    detector: BaseDetector, val_data: str | Path, label_column: str | None
) -> tuple[Any, np.ndarray]:
    """(inputs, int64 labels) of labelled validation data for an F1-optimal threshold."""
    if detector.modality == "image":
        from edgead.data.images import load_image_dataset

        test = load_image_dataset(val_data, int(detector.config.image_size)).test_set()
        return test.images, np.asarray(test.labels, dtype=np.int64)
    from edgead.data.tabular import load_table

    table = load_table(val_data, label_column)
    if table.y is None:
        raise DataError(f"--val-data {val_data} has no labels; the F1 threshold needs 0/1 labels")
    return table.X, table.y


def train_run(
    name: str,
    data: str | Path,
    out: str | Path,
    overrides: dict[str, Any] | None = None,
    *,
    seed: int = 0,
    label_column: str | None = None,
    val_data: str | Path | None = None,
    data_options: dict[str, Any] | None = None,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Train detector `name` on `data`, calibrate it, and save the run directory `out`.

    Args:
        name: registry name ("patchcore", "padim", "ae", ...; '-' accepted for '_').
        data: images: an MVTec-layout folder or "elpv"; tabular: a .npz/.csv/.parquet file.
        out: the run directory to write (replaced atomically).
        overrides: config keys for the detector (unknown keys raise ConfigError).
        seed: seeds the hold-out split, the ADBench split and the detector's fit.
        label_column: label column of a .csv/.parquet table (tabular only).
        val_data: labelled data for an F1-optimal threshold instead of the percentile.
        data_options: extra options for the image loader (ELPV: max_train, max_test,
            train_fraction).
        progress: progress(done, total, description) for every long step.

    Returns:
        The run metadata written to run.json, plus "run_dir".

    Raises:
        ConfigError: unknown detector or config key, options that do not fit the modality.
        DataError: unusable data (too few images/rows to hold out validation data, ...).
    """
    t_start = time.perf_counter()
    detector_cls = get_detector_class(name)
    config = from_dict(detector_cls.config_cls, overrides or {})
    check_threshold_source(detector_cls, config, val_data)
    detector = detector_cls(config)
    options = dict(data_options or {})
    if detector.modality == "image":
        if label_column is not None:
            raise ConfigError(
                f"--label-column applies to tabular detectors only; {detector.name} takes images"
            )
        split = _image_split(detector, data, seed, options)
    else:
        if options:
            raise ConfigError(f"data options {sorted(options)} apply to image data only")
        split = _tabular_split(data, seed, label_column)
    t_loaded = time.perf_counter()
    detector.fit(split.fit_data, seed=seed, progress=progress)
    t_fitted = time.perf_counter()

    validation: dict[str, Any] = {}
    val_scores: np.ndarray | None = None
    val_progress = _renamed(progress, "validation")
    if split.val_data is not None:
        val_scores = detector.score(split.val_data, progress=val_progress).scores
        validation.update(_score_summary(val_scores))
    elif getattr(detector, "heldout_scores_", None) is not None:
        val_scores = np.asarray(detector.heldout_scores_, dtype=np.float32)
        validation.update(_score_summary(val_scores))
        validation["source"] = getattr(detector, "heldout_source_", "cross-fitted")
    if val_data is not None:
        inputs, labels = _labelled_validation(detector, val_data, label_column)
        labelled_scores = detector.score(inputs, progress=val_progress).scores
        value = metrics.threshold_from_labels(labels, labelled_scores)
        threshold = {"value": value, "policy": "f1", "data": str(val_data)}
        normal = labelled_scores[labels == 0]
        norm_scores = val_scores if val_scores is not None else normal
        validation["labelled"] = {
            "n": int(len(labels)),
            "n_anomalous": int(labels.sum()),
            **metrics.image_metrics(labels, labelled_scores),
        }
    elif val_scores is not None:
        value = metrics.threshold_from_normal(val_scores, THRESHOLD_PERCENTILE)
        threshold = {"value": value, "policy": f"percentile:{THRESHOLD_PERCENTILE:g}"}
        norm_scores = val_scores
    else:
        raise ConfigError(
            "no validation data: val_fraction is 0 and no labelled --val-data was "
            "given, so no threshold can be set; use val_fraction > 0 or --val-data"
        )
    t_validated = time.perf_counter()

    timings = {"load_s": t_loaded - t_start, "fit_s": t_fitted - t_loaded}
    timings.update({k: float(v) for k, v in getattr(detector, "fit_timings_", {}).items()})
    timings["validation_s"] = t_validated - t_fitted
    meta: dict[str, Any] = {
        "threshold": threshold,
        "normalisation": metrics.normalisation_from_scores(norm_scores, threshold["value"]),
        "validation": validation,
        "data": split.info,
        "seed": int(seed),
    }
    timings["total_s"] = time.perf_counter() - t_start
    meta["timings_s"] = {k: round(float(v), 3) for k, v in timings.items()}
    run_dir = save_run(out, detector, meta)
    logger.info(
        "saved run %s (%s, threshold %.4g, %s)",
        run_dir,
        detector.name,
        threshold["value"],
        threshold["policy"],
    )
    return {
        **meta,
        "run_dir": str(run_dir),
        "detector": detector.name,
        "describe": detector.describe(),
    }


def _score_summary(scores: np.ndarray) -> dict[str, float | int]:
    """JSON facts about validation scores (raw units)."""
    return {
        "n": int(scores.size),
        "score_min": float(scores.min()),
        "score_mean": float(scores.mean()),
        "score_max": float(scores.max()),
        "score_p99": float(np.percentile(scores, 99.0)),
    }


def _renamed(progress: Progress, description: str) -> Progress:
    """A progress callback that reports every step under `description`."""
    return lambda done, total, _desc: progress(done, total, description)


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
        run_dir: a directory written by `train_run`.
        data: images: MVTec-layout folder or "elpv"; tabular: a labelled table. None: the data
            the run was trained on (its test split).
        save_maps: folder for "image | heat-map overlay | mask" PNG panels (images only).
        maps_selection: "all" (one panel per test image) or "extremes" (the `n_extremes`
            highest-scored anomalies, highest-scored normals and lowest-scored anomalies).
        data_options: image loader options (ELPV caps); None: those stored with the run when
            `data` is the run's own data, else none.
        progress: progress(done, total, description).

    Returns:
        Images: image_auroc, image_auprc, image_f1, f1_threshold, threshold, n_test,
        n_anomalous, precision / recall at the run's threshold, (pixel_auroc, aupro with masks),
        seconds_per_image, panels (list of files, when saved).
        Tabular: auroc, auprc, f1, f1_threshold, threshold, n_test, n_anomalous.
        When the data is the run's own, the scalar metrics are also stored in run.json
        ("metrics"), where `edgead export` compares the bundle against them.

    Raises:
        DataError: not a run, test data without both classes, masks that do not fit.
        ConfigError: bad maps_selection, or save_maps for a tabular run.
    """
    if maps_selection not in ("all", "extremes"):
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
            raise ConfigError("--save-maps needs an image detector; this run is tabular")
        result = _evaluate_tabular(detector, spec, meta, threshold)
    else:
        result = _evaluate_images(
            detector,
            spec,
            meta,
            threshold,
            save_maps,
            maps_selection,
            n_extremes,
            data_options,
            progress,
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


def _evaluate_tabular(
    detector: BaseDetector, spec: str | Path, meta: dict[str, Any], threshold: float
) -> dict[str, Any]:
    from edgead.data.tabular import adbench_split, load_table

    table = load_table(spec, (meta.get("data") or {}).get("label_column"))
    if table.y is None:
        raise DataError(f"{spec} has no labels; evaluation needs 0/1 labels")
    _, test_idx = adbench_split(table.y, seed=int(meta.get("seed", 0)))
    labels = table.y[test_idx]
    t0 = time.perf_counter()
    scores = detector.score(table.X[test_idx]).scores
    seconds = time.perf_counter() - t0
    result = metrics.image_metrics(labels, scores)
    return {
        "auroc": result["auroc"],
        "auprc": result["auprc"],
        "f1": result["f1"],
        "f1_threshold": result["f1_threshold"],
        "threshold": threshold,
        "n_test": int(len(labels)),
        "n_anomalous": int(labels.sum()),
        **_at_threshold(labels, scores, threshold),
        "seconds_per_row": seconds / len(labels),
    }


def _at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision and recall when "anomalous" means score >= threshold."""
    predicted = scores >= threshold
    tp = int(np.sum(predicted & (labels == 1)))
    return {
        "precision_at_threshold": tp / max(int(predicted.sum()), 1),
        "recall_at_threshold": tp / max(int(labels.sum()), 1),
    }


def _evaluate_images(
    detector: BaseDetector,
    spec: str | Path,
    meta: dict[str, Any],
    threshold: float,
    save_maps: str | Path | None,
    maps_selection: str,
    n_extremes: int,
    data_options: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    from edgead.data.images import load_image_dataset

    options = {"interpolation": (meta.get("data") or {}).get("interpolation"), **data_options}
    dataset = load_image_dataset(spec, int(detector.config.image_size), **options)
    test = dataset.test_set()
    labels = np.asarray(test.labels, dtype=np.int64)
    n_test = len(labels)
    keep_maps = test.masks is not None
    panel_dir = Path(save_maps) if save_maps is not None else None
    write_all = panel_dir is not None and maps_selection == "all"
    scores = np.empty(n_test, dtype=np.float32)
    maps: list[np.ndarray] = []
    panels: list[str] = []
    t0 = time.perf_counter()
    for start in range(0, n_test, _EVAL_CHUNK):
        idx = np.arange(start, min(start + _EVAL_CHUNK, n_test))
        chunk = [test.images[int(i)] for i in idx]
        out = detector.score(chunk)
        scores[idx] = out.scores
        if keep_maps:
            maps.append(out.anomaly_maps)
        if write_all and out.anomaly_maps is not None:
            for j, i in enumerate(idx):
                panels.append(
                    str(
                        _write_panel(
                            panel_dir,
                            test,
                            int(i),
                            chunk[j],
                            out.anomaly_maps[j],
                            float(out.scores[j]),
                            meta,
                        )
                    )
                )
        progress(int(idx[-1]) + 1, n_test, "evaluate")
    seconds = time.perf_counter() - t0
    result_metrics = metrics.image_metrics(labels, scores)
    result: dict[str, Any] = {
        "image_auroc": result_metrics["auroc"],
        "image_auprc": result_metrics["auprc"],
        "image_f1": result_metrics["f1"],
        "f1_threshold": result_metrics["f1_threshold"],
        "threshold": threshold,
        "n_test": int(n_test),
        "n_anomalous": int(labels.sum()),
        **_at_threshold(labels, scores, threshold),
    }
    if keep_maps and test.masks is not None:
        result.update(metrics.pixel_metrics(test.masks_array(), np.concatenate(maps)))
    result["seconds_per_image"] = seconds / max(n_test, 1)
    if panel_dir is not None and maps_selection == "extremes":
        for i in _extreme_cases(labels, scores, n_extremes):
            image = test.images[i]
            out = detector.score([image])
            panels.append(
                str(
                    _write_panel(
                        panel_dir,
                        test,
                        i,
                        image,
                        out.anomaly_maps[0],
                        float(out.scores[0]),
                        meta,
                        tag=_case_tag(labels, i, scores, threshold),
                    )
                )
            )
    if panel_dir is not None:
        result["panels"] = panels
        result["panels_dir"] = str(panel_dir)
    return result


def _extreme_cases(labels: np.ndarray, scores: np.ndarray, n: int) -> list[int]:
    """Indices: the n highest-scored anomalies, n highest-scored normals, n lowest anomalies."""
    order = np.argsort(-scores, kind="stable")
    anomalous = [int(i) for i in order if labels[i] == 1]
    normal = [int(i) for i in order if labels[i] == 0]
    chosen = anomalous[:n] + normal[:n] + anomalous[::-1][:n]
    return list(dict.fromkeys(chosen))  # unique, order kept


def _case_tag(labels: np.ndarray, i: int, scores: np.ndarray, threshold: float) -> str:
    """'tp' / 'fp' / 'fn' / 'tn' of test item i at the run's threshold."""
    flagged = scores[i] >= threshold
    if labels[i] == 1:
        return "tp" if flagged else "fn"
    return "fp" if flagged else "tn"


def _write_panel(
    folder: Path,
    test: Any,
    i: int,
    image: np.ndarray,
    anomaly_map: np.ndarray,
    raw_score: float,
    meta: dict[str, Any],
    tag: str = "",
) -> Path:
    """PNG panel of test item i; colours on the normalised-score scale (threshold mid-scale)."""
    from edgead.runtime.postprocess import normalise_scores
    from edgead.viz import overlay_panel, save_panel

    norm = meta["normalisation"]
    span = float(norm["max"]) - float(norm["min"])
    span = span if span > 0 else 1.0
    thr = float(norm["threshold"])
    score = float(normalise_scores(np.array([raw_score]), norm)[0])
    defect = test.defect_types[i]
    stem = Path(test.paths[i]).stem
    mask = test.masks[i] if test.masks is not None else None
    verdict = "ANOMALY" if raw_score >= thr else "normal"
    title = f"{defect}/{stem}  score {score:.2f} (raw {raw_score:.3g})  -> {verdict}"
    panel = overlay_panel(
        image, anomaly_map, mask, vmin=thr - span / 2, vmax=thr + span / 2, title=title
    )
    prefix = f"{tag}_" if tag else ""
    return save_panel(folder / f"{prefix}{i:04d}_{defect}_{stem}.png", panel)
