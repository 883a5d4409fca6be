"""What every image data set shares (numpy + OpenCV, torch-free): lazily loaded sequences, the
labelled test split, the data-set protocol and the resize helpers built on the ground floor.

`edgead.data.images` (MVTec layout) and `edgead.data.elpv` both stand on this module, so neither
imports the other at module level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload

import cv2
import numpy as np

from edgead.errors import ConfigError
from edgead.ops.decode import read_image
from edgead.ops.image import DEFAULT_RESIZE, resize_frame


def size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) px from a square side S or an (H, W) pair; ConfigError when not positive."""
    if isinstance(image_size, (int, np.integer)):
        height = width = int(image_size)
    else:
        height, width = (int(v) for v in image_size)
    if height < 1 or width < 1:
        raise ConfigError(f"image_size must be a positive number of px, got {image_size}")
    return height, width


def load_resized(
    path: str | Path, image_size: int | Sequence[int], interpolation: str = DEFAULT_RESIZE
) -> np.ndarray:
    """uint8 RGB (H, W, 3): `read_image` then `resize_frame(img, (H, W), interpolation)`;
    `image_size` is S (square) or (H, W)."""
    return resize_frame(read_image(path), size_hw(image_size), interpolation)


def resize_mask(mask: np.ndarray, image_size: int | Sequence[int]) -> np.ndarray:
    """bool (H, W) at `image_size` (S or (H, W)) from a bool mask, nearest-neighbour."""
    height, width = size_hw(image_size)
    resized = cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(resized).astype(bool)


# ------------------------------------------------------------------------------ lazy sequences


class LazySequence(Sequence[Any]):
    """A read-only Sequence that loads item i with `loader(key_i)` on access.

    Indexing with an int loads one item; a slice, list or int array returns a new lazy
    sub-sequence (nothing is loaded). Items are not cached: iterate once, keep what you need.
    """

    def __init__(self, keys: Sequence[Any], loader: Callable[[Any], Any]) -> None:
        self._keys = list(keys)
        self._loader = loader

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice | Sequence[int] | np.ndarray) -> LazySequence: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            return self._loader(self._keys[index])
        if isinstance(index, slice):
            return LazySequence(self._keys[index], self._loader)
        return LazySequence([self._keys[int(i)] for i in np.asarray(index).ravel()], self._loader)

    def __iter__(self) -> Iterator[Any]:
        for key in self._keys:
            yield self._loader(key)

    def __repr__(self) -> str:
        return f"LazySequence(n={len(self)})"


@dataclass(frozen=True)
class ImageTestSet:
    """A labelled test split.

    images: lazy Sequence of uint8 RGB (S, S, 3).
    labels: int64 (N,), 0 = good, 1 = defective.
    defect_types: N names ("good" for normal images).
    paths: N image files.
    masks: lazy Sequence of bool (S, S) (all False for good images), or None when the data set
        has no masks.
    """

    images: Sequence[np.ndarray]
    labels: np.ndarray
    defect_types: list[str]
    paths: list[Path]
    masks: Sequence[np.ndarray] | None

    def __len__(self) -> int:
        return len(self.paths)

    def masks_array(self) -> np.ndarray | None:
        """bool (N, S, S) with every mask loaded, or None without masks."""
        if self.masks is None:
            return None
        return np.stack(list(self.masks)) if len(self.masks) else np.zeros((0, 0, 0), bool)


class ImageDataset(Protocol):
    """What training and evaluation need from an image data set (MVTecFolder, ELPV)."""

    name: str

    @property
    def image_size(self) -> int | tuple[int, int]:
        """S in px, or (H, W) for frames that are tiled."""
        ...

    def train_images(self) -> Sequence[np.ndarray]:
        """Lazy Sequence of uint8 RGB (S, S, 3) normal training images."""
        ...

    def test_set(self) -> ImageTestSet:
        """The labelled test split."""
        ...

    @property
    def has_masks(self) -> bool:
        """Whether `test_set().masks` is available."""
        ...
