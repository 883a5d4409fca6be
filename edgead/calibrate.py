"""Set a bundle's threshold on site: score good (and defective) parts, write a new bundle.

    edgead calibrate MODEL.edgead --good GOOD_DIR [--defects BAD_DIR]
        [--target-fpr 0.01 | --policy f1 | --policy percentile:99] --out SITE.edgead

The graphs, the index and every array are copied byte for byte; only the manifest changes:
`threshold`, `normalisation` (min/max of the good scores, the new threshold) and
`export["site_calibration"]`, which records the old and new threshold, the policy, the image
counts, the rates measured on the calibration images and a histogram of their raw scores. The
bundle is written with fresh hashes (`edgead.bundle.write_bundle`), atomically.

Policies (raw units, decision raw >= threshold; the rules live in `edgead.metrics`):
    target-fpr:F     about a share F of good parts flagged (`metrics.threshold_for_fpr`; with
                     few images a Gaussian tail fitted to the good scores, recorded as
                     "fpr_rule")
    percentile:P     the P-th percentile of the good scores (`metrics.threshold_from_normal`)
    f1               the F1-optimal threshold on good + defects (`metrics.threshold_from_labels`)

Scoring goes through the runtime (`edgead.runtime.Detector`), exactly as `predict` and `run`
score, so the threshold fits what the station will see.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

HISTOGRAM_BINS = 20
DEFAULT_POLICY = "percentile:99"
_BATCH = 8


def parse_policy(policy: str | None, target_fpr: float | None) -> tuple[str, float | None]:
    """("target-fpr" | "percentile" | "f1", parameter) from the CLI options.

    Raises:
        ConfigError: both or a malformed policy.
    """
    if target_fpr is not None:
        if policy is not None:
            raise ConfigError("give --target-fpr or --policy, not both")
        if not 0.0 <= float(target_fpr) < 1.0:
            raise ConfigError(f"--target-fpr must be in [0, 1), got {target_fpr}")
        return "target-fpr", float(target_fpr)
    text = (policy or DEFAULT_POLICY).strip().lower()
    if text == "f1":
        return "f1", None
    if text.startswith("percentile:"):
        try:
            value = float(text.split(":", 1)[1])
        except ValueError as exc:
            raise ConfigError(f"--policy percentile:P needs a number P, got {policy!r}") from exc
        if not 0.0 < value <= 100.0:
            raise ConfigError(f"--policy percentile:P needs 0 < P <= 100, got {value}")
        return "percentile", value
    raise ConfigError(f"--policy must be f1 or percentile:P (e.g. percentile:99), got {policy!r}")


def _image_files(folder: Path) -> list[Path]:
    from edgead.data.images import list_images

    return list_images(Path(folder).expanduser())


def score_folder(
    det: Any, folder: Path, progress: Callable[[int, int, str], None], what: str
) -> np.ndarray:
    """float64 (N,) raw scores of every image in `folder`, scored by the runtime detector.

    Raises:
        DataError: the folder is missing, holds no images, or an image cannot be decoded.
    """
    from edgead.ops.decode import read_image

    files = _image_files(folder)
    scores = np.empty(len(files), dtype=np.float64)
    for start in range(0, len(files), _BATCH):
        chunk = files[start : start + _BATCH]
        results = det([read_image(path) for path in chunk], channel_order="RGB")
        scores[start : start + len(chunk)] = [r.raw_score for r in results]
        progress(start + len(chunk), len(files), what)
    return scores


def _histogram(good: np.ndarray, defects: np.ndarray | None) -> dict[str, Any]:
    both = good if defects is None else np.concatenate([good, defects])
    low, high = float(both.min()), float(both.max())
    edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
    out: dict[str, Any] = {
        "edges": [float(e) for e in edges],
        "good": [int(c) for c in np.histogram(good, edges)[0]],
    }
    if defects is not None:
        out["defects"] = [int(c) for c in np.histogram(defects, edges)[0]]
    return out


def _fit_threshold(
    kind: str, value: float | None, good: np.ndarray, defects: np.ndarray | None
) -> float:
    from edgead import metrics

    if kind == "target-fpr":
        return metrics.threshold_for_fpr(good, float(value))  # type: ignore[arg-type]
    if kind == "percentile":
        return metrics.threshold_from_normal(good, float(value))  # type: ignore[arg-type]
    if defects is None or defects.size == 0:
        raise ConfigError("--policy f1 needs defective images: pass --defects DIR")
    labels = np.concatenate([np.zeros(good.size, np.int64), np.ones(defects.size, np.int64)])
    return metrics.threshold_from_labels(labels, np.concatenate([good, defects]))


def calibrate_bundle(
    bundle: str | Path,
    good: str | Path,
    out: str | Path,
    *,
    defects: str | Path | None = None,
    policy: str | None = None,
    target_fpr: float | None = None,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[int, int, str], None] = lambda done, total, what: None,
    trusted_keys: list[str] | None = None,
) -> dict[str, Any]:
    """Re-fit the threshold and normalisation of `bundle` on site and write `out`.

    Args:
        bundle: an image `.edgead` bundle.
        good: folder of good images from the station.
        out: the new bundle (may be `bundle` itself: the write is atomic).
        defects: folder of defective images (needed by policy "f1"; otherwise reported only).
        policy: "f1" or "percentile:P"; default percentile:99 unless target_fpr is given.
        target_fpr: at most this share of the good images flagged.
        device, threads, trusted_keys: as for `Detector.load` (the bundle written is unsigned:
            sign it again).

    Returns:
        The record written to the manifest's export["site_calibration"].

    Raises:
        ConfigError: bad options, a tabular bundle, f1 without defects.
        DataError: unreadable folders or images.
        BundleError: the bundle fails verification.
    """
    from edgead import metrics
    from edgead.bundle import read_bundle, write_bundle
    from edgead.runtime import Detector

    kind, value = parse_policy(policy, target_fpr)
    source = read_bundle(bundle, trusted_keys=trusted_keys)
    manifest = source.manifest
    if manifest.modality != "image":
        raise ConfigError(f"{bundle} is a {manifest.modality} bundle; calibrate takes images")
    if kind == "f1" and defects is None:
        raise ConfigError("--policy f1 needs defective images: pass --defects DIR")
    _image_files(Path(good))  # fail on a bad folder before loading the backend
    with Detector.load(
        bundle, device=device, threads=threads, modality="image", trusted_keys=trusted_keys
    ) as det:
        good_scores = score_folder(det, Path(good), progress, "good")
        bad_scores = None if defects is None else score_folder(det, Path(defects), progress, "bad")
        backend = det.backend
    threshold = _fit_threshold(kind, value, good_scores, bad_scores)
    if not np.isfinite(threshold):
        raise DataError(f"the fitted threshold is not finite ({threshold}); check the scores")
    record: dict[str, Any] = {
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": kind if value is None else f"{kind}:{value:g}",
        "old_threshold": manifest.threshold,
        "new_threshold": float(threshold),
        "old_normalisation": dict(manifest.normalisation),
        "n_good": int(good_scores.size),
        "n_defects": 0 if bad_scores is None else int(bad_scores.size),
        "good_dir": str(Path(good).expanduser().resolve()),
        "defects_dir": None if defects is None else str(Path(defects).expanduser().resolve()),
        "fpr_on_good": float(np.mean(good_scores >= threshold)),
        "backend": backend,
        "histogram": _histogram(good_scores, bad_scores),
        "source_bundle_sha256": source.sha256,
    }
    if kind == "target-fpr":
        small = good_scores.size * float(value) < metrics.MIN_TAIL_COUNT  # type: ignore[arg-type]
        record["fpr_rule"] = "max(empirical, gaussian_tail)" if small else "empirical"
    if bad_scores is not None:
        record["recall_on_defects"] = float(np.mean(bad_scores >= threshold))
    norm = metrics.normalisation_from_scores(good_scores, threshold)
    export = {**manifest.export, "site_calibration": record}
    new_manifest = dataclasses.replace(
        manifest, threshold=float(threshold), normalisation=dict(norm), export=export
    )
    members = dict(source.members)
    write_bundle(out, new_manifest, members)
    logger.info(
        "calibrated %s: threshold %s -> %.6g (%s, %d good, %d defective) -> %s",
        bundle,
        "none" if manifest.threshold is None else f"{manifest.threshold:.6g}",
        threshold,
        record["policy"],
        record["n_good"],
        record["n_defects"],
        out,
    )
    return record
