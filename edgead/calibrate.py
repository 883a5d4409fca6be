"""Calibration, in one place: threshold policies, score normalisation, and re-fitting a bundle.

Used by training (the run's threshold and normalisation), by export (re-fitting them through a
compressed index or a bf16 / int8 graph: `refit_through_bundle`) and on site (`edgead
calibrate`: `calibrate_bundle`). The device runtime only moves a calibrated threshold
(`edgead.runtime.threshold`), it never fits one.

Policies (raw units, decision raw >= threshold):
    percentile:P     the P-th percentile of normal scores (`threshold_from_normal`; training's
                     default is percentile:`THRESHOLD_PERCENTILE`)
    f1               the F1-optimal threshold on labelled scores (`threshold_from_labels`)
    target-fpr:F     about a share F of good parts flagged (`threshold_for_fpr`; with few
                     images a Gaussian tail fitted to the good scores, recorded as "fpr_rule")
Normalisation: `normalisation_from_scores` ("minmax_threshold": the threshold maps to 0.5).

Site calibration:

    edgead calibrate MODEL.edgead --good GOOD_DIR [--defects BAD_DIR]
        [--target-fpr 0.01 | --policy f1 | --policy percentile:99] --out SITE.edgead

The graphs, the index and every array are copied byte for byte; only the manifest changes:
`threshold`, `normalisation` (min/max of the good scores, the new threshold) and
`export["site_calibration"]`, which records the old and new threshold, the policy, the image
counts, the rates measured on the calibration images and a histogram of their raw scores. The
bundle is written with fresh hashes (`edgead.bundle.write_bundle`), atomically.

Scoring goes through the runtime (`edgead.runtime.Detector`), exactly as `predict` and `run`
score, so the threshold fits what the station will see.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgead.errors import ConfigError, DataError

if TYPE_CHECKING:
    from edgead.bundle import Manifest

logger = logging.getLogger(__name__)

HISTOGRAM_BINS = 20
#: training's percentile policy on held-out normal scores (recorded as "percentile:99")
THRESHOLD_PERCENTILE = 99.0
DEFAULT_POLICY = f"percentile:{THRESHOLD_PERCENTILE:g}"
_BATCH = 8


def threshold_from_labels(labels: np.ndarray, scores: np.ndarray) -> float:
    """F1-optimal threshold (raw score units; anomalous when score >= threshold).

    Raises:
        DataError: as `edgead.metrics.image_metrics`.
    """
    from edgead.metrics import best_f1

    return best_f1(labels, scores)[1]


def threshold_from_normal(scores: np.ndarray, percentile: float = 99.0) -> float:
    """The `percentile`-th percentile (linear interpolation) of scores of normal samples.

    Args:
        scores: float (N,) raw scores of held-out normal data, N >= 1.
        percentile: in (0, 100].

    Raises:
        ConfigError: percentile out of range. DataError: empty or non-finite scores.
    """
    if not 0.0 < percentile <= 100.0:
        raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0:
        raise DataError(
            "no normal validation scores to set a threshold from; hold out some "
            "normal images (val_fraction > 0) or use labelled data"
        )
    if not np.all(np.isfinite(scores)):
        raise DataError("normal validation scores contain NaN/inf; cannot set a threshold")
    if scores.size < 20:
        logger.warning(
            "threshold_from_normal: percentile %.1f of only %d scores is rough",
            percentile,
            scores.size,
        )
    return float(np.percentile(scores, percentile))


#: below this many expected false positives (n * target_fpr) the empirical tail is too thin to
#: place a threshold: `threshold_for_fpr` also extrapolates a Gaussian tail and takes the higher
MIN_TAIL_COUNT = 10


def threshold_for_fpr(scores: np.ndarray, target_fpr: float) -> float:
    """Raw threshold flagging about `target_fpr` of normal parts (rule: raw >= thr).

    Empirical rule: with n scores, k = floor(target_fpr * n) may lie at or above the threshold,
    which is set midway between the (k+1)-th and k-th highest score (k = 0: just above the
    highest score).

    Small samples (n * target_fpr < `MIN_TAIL_COUNT`, e.g. 14 site images at 1 %): the
    empirical tail cannot estimate the quantile (with 14 images the smallest step is 7 %), so
    the (1 - target_fpr) quantile of a normal distribution fitted to the scores (mean + z * std,
    sample std) is computed too, and the higher of the two thresholds is returned (logged). On
    MPDD (14 site images, target 1 %) the empirical rule alone gave 2 of 26 test/good flagged,
    the Gaussian tail none (tests/integration/test_station_mpdd.py).

    Args:
        scores: float (N,) raw scores of normal samples, N >= 1.
        target_fpr: in [0, 1).

    Raises:
        ConfigError: target_fpr out of range. DataError: empty or non-finite scores.
    """
    from statistics import NormalDist

    if not 0.0 <= float(target_fpr) < 1.0:
        raise ConfigError(f"target false-positive rate must be in [0, 1), got {target_fpr}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if ordered.size == 0 or not np.all(np.isfinite(ordered)):
        raise DataError("a target false-positive rate needs at least one finite normal score")
    n = ordered.size
    allowed = int(np.floor(float(target_fpr) * n + 1e-9))
    if allowed == 0:
        empirical = float(np.nextafter(ordered[-1], np.inf))
    else:
        upper, lower = float(ordered[n - allowed]), float(ordered[n - allowed - 1])
        empirical = (
            lower + (upper - lower) / 2.0 if upper > lower else float(np.nextafter(upper, np.inf))
        )
    if n * float(target_fpr) >= MIN_TAIL_COUNT or n < 2 or target_fpr <= 0:
        return empirical
    z = NormalDist().inv_cdf(1.0 - float(target_fpr))
    gaussian = float(ordered.mean() + z * ordered.std(ddof=1))
    logger.info(
        "target FPR %.4g from %d normal scores (%.2g expected above it): empirical %.6g, "
        "Gaussian tail %.6g; using %s",
        target_fpr,
        n,
        n * float(target_fpr),
        empirical,
        gaussian,
        "the Gaussian tail" if gaussian > empirical else "the empirical quantile",
    )
    return max(empirical, gaussian)


def normalisation_from_scores(scores: np.ndarray, threshold: float) -> dict[str, float | str]:
    """{"method": "minmax_threshold", "min", "max", "threshold"} for the runtime's score scaling.

    The runtime maps raw -> clip((raw - threshold) / (max - min) + 0.5, 0, 1), so the threshold
    sits at 0.5 (see `edgead.ops.postprocess.normalise_scores`).

    Args:
        scores: float (N,) raw validation scores (N >= 1).
        threshold: raw-score threshold.

    Raises:
        DataError: empty or non-finite scores or threshold.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if scores.size == 0 or not np.all(np.isfinite(scores)) or not np.isfinite(threshold):
        raise DataError("normalisation needs at least one finite score and a finite threshold")
    return {
        "method": "minmax_threshold",
        "min": float(scores.min()),
        "max": float(scores.max()),
        "threshold": float(threshold),
    }


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
    if kind == "target-fpr":
        return threshold_for_fpr(good, float(value))  # type: ignore[arg-type]
    if kind == "percentile":
        return threshold_from_normal(good, float(value))  # type: ignore[arg-type]
    if defects is None or defects.size == 0:
        raise ConfigError("--policy f1 needs defective images: pass --defects DIR")
    labels = np.concatenate([np.zeros(good.size, np.int64), np.ones(defects.size, np.int64)])
    return threshold_from_labels(labels, np.concatenate([good, defects]))


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
        small = good_scores.size * float(value) < MIN_TAIL_COUNT  # type: ignore[arg-type]
        record["fpr_rule"] = "max(empirical, gaussian_tail)" if small else "empirical"
    if bad_scores is not None:
        record["recall_on_defects"] = float(np.mean(bad_scores >= threshold))
    norm = normalisation_from_scores(good_scores, threshold)
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


def runtime_scores_of(det: Any, inputs: np.ndarray, modality: str) -> np.ndarray:
    """Raw scores (N,) of `inputs` through a loaded runtime `Detector`.

    inputs: uint8 (N, S, S, 3) RGB images, float32 (N, D) rows (tabular) or (B, L, D) windows
    (timeseries).
    """
    if modality == "image":
        results = det(list(inputs), channel_order="RGB")
        return np.array([r.raw_score for r in results], dtype=np.float64)
    if modality == "timeseries":
        return np.asarray(det.score_windows(np.asarray(inputs)).raw_scores)
    return np.asarray(det.score_rows(np.asarray(inputs)).raw_scores)


def runtime_raw_scores(
    bundle: Path, inputs: np.ndarray, modality: str, backend: str = "onnxruntime"
) -> np.ndarray:
    """float64 (N,) raw scores of `inputs` through the runtime (`backend`, CPU)."""
    from edgead.runtime.detector import Detector

    det = Detector.load(bundle, device="cpu", backend=backend)
    try:
        return np.asarray(runtime_scores_of(det, inputs, modality), dtype=np.float64)
    finally:
        det.close()


def percentile_of(policy: str) -> float | None:
    """P of a "percentile:P" policy string, or None for any other policy."""
    if not policy.startswith("percentile:"):
        return None
    return float(policy.split(":", 1)[1])


def _score_change(scores: np.ndarray, before: np.ndarray) -> dict[str, Any]:
    """How much the parity inputs' scores moved (compressed / low precision vs exact fp32)."""
    rel = np.abs(scores - before) / np.maximum(np.abs(before), 1e-12)
    return {
        "checked_with": "exact Flat index (parity above); compressed index scores compared",
        "score_max_rel_change": float(rel.max()) if len(rel) else 0.0,
        "score_median_ratio": float(np.median(scores / np.maximum(before, 1e-12)))
        if len(rel)
        else 1.0,
    }


def _scaled(
    run_threshold: dict[str, Any], run_norm: dict[str, Any], ratio: float
) -> tuple[float, dict[str, Any]]:
    """The run's threshold and normalisation (min, max, threshold) times `ratio`."""
    value = float(run_threshold["value"]) * ratio
    norm = {
        key: (float(v) * ratio if key in ("min", "max", "threshold") else v)
        for key, v in run_norm.items()
    }
    return value, norm


def refit_through_bundle(
    candidate: Path,
    manifest: Manifest,
    meta: dict[str, Any],
    modality: str,
    normal_inputs: Callable[[], np.ndarray | None],
    change_report: dict[str, Any],
    parity_inputs: np.ndarray,
    exact_scores: np.ndarray,
    backend: str = "onnxruntime",
) -> tuple[Manifest, dict[str, Any], dict[str, Any]]:
    """Threshold and normalisation re-fitted through the compressed index / graph in `candidate`.

    Compressed search shifts distances (pq4: ~6-11 % larger), so the run's threshold (fitted
    with exact search) would flag too much. With the run's held-out normal validation inputs
    (`normal_inputs()`, loaded only when needed) and a "percentile:P" policy, they are scored
    through the candidate and the same policy is applied; otherwise the run's values are scaled
    by the measured median distance ratio (`change_report["dist_ratio_median"]`, logged as a
    warning).

    Args:
        candidate: the bundle as it will ship (compressed index or low-precision graph).
        manifest: its manifest; meta: the run's run.json (threshold, normalisation).
        change_report: {"factory": what changed, "dist_ratio_median": compressed / exact}.
        parity_inputs, exact_scores: inputs and their float64 (N,) scores before the change.

    Returns:
        (manifest with the new threshold / normalisation, calibration record for
        manifest.export["calibration"], score change of the parity inputs exact -> compressed).
    """
    change = _score_change(
        runtime_raw_scores(candidate, parity_inputs, modality, backend), exact_scores
    )
    run_threshold = dict(meta.get("threshold") or {})
    run_norm = dict(meta.get("normalisation") or {})
    what = change_report.get("factory")
    record: dict[str, Any] = {
        "index": what,
        "run_threshold": run_threshold.get("value"),
        "run_normalisation": run_norm,
    }
    if run_threshold.get("value") is None:
        record.update(method="none", reason="the run has no threshold to re-fit")
        return manifest, record, change
    policy = str(run_threshold.get("policy", ""))
    normal = normal_inputs()
    percentile = percentile_of(policy)
    if normal is not None and len(normal) and percentile is not None:
        scores = runtime_raw_scores(candidate, np.asarray(normal), modality, backend)
        value = float(threshold_from_normal(scores, percentile))
        norm: dict[str, Any] = dict(normalisation_from_scores(scores, value))
        record.update(
            method="refit",
            policy=policy,
            n_inputs=int(len(scores)),
            backend=backend,
            reason=f"{what} shifts the scores; the run's policy was re-applied to its "
            "held-out normal validation inputs scored through this bundle",
        )
        logger.info(
            "threshold re-fitted through index %s: %.6g -> %.6g (%s, %d inputs)",
            what,
            run_threshold["value"],
            value,
            policy,
            len(scores),
        )
    else:
        ratio = float(change_report.get("dist_ratio_median", 1.0))
        why = (
            "the run's validation inputs could not be reproduced"
            if normal is None or not len(normal)
            else f"the run's policy {policy!r} needs labelled data"
        )
        value, norm = _scaled(run_threshold, run_norm, ratio)
        record.update(
            method="scaled_by_dist_ratio_median",
            policy=policy,
            dist_ratio_median=ratio,
            reason=f"{why}; the run's threshold and normalisation were scaled by the median "
            "distance ratio compressed / exact measured at export",
        )
        logger.warning(
            "index %s: %s; threshold scaled by the median distance ratio %.4f (%.6g -> %.6g)",
            what,
            why,
            ratio,
            run_threshold["value"],
            value,
        )
    record.update(threshold=value, normalisation=norm)
    return dataclasses.replace(manifest, threshold=value, normalisation=norm), record, change
