"""Overlay panels: layout, colours, errors and the atomic PNG write."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edgead.errors import DataError
from edgead.ops.overlay import heatmap_rgb, overlay_panel, save_panel

S = 64


def _inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    image = np.full((S, S, 3), 120, dtype=np.uint8)
    anomaly_map = np.zeros((S, S), dtype=np.float32)
    anomaly_map[40:60, 40:60] = 1.0
    mask = anomaly_map > 0.5
    return image, anomaly_map, mask


def test_panel_layout_and_content() -> None:
    image, anomaly_map, mask = _inputs()
    panel = overlay_panel(image, anomaly_map, mask, vmin=0.0, vmax=1.0, title="score 0.91 anomaly")
    assert panel.dtype == np.uint8 and panel.ndim == 3 and panel.shape[2] == 3
    strip = panel.shape[0] - S
    assert strip > 0 and panel.shape[1] == 3 * S + 2 * 4
    row = panel[strip:]
    overlay = row[:, S + 4 : 2 * S + 4]
    # JET: the hot square is red-dominated, the cold background blue-dominated.
    hot, cold = overlay[50, 50].astype(int), overlay[20, 50].astype(int)
    assert hot[0] > hot[2] + 50 and cold[2] > cold[0] + 50
    mask_tile = row[:, 2 * S + 8 :]
    assert (mask_tile[50, 50] == 255).all() and (mask_tile[30, 30] == 0).all()
    assert (panel[:strip] < 128).any()  # the title text was drawn

    two = overlay_panel(image, anomaly_map, None, vmin=0.0, vmax=1.0, title="")
    assert two.shape[1] == 2 * S + 4


def test_heatmap_clips_to_vmin_vmax() -> None:
    values = np.array([[-5.0, 0.0, 1.0, 9.0]], dtype=np.float32)
    heat = heatmap_rgb(values, 0.0, 1.0)
    np.testing.assert_array_equal(heat[0, 0], heat[0, 1])
    np.testing.assert_array_equal(heat[0, 2], heat[0, 3])


def test_panel_rejects_mismatched_inputs() -> None:
    image, anomaly_map, mask = _inputs()
    with pytest.raises(DataError, match="must match the image"):
        overlay_panel(image, anomaly_map[:10], mask)
    with pytest.raises(DataError, match="uint8"):
        overlay_panel(image.astype(np.float32), anomaly_map, mask)
    with pytest.raises(DataError, match="mask"):
        overlay_panel(image, anomaly_map, mask[:, :10])


def test_save_panel_writes_png(tmp_path: Path) -> None:
    image, anomaly_map, mask = _inputs()
    panel = overlay_panel(image, anomaly_map, mask, title="x")
    path = save_panel(tmp_path / "sub" / "panel.png", panel)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(back, panel)
    assert [p.name for p in path.parent.iterdir()] == ["panel.png"]  # no temp file left
    with pytest.raises(DataError, match="PNG"):
        save_panel(tmp_path / "panel.jpg", panel)
