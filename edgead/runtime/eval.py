"""Evaluate a bundle through the runtime on labelled data: what the device will deliver.

`evaluate_bundle` returns the same JSON keys as evaluating a run directory (ARCHITECTURE.md):
images -> image_auroc, image_auprc, image_f1, threshold, n_test (+ pixel_auroc, aupro with
masks); tabular -> auroc, auprc, f1, threshold, n_test. The detector itself stays numpy +
backend; the metrics come from `edgead.metrics` (scikit-learn), imported here only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import DataError
from edgead.runtime.detector import Detector

logger = logging.getLogger(__name__)

#: progress(done, total, description), as `edgead.models.base.Progress`.
Progress = Callable[[int, int, str], None]


def no_progress(done: int, total: int, description: str) -> None:
    """A progress callback that does nothing."""


BATCH = 8


def load_eval_data(
    data: str | Path,
    meta: dict[str, Any],
    modality: str,
    with_train: bool = False,
    image_size: int | None = None,
) -> tuple[Any, Any, np.ndarray, Any]:
    """(train inputs or None, test inputs, labels int64 (N,), masks or None) from `data`.

    Images: an MVTec-layout folder (or "elpv") loaded at `image_size` (default: the config's),
    inputs uint8 RGB (S, S, 3) lazy sequences; masks bool (S, S) or None. Tabular: a table file;
    test = the ADBench split (seed from `meta["seed"]`, 0 if absent) when the file has labels.
    """
    if modality == "image":
        from edgead.data.images import load_image_dataset

        size = image_size or int((meta.get("config") or {}).get("image_size", 0))
        if size <= 0:
            raise DataError("cannot tell the image size to evaluate at; the bundle/run has none")
        # the resize the run was trained with (recorded since issue 12); None: the loader default
        interpolation = (meta.get("data") or {}).get("interpolation")
        dataset = load_image_dataset(data, size, interpolation=interpolation)
        test = dataset.test_set()
        train = dataset.train_images() if with_train else None
        return train, test.images, np.asarray(test.labels), test.masks
    from edgead.data.tabular import adbench_split, load_table

    table = load_table(data, (meta.get("data") or {}).get("label_column"))
    if table.y is None:
        raise DataError(f"{data} has no labels (y); evaluation needs 0/1 labels")
    train_idx, test_idx = adbench_split(table.y, seed=int(meta.get("seed", 0)))
    train = table.X[train_idx] if with_train else None
    return train, table.X[test_idx], table.y[test_idx], None


def evaluate_bundle(
    bundle_path: str | Path,
    data: str | Path | None = None,
    device: str = "cpu",
    backend: str | None = None,
    save_maps: str | Path | None = None,
    progress: Progress = no_progress,
    threads: int | None = None,
) -> dict[str, Any]:
    """Metrics of the bundle at `bundle_path` on labelled test data, scored by the runtime.

    Args:
        bundle_path: a `.edgead` file.
        data: images: MVTec-layout folder (or "elpv"); tabular: a .npz/.csv/.parquet with
            labels (test rows = the ADBench split with the run's seed, as `evaluate_run`).
            None: the data the run was trained on, as recorded at export.
        device, backend, threads: as for `Detector.load`.
        save_maps: folder for anomaly-map overlays of every test image (images only).

    Returns:
        The keys `edgead.training.evaluate_run` returns (images: image_auroc, image_auprc,
        image_f1, f1_threshold, threshold, n_test, n_anomalous, precision_at_threshold,
        recall_at_threshold, pixel_auroc/aupro with masks, seconds_per_image; tabular: auroc,
        auprc, f1, f1_threshold, threshold, n_test, n_anomalous, precision/recall,
        seconds_per_row), plus "runtime": {"backend", "fallbacks"} and "panels" with save_maps.

    Raises:
        DataError: no data given or recorded, unlabelled data, one class only.
    """
    from edgead import metrics

    with Detector.load(bundle_path, device=device, backend=backend, threads=threads) as det:
        m = det.manifest
        run = m.export.get("run") or {}
        run_data = run.get("data") or {}
        if data is None:
            data = run_data.get("spec") or run_data.get("path")
            if data is None:
                raise DataError(f"{bundle_path} does not record its data; pass labelled data")
        meta = {"config": m.config, "seed": run.get("seed") or 0, "data": run_data}
        size = m.input.image_size[0] if m.input.image_size else None
        _, inputs, labels, masks = load_eval_data(data, meta, m.modality, image_size=size)
        labels = np.asarray(labels, dtype=np.int64)
        n = len(labels)
        raw = np.empty(n, dtype=np.float32)
        maps: list[np.ndarray] = []
        panels: list[str] = []
        t0 = time.perf_counter()
        if m.modality == "tabular":
            if save_maps is not None:
                raise DataError("--save-maps needs an image bundle; this bundle is tabular")
            raw[:] = det.score_rows(inputs).raw_scores
        else:
            for start in range(0, n, BATCH):
                batch = [inputs[i] for i in range(start, min(start + BATCH, n))]
                results = det(batch, channel_order="RGB")
                for j, res in enumerate(results):  # type: ignore[union-attr]
                    raw[start + j] = res.raw_score
                    if masks is not None and res.anomaly_map is not None:
                        maps.append(res.anomaly_map)
                    if save_maps is not None and res.anomaly_map is not None:
                        name = f"{start + j:04d}_label{labels[start + j]}.png"
                        panels.append(
                            str(
                                write_overlay(
                                    Path(save_maps) / name,
                                    batch[j],
                                    res.anomaly_map,
                                    m.normalisation,
                                )
                            )
                        )
                progress(min(start + BATCH, n), n, "evaluate")
        seconds = time.perf_counter() - t0
        scores = metrics.image_metrics(labels, raw)
        threshold = float(m.threshold if m.threshold is not None else scores["f1_threshold"])
        runtime = {"backend": det.backend, "fallbacks": det.fallbacks}
    predicted = raw >= threshold
    true_pos = int(np.sum(predicted & (labels == 1)))
    common = {
        "f1_threshold": scores["f1_threshold"],
        "threshold": threshold,
        "n_test": int(n),
        "n_anomalous": int(labels.sum()),
        "precision_at_threshold": true_pos / max(int(predicted.sum()), 1),
        "recall_at_threshold": true_pos / max(int(labels.sum()), 1),
    }
    if m.modality == "tabular":
        return {
            "auroc": scores["auroc"],
            "auprc": scores["auprc"],
            "f1": scores["f1"],
            **common,
            "seconds_per_row": seconds / max(n, 1),
            "runtime": runtime,
        }
    out: dict[str, Any] = {
        "image_auroc": scores["auroc"],
        "image_auprc": scores["auprc"],
        "image_f1": scores["f1"],
        **common,
    }
    if masks is not None and maps:
        out.update(metrics.pixel_metrics(np.stack(list(masks)), np.stack(maps)))
    out["seconds_per_image"] = seconds / max(n, 1)
    out["runtime"] = runtime
    if save_maps is not None:
        out["panels"] = panels
        out["panels_dir"] = str(save_maps)
    return out


def write_overlay(
    path: Path,
    rgb: np.ndarray,
    anomaly_map: np.ndarray,
    normalisation: dict[str, Any],
    channel_order: str = "RGB",
) -> Path:
    """PNG of the frame blended with a JET heat map scaled by the bundle's min/max (raw units).

    Args:
        rgb: uint8 (H, W, 3) frame in `channel_order`; anomaly_map: float32 (H, W) same H, W.
    """
    import cv2

    low = float(normalisation.get("min", float(anomaly_map.min())))
    high = float(normalisation.get("max", float(anomaly_map.max())))
    scaled = np.clip((anomaly_map - low) / max(high - low, 1e-12), 0.0, 1.0)
    heat = cv2.applyColorMap((scaled * 255).astype(np.uint8), cv2.COLORMAP_JET)
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if channel_order.upper() == "RGB" else rgb
    overlay = cv2.addWeighted(bgr, 0.6, heat, 0.4, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), overlay):
        raise DataError(f"cannot write the overlay {path}; check the folder is writable")
    return path
