"""The ELPV solar-cell set (Deitsch et al.) from the installed `elpv-dataset` package.

2,624 grayscale 300x300 px electroluminescence images of PV cells, each with a defect
probability of 0, 1/3, 2/3 or 1 (`data/labels.csv`: path, probability, cell type). Normal-only
protocol with a fixed seeded split: train on `train_fraction` of the defect-free cells (p = 0);
test on the remaining defect-free cells (label 0) plus all cells with p = 1 (label 1). Cells with
p = 1/3 or 2/3 are left out. No masks. Images load lazily, like `MVTecFolder`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgead.data.base import ImageTestSet, LazySequence, load_resized
from edgead.errors import ConfigError, DataError
from edgead.ops.image import DEFAULT_RESIZE

logger = logging.getLogger(__name__)

_GOOD = "good"
_DEFECTIVE = "defective"


def elpv_data_dir() -> Path:
    """Folder holding `labels.csv` and `images/` inside the installed `elpv-dataset` package.

    Raises:
        DataError: the package is not installed or its data is missing.
    """
    try:
        import elpv_dataset
    except ImportError as exc:
        raise DataError(
            "the ELPV data set needs the package 'elpv-dataset'; install "
            "edgead[demo] (pip install elpv-dataset)"
        ) from exc
    folder = Path(elpv_dataset.__file__).resolve().parent / "data"
    if not (folder / "labels.csv").is_file():
        raise DataError(f"{folder / 'labels.csv'} is missing; reinstall elpv-dataset")
    return folder


def read_elpv_labels(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """(image paths, float64 (N,) defect probabilities, cell types) from `labels.csv`.

    Raises:
        DataError: the file cannot be parsed.
    """
    try:
        table = np.genfromtxt(
            folder / "labels.csv",
            dtype=["U64", "<f8", "U8"],
            names=["path", "probability", "type"],
            encoding="utf-8",
        )
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot parse {folder / 'labels.csv'} ({exc})") from exc
    table = np.atleast_1d(table)
    paths = [folder / str(p) for p in table["path"]]
    probs = np.asarray(table["probability"], dtype=np.float64)
    return paths, probs, [str(t) for t in table["type"]]


def _subsample(indices: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    if cap is None or cap >= len(indices):
        return indices
    return np.sort(rng.choice(indices, size=cap, replace=False))


class ElpvDataset:
    """ELPV with the normal-only split; same interface as `MVTecFolder` (no masks).

    Args:
        image_size: S in px (the cells are 300 px; resized with `interpolation`).
        train_fraction: share of the defect-free cells used for training, 0 < f < 1.
        seed: RNG seed of the split and of the caps.
        max_train: optional cap on training images (seeded subsample, for quick demos).
        max_test: optional cap on test images; good and defective are capped in proportion,
            keeping at least one of each.
        data_dir: folder with labels.csv and images/ (default: the installed package).

    Raises:
        ConfigError: bad fraction or caps. DataError: package/data missing.
    """

    has_masks = False

    def __init__(
        self,
        image_size: int,
        *,
        train_fraction: float = 0.5,
        seed: int = 0,
        max_train: int | None = None,
        max_test: int | None = None,
        data_dir: str | Path | None = None,
        interpolation: str = DEFAULT_RESIZE,
    ) -> None:
        if int(image_size) < 1:
            raise ConfigError(f"image_size must be a positive number of px, got {image_size}")
        if not 0.0 < train_fraction < 1.0:
            raise ConfigError(f"train_fraction must be in (0, 1), got {train_fraction}")
        for label, cap in (("max_train", max_train), ("max_test", max_test)):
            if cap is not None and cap < (1 if label == "max_train" else 2):
                raise ConfigError(
                    f"{label} must be >= {1 if label == 'max_train' else 2}, got {cap}"
                )
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.name = "elpv"
        self.root = Path(data_dir) if data_dir is not None else elpv_data_dir()
        self.seed = seed
        paths, probs, types = read_elpv_labels(self.root)
        good = np.flatnonzero(probs == 0.0)
        defective = np.flatnonzero(probs == 1.0)
        if len(good) < 2 or len(defective) < 1:
            raise DataError(
                f"{self.root / 'labels.csv'}: {len(good)} defect-free and "
                f"{len(defective)} defective cells; need >= 2 and >= 1"
            )
        rng = np.random.default_rng(seed)
        order = rng.permutation(good)
        n_train = min(max(1, int(round(len(good) * train_fraction))), len(good) - 1)
        train_idx = _subsample(np.sort(order[:n_train]), max_train, rng)
        test_good, test_bad = np.sort(order[n_train:]), defective
        if max_test is not None and max_test < len(test_good) + len(test_bad):
            n_bad = int(round(max_test * len(test_bad) / (len(test_good) + len(test_bad))))
            n_bad = min(max(1, n_bad), max_test - 1)
            test_good = _subsample(test_good, max_test - n_bad, rng)
            test_bad = _subsample(test_bad, n_bad, rng)
        self.train_paths = [paths[i] for i in train_idx]
        self.test_paths = [paths[i] for i in test_good] + [paths[i] for i in test_bad]
        self.test_labels = np.r_[np.zeros(len(test_good)), np.ones(len(test_bad))].astype(np.int64)
        self.test_defect_types = [_GOOD] * len(test_good) + [_DEFECTIVE] * len(test_bad)
        self.cell_types = {str(p): t for p, t in zip(paths, types, strict=True)}
        missing = [p for p in self.train_paths + self.test_paths if not p.is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} ELPV image(s) missing, e.g. {missing[0]}; reinstall elpv-dataset"
            )
        logger.info(
            "elpv: %d train, %d test (%d defective), seed %d",
            len(self.train_paths),
            len(self.test_paths),
            int(self.test_labels.sum()),
            seed,
        )

    def _load_image(self, path: Path) -> np.ndarray:
        return load_resized(path, self.image_size, self.interpolation)

    def train_images(self) -> LazySequence:
        """Lazy Sequence of uint8 RGB (S, S, 3) defect-free training cells."""
        return LazySequence(self.train_paths, self._load_image)

    def test_set(self) -> ImageTestSet:
        """Test split: held-out defect-free cells (0) then defective cells (1); masks None."""
        return ImageTestSet(
            images=LazySequence(self.test_paths, self._load_image),
            labels=self.test_labels.copy(),
            defect_types=list(self.test_defect_types),
            paths=list(self.test_paths),
            masks=None,
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: source, split seed, counts."""
        return {
            "path": "elpv",
            "kind": "elpv",
            "image_size": self.image_size,
            "seed": self.seed,
            "interpolation": self.interpolation,
            "n_train": len(self.train_paths),
            "n_test": len(self.test_paths),
            "n_test_defective": int(self.test_labels.sum()),
            "has_masks": False,
            "channels": "gray",  # electroluminescence cells are 8-bit gray PNGs
        }
