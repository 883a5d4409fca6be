"""Image data sets in the MVTec AD folder layout, loaded lazily (numpy + OpenCV, torch-free).

    ROOT/train/good/*.png                    normal training images
    ROOT/test/good/*.png                     normal test images (label 0)
    ROOT/test/<defect>/*.png                 defective test images (label 1)
    ROOT/ground_truth/<defect>/<stem>_mask.png   optional binary masks (or <stem>.png)

Every image is returned as uint8 RGB (S, S, 3), resized with
`edgead.ops.image.resize_frame(img, (S, S), DEFAULT_RESIZE)` (Pillow's antialiased bilinear),
the code the runtime uses; new bundles record the same resize.
Files are decoded by `edgead.ops.decode.read_image` (the decoder `predict`, `run` and `bench` use:
gray, RGB, RGBA and 16-bit files; truncated files raise `DataError`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgead.data.base import (
    ImageTestSet,
    LazySequence,
    load_resized,
    resize_mask,
    size_hw,
)
from edgead.errors import DataError
from edgead.ops.decode import IMAGE_SUFFIXES, list_image_files, read_frame, read_mask
from edgead.ops.image import DEFAULT_RESIZE

logger = logging.getLogger(__name__)

GOOD = "good"


# ---------------------------------------------------------------------------------- MVTec layout


def list_images(folder: Path) -> list[Path]:
    """Sorted image files (by extension, case-insensitive) directly inside `folder`.

    Raises:
        DataError: the folder is missing or holds no image files.
    """
    if not folder.is_dir():
        raise DataError(
            f"folder {folder} does not exist; expected the MVTec AD layout "
            "(train/good, test/good, test/<defect>, optional ground_truth/<defect>)"
        )
    files = list_image_files(folder)
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


def _find_mask(gt_dir: Path, defect: str, image_path: Path) -> Path | None:
    for name in (f"{image_path.stem}_mask.png", f"{image_path.stem}.png"):
        candidate = gt_dir / defect / name
        if candidate.is_file():
            return candidate
    return None


class MVTecFolder:
    """One MVTec-AD-layout category folder, with images loaded lazily at `image_size` px.

    Attributes:
        root: the category folder. image_size: S in px. name: folder name.
        train_paths: normal training files. test_paths / test_labels / test_defect_types:
        the test split. mask_paths: per test image, the mask file (None for good images or
        without masks).
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int | tuple[int, int],
        *,
        interpolation: str = DEFAULT_RESIZE,
    ) -> None:
        """Index the folder (file names only; no pixel is read here).

        Raises:
            DataError: missing train/good or test, an empty image folder, or (when ground_truth
                exists) a defective image without a mask file.
            ConfigError: image_size < 1.
        """
        self.root = Path(root)
        self.size_hw = size_hw(image_size)
        self.image_size = image_size if isinstance(image_size, int) else self.size_hw
        self.interpolation = interpolation
        self.name = self.root.name
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} does not exist")
        self.train_paths = list_images(self.root / "train" / GOOD)
        test_dir = self.root / "test"
        defects: list[str] = []
        if test_dir.is_dir():
            defects = sorted(
                p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
            if not defects:
                raise DataError(f"no class folders (good, <defect>) in {test_dir}")
        else:  # day one of a station: good parts only; training needs no test split
            logger.info("%s has no test/ folder: training only (no labelled test set)", self.root)
        gt_dir = self.root / "ground_truth"
        self._has_masks = gt_dir.is_dir() and bool(defects)
        self.test_paths: list[Path] = []
        self.test_defect_types: list[str] = []
        self.mask_paths: list[Path | None] = []
        for defect in [GOOD] * bool(defects) + [d for d in defects if d != GOOD]:
            if defect == GOOD and not (test_dir / GOOD).is_dir():
                logger.warning(
                    "%s has no test/good folder: the test set has no normal images", self.root
                )
                continue
            for path in list_images(test_dir / defect):
                mask = None
                if defect != GOOD and self._has_masks:
                    mask = _find_mask(gt_dir, defect, path)
                    if mask is None:
                        expected = gt_dir / defect / f"{path.stem}_mask.png"
                        raise DataError(
                            f"no mask for {path}: expected {expected} (ground_truth "
                            "exists, so every defective image needs a mask)"
                        )
                self.test_paths.append(path)
                self.test_defect_types.append(defect)
                self.mask_paths.append(mask)
        self.test_labels = np.array(
            [0 if d == GOOD else 1 for d in self.test_defect_types], dtype=np.int64
        )
        logger.info(
            "%s: %d train, %d test (%d defective), masks=%s",
            self.root,
            len(self.train_paths),
            len(self.test_paths),
            int(self.test_labels.sum()),
            self._has_masks,
        )

    @property
    def has_masks(self) -> bool:
        """True when the folder has ground_truth/ (then every defective image has a mask)."""
        return self._has_masks

    def _load_image(self, path: Path) -> np.ndarray:
        return load_resized(path, self.image_size, self.interpolation)

    def _load_mask(self, key: tuple[Path, Path | None]) -> np.ndarray:
        image_path, mask_path = key
        if mask_path is None:
            return np.zeros(self.size_hw, dtype=bool)
        mask = read_mask(mask_path)
        height, width = _image_hw(image_path)
        if mask.shape != (height, width):
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{image_path} is {width}x{height} px; masks must match their images"
            )
        return resize_mask(mask, self.size_hw)

    def train_images(self) -> LazySequence:
        """Lazy Sequence of uint8 RGB (S, S, 3) normal training images (train/good)."""
        return LazySequence(self.train_paths, self._load_image)

    def test_set(self) -> ImageTestSet:
        """The test split with labels, defect types, paths and (lazy) masks."""
        masks = None
        if self._has_masks:
            keys = list(zip(self.test_paths, self.mask_paths, strict=True))
            masks = LazySequence(keys, self._load_mask)
        return ImageTestSet(
            images=LazySequence(self.test_paths, self._load_image),
            labels=self.test_labels.copy(),
            defect_types=list(self.test_defect_types),
            paths=list(self.test_paths),
            masks=masks,
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: path, counts, mask availability."""
        return {
            "path": str(self.root),
            "kind": "mvtec_folder",
            "image_size": self.image_size,
            "interpolation": self.interpolation,
            "n_train": len(self.train_paths),
            "n_test": len(self.test_paths),
            "n_test_defective": int(self.test_labels.sum()),
            "has_masks": self._has_masks,
            "channels": self.channels(),
        }

    def channels(self) -> str:
        """ "gray" when the first training file decodes to one channel, else "color"."""
        return "gray" if read_frame(self.train_paths[0]).ndim == 2 else "color"


def _image_hw(path: Path) -> tuple[int, int]:
    """(H, W) px of an image file without converting it (Pillow header read, else decode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            return int(height), int(width)
    except Exception:  # Pillow lacks the format: decode fully
        return read_frame(path).shape[:2]
