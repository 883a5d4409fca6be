"""The one heat-map overlay: panels for evaluation, `predict`, `run` and demos (numpy + OpenCV,
torch-free).

A panel is one uint8 RGB image: a title strip above "image | heat-map overlay | mask".
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgead._io import write_bytes_atomic
from edgead.errors import DataError

logger = logging.getLogger(__name__)

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_GAP_PX = 4
_OVERLAY_ALPHA = 0.5


def heatmap_rgb(anomaly_map: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """uint8 RGB (S, S, 3) JET colouring of a float (S, S) map scaled from [vmin, vmax]."""
    span = vmax - vmin if vmax > vmin else 1.0
    scaled = np.clip((np.asarray(anomaly_map, dtype=np.float32) - vmin) / span, 0.0, 1.0)
    bgr = cv2.applyColorMap((scaled * 255.0 + 0.5).astype(np.uint8), cv2.COLORMAP_JET)
    return np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _label(tile: np.ndarray, text: str, scale: float) -> None:
    """Write `text` in the top-left corner of `tile` (white on a dark box), in place."""
    thickness = max(1, int(round(scale * 2)))
    (width, height), base = cv2.getTextSize(text, _FONT, scale, thickness)
    cv2.rectangle(tile, (0, 0), (width + 6, height + base + 6), (0, 0, 0), thickness=-1)
    cv2.putText(tile, text, (3, height + 3), _FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)


def overlay_panel(
    image_rgb: np.ndarray,
    anomaly_map: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str = "",
) -> np.ndarray:
    """uint8 RGB (H, W', 3) panel: title strip over "image | heat-map overlay | mask".

    Args:
        image_rgb: uint8 (S, S, 3) RGB image the map belongs to (any H x W works).
        anomaly_map: float (S, S) anomaly map at the image's resolution.
        mask: bool (S, S) ground truth, drawn white on black; None leaves the mask tile out.
        vmin, vmax: map values shown as the bottom / top of the colour scale (share them
            across images so colours compare); default: this map's min / max.
        title: text for the strip above the tiles, e.g. "score 0.83  label: anomaly".

    Returns:
        uint8 (H_title + S, 2 or 3 tiles wide with 4 px gaps, 3) RGB.

    Raises:
        DataError: wrong dtype or shapes that do not match.
    """
    image_rgb = np.asarray(image_rgb)
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise DataError(
            f"overlay_panel needs a uint8 (H, W, 3) RGB image; got "
            f"{image_rgb.dtype} {image_rgb.shape}"
        )
    height, width = image_rgb.shape[:2]
    anomaly_map = np.asarray(anomaly_map, dtype=np.float32)
    if anomaly_map.shape != (height, width):
        raise DataError(
            f"anomaly map {anomaly_map.shape} must match the image {(height, width)}; "
            "resize it first (edgead.ops.postprocess.resize_map)"
        )
    if mask is not None and np.asarray(mask).shape != (height, width):
        raise DataError(f"mask {np.asarray(mask).shape} must match the image {(height, width)}")
    if not np.all(np.isfinite(anomaly_map)):
        raise DataError("anomaly map contains NaN/inf; cannot colour it")
    low = float(anomaly_map.min()) if vmin is None else float(vmin)
    high = float(anomaly_map.max()) if vmax is None else float(vmax)

    heat = heatmap_rgb(anomaly_map, low, high)
    overlay = cv2.addWeighted(image_rgb, 1.0 - _OVERLAY_ALPHA, heat, _OVERLAY_ALPHA, 0.0)
    tiles = [image_rgb.copy(), overlay]
    names = ["image", "anomaly map"]
    if mask is not None:
        tiles.append(np.repeat(np.asarray(mask, dtype=bool)[:, :, None] * np.uint8(255), 3, axis=2))
        names.append("ground truth")
    scale = max(0.3, min(width, height) / 512.0)
    for tile, name in zip(tiles, names, strict=True):
        _label(tile, name, scale * 0.8)

    gap = np.full((height, _GAP_PX, 3), 255, dtype=np.uint8)
    row = tiles[0]
    for tile in tiles[1:]:
        row = np.concatenate([row, gap, tile], axis=1)
    thickness = max(1, int(round(scale * 2)))
    (_, text_h), base = cv2.getTextSize(title or " ", _FONT, scale, thickness)
    strip = np.full((text_h + base + 12, row.shape[1], 3), 255, dtype=np.uint8)
    if title:
        cv2.putText(strip, title, (6, text_h + 6), _FONT, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return np.ascontiguousarray(np.concatenate([strip, row], axis=0))


def save_panel(path: str | Path, panel: np.ndarray) -> Path:
    """Write a uint8 RGB (H, W, 3) panel as PNG, atomically; returns the path.

    Raises:
        DataError: the panel is not uint8 (H, W, 3) or cannot be encoded.
    """
    panel = np.asarray(panel)
    if panel.dtype != np.uint8 or panel.ndim != 3 or panel.shape[2] != 3:
        raise DataError(
            f"save_panel needs a uint8 (H, W, 3) RGB panel; got {panel.dtype} {panel.shape}"
        )
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise DataError(f"panels are written as PNG; use a .png file name, not {path.name}")
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"OpenCV could not encode the panel for {path}")
    write_bytes_atomic(path, encoded.tobytes())
    logger.debug("wrote panel %s (%dx%d)", path, panel.shape[1], panel.shape[0])
    return path


def colour_range(normalisation: dict[str, Any]) -> tuple[float | None, float | None]:
    """(vmin, vmax) in raw units for heat maps on the normalised-score scale: the threshold at
    mid-scale and the validation min..max span across; (None, None) when uncalibrated."""
    if not all(k in normalisation for k in ("min", "max", "threshold")):
        return None, None
    span = float(normalisation["max"]) - float(normalisation["min"])
    span = span if span > 0 else 1.0
    threshold = float(normalisation["threshold"])
    return threshold - span / 2.0, threshold + span / 2.0


def score_panel(
    image_rgb: np.ndarray,
    anomaly_map: np.ndarray,
    normalisation: dict[str, Any],
    title: str,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """`overlay_panel` coloured on the normalised-score scale (`colour_range`): the panel that
    evaluation, `predict --save-maps` and `run`'s anomaly images all write."""
    vmin, vmax = colour_range(normalisation or {})
    return overlay_panel(image_rgb, anomaly_map, mask, vmin=vmin, vmax=vmax, title=title)
