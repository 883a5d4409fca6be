"""Scoring sensor windows with a bundle of post-processing kind "window". Torch-free.

The graph takes raw windows float32 (B, L, D) and returns ("score",) (B,). A window's score
belongs to its last row (`edgead.ops.windows`), so a recording of N rows gets scores for
rows `window_end_rows(N, L, stride)` and a live stream gets one from `Detector.push(row)` once
the stream's ring buffer holds L rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgead.errors import DataError


@dataclass
class SeriesScores:
    """Scores of the windows of a recording.

    rows: int64 (M,) index of the row each score belongs to (the window's last row).
    raw_scores: float32 (M,); scores: float32 (M,) normalised (threshold at 0.5, NaN when the
    bundle is uncalibrated); is_anomaly: bool (M,) (all False when uncalibrated).
    """

    rows: np.ndarray
    raw_scores: np.ndarray
    scores: np.ndarray
    is_anomaly: np.ndarray


@dataclass
class RowResult:
    """The verdict on the window ending at one pushed row.

    row_index: 0-based count of the row in its stream; raw_score: detector units;
    score: normalised (NaN when uncalibrated); is_anomaly: None when uncalibrated.
    """

    stream: str
    row_index: int
    raw_score: float
    score: float
    is_anomaly: bool | None


def window_shape(
    postprocess: dict[str, Any], input_shape: tuple[int | None, ...]
) -> tuple[int, int, int]:
    """(window L, stride, features D) from a window bundle's post-processing and input shape."""
    length = int(postprocess.get("window", input_shape[1] or 0))
    stride = int(postprocess.get("stride", 1))
    n_features = int(input_shape[-1] or 0)
    return length, stride, n_features


def check_windows(windows: object, length: int, n_features: int) -> np.ndarray:
    """float32 C-contiguous (B, L, D) windows; DataError on wrong shape, dtype or values."""
    array = np.asarray(windows)
    if array.dtype.kind not in "fiub":
        raise DataError(f"windows must be numbers, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[1:] != (length, n_features):
        raise DataError(
            f"windows must have shape (B, {length}, {n_features}) (rows x features); "
            f"got {array.shape}"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise DataError("windows contain NaN or inf; impute or drop those rows first")
    return array
