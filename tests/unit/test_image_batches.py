"""Unit tests: batching of uint8 image sequences (`iter_batches`, `map_batches`): order, sizes,
progress, errors, and lazily loaded images read by worker threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgead.data.base import LazySequence
from edgead.data.tiles import TiledImages
from edgead.errors import DataError
from edgead.models._image_common import iter_batches, map_batches
from edgead.ops.tiling import Tiling


def _images(n: int) -> np.ndarray:
    """uint8 (n, 4, 4, 3); image i is filled with i."""
    return np.repeat(np.arange(n, dtype=np.uint8), 48).reshape(n, 4, 4, 3)


def _lazy(n: int, threads: set[str] | None = None, fail_at: int | None = None) -> LazySequence:
    def load(i: int) -> np.ndarray:
        if threads is not None:
            threads.add(threading.current_thread().name)
        if i == fail_at:
            raise DataError(f"image {i} is unreadable")
        return _images(n)[i]

    return LazySequence(list(range(n)), load)


@pytest.mark.parametrize("source", ["array", "lazy"])
def test_iter_batches_keeps_order_and_sizes(source: str) -> None:
    images = _images(7) if source == "array" else _lazy(7)
    calls: list[tuple[int, int, str]] = []
    batches = list(iter_batches(images, 3, lambda d, t, s: calls.append((d, t, s)), "x"))
    assert [tuple(b.shape) for b in batches] == [(3, 4, 4, 3), (3, 4, 4, 3), (1, 4, 4, 3)]
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), _images(7))
    assert calls == [(3, 7, "x"), (6, 7, "x"), (7, 7, "x")]


def test_map_batches_runs_in_workers_in_order() -> None:
    threads: set[str] = set()
    calls: list[int] = []
    out = map_batches(
        lambda b: b[:, 0, 0, 0].astype(np.int64) * 10,
        _lazy(9, threads),
        2,
        workers=3,
        progress=lambda d, t, s: calls.append(d),
    )
    np.testing.assert_array_equal(np.concatenate(out), np.arange(9) * 10)
    assert [len(o) for o in out] == [2, 2, 2, 2, 1]
    assert calls == [2, 4, 6, 8, 9]
    assert threads and all(name.startswith("edgead-map") for name in threads)
    assert map_batches(lambda b: b, _images(0), 2, workers=2) == []


def test_map_batches_raises_the_loaders_error() -> None:
    with pytest.raises(DataError, match="image 5 is unreadable"):
        map_batches(lambda b: b, _lazy(8, fail_at=5), 2, workers=2)
    with pytest.raises(DataError, match="image 1 is unreadable"):
        list(iter_batches(_lazy(4, fail_at=1), 2))


def test_start_skips_images_without_slicing() -> None:
    class NoSlices(list):  # type: ignore[type-arg]
        def __getitem__(self, index):  # type: ignore[no-untyped-def]
            assert isinstance(index, int), "sliced"
            return super().__getitem__(index)

    images = NoSlices(list(_images(7)))
    out = map_batches(lambda b: b[:, 0, 0, 0].copy(), images, 2, workers=2, start=3)
    np.testing.assert_array_equal(np.concatenate(out), [3, 4, 5, 6])
    got = [b.numpy()[:, 0, 0, 0] for b in iter_batches(images, 3, start=4)]
    np.testing.assert_array_equal(np.concatenate(got), [4, 5, 6])


def test_tiles_read_by_worker_threads_are_the_right_tiles() -> None:
    """`TiledImages` keeps one decoded frame; workers reading different frames at once must
    still each get their own frame's tiles."""

    def slow_frame(i: int) -> np.ndarray:
        time.sleep(0.002)  # a decode: lets another worker replace the cached frame meanwhile
        return np.full((8, 8, 3), i, np.uint8)

    frames = LazySequence(list(range(12)), slow_frame)
    tiles = TiledImages(frames, Tiling((8, 8), 4))
    assert len(tiles) == 48
    for _ in range(5):
        out = map_batches(lambda b: b[:, 0, 0, 0].copy(), tiles, 3, workers=4)
        np.testing.assert_array_equal(np.concatenate(out), np.repeat(np.arange(12), 4))
