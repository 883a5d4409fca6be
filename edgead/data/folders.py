"""Image folders of any names: good parts only, or normal / abnormal / mask folders (torch-free).

A station starts with good parts only. `NormalFolders` trains from one folder of good images and,
when given, tests on other folders, in the spirit of anomalib's `Folder(normal_dir=...)`:

    NORMAL_DIR/*.png           good images (training; training holds out its own validation)
    normal_test_dir/*.png      optional: good test images (label 0)
    abnormal_dir/*.png         optional: defective test images (label 1)
    mask_dir/<stem>.png        optional: masks of the abnormal images (<stem>_mask.png or the
                               image's own file name also match)

Images load lazily exactly as `MVTecFolder` loads them (same decoding, resize and mask rules).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgead.data.base import size_hw
from edgead.data.images import GOOD, MVTecFolder, list_images
from edgead.errors import ConfigError, DataError
from edgead.ops.image import DEFAULT_RESIZE

logger = logging.getLogger(__name__)

#: options `load_image_dataset` passes on to `NormalFolders`
FOLDER_OPTIONS = ("abnormal_dir", "mask_dir", "normal_test_dir")
ABNORMAL = "abnormal"


def is_mvtec_layout(root: Path) -> bool:
    """True when `root` looks like an MVTec category (has a train/ or test/ folder)."""
    return (root / "train").is_dir() or (root / "test").is_dir()


def _find_mask(mask_dir: Path, image: Path) -> Path | None:
    for name in (f"{image.stem}.png", f"{image.stem}_mask.png", image.name):
        candidate = mask_dir / name
        if candidate.is_file():
            return candidate
    return None


class NormalFolders(MVTecFolder):
    """Good images from one folder (training), optional labelled test folders of any names.

    Same attributes and methods as `MVTecFolder` (train_paths, test_paths, test_labels,
    test_defect_types, mask_paths, train_images(), test_set(), describe()); the test set is empty
    when no test folder is given.
    """

    def __init__(
        self,
        normal_dir: str | Path,
        image_size: int | tuple[int, int],
        *,
        interpolation: str = DEFAULT_RESIZE,
        abnormal_dir: str | Path | None = None,
        mask_dir: str | Path | None = None,
        normal_test_dir: str | Path | None = None,
    ) -> None:
        """Index the folders (file names only; no pixel is read here).

        Raises:
            DataError: a folder is missing or holds no images; an abnormal image has no mask
                while mask_dir is given.
            ConfigError: image_size < 1, or mask_dir without abnormal_dir.
        """
        self.root = Path(normal_dir).expanduser()
        self.size_hw = size_hw(image_size)
        if mask_dir is not None and abnormal_dir is None:
            raise ConfigError("--mask-dir needs --abnormal-dir (the images the masks belong to)")
        self.image_size = image_size if isinstance(image_size, int) else self.size_hw
        self.interpolation = interpolation
        self.name = self.root.name
        self.train_paths = list_images(self.root)
        self.test_paths: list[Path] = []
        self.test_defect_types: list[str] = []
        self.mask_paths: list[Path | None] = []
        self.folders = {
            "normal_dir": str(self.root),
            "normal_test_dir": None if normal_test_dir is None else str(normal_test_dir),
            "abnormal_dir": None if abnormal_dir is None else str(abnormal_dir),
            "mask_dir": None if mask_dir is None else str(mask_dir),
        }
        if normal_test_dir is not None:
            for path in list_images(Path(normal_test_dir).expanduser()):
                self._add_test(path, GOOD, None)
        self._has_masks = mask_dir is not None
        if abnormal_dir is not None:
            masks = None if mask_dir is None else Path(mask_dir).expanduser()
            if masks is not None and not masks.is_dir():
                raise DataError(f"mask folder {masks} does not exist")
            for path in list_images(Path(abnormal_dir).expanduser()):
                mask = None if masks is None else _find_mask(masks, path)
                if masks is not None and mask is None:
                    raise DataError(
                        f"no mask for {path}: expected {masks / (path.stem + '.png')} (or "
                        f"{path.stem}_mask.png); every abnormal image needs one with --mask-dir"
                    )
                self._add_test(path, ABNORMAL, mask)
        self.test_labels = np.array(
            [0 if d == GOOD else 1 for d in self.test_defect_types], dtype=np.int64
        )
        logger.info(
            "%s: %d good training images, %d test (%d defective), masks=%s",
            self.root,
            len(self.train_paths),
            len(self.test_paths),
            int(self.test_labels.sum()),
            self._has_masks,
        )

    def _add_test(self, path: Path, defect: str, mask: Path | None) -> None:
        self.test_paths.append(path)
        self.test_defect_types.append(defect)
        self.mask_paths.append(mask)

    def describe(self) -> dict[str, Any]:
        """JSON-ready summary: folders, counts, mask availability."""
        info = super().describe()
        info.update({"kind": "folders", **self.folders})
        return info
