"""Tiling: score a large or non-square frame as square tiles, stitch the maps (torch-free).

A tiled model is trained and run on T x T tiles cut from frames resized to (H, W):

    frame (any size) -> resize_frame to (H, W) -> tiles of T x T at `tile_origins`
    -> the detector / graph scores every tile (one batch) -> tile maps (T, T)
    -> `stitch_maps`: the mean of overlapping tile maps, (H, W) -> image score = max over tiles

Tiles step by round(T * (1 - overlap)) px and the last tile of a row or column is aligned with
the frame's edge, so every pixel is covered and no tile is padded. A non-square frame with one
side equal to T is covered by a single row (or column) of tiles: `--image-size H,W` keeps the
aspect this way with any square-input detector.

The same code runs at training (edgead.data.tiles), evaluation and in the runtime
(`Detector`, from the manifest's postprocess["tiling"] = {"frame_size": [H, W], "tile": T,
"overlap": P}), so they cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgead.errors import ConfigError


@dataclass(frozen=True)
class Tiling:
    """frame_hw: (H, W) px frames are resized to; tile: T px; overlap: share in [0, 0.9]."""

    frame_hw: tuple[int, int]
    tile: int
    overlap: float = 0.0

    def validate(self) -> Tiling:
        """self, or ConfigError naming what is wrong."""
        height, width = self.frame_hw
        if self.tile < 16:
            raise ConfigError(f"--tile must be >= 16 px, got {self.tile}")
        if min(height, width) < self.tile:
            raise ConfigError(
                f"--tile {self.tile} is larger than the frame size {height}x{width} (H x W); "
                "use a smaller tile or a larger --image-size"
            )
        if not 0.0 <= self.overlap <= 0.9:
            raise ConfigError(f"--tile-overlap must be in [0, 0.9], got {self.overlap}")
        return self

    @property
    def origins(self) -> list[tuple[int, int]]:
        """(y, x) px of every tile's top-left corner, row by row."""
        return tile_origins(self.frame_hw, self.tile, self.overlap)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest postprocess["tiling"], run.json "tiling")."""
        return {"frame_size": list(self.frame_hw), "tile": self.tile, "overlap": self.overlap}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Tiling:
        """From `to_dict` output; ConfigError when malformed."""
        try:
            height, width = (int(v) for v in data["frame_size"])
            return cls((height, width), int(data["tile"]), float(data.get("overlap", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"malformed tiling {data!r}: {exc}") from exc


def _axis_origins(length: int, tile: int, overlap: float) -> list[int]:
    step = max(1, int(round(tile * (1.0 - overlap))))
    last = length - tile
    origins = list(range(0, last + 1, step))
    if origins[-1] != last:
        origins.append(last)
    return origins


def tile_origins(frame_hw: tuple[int, int], tile: int, overlap: float) -> list[tuple[int, int]]:
    """(y, x) top-left corners of T x T tiles covering an (H, W) frame (last ones edge-aligned)."""
    ys = _axis_origins(int(frame_hw[0]), tile, overlap)
    xs = _axis_origins(int(frame_hw[1]), tile, overlap)
    return [(y, x) for y in ys for x in xs]


def cut_tiles(image: np.ndarray, tiling: Tiling) -> np.ndarray:
    """uint8 (n_tiles, T, T, C) tiles of an (H, W, C) image already at `tiling.frame_hw`."""
    if image.shape[:2] != tuple(tiling.frame_hw):
        raise ConfigError(
            f"cut_tiles expects a {tiling.frame_hw} frame, got {image.shape[:2]}; resize first"
        )
    t = tiling.tile
    return np.stack([image[y : y + t, x : x + t] for y, x in tiling.origins])


def stitch_maps(tile_maps: np.ndarray, tiling: Tiling) -> np.ndarray:
    """float32 (H, W) map: the mean of the overlapping (n_tiles, T, T) tile maps."""
    height, width = tiling.frame_hw
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.float64)
    t = tiling.tile
    for (y, x), tile_map in zip(tiling.origins, tile_maps, strict=True):
        total[y : y + t, x : x + t] += tile_map
        count[y : y + t, x : x + t] += 1.0
    return (total / count).astype(np.float32)


def merge_tile_scores(
    tile_scores: np.ndarray, tile_maps: np.ndarray | None, n_frames: int, tiling: Tiling
) -> tuple[np.ndarray, list[np.ndarray] | None]:
    """(float32 (n_frames,) max tile score per frame, stitched (H, W) maps or None).

    Args:
        tile_scores: (n_frames * n_tiles,) raw tile scores, frame by frame.
        tile_maps: (n_frames * n_tiles, T, T) or None.
    """
    n_tiles = len(tiling.origins)
    scores = np.asarray(tile_scores, dtype=np.float32).reshape(n_frames, n_tiles).max(axis=1)
    if tile_maps is None:
        return scores, None
    maps = [
        stitch_maps(tile_maps[i * n_tiles : (i + 1) * n_tiles], tiling) for i in range(n_frames)
    ]
    return scores, maps


def tiles_of(frames: Sequence[np.ndarray], tiling: Tiling) -> np.ndarray:
    """uint8 (len(frames) * n_tiles, T, T, 3) tiles of frames already at `tiling.frame_hw`."""
    return np.concatenate([cut_tiles(np.asarray(f), tiling) for f in frames])
