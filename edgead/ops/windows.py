"""Sliding windows over sensor rows and the per-stream ring buffer. Torch-free.

A window is `length` consecutive rows (L, D); its score belongs to its LAST row, so a decision
about row t uses rows t-L+1 .. t only (nothing looks ahead). With stride s the windows end at
rows L-1, L-1+s, L-1+2s, ... . The same rule serves training (`edgead.models._windows`),
evaluation, the SKAB benchmark and the device runtime (`RingBuffer` behind `Detector.push`).
"""

from __future__ import annotations

import numpy as np

from edgead.errors import ConfigError, DataError

#: column names taken as the time stamp of a sensor row (case-insensitive)
TIME_NAMES = ("datetime", "timestamp", "time", "date")


def check_window(length: int, stride: int = 1) -> None:
    """ConfigError unless length >= 2 and stride >= 1."""
    if int(length) < 2 or int(stride) < 1:
        raise ConfigError(
            f"window length must be >= 2 rows and stride >= 1; got length={length}, stride={stride}"
        )


def window_end_rows(n_rows: int, length: int, stride: int = 1) -> np.ndarray:
    """int64 (M,): index of the last row of each window over `n_rows` rows (empty if too few)."""
    check_window(length, stride)
    if n_rows < length:
        return np.zeros(0, dtype=np.int64)
    return np.arange(length - 1, n_rows, stride, dtype=np.int64)


def sliding_windows(rows: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """float32 (M, L, D) windows of `rows` (N, D), ending at `window_end_rows(N, L, stride)`.

    A read-only strided view when `rows` is float32 and C-contiguous (no copy); callers that
    write into it must copy.

    Raises:
        DataError: rows not 2-D, or fewer than `length` rows.
    """
    check_window(length, stride)
    array = np.ascontiguousarray(rows, dtype=np.float32)
    if array.ndim != 2:
        raise DataError(f"rows must be (N, D); got shape {array.shape}")
    if array.shape[0] < length:
        raise DataError(
            f"{array.shape[0]} rows are fewer than one window of {length} rows; "
            "give more rows or a shorter window"
        )
    view = np.lib.stride_tricks.sliding_window_view(array, length, axis=0)  # (N-L+1, D, L)
    return view.transpose(0, 2, 1)[::stride]


class RingBuffer:
    """The last `length` rows of one stream; `push` returns a window when one is due.

    A window is due once `length` rows have arrived, and then every `stride` rows (the same
    windows as `sliding_windows` over the rows pushed so far).

    Args:
        length: rows per window L.
        n_features: values per row D.
        stride: rows between windows.
    """

    def __init__(self, length: int, n_features: int, stride: int = 1) -> None:
        check_window(length, stride)
        self.length, self.stride = int(length), int(stride)
        self._rows = np.zeros((2 * self.length, int(n_features)), dtype=np.float32)
        self._pos = 0  # next write position in the doubled buffer
        self.n_seen = 0  # rows pushed so far

    @property
    def n_features(self) -> int:
        """Values per row D."""
        return int(self._rows.shape[1])

    def push(self, row: np.ndarray) -> np.ndarray | None:
        """Append one row (D,); return the window (L, D) ending at it when due, else None.

        The returned array is a copy. Rows are written twice (at i and i + L) so the latest
        window is always one contiguous slice.

        Raises:
            DataError: the row is not D finite numbers.
        """
        value = np.asarray(row, dtype=np.float32).reshape(-1)
        if value.shape[0] != self.n_features or not np.isfinite(value).all():
            raise DataError(
                f"a row must be {self.n_features} finite numbers; got {value.shape[0]} values"
                + ("" if value.shape[0] != self.n_features else " with NaN/inf")
            )
        slot = self._pos
        self._rows[slot] = value
        self._rows[slot + self.length] = value
        self._pos = (slot + 1) % self.length
        self.n_seen += 1
        end = self.n_seen - 1
        if end < self.length - 1 or (end - (self.length - 1)) % self.stride:
            return None
        return self._rows[self._pos : self._pos + self.length].copy()

    def reset(self) -> None:
        """Forget every row (e.g. after a gap in the stream)."""
        self._pos = 0
        self.n_seen = 0
