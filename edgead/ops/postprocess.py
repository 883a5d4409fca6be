"""Score post-processing shared by the torch detectors and the runtime (numpy + OpenCV).

Anomaly maps are upsampled to the model input with bilinear interpolation, then smoothed by a
Gaussian (sigma in input pixels, kernel 2*int(4*sigma+0.5)+1 as in PatchCore/anomalib).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np


def upsample_and_blur(maps: np.ndarray, size_hw: tuple[int, int], sigma: float) -> np.ndarray:
    """float32 (B, H, W) maps from (B, h, w) grid maps: bilinear resize, then Gaussian blur.

    Args:
        maps: float32 (B, h, w) patch-level scores.
        size_hw: (H, W) px of the model input.
        sigma: Gaussian sigma in px; 0 disables smoothing.
    """
    maps = np.asarray(maps, dtype=np.float32)
    height, width = int(size_hw[0]), int(size_hw[1])
    out = np.empty((maps.shape[0], height, width), dtype=np.float32)
    ksize = 2 * int(4 * sigma + 0.5) + 1
    for i, grid in enumerate(maps):
        resized = cv2.resize(grid, (width, height), interpolation=cv2.INTER_LINEAR)
        if sigma > 0:
            resized = cv2.GaussianBlur(
                resized, (ksize, ksize), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
            )
        out[i] = resized
    return out


def resize_map(anomaly_map: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """float32 (H, W) map resized (bilinear) to a frame's (H, W) px."""
    height, width = int(size_hw[0]), int(size_hw[1])
    if anomaly_map.shape == (height, width):
        return anomaly_map.astype(np.float32, copy=False)
    return cv2.resize(
        anomaly_map.astype(np.float32, copy=False), (width, height), interpolation=cv2.INTER_LINEAR
    )


def normalise_scores(raw: np.ndarray, normalisation: dict[str, Any]) -> np.ndarray:
    """Scores in [0, 1] with the threshold at 0.5: clip((raw - thr) / (max - min) + 0.5, 0, 1).

    `normalisation` = {"method": "minmax_threshold", "min", "max", "threshold"} (raw units),
    min/max measured on validation scores.
    """
    raw = np.asarray(raw, dtype=np.float64)
    thr = float(normalisation["threshold"])
    span = float(normalisation["max"]) - float(normalisation["min"])
    span = span if span > 0 else 1.0
    return np.clip((raw - thr) / span + 0.5, 0.0, 1.0).astype(np.float32)
