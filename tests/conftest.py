"""Shared test fixtures: a tiny synthetic MVTec-layout folder and the real-data root."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

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


@pytest.fixture()
def synthetic_mvtec(tmp_path: Path) -> Path:
    """A tiny MVTec-layout category folder (see `make_synthetic_mvtec`) in a temp dir."""
    return make_synthetic_mvtec(tmp_path / "synthetic_category")


def shared_datasets_root() -> Path | None:
    """The real-data root: $EDGEAD_DATA, else ../shared/datasets beside the repo; None if absent."""
    env = os.environ.get("EDGEAD_DATA")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """Root of the real data sets (read-only); skips the test when it is absent."""
    root = shared_datasets_root()
    if root is None:
        where = os.environ.get("EDGEAD_DATA") or str(REPO_ROOT.parent / "shared" / "datasets")
        pytest.skip(f"real data not found at {where}; set EDGEAD_DATA to the datasets folder")
    return root
