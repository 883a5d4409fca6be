"""`load_image_dataset`: which image data-set class a spec names ("elpv", an MVTec-layout
folder, a folder of good images). The one module that knows every image data set, so the data
sets themselves never import each other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgead.data.base import ImageDataset
from edgead.data.elpv import ElpvDataset
from edgead.data.folders import FOLDER_OPTIONS, NormalFolders, is_mvtec_layout
from edgead.data.images import MVTecFolder
from edgead.errors import ConfigError, DataError


def load_image_dataset(
    spec: str | Path, image_size: int | tuple[int, int], **kwargs: Any
) -> ImageDataset:
    """An image data set from a spec: "elpv" -> `ElpvDataset`, a folder with train/good ->
    `MVTecFolder`, any other folder (or the folder options) -> `edgead.data.folders.NormalFolders`.

    Args:
        spec: "elpv" or the path of an MVTec-layout category folder.
        image_size: S in px.
        **kwargs: passed to the data set class; None values are dropped. ELPV: seed,
            train_fraction, max_train, max_test. Folder: interpolation, and for
            `NormalFolders` abnormal_dir, mask_dir, normal_test_dir (seed is accepted and
            ignored: the folder fixes the split).

    Raises:
        DataError: the spec is neither "elpv" nor an existing folder.
        ConfigError: an ELPV-only option given for a folder.
    """
    options = {key: value for key, value in kwargs.items() if value is not None}
    if str(spec).strip().lower() == "elpv":
        if not isinstance(image_size, int):
            raise ConfigError(f"ELPV cells load square: give one size in px, not {image_size}")
        return ElpvDataset(image_size, **options)
    path = Path(spec).expanduser()
    if path.is_dir():
        options.pop("seed", None)  # a folder has a fixed split; the seed only matters for ELPV
        unknown = sorted(set(options) - {"interpolation", *FOLDER_OPTIONS})
        if unknown:
            raise ConfigError(
                f"option(s) {', '.join(unknown)} apply to 'elpv' only, not to the "
                f"folder {path}; remove them"
            )
        if is_mvtec_layout(path) and not set(options) & set(FOLDER_OPTIONS):
            return MVTecFolder(path, image_size, **options)
        return NormalFolders(path, image_size, **options)
    raise DataError(
        f"image data '{spec}' is neither 'elpv' nor an existing folder; pass an "
        "MVTec-layout category folder (train/good, optional test/), a folder of good images, "
        "or 'elpv'"
    )
