"""The one image decoder: files become frames the same way in training, `predict`, `run` and
`bench` (numpy + OpenCV, Pillow for formats OpenCV lacks; torch-free).

Rules, applied to every file:
- 8-bit gray (and gray + alpha) stays one channel: a (H, W) frame, as a gray camera delivers it.
- Colour files become (H, W, 3) BGR (OpenCV's order, like a colour camera); alpha is dropped,
  not composited.
- 16-bit files are scaled by 255/65535 with rounding (never auto-contrasted per image, so a
  frame's score does not depend on its own brightest pixel); float files in 0..1 by 255.
- Empty, truncated or undecodable files raise `DataError` naming the file.
"""

from __future__ import annotations

import io
import stat
from pathlib import Path

import cv2
import numpy as np

from edgead.errors import DataError

#: File suffixes treated as images by folder readers (lower case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


def is_image_file(path: Path) -> bool:
    """True for a regular file (not a FIFO, socket or device) with an image suffix."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def list_image_files(folder: str | Path, *, recursive: bool = False) -> list[Path]:
    """Regular image files of `folder` (sub-folders too when `recursive`), sorted by path."""
    folder = Path(folder)
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in candidates if is_image_file(p))


def _check_complete(source: str, data: bytes) -> None:
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
            f"image {source} is truncated or corrupt ({exc}); re-copy or remove it"
        ) from exc


def _to_uint8(array: np.ndarray, source: str) -> np.ndarray:
    """uint8 from uint8 / uint16 (x 255/65535, rounded) / float (0..1) pixel data."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)):
            raise DataError(f"image {source} holds NaN/inf pixels; fix or remove it")
        peak = float(array.max(initial=0.0))
        scale = 255.0 if peak <= 1.0 else 1.0
        return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
    raise DataError(f"image {source} has pixel type {array.dtype}; use 8- or 16-bit images")


def _decode_pillow(source: str, data: bytes) -> np.ndarray:
    """Decode with Pillow (formats OpenCV lacks): uint8 (H, W) gray or (H, W, 3) BGR."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                scale = 255.0 / 65535.0 if array.max(initial=0) > 255 else 1.0
                return np.clip(array * scale + 0.5, 0, 255).astype(np.uint8)
            if image.mode in ("L", "LA", "1"):
                return np.asarray(image.convert("L"), dtype=np.uint8).copy()
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
            return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    except Exception as exc:
        raise DataError(f"cannot decode image {source} ({exc}); is it an image file?") from exc


def decode_frame(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """The frame an image file holds: uint8 (H, W) for gray files, (H, W, 3) BGR otherwise.

    Args:
        data: the file's bytes.
        source: name used in error messages (a path or a description).

    Raises:
        DataError: empty, truncated or undecodable data.
    """
    if not data:
        raise DataError(f"image {source} is empty (0 bytes); re-copy or remove it")
    _check_complete(source, data)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        return _decode_pillow(source, data)
    decoded = _to_uint8(decoded, source)
    if decoded.ndim == 3 and decoded.shape[2] == 2:  # gray + alpha
        decoded = decoded[:, :, 0]
    if decoded.ndim == 3 and decoded.shape[2] == 1:
        decoded = decoded[:, :, 0]
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(decoded)


def _read_bytes(path: Path, what: str) -> bytes:
    """The bytes of a regular file; DataError for a missing file, a folder, a pipe or a device."""
    try:
        is_regular = stat.S_ISREG(path.stat().st_mode)
        if is_regular:
            return path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path} ({exc.strerror or exc})") from exc
    raise DataError(f"{what} {path} is not a regular file (a folder, pipe or device); skip it")


def read_frame(path: str | Path) -> np.ndarray:
    """`decode_frame` of the file at `path`: uint8 (H, W) gray or (H, W, 3) BGR.

    Raises:
        DataError: the file is missing, not a regular file, empty, truncated or not an image.
    """
    path = Path(path)
    return decode_frame(_read_bytes(path, "image"), str(path))


def read_image(path: str | Path) -> np.ndarray:
    """uint8 RGB (H, W, 3) at the file's own size: `read_frame`, gray replicated to 3 channels.

    Raises:
        DataError: as `read_frame`.
    """
    frame = read_frame(path)
    code = cv2.COLOR_GRAY2RGB if frame.ndim == 2 else cv2.COLOR_BGR2RGB
    return cv2.cvtColor(frame, code)


def read_mask(path: str | Path) -> np.ndarray:
    """bool (H, W) mask at the file's own size: True where the pixel is above half its max.

    Works for 0/255, 0/1, 16-bit and JPEG-noisy masks; colour masks use their brightest channel.

    Raises:
        DataError: unreadable or truncated file.
    """
    path = Path(path)
    data = _read_bytes(path, "mask")
    _check_complete(str(path), data)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        decoded = _decode_pillow(str(path), data)
    if decoded.ndim == 3:
        channels = decoded.shape[2]
        decoded = decoded[:, :, : 3 if channels == 4 else channels].max(axis=2)
    peak = float(decoded.max(initial=0))
    if peak <= 0:
        return np.zeros(decoded.shape, dtype=bool)
    return decoded > peak / 2.0
