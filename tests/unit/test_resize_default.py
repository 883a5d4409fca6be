"""Unit tests: the antialiased bilinear resize ("bilinear_aa", Pillow's, as torchvision's
antialias=True) used for training and recorded for export."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgead.data.images import MVTecFolder
from edgead.errors import DataError
from edgead.ops.image import DEFAULT_RESIZE, resize_frame
from tests.helpers.data import make_synthetic_mvtec


def _frame(h: int, w: int, channels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def test_bilinear_aa_is_pillows_antialiased_bilinear() -> None:
    rgb = _frame(60, 150, 3)
    got = resize_frame(rgb, (40, 32), "bilinear_aa")
    want = np.asarray(Image.fromarray(rgb).resize((32, 40), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(got, want)
    # shrinking averages over the scale (antialiased): a 1-px checkerboard becomes flat grey
    board = (np.indices((64, 64)).sum(axis=0) % 2 * 255).astype(np.uint8)
    flat = resize_frame(board, (16, 16), "bilinear_aa")
    assert flat.shape == (16, 16, 3) and np.ptp(flat[2:-2, 2:-2]) <= 2


@pytest.mark.parametrize("channels", [0, 1, 4])
def test_bilinear_aa_gray_and_alpha_frames(channels: int) -> None:
    frame = _frame(30, 90, channels, seed=1)
    got = resize_frame(frame, (24, 24), "bilinear_aa")
    assert got.shape == (24, 24, 3) and got.dtype == np.uint8
    if channels in (0, 1):  # gray stays gray
        assert np.array_equal(got[..., 0], got[..., 1])
    else:  # alpha is dropped before resizing: same as resizing the RGB part
        np.testing.assert_array_equal(got, resize_frame(frame[..., :3], (24, 24), "bilinear_aa"))


def test_bilinear_aa_respects_bgr_order() -> None:
    bgr = _frame(50, 20, 3, seed=2)
    got = resize_frame(bgr, (32, 32), "bilinear_aa", channel_order="BGR")
    np.testing.assert_array_equal(got, resize_frame(bgr[..., ::-1].copy(), (32, 32), "bilinear_aa"))


def test_default_is_recorded_by_the_loader(tmp_path) -> None:
    assert DEFAULT_RESIZE == "bilinear_aa"
    folder = MVTecFolder(make_synthetic_mvtec(tmp_path / "c"), 24)
    assert folder.describe()["interpolation"] == "bilinear_aa"
    with pytest.raises(DataError, match="bilinear_aa"):
        resize_frame(_frame(10, 10, 3), (5, 5), "lanczos")
