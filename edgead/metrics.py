"""Image / pixel metrics (scikit-learn, scipy); threshold policies live in `edgead.calibrate`.

Convention: scores are "higher = more anomalous" and a sample is called anomalous when
`score >= threshold` (the rule `sklearn.metrics.precision_recall_curve` uses).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from edgead.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2.0 renamed trapz

#: AUPRO integrates the per-region-overlap curve up to this false-positive rate (MVTec AD).
AUPRO_MAX_FPR = 0.3


def _check_labels_scores(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 (N,) labels in {0, 1}, float64 (N,) finite scores) or DataError."""
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise DataError(f"labels ({labels.size}) and scores ({scores.size}) differ in length")
    if labels.size == 0:
        raise DataError("no samples to evaluate: labels and scores are empty")
    if not np.all(np.isfinite(scores)):
        raise DataError(
            f"{int(np.sum(~np.isfinite(scores)))} score(s) are NaN/inf; the detector "
            "produced non-finite values"
        )
    if not np.all(np.isin(labels, (0, 1))):
        raise DataError(f"labels must be 0 (normal) or 1 (anomaly); found {np.unique(labels)[:10]}")
    labels = labels.astype(np.int64)
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == labels.size:
        missing = "normal samples" if n_pos else "anomalies"
        raise DataError(
            f"all {labels.size} labels are {1 if n_pos else 0}: AUROC/F1 need both "
            f"normal and anomalous samples; add {missing} to the test set"
        )
    return labels, scores


def _best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best F1, its threshold) over all thresholds of the precision-recall curve."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def image_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Image-level {"auroc", "auprc", "f1", "f1_threshold"}.

    Args:
        labels: int (N,), 0 = normal, 1 = anomaly; both classes must occur.
        scores: float (N,), higher = more anomalous, raw units.

    Returns:
        auroc (ROC AUC), auprc (average precision), f1 (best F1 over thresholds) and
        f1_threshold (the raw score reaching it; anomalous when score >= threshold).

    Raises:
        DataError: length mismatch, empty, non-finite scores, labels not in {0, 1}, one class.
    """
    labels, scores = _check_labels_scores(labels, scores)
    f1, threshold = _best_f1(labels, scores)
    return {
        "auroc": float(roc_auc_score(labels, scores)),
        "auprc": float(average_precision_score(labels, scores)),
        "f1": f1,
        "f1_threshold": threshold,
    }


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(best F1 over thresholds, the raw score reaching it; anomalous when score >= it).

    Raises:
        DataError: as `image_metrics`.
    """
    labels, scores = _check_labels_scores(labels, scores)
    return _best_f1(labels, scores)


def _check_masks_maps(masks: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    masks = np.asarray(masks)
    maps = np.asarray(maps)
    if not np.issubdtype(maps.dtype, np.floating):
        maps = maps.astype(np.float64)
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise DataError(
            f"masks {masks.shape} and anomaly maps {maps.shape} must both be "
            "(N, S, S) with the same shape"
        )
    if masks.dtype != bool:
        if not np.all(np.isin(masks, (0, 1))):
            raise DataError("masks must be bool or 0/1")
        masks = masks.astype(bool)
    if not np.all(np.isfinite(maps)):
        raise DataError("anomaly maps contain NaN/inf")
    if not masks.any() or masks.all():
        raise DataError(
            "pixel metrics need both defect and normal pixels in the masks; "
            f"found {int(masks.sum())} defect pixel(s) of {masks.size}"
        )
    return masks, maps


def _pixel_auroc(neg_sorted: np.ndarray, positives: np.ndarray) -> float:
    """Exact ROC AUC (ties count 1/2) from sorted normal-pixel values and defect-pixel values.

    Equals `sklearn.metrics.roc_auc_score` but sorts only once (Mann-Whitney U by binary search).
    """
    below = np.searchsorted(neg_sorted, positives, side="left")
    at_or_below = np.searchsorted(neg_sorted, positives, side="right")
    wins = below.sum(dtype=np.float64) + 0.5 * (at_or_below - below).sum(dtype=np.float64)
    return float(wins / (positives.size * neg_sorted.size))


def _aupro_sorted(
    masks: np.ndarray, maps: np.ndarray, neg_sorted: np.ndarray, max_fpr: float, num_thresholds: int
) -> float:
    """AUPRO from checked inputs and the sorted values of normal pixels (see `aupro`)."""
    structure = np.ones((3, 3), dtype=bool)
    region_ids = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=structure)
        region_ids[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    n_neg = neg_sorted.size
    # Thresholds at evenly spaced FPRs in [0, max_fpr]: the value with k normal pixels at or
    # above it, plus one just above the largest normal value (FPR exactly 0).
    ranks = np.unique(np.round(np.linspace(1, max(1.0, max_fpr * n_neg), num_thresholds)))
    thresholds = neg_sorted[n_neg - ranks.astype(np.int64)]
    top = np.nextafter(neg_sorted[-1], np.inf)
    thresholds = np.unique(np.r_[thresholds, top])  # ascending
    fpr = (n_neg - np.searchsorted(neg_sorted, thresholds, side="left")) / n_neg

    positive = region_ids > 0
    groups = region_ids[positive] - 1
    # bin b (0..T) holds values in [t_{b-1}, t_b); count(value >= t_j) = sum of bins j+1..T.
    bins = np.searchsorted(thresholds, maps[positive], side="right")
    n_bins = thresholds.size + 1
    hist = np.bincount(groups * n_bins + bins, minlength=n_regions * n_bins)
    hist = hist.reshape(n_regions, n_bins)
    overlap = np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (regions, T)
    sizes = np.bincount(groups, minlength=n_regions)
    pro = (overlap / sizes[:, None]).mean(axis=0)

    order = np.argsort(fpr, kind="stable")
    fpr, pro = np.r_[0.0, fpr[order]], np.r_[0.0, pro[order]]
    if fpr[-1] < max_fpr:  # ties: no threshold reaches max_fpr; PRO stays at its last value
        fpr, pro = np.r_[fpr, max_fpr], np.r_[pro, pro[-1]]
    end = int(np.searchsorted(fpr, max_fpr, side="right"))
    pro_at_max = float(np.interp(max_fpr, fpr, pro))
    x, y = np.r_[fpr[:end], max_fpr], np.r_[pro[:end], pro_at_max]
    return float(_trapezoid(y, x) / max_fpr)


def aupro(
    masks: np.ndarray, maps: np.ndarray, max_fpr: float = AUPRO_MAX_FPR, num_thresholds: int = 200
) -> float:
    """Normalised area under the per-region-overlap curve up to `max_fpr` (MVTec AD).

    PRO(t) is the mean, over all connected defect regions of all images (8-connectivity), of the
    fraction of region pixels with map >= t; FPR(t) is the fraction of normal pixels with
    map >= t. The curve (from (0, 0)) is integrated with the trapezoid rule over FPR in
    [0, max_fpr], linearly interpolated at max_fpr, and divided by max_fpr (1.0 = perfect,
    about max_fpr / 2 = random). Thresholds: `num_thresholds` normal-pixel values chosen so the
    FPRs are evenly spaced in [0, max_fpr], plus one above every normal pixel. Cost: one sort
    of the normal pixels and one bincount.

    Args:
        masks: bool (N, S, S) ground truth. maps: float (N, S, S) anomaly maps.

    Raises:
        DataError: bad shapes, no defect or no normal pixel, non-finite maps.
        ConfigError: max_fpr not in (0, 1] or fewer than 2 thresholds.
    """
    if not 0.0 < max_fpr <= 1.0 or num_thresholds < 2:
        raise ConfigError(
            f"aupro needs 0 < max_fpr <= 1 and num_thresholds >= 2; got {max_fpr}, {num_thresholds}"
        )
    masks, maps = _check_masks_maps(masks, maps)
    return _aupro_sorted(masks, maps, np.sort(maps[~masks]), max_fpr, num_thresholds)


def pixel_metrics(masks: np.ndarray, maps: np.ndarray) -> dict[str, float]:
    """Pixel-level {"pixel_auroc", "aupro"} (AUPRO up to FPR 0.3, normalised).

    Args:
        masks: bool (N, S, S) ground truth (good images all False).
        maps: float (N, S, S) anomaly maps at the mask resolution.

    Raises:
        DataError: bad shapes, masks without defect or without normal pixels, NaN maps.
    """
    masks, maps = _check_masks_maps(masks, maps)
    neg_sorted = np.sort(maps[~masks])
    return {
        "pixel_auroc": _pixel_auroc(neg_sorted, maps[masks]),
        "aupro": _aupro_sorted(masks, maps, neg_sorted, AUPRO_MAX_FPR, 200),
    }
