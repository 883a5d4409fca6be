"""Frame preprocessing shared by training and the runtime (numpy + OpenCV, torch-free).

The graph takes uint8 RGB NHWC at a fixed size and normalises inside itself, so the only work
here is colour conversion and resizing, done with the same OpenCV calls at training and on the
device.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from edgead.errors import DataError

_INTERPOLATION = {
    "area": cv2.INTER_AREA,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "nearest": cv2.INTER_NEAREST,
}
#: Pillow's antialiased bilinear resize (a triangle filter widened by the scale when shrinking,
#: plain bilinear when enlarging): what torchvision's `Resize(antialias=True)` and so anomalib
#: use. Not an OpenCV flag: `resize_frame` runs it through Pillow.
BILINEAR_AA = "bilinear_aa"
#: The resize edgead trains with (data loaders) and writes into new bundles. On small grayscale
#: JPEGs of varying size it scored higher than OpenCV's area resize
#: (benchmarks/vs_anomalib.md, ablation).
DEFAULT_RESIZE = BILINEAR_AA
INTERPOLATIONS = (*_INTERPOLATION, BILINEAR_AA)


def check_frame(image: Any, channel_order: str = "RGB") -> np.ndarray:
    """`image` itself if it is a non-empty uint8 (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array
    and `channel_order` is "RGB" or "BGR"; DataError naming what is wrong otherwise."""
    if not isinstance(image, np.ndarray):
        raise DataError(f"a frame must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise DataError(
            f"a frame must be uint8 (0..255), got dtype {image.dtype}; "
            "convert with (x * 255).clip(0, 255).astype(np.uint8)"
        )
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise DataError(
            f"a frame must have shape (H, W), (H, W, 3) or (H, W, 4); got {image.shape}"
        )
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"a frame must not be empty; got shape {image.shape}")
    if not isinstance(channel_order, str) or channel_order.upper() not in ("RGB", "BGR"):
        raise DataError(f"channel_order must be 'RGB' or 'BGR', got {channel_order!r}")
    return image


def to_rgb(image: np.ndarray, channel_order: str = "RGB") -> np.ndarray:
    """uint8 (H, W, 3) RGB from gray (H, W) / (H, W, 1), RGB(A) or BGR(A) input.

    Args:
        image: uint8 array; `channel_order` says how 3/4-channel input is ordered ("RGB"/"BGR").
    """
    return _convert_to_rgb(check_frame(image, channel_order), channel_order)


def _convert_to_rgb(image: np.ndarray, channel_order: str) -> np.ndarray:
    """`to_rgb` for a frame that already passed `check_frame`."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2RGB)
    order = channel_order.upper()
    if image.shape[2] == 4:
        code = cv2.COLOR_RGBA2RGB if order == "RGB" else cv2.COLOR_BGRA2RGB
        return cv2.cvtColor(image, code)
    if order == "BGR":
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def resize_frame(
    image: np.ndarray,
    size_hw: tuple[int, int],
    interpolation: str = "area",
    channel_order: str = "RGB",
) -> np.ndarray:
    """uint8 (H, W, 3) RGB resized to `size_hw` = (H, W) px (stretch, no crop).

    `interpolation` is an OpenCV name ("area", "linear", "cubic", "nearest") or "bilinear_aa"
    (Pillow's antialiased bilinear, rounded to uint8). The frame is resized in its own channel
    layout and converted to RGB afterwards (4-channel frames: after): resizing works per
    channel, so the result is identical, and the conversion then touches the small image
    instead of a full camera frame.
    """
    check_frame(image, channel_order)
    height, width = int(size_hw[0]), int(size_hw[1])
    if image.shape[:2] == (height, width):
        return _convert_to_rgb(image, channel_order)
    if interpolation == BILINEAR_AA:
        return _resize_pil(image, (height, width), channel_order)
    try:
        flag = _INTERPOLATION[interpolation]
    except KeyError as exc:
        raise DataError(
            f"unknown interpolation {interpolation!r}; use one of {sorted(INTERPOLATIONS)}"
        ) from exc
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    resized = cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=flag)
    return _convert_to_rgb(resized, channel_order)


def _resize_pil(image: np.ndarray, size_hw: tuple[int, int], channel_order: str) -> np.ndarray:
    """uint8 (H, W, 3) RGB: Pillow's antialiased bilinear resize of a checked frame."""
    from PIL import Image

    if image.ndim == 3 and image.shape[2] == 4:  # drop alpha first: Pillow premultiplies RGBA
        image = _convert_to_rgb(image, channel_order)
        channel_order = "RGB"
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    resized = Image.fromarray(np.ascontiguousarray(image)).resize(
        (size_hw[1], size_hw[0]), Image.Resampling.BILINEAR
    )
    return _convert_to_rgb(np.asarray(resized), channel_order)
