"""Frame preprocessing: resizing before the colour conversion gives the same pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgead.errors import DataError
from edgead.ops.image import resize_frame, to_rgb


def _reference(image: np.ndarray, size: tuple[int, int], flag: int, order: str) -> np.ndarray:
    """Convert the full frame to RGB first, then resize (the straightforward order)."""
    return cv2.resize(to_rgb(image, order), (size[1], size[0]), interpolation=flag)


@pytest.mark.parametrize("shape", [(97, 131, 3), (97, 131, 4), (97, 131), (97, 131, 1)])
@pytest.mark.parametrize("order", ["RGB", "BGR"])
@pytest.mark.parametrize(
    "interpolation,flag", [("area", cv2.INTER_AREA), ("linear", cv2.INTER_LINEAR)]
)
def test_resize_then_convert_equals_convert_then_resize(shape, order, interpolation, flag):
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    got = resize_frame(image, (40, 56), interpolation, channel_order=order)
    assert got.shape == (40, 56, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, _reference(image, (40, 56), flag, order))


def test_same_size_frame_is_only_converted() -> None:
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(
        resize_frame(image, (8, 8), channel_order="BGR"), image[:, :, ::-1]
    )


@pytest.mark.parametrize(
    "bad,match",
    [
        (np.zeros((8, 8, 3), np.float32), "uint8"),
        (np.zeros((8, 8, 2), np.uint8), "shape"),
        (np.zeros((8,), np.uint8), "shape"),
    ],
)
def test_bad_frames_are_refused(bad: np.ndarray, match: str) -> None:
    with pytest.raises(DataError, match=match):
        resize_frame(bad, (4, 4))
    with pytest.raises(DataError, match="interpolation"):
        resize_frame(np.zeros((8, 8, 3), np.uint8), (4, 4), "bicubicc")
