"""Training glue for every detector: data in, run directory out.

`train_run` builds a detector from the registry, loads the data for its modality, holds out
normal validation data, fits, sets the operating threshold and the score normalisation from the
validation scores, and saves a run directory (`edgead.rundir.save_run`).
`edgead.evaluation.evaluate_run` measures a run on labelled test data.

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
  rows; without labels, or with labels that are all 0 (a file of normal rows), every row is
  trained on (logged). A seeded `TABULAR_VAL_FRACTION` of those rows
  is held out.
- threshold = the 99th percentile of the validation scores (policy "percentile:99"), or, when
  `val_data` (labelled) is given, the F1-optimal threshold on it (policy "f1").
- normalisation = min / max of the validation scores with that threshold ("minmax_threshold").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead import metrics
from edgead.calibrate import (
    THRESHOLD_PERCENTILE,
    normalisation_from_scores,
    threshold_from_labels,
    threshold_from_normal,
)
from edgead.config import from_dict
from edgead.data.tiles import FRAMES_PER_CALL
from edgead.errors import ConfigError, DataError
from edgead.models.base import (
    BaseDetector,
    Progress,
    ScoreOutput,
    get_detector_class,
    no_progress,
)
from edgead.ops.tiling import Tiling, cut_tiles, merge_tile_scores
from edgead.rundir import save_run
from edgead.runrecord import RunSplit

logger = logging.getLogger(__name__)

DEFAULT_VAL_FRACTION = 0.1
TABULAR_VAL_FRACTION = 0.1
MIN_VAL_IMAGES = 2
MIN_VAL_ROWS = 5


@dataclass
class _Split:
    """Fit data, normal validation data and what to record about them."""

    fit_data: Any
    val_data: Any
    info: dict[str, Any]
    record: RunSplit | None = None  # stored in the run directory (split.json) for export


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


def _check_image_size(size_px: int, name: str) -> None:
    """ConfigError unless 1 <= size_px <= the largest side a bundle may declare."""
    from edgead.bundle_checks import MAX_IMAGE_SIDE_PX

    if not 1 <= size_px <= MAX_IMAGE_SIDE_PX:
        raise ConfigError(
            f"{name}: --image-size {size_px} px is outside 1..{MAX_IMAGE_SIDE_PX} (a bundle "
            f"and the runtime take at most {MAX_IMAGE_SIDE_PX} px); typical sizes are 224-512"
        )


def _image_split(
    detector: BaseDetector,
    data: str | Path,
    seed: int,
    data_options: dict[str, Any],
    tiling: Tiling | None = None,
) -> _Split:
    from edgead.data.datasets import load_image_dataset

    size = image_load_size(detector, tiling)
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
    if info.get("kind") in ("mvtec_folder", "folders"):
        info["path"] = str(Path(data).expanduser().resolve())
    fit_images = images[fit_idx]
    if tiling is not None:  # fit on T x T tiles; validation scores whole frames (max over tiles)
        from edgead.data.tiles import TiledImages

        fit_images = TiledImages(fit_images, tiling)
        info["n_fit_tiles"] = len(fit_images)
    paths = getattr(dataset, "train_paths", None)
    record = None if paths is None else RunSplit.of_images(paths, val_idx)
    if record is None:
        logger.warning("%s lists no training files: the run stores no split for export", data)
    return _Split(fit_images, images[val_idx] if n_val else None, info, record)


def image_load_size(detector: BaseDetector, tiling: Tiling | None) -> int | tuple[int, int]:
    """Images load at the detector's input size S, or at the tiling's frame size (H, W)."""
    if tiling is None:
        return int(detector.config.image_size)
    if int(detector.config.image_size) != tiling.tile:
        raise ConfigError(
            f"tiling with {tiling.tile} px tiles needs image_size {tiling.tile} in the "
            f"detector config, got {detector.config.image_size}"
        )
    height, width = tiling.frame_hw
    return height if height == width else (height, width)


def score_images_of(
    detector: BaseDetector, images: Any, tiling: Tiling | None, **kwargs: Any
) -> ScoreOutput:
    """`detector.score(images)`, or tile by tile (`score_tiled`) when tiled."""
    if tiling is None:
        return detector.score(images, **kwargs)
    return score_tiled(detector, images, tiling)


def score_tiled(
    detector: BaseDetector, frames: Sequence[np.ndarray], tiling: Tiling
) -> ScoreOutput:
    """ScoreOutput of (H, W) frames scored tile by tile: max tile score, stitched (H, W) maps.

    Args:
        detector: a fitted image detector whose input size is the tile size.
        frames: uint8 (H, W, 3) frames at `tiling.frame_hw`.
    """
    scores: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    for start in range(0, len(frames), FRAMES_PER_CALL):
        chunk = [
            np.asarray(frames[i]) for i in range(start, min(start + FRAMES_PER_CALL, len(frames)))
        ]
        tiles = np.concatenate([cut_tiles(f, tiling) for f in chunk])
        out = detector.score(list(tiles))
        merged, stitched = merge_tile_scores(out.scores, out.anomaly_maps, len(chunk), tiling)
        scores.append(merged)
        if stitched is not None:
            maps.extend(stitched)
    return ScoreOutput(
        scores=np.concatenate(scores).astype(np.float32),
        anomaly_maps=np.stack(maps) if maps else None,
    )


def run_tiling(meta: dict[str, Any]) -> Tiling | None:
    """The Tiling recorded in run.json ("tiling"), or None."""
    data = meta.get("tiling")
    return None if not data else Tiling.from_dict(data)


def _tabular_split(data: str | Path, seed: int, label_column: str | None) -> _Split:
    from edgead.data.tabular import adbench_split, load_table

    table = load_table(data, label_column)
    if table.y is not None and bool((table.y == 1).any()):
        rows, _ = adbench_split(table.y, seed=seed)
        protocol = "adbench: seeded 60 % of the normal rows"
    elif table.y is not None:
        rows = np.arange(table.n_rows, dtype=np.int64)
        protocol = "all rows (every label is 0: no anomalies to hold out for testing)"
        logger.info(
            "%s: every one of the %d labels is 0 (no anomalies); training on all rows",
            data,
            table.n_rows,
        )
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
    return _Split(fit_rows, val_rows, info, RunSplit.of_rows(table.X, rows[val_pos]))


def _series_split(
    detector: BaseDetector, data: str | Path, label_column: str | None, options: dict[str, Any]
) -> _Split:
    """Fit on the first fit_rows rows (all when 0) minus a held-out tail for the threshold.

    The tail (the last `TABULAR_VAL_FRACTION` of the fitted rows, at least `MIN_VAL_ROWS`
    windows) is never fitted; its windows (with window - 1 rows of context before it) give the
    validation scores. Rows labelled anomalous inside the fitted part are refused.
    """
    from edgead.data.timeseries import fit_row_count, load_run_series, series_options

    opts = series_options(options)
    series = load_run_series(data, opts, label_column)
    n_fit = fit_row_count(series, opts)
    if series.labels is not None and series.labels[:n_fit].any():
        raise DataError(
            f"{data}: {int(series.labels[:n_fit].sum())} of the first {n_fit} rows are labelled "
            "anomalous; fit on normal rows only (set fit_rows to end before the first anomaly)"
        )
    window = int(detector.config.window)
    n_val = max(MIN_VAL_ROWS, int(round(TABULAR_VAL_FRACTION * n_fit)))
    if n_fit - n_val < window + 2:
        raise DataError(
            f"{data}: {n_fit} fitted rows leave too few for one window of {window} rows plus "
            f"{n_val} held-out rows; give more rows or a shorter window"
        )
    info = {
        "path": str(Path(data).expanduser().resolve()),
        "spec": str(data),
        "kind": "series",
        "label_column": label_column,
        "n_rows": series.n_rows,
        "n_features": len(series.feature_names),
        "feature_names": list(series.feature_names),
        "train_rows": f"rows 0..{n_fit - n_val - 1}; held out {n_fit - n_val}..{n_fit - 1}",
        "n_train": int(n_fit - n_val),
        "n_val": int(n_val),
        "options": {**options, "fit_rows": n_fit},
    }
    val_rows = series.values[n_fit - n_val - window + 1 : n_fit]
    return _Split(series.values[: n_fit - n_val], val_rows, info)


def _labelled_validation(
    detector: BaseDetector,
    val_data: str | Path,
    label_column: str | None,
    tiling: Tiling | None = None,
) -> tuple[Any, np.ndarray]:
    """(inputs, int64 labels) of labelled validation data for an F1-optimal threshold."""
    if detector.modality == "image":
        from edgead.data.datasets import load_image_dataset

        test = load_image_dataset(val_data, image_load_size(detector, tiling)).test_set()
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
    tiling: dict[str, Any] | None = None,
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
        tiling: {"frame_size": [H, W], "tile": T, "overlap": P} (images only): fit on T x T
            tiles of frames resized to (H, W), score frames tile by tile
            (`edgead.ops.tiling`); the detector's image_size must be T.

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
    tiles = None if tiling is None else Tiling.from_dict(tiling).validate()
    if detector.modality == "image":
        if label_column is not None:
            raise ConfigError(
                f"--label-column applies to tabular detectors only; {detector.name} takes images"
            )
        _check_image_size(int(detector.config.image_size), detector.name)
        split = _image_split(detector, data, seed, options, tiles)
    elif detector.modality == "timeseries":
        if tiles is not None:
            raise ConfigError("tiling applies to image data only")
        split = _series_split(detector, data, label_column, options)
    else:
        if options or tiles is not None:
            raise ConfigError(
                f"data options {sorted(options) or ['tiling']} apply to image data only"
            )
        split = _tabular_split(data, seed, label_column)
    t_loaded = time.perf_counter()
    detector.fit(split.fit_data, seed=seed, progress=progress)
    t_fitted = time.perf_counter()

    validation: dict[str, Any] = {}
    val_scores: np.ndarray | None = None
    val_progress = _renamed(progress, "validation")
    if split.val_data is not None:
        val_scores = score_images_of(detector, split.val_data, tiles, progress=val_progress).scores
        validation.update(_score_summary(val_scores))
    elif getattr(detector, "heldout_scores_", None) is not None:
        val_scores = np.asarray(detector.heldout_scores_, dtype=np.float32)
        validation.update(_score_summary(val_scores))
        validation["source"] = getattr(detector, "heldout_source_", "cross-fitted")
    if val_data is not None:
        inputs, labels = _labelled_validation(detector, val_data, label_column, tiles)
        labelled_scores = score_images_of(detector, inputs, tiles, progress=val_progress).scores
        value = threshold_from_labels(labels, labelled_scores)
        threshold = {"value": value, "policy": "f1", "data": str(val_data)}
        normal = labelled_scores[labels == 0]
        norm_scores = val_scores if val_scores is not None else normal
        validation["labelled"] = {
            "n": int(len(labels)),
            "n_anomalous": int(labels.sum()),
            **metrics.image_metrics(labels, labelled_scores),
        }
    elif val_scores is not None:
        value = threshold_from_normal(val_scores, THRESHOLD_PERCENTILE)
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
        "normalisation": normalisation_from_scores(norm_scores, threshold["value"]),
        "validation": validation,
        "data": split.info,
        "seed": int(seed),
    }
    if tiles is not None:
        meta["tiling"] = tiles.to_dict()
    timings["total_s"] = time.perf_counter() - t_start
    meta["timings_s"] = {k: round(float(v), 3) for k, v in timings.items()}
    run_dir = save_run(out, detector, meta, split.record)
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
