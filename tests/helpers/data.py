"""Synthetic MVTec-layout data sets written by the tests (gray, RGB, RGBA, 16-bit files)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

#: Layout written by `make_synthetic_mvtec` (counts the tests rely on).
SYNTHETIC_TRAIN = 6
SYNTHETIC_TEST_GOOD = 3
SYNTHETIC_DEFECTS = {"dent": 1, "scratch": 2}
SYNTHETIC_HW = (40, 48)  # deliberately non-square (H, W) px


def _normal_image(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """uint8 RGB (H, W, 3): a smooth gradient plus mild noise (a 'good' part)."""
    height, width = hw
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 90 + 40 * np.sin(xx / 7.0) + 20 * np.cos(yy / 5.0)
    rgb = np.stack([base, base * 0.9 + 10, base * 0.8 + 20], axis=2)
    rgb += rng.normal(0, 4, size=rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _write(path: Path, array: np.ndarray) -> None:
    """Write with OpenCV (array in OpenCV channel order); fail loudly if it cannot."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), array):
        raise RuntimeError(f"could not write test image {path}")


def _write_pillow(path: Path, array: np.ndarray, mode: str) -> None:
    """Write with Pillow, for modes OpenCV cannot write (gray + alpha "LA")."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array)
    if image.mode != mode:
        raise RuntimeError(f"Pillow made mode {image.mode} for {path}, expected {mode}")
    image.save(path)


def make_synthetic_mvtec(root: Path, seed: int = 0, with_masks: bool = True) -> Path:
    """Build a tiny MVTec-AD-layout folder under `root` and return it.

    train/good: 6 images in mixed formats (RGB PNG, gray PNG, RGBA PNG, 16-bit RGB PNG, JPEG,
    gray+alpha PNG); test/good: 3; test/dent: 1; test/scratch: 2 (bright square defects);
    ground_truth/<defect>/<stem>_mask.png (0/255) unless `with_masks` is False.
    All images are 40x48 px (H x W).
    """
    rng = np.random.default_rng(seed)
    hw = SYNTHETIC_HW
    train = root / "train" / "good"
    writers = [
        lambda p, im: _write(p.with_suffix(".png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR)),
        lambda p, im: _write(p.with_suffix(".png"), cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)),
        lambda p, im: _write(
            p.with_suffix(".png"),
            np.dstack([cv2.cvtColor(im, cv2.COLOR_RGB2BGR), np.full(hw, 128, np.uint8)]),
        ),
        lambda p, im: _write(
            p.with_suffix(".png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
        ),
        lambda p, im: _write(p.with_suffix(".jpg"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR)),
        lambda p, im: _write_pillow(
            p.with_suffix(".png"),
            np.dstack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY), np.full(hw, 255, np.uint8)]),
            "LA",
        ),
    ]
    for i in range(SYNTHETIC_TRAIN):
        writers[i % len(writers)](train / f"{i:03d}", _normal_image(rng, hw))
    for i in range(SYNTHETIC_TEST_GOOD):
        _write(
            root / "test" / "good" / f"{i:03d}.png",
            cv2.cvtColor(_normal_image(rng, hw), cv2.COLOR_RGB2BGR),
        )
    for defect, count in SYNTHETIC_DEFECTS.items():
        for i in range(count):
            image = _normal_image(rng, hw)
            mask = np.zeros(hw, dtype=np.uint8)
            top, left = 5 + 3 * i, 8 + 5 * i
            mask[top : top + 10, left : left + 12] = 255
            image[mask > 0] = (250, 240, 60)
            _write(root / "test" / defect / f"{i:03d}.png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if with_masks:
                _write(root / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return root
