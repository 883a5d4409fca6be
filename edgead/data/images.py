"""Image data sets in the MVTec AD folder layout, loaded lazily (numpy + OpenCV, torch-free).

    ROOT/train/good/*.png                    normal training images
    ROOT/test/good/*.png                     normal test images (label 0)
    ROOT/test/<defect>/*.png                 defective test images (label 1)
    ROOT/ground_truth/<defect>/<stem>_mask.png   optional binary masks (or <stem>.png)

Every image is returned as uint8 RGB (S, S, 3), resized with
`edgead.runtime.preprocess.resize_frame(img, (S, S), DEFAULT_RESIZE)` (Pillow's antialiased
bilinear), the code the runtime uses; new bundles record the same resize.
Gray, RGB, RGBA and 16-bit files are converted; truncated files raise `DataError`.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload

import cv2
import numpy as np

from edgead.errors import ConfigError, DataError
from edgead.runtime.preprocess import DEFAULT_RESIZE, resize_frame

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
GOOD = "good"


# ----------------------------------------------------------------------------------- decoding


def _check_complete(path: Path, data: bytes) -> None:
    """Raise DataError when a PNG/JPEG file is truncated (OpenCV decodes those silently)."""
    head = data[:8]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        complete = b"IEND" in data[-12:]
    elif head.startswith(b"\xff\xd8"):
        complete = data.rstrip(b"\x00\r\n ")[-2:] == b"\xff\xd9"
    else:
        return
    if complete:
        return
    # Trailing bytes after the end marker are legal: let Pillow decide whether data is missing.
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Exception as exc:  # Pillow raises OSError/SyntaxError/ValueError subclasses
        raise DataError(
            f"image {path} is truncated or corrupt ({exc}); re-copy or remove it"
        ) from exc


def _decode_pillow(path: Path, data: bytes) -> np.ndarray:
    """Decode with Pillow (formats OpenCV lacks); returns uint8 RGB (H, W, 3)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                scale = 255.0 / 65535.0 if array.max(initial=0) > 255 else 1.0
                return _gray_to_rgb(np.clip(array * scale + 0.5, 0, 255).astype(np.uint8))
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:
        raise DataError(f"cannot decode image {path} ({exc}); is it an image file?") from exc


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def _to_uint8(array: np.ndarray, path: Path) -> np.ndarray:
    """uint8 from uint8/uint16/float (0..1) pixel data."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise DataError(f"image {path} holds NaN/inf pixels; fix or remove it")
        peak = float(array.max(initial=0.0))
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    raise DataError(f"image {path} has pixel type {array.dtype}; use 8- or 16-bit images")


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) at the file's own size, from any gray/RGB/RGBA, 8/16-bit file.

    Alpha is dropped (not composited). 16-bit values are scaled by 255/65535.

    Raises:
        DataError: the file is missing, empty, truncated or not a decodable image.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path} ({exc.strerror or exc})") from exc
    if not data:
        raise DataError(f"image {path} is empty (0 bytes); re-copy or remove it")
    _check_complete(path, data)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        return _decode_pillow(path, data)
    decoded = _to_uint8(decoded, path)
    if decoded.ndim == 3 and decoded.shape[2] == 2:  # gray + alpha
        decoded = decoded[:, :, 0]
    if decoded.ndim == 2 or decoded.shape[2] == 1:
        return _gray_to_rgb(decoded.reshape(decoded.shape[:2]))
    code = cv2.COLOR_BGRA2RGB if decoded.shape[2] == 4 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(decoded, code)


def read_mask(path: str | Path) -> np.ndarray:
    """bool (H, W) mask at the file's own size: True where the pixel is above half its max.

    Works for 0/255, 0/1, 16-bit and JPEG-noisy masks; colour masks use their brightest channel.

    Raises:
        DataError: unreadable or truncated file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read mask {path} ({exc.strerror or exc})") from exc
    _check_complete(path, data)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        decoded = cv2.cvtColor(_decode_pillow(path, data), cv2.COLOR_RGB2GRAY)
    if decoded.ndim == 3:
        channels = decoded.shape[2]
        decoded = decoded[:, :, : 3 if channels == 4 else channels].max(axis=2)
    peak = float(decoded.max(initial=0))
    if peak <= 0:
        return np.zeros(decoded.shape, dtype=bool)
    return decoded > peak / 2.0


def load_resized(
    path: str | Path, image_size: int, interpolation: str = DEFAULT_RESIZE
) -> np.ndarray:
    """uint8 RGB (S, S, 3): `read_image` then `resize_frame(img, (S, S), interpolation)`."""
    return resize_frame(read_image(path), (image_size, image_size), interpolation)


def resize_mask(mask: np.ndarray, image_size: int) -> np.ndarray:
    """bool (S, S) from bool (H, W), nearest-neighbour."""
    resized = cv2.resize(
        mask.astype(np.uint8), (image_size, image_size), interpolation=cv2.INTER_NEAREST
    )
    return resized.astype(bool)


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
    image_size: int

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


def split_train_val(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of n normal images into (train_idx, val_idx), both sorted int64.

    Args:
        n: number of images.
        val_fraction: share held out as normal validation data, 0 <= f < 1; with f > 0 at least
            one image goes to each side.
        seed: RNG seed; the same (n, val_fraction, seed) always gives the same split.

    Raises:
        ConfigError: val_fraction outside [0, 1), or too few images to hold any out.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    if n < 2:
        raise ConfigError(
            f"cannot hold out validation images from {n} training image(s); "
            "add images or set val_fraction=0"
        )
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


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
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
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
        self, root: str | Path, image_size: int, *, interpolation: str = DEFAULT_RESIZE
    ) -> None:
        """Index the folder (file names only; no pixel is read here).

        Raises:
            DataError: missing train/good or test, an empty image folder, or (when ground_truth
                exists) a defective image without a mask file.
            ConfigError: image_size < 1.
        """
        self.root = Path(root)
        if int(image_size) < 1:
            raise ConfigError(f"image_size must be a positive number of px, got {image_size}")
        self.image_size = int(image_size)
        self.interpolation = interpolation
        self.name = self.root.name
        if not self.root.is_dir():
            raise DataError(f"data folder {self.root} does not exist")
        self.train_paths = list_images(self.root / "train" / GOOD)
        test_dir = self.root / "test"
        if not test_dir.is_dir():
            raise DataError(
                f"folder {test_dir} does not exist; expected test/good and test/<defect> folders"
            )
        defects = sorted(
            p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if not defects:
            raise DataError(f"no class folders (good, <defect>) in {test_dir}")
        gt_dir = self.root / "ground_truth"
        self._has_masks = gt_dir.is_dir()
        self.test_paths: list[Path] = []
        self.test_defect_types: list[str] = []
        self.mask_paths: list[Path | None] = []
        for defect in [GOOD] + [d for d in defects if d != GOOD]:
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
        size = self.image_size
        if mask_path is None:
            return np.zeros((size, size), dtype=bool)
        mask = read_mask(mask_path)
        height, width = _image_hw(image_path)
        if mask.shape != (height, width):
            raise DataError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} px but its image "
                f"{image_path} is {width}x{height} px; masks must match their images"
            )
        return resize_mask(mask, size)

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
        }


def _image_hw(path: Path) -> tuple[int, int]:
    """(H, W) px of an image file without converting it (Pillow header read, else decode)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            return int(height), int(width)
    except Exception:  # Pillow lacks the format: decode fully
        return read_image(path).shape[:2]  # type: ignore[return-value]


def load_image_dataset(spec: str | Path, image_size: int, **kwargs: Any) -> ImageDataset:
    """An image data set from a spec: "elpv" -> `ElpvDataset`, a folder -> `MVTecFolder`.

    Args:
        spec: "elpv" or the path of an MVTec-layout category folder.
        image_size: S in px.
        **kwargs: passed to the data set class; None values are dropped. ELPV: seed,
            train_fraction, max_train, max_test. Folder: interpolation (seed is accepted and
            ignored: the folder fixes the split).

    Raises:
        DataError: the spec is neither "elpv" nor an existing folder.
        ConfigError: an ELPV-only option given for a folder.
    """
    options = {key: value for key, value in kwargs.items() if value is not None}
    if str(spec).strip().lower() == "elpv":
        from edgead.data.elpv import ElpvDataset

        return ElpvDataset(image_size, **options)
    path = Path(spec).expanduser()
    if path.is_dir():
        options.pop("seed", None)  # a folder has a fixed split; the seed only matters for ELPV
        unknown = sorted(set(options) - {"interpolation"})
        if unknown:
            raise ConfigError(
                f"option(s) {', '.join(unknown)} apply to 'elpv' only, not to the "
                f"folder {path}; remove them"
            )
        return MVTecFolder(path, image_size, **options)
    raise DataError(
        f"image data '{spec}' is neither 'elpv' nor an existing folder; pass an "
        "MVTec-layout category folder (with train/good and test/) or 'elpv'"
    )
