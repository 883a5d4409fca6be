"""Training and evaluation on tiles: a lazy sequence of tiles and tile-wise scoring.

A tiled run (`edgead train --image-size H,W --tile T --tile-overlap P`) fits its detector on
T x T tiles cut from the training images resized to (H, W), and scores an image as the runtime
does (`edgead.ops.tiling`): every tile scored, image score = max over tiles, maps stitched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgead.ops.tiling import Tiling, cut_tiles

#: frames scored per detector call (each gives n_tiles tiles)
FRAMES_PER_CALL = 4


class TiledImages(Sequence[np.ndarray]):
    """Lazy uint8 (T, T, 3) tiles of a (lazy) sequence of (H, W, 3) frames, frame by frame.

    Item i is tile i % n_tiles of frame i // n_tiles; the last frame loaded is kept, so
    walking the tiles in order loads each frame once.
    """

    def __init__(self, frames: Sequence[np.ndarray], tiling: Tiling) -> None:
        self.frames = frames
        self.tiling = tiling
        self.n_tiles = len(tiling.origins)
        self._cached: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.frames) * self.n_tiles

    def _tiles(self, frame_index: int) -> np.ndarray:
        # read the cache once: loader threads may replace it between the check and the return
        cached = self._cached
        if cached is None or cached[0] != frame_index:
            cached = (frame_index, cut_tiles(np.asarray(self.frames[frame_index]), self.tiling))
            self._cached = cached
        return cached[1]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, (int, np.integer)):
            index = int(index) + len(self) if index < 0 else int(index)
            if not 0 <= index < len(self):
                raise IndexError(index)
            return self._tiles(index // self.n_tiles)[index % self.n_tiles]
        positions = range(len(self))[index] if isinstance(index, slice) else index
        return [self[int(i)] for i in np.asarray(positions).ravel()]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(len(self)):
            yield self[i]
