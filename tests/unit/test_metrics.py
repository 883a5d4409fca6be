"""Image and pixel metrics against hand-computed values and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from edgead.calibrate import normalisation_from_scores, threshold_from_labels, threshold_from_normal
from edgead.errors import ConfigError, DataError
from edgead.metrics import aupro, image_metrics, pixel_metrics

LABELS = np.array([0, 0, 1, 1])
SCORES = np.array([0.1, 0.4, 0.35, 0.8])


def test_image_metrics_hand_computed() -> None:
    # Ranked: 0.8 (1), 0.4 (0), 0.35 (1), 0.1 (0). Pairs won: 3 of 4 -> AUROC 0.75.
    # AP = 0.5 * 1 + 0.5 * 2/3. Best F1 at t = 0.35: P = 2/3, R = 1 -> 0.8 (t = 0.8 gives 2/3).
    result = image_metrics(LABELS, SCORES)
    assert result["auroc"] == pytest.approx(0.75)
    assert result["auprc"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert result["f1"] == pytest.approx(0.8)
    assert result["f1_threshold"] == pytest.approx(0.35)
    assert threshold_from_labels(LABELS, SCORES) == pytest.approx(0.35)


def test_image_metrics_perfect_and_inverted() -> None:
    labels = np.array([0, 1, 0, 1, 1])
    scores = np.array([0.0, 5.0, 1.0, 3.0, 2.0])
    assert image_metrics(labels, scores) == pytest.approx(
        {"auroc": 1.0, "auprc": 1.0, "f1": 1.0, "f1_threshold": 2.0}
    )
    assert image_metrics(labels, -scores)["auroc"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "labels, scores, match",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "all 3 labels are 1"),
        ([0, 0], [0.1, 0.2], "all 2 labels are 0"),
        ([0, 1], [0.1], "differ in length"),
        ([0, 2], [0.1, 0.2], "0 .normal. or 1"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([], [], "empty"),
    ],
)
def test_image_metrics_rejects_bad_input(labels: list, scores: list, match: str) -> None:
    with pytest.raises(DataError, match=match):
        image_metrics(np.array(labels), np.array(scores, dtype=float))


def test_threshold_from_normal_percentile() -> None:
    scores = np.arange(1.0, 101.0)  # 1..100
    assert threshold_from_normal(scores, 99.0) == pytest.approx(99.01)
    assert threshold_from_normal(scores, 100.0) == pytest.approx(100.0)
    assert threshold_from_normal(scores, 50.0) == pytest.approx(50.5)
    with pytest.raises(ConfigError, match="percentile"):
        threshold_from_normal(scores, 0.0)
    with pytest.raises(DataError, match="no normal validation scores"):
        threshold_from_normal(np.array([]))


def test_normalisation_from_scores() -> None:
    norm = normalisation_from_scores(np.array([2.0, 5.0, 3.0]), 4.0)
    assert norm == {"method": "minmax_threshold", "min": 2.0, "max": 5.0, "threshold": 4.0}
    with pytest.raises(DataError):
        normalisation_from_scores(np.array([]), 1.0)


def _reference_aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float:
    """Brute force over every distinct threshold (the MVTec AD definition, no subsampling)."""
    labelled = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    regions = [
        (i, labelled[i] == r) for i in range(len(masks)) for r in range(1, labelled[i].max() + 1)
    ]
    negatives = maps[~masks]
    fprs, pros = [0.0], [0.0]
    for t in np.unique(maps)[::-1]:
        fprs.append(float(np.mean(negatives >= t)))
        pros.append(float(np.mean([np.mean(maps[i][r] >= t) for i, r in regions])))
    fprs_a, pros_a = np.array(fprs), np.array(pros)
    keep = fprs_a <= max_fpr
    x = np.r_[fprs_a[keep], max_fpr]
    y = np.r_[pros_a[keep], np.interp(max_fpr, fprs_a, pros_a)]
    return float(np.trapezoid(y, x) / max_fpr)


def _masks_with_regions(n: int = 3, size: int = 24) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=bool)
    masks[0, 2:8, 2:10] = True  # two regions in image 0
    masks[0, 15:20, 14:22] = True
    masks[1, 10:13, 3:6] = True  # a small region in image 1; image 2 is good
    return masks


def test_aupro_matches_brute_force_reference() -> None:
    rng = np.random.default_rng(0)
    masks = _masks_with_regions()
    maps = rng.random(masks.shape)
    maps[0][masks[0]] += 0.5  # image 0's regions partly detected
    maps = np.round(maps * 50) / 50  # ties, as real maps have
    expected = _reference_aupro(masks, maps)
    assert aupro(masks, maps, num_thresholds=500) == pytest.approx(expected, abs=2e-3)
    assert pixel_metrics(masks, maps)["aupro"] == pytest.approx(expected, abs=1e-2)


def test_aupro_perfect_random_and_half_detected() -> None:
    masks = _masks_with_regions()
    perfect = masks.astype(float) + 0.01 * np.random.default_rng(1).random(masks.shape)
    assert aupro(masks, perfect) == pytest.approx(1.0)

    big = np.zeros((40, 64, 64), dtype=bool)
    big[::2, 10:30, 10:40] = True
    random = np.random.default_rng(2).random(big.shape)
    # Random maps: PRO(fpr) ~ fpr, so the normalised area up to 0.3 is 0.3 / 2 = 0.15.
    assert aupro(big, random) == pytest.approx(0.15, abs=0.01)

    # Two equal-weight regions: one above every normal pixel, one with the normal pixels'
    # value distribution -> PRO = 0.5 + 0.5 * FPR -> area 0.5 + 0.5 * 0.15 = 0.575.
    masks2 = np.zeros((2, 20, 20), dtype=bool)
    masks2[0, 0:10, 0:10] = True
    masks2[1, 0:10, 0:10] = True
    maps2 = np.zeros(masks2.shape)
    values = np.arange(400 - 100) / 300.0
    maps2[0][~masks2[0]] = values
    maps2[1][~masks2[1]] = values
    maps2[0][masks2[0]] = 10.0
    maps2[1][masks2[1]] = values[::3][:100]
    assert aupro(masks2, maps2, num_thresholds=300) == pytest.approx(0.575, abs=0.01)


def test_pixel_auroc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    masks = _masks_with_regions()
    maps = np.round(rng.random(masks.shape) + 0.3 * masks, 1).astype(np.float32)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_metrics(masks, maps)["pixel_auroc"] == pytest.approx(expected, abs=1e-9)


def test_pixel_metrics_reject_bad_input() -> None:
    masks = _masks_with_regions()
    with pytest.raises(DataError, match="same shape"):
        pixel_metrics(masks, np.zeros((3, 24, 23)))
    with pytest.raises(DataError, match="both defect and normal pixels"):
        pixel_metrics(np.zeros_like(masks), np.zeros(masks.shape))
    maps = np.zeros(masks.shape)
    maps[0, 0, 0] = np.nan
    with pytest.raises(DataError, match="NaN"):
        pixel_metrics(masks, maps)
    with pytest.raises(ConfigError, match="max_fpr"):
        aupro(masks, np.zeros(masks.shape), max_fpr=0.0)
