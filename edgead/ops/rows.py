"""The one check for tabular rows, shared by training, the models and the runtime (numpy only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgead.errors import DataError


def check_finite(rows: np.ndarray, names: tuple[str, ...], source: str) -> None:
    """DataError naming each column of float (N, D) `rows` with NaN/inf values and how many rows
    have them; `names` are the D column names, `source` says where the rows came from."""
    finite = np.isfinite(rows)
    if finite.all():
        return
    bad_cols = np.flatnonzero(~finite.all(axis=0))
    parts = []
    for col in bad_cols[:10]:
        n_nan = int(np.isnan(rows[:, col]).sum())
        n_inf = int(np.isinf(rows[:, col]).sum())
        parts.append(f"'{names[col]}' ({n_nan} NaN, {n_inf} inf)")
    more = f" and {bad_cols.size - 10} more columns" if bad_cols.size > 10 else ""
    n_rows = int((~finite.all(axis=1)).sum())
    raise DataError(
        f"{source}: {n_rows} row(s) have NaN or inf values in column(s) "
        f"{', '.join(parts)}{more}; impute or drop them before training/scoring"
    )


def check_rows(rows: Any, n_features: int | None = None, *, one_row_ok: bool = False) -> np.ndarray:
    """Rows as C-contiguous float32 (N, D), checked for shape, column count and finiteness.

    Args:
        rows: array-like (N, D) of numbers; with `one_row_ok`, a 1-D (D,) row is taken as (1, D).
        n_features: expected D (None: any).

    Raises:
        DataError: ragged or non-numeric, not 2-D, empty, wrong D, NaN/inf.
    """
    try:
        arr = np.ascontiguousarray(rows, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise DataError(f"rows must be numeric (N, D) arrays of equal-length rows: {exc}") from exc
    if one_row_ok and arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"rows have shape {arr.shape}; expected a non-empty (N, D) array")
    if n_features is not None and arr.shape[1] != n_features:
        raise DataError(
            f"rows have {arr.shape[1]} columns but the detector was trained on "
            f"{n_features}; pass rows with the training columns in the same order"
        )
    check_finite(arr, tuple(f"column {i}" for i in range(arr.shape[1])), "rows")
    return arr
