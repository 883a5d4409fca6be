"""Tabular data: load rows from .npz / .csv / .parquet, check them, split by the ADBench protocol.

`load_table(path, label_column=None)` returns a `Table` of float32 rows. It refuses data that a
detector cannot use, with a `DataError` that names the problem:

- an empty file (no rows or no feature columns),
- non-numeric columns (named; booleans are accepted as 0/1),
- NaN or +-inf values (each bad column is named with its number of bad rows),
- labels that are not 0/1.

Constant columns are *not* an error: they carry no information, so the detectors'
`Standardizer` (edgead/models/_tabular.py) gives them scale 1 (the column becomes all zeros after
centring) and logs a warning; `constant_columns(table.X)` lists them here too.

`check_columns(table, feature_names)` compares a table with the columns a run was trained on.
`drop_anomalies(table)` keeps only the rows labelled normal (used on training files).

Labels: 0 = normal, 1 = anomaly. For .npz the labels are the array `y` (if present); for .csv and
.parquet they are the column `label_column` (None means "no labels", the whole frame is features).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead.errors import DataError
from edgead.ops.rows import check_finite

logger = logging.getLogger(__name__)

SUFFIXES = (".npz", ".csv", ".parquet")


@dataclass(frozen=True)
class Table:
    """Feature rows with optional labels.

    X: float32, (N, D), finite.
    y: int64, (N,), 0 = normal, 1 = anomaly; None when the file carries no labels.
    feature_names: D column names (for .npz without names: "x0", "x1", ...).
    """

    X: np.ndarray
    y: np.ndarray | None
    feature_names: tuple[str, ...]

    @property
    def n_rows(self) -> int:
        """Number of rows N."""
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        """Number of feature columns D."""
        return int(self.X.shape[1])


def load_table(path: str | Path, label_column: str | None = None) -> Table:
    """Read a table of numeric rows (and optional 0/1 labels) from .npz, .csv or .parquet.

    Args:
        path: file to read. `.npz` needs an array `X` (N, D) and may hold `y` (N,) and
            `feature_names` (D,) strings. `.csv` has a header row; `.parquet` is read with pandas.
        label_column: for .csv/.parquet, the column holding 0/1 labels (removed from the
            features). For .npz it may be None or "y".

    Returns:
        Table with X float32 (N, D).

    Raises:
        DataError: missing/unreadable/empty file, unknown suffix, missing label column,
            non-numeric columns, NaN/inf values, labels other than 0/1.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"table file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        table = _load_npz(path, label_column)
    elif suffix in (".csv", ".parquet"):
        table = _load_frame(path, label_column)
    else:
        raise DataError(
            f"{path}: unsupported table format '{suffix}'; use one of {', '.join(SUFFIXES)}"
        )
    check_finite(table.X, table.feature_names, str(path))
    const = constant_columns(table.X)
    if const.size:
        names = ", ".join(table.feature_names[i] for i in const[:10])
        logger.warning(
            "%s: %d constant column(s) (%s%s); they carry no information and get scale 1 "
            "in standardisation",
            path,
            const.size,
            names,
            ", ..." if const.size > 10 else "",
        )
    return table


def _load_npz(path: Path, label_column: str | None) -> Table:
    """Read `X` (and `y`, `feature_names`) from an .npz archive without pickles."""
    if label_column not in (None, "y"):
        raise DataError(
            f"{path}: .npz files carry labels in the array 'y'; "
            f"--label-column '{label_column}' does not apply (omit it or use 'y')"
        )
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "X" not in archive.files:
                raise DataError(
                    f"{path}: .npz has no array 'X' (found: {', '.join(archive.files)})"
                    "; save features as X (N, D) and labels as y (N,)"
                )
            raw_x = archive["X"]
            raw_y = archive["y"] if "y" in archive.files else None
            names = archive["feature_names"] if "feature_names" in archive.files else None
    except DataError:
        raise
    except (OSError, ValueError) as exc:
        raise DataError(
            f"{path}: cannot read .npz ({exc}); it must hold plain arrays (no pickled objects)"
        ) from exc
    if raw_x.ndim == 1:
        raw_x = raw_x.reshape(-1, 1)
    if raw_x.ndim != 2 or raw_x.shape[0] == 0 or raw_x.shape[1] == 0:
        raise DataError(f"{path}: X has shape {raw_x.shape}; expected a non-empty (N, D) array")
    if not (np.issubdtype(raw_x.dtype, np.number) or raw_x.dtype == np.bool_):
        raise DataError(f"{path}: X has dtype {raw_x.dtype}; expected numbers")
    feature_names = (
        tuple(str(n) for n in names)
        if names is not None
        else tuple(f"x{i}" for i in range(raw_x.shape[1]))
    )
    if len(feature_names) != raw_x.shape[1]:
        raise DataError(
            f"{path}: feature_names has {len(feature_names)} entries but X has "
            f"{raw_x.shape[1]} columns"
        )
    y = None if raw_y is None else _check_labels(raw_y, raw_x.shape[0], path, "y")
    return Table(X=np.ascontiguousarray(raw_x, dtype=np.float32), y=y, feature_names=feature_names)


def _load_frame(path: Path, label_column: str | None) -> Table:
    """Read a .csv / .parquet file with pandas and split it into features and labels."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is in the train extra
        raise DataError("reading .csv/.parquet needs pandas: pip install 'edgead[train]'") from exc
    try:
        if path.suffix.lower() == ".csv":
            frame = pd.read_csv(path)
        else:
            frame = pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows") from exc
    except ImportError as exc:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read table ({exc})") from exc
    frame.columns = [str(c) for c in frame.columns]
    y = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise DataError(
                f"{path}: no label column '{label_column}'; columns are: "
                f"{', '.join(frame.columns[:20])}"
            )
        y = _check_labels(frame[label_column].to_numpy(), len(frame), path, label_column)
        frame = frame.drop(columns=[label_column])
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(
            f"{path}: no data ({frame.shape[0]} rows, {frame.shape[1]} feature "
            "columns); expected at least one row and one feature column"
        )
    bad = [c for c in frame.columns if not _is_numeric(frame[c])]
    if bad:
        raise DataError(
            f"{path}: non-numeric column(s) {', '.join(repr(c) for c in bad)}; "
            "encode them as numbers or drop them (and pass --label-column for labels)"
        )
    X = np.ascontiguousarray(frame.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float32)
    return Table(X=X, y=y, feature_names=tuple(frame.columns))


def _is_numeric(series: Any) -> bool:
    """True for numeric or boolean pandas columns (an all-NaN float column counts as numeric)."""
    from pandas.api import types

    return bool(types.is_numeric_dtype(series) or types.is_bool_dtype(series))


def _check_labels(raw: np.ndarray, n_rows: int, path: Path, name: str) -> np.ndarray:
    """Labels as int64 (N,) of 0/1, or DataError."""
    labels = np.asarray(raw).reshape(-1)
    if labels.shape[0] != n_rows:
        raise DataError(f"{path}: {name} has {labels.shape[0]} labels for {n_rows} rows")
    try:
        numeric = labels.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: labels in '{name}' must be 0 (normal) or 1 (anomaly)") from exc
    bad = ~np.isin(numeric, (0.0, 1.0))
    if bad.any():
        examples = np.unique(labels[bad])[:5].tolist()
        raise DataError(
            f"{path}: {int(bad.sum())} label(s) in '{name}' are not 0/1 "
            f"(e.g. {examples}); use 0 = normal, 1 = anomaly"
        )
    return numeric.astype(np.int64)


def check_columns(table: Table, feature_names: tuple[str, ...] | list[str]) -> None:
    """DataError unless `table` has the same number (and, when named, the same) feature columns.

    Args:
        table: rows to score.
        feature_names: the column names recorded for the training run.

    Raises:
        DataError: a different number of columns, or the same count with different names
            (generic "x0".. names from .npz files are not compared).
    """
    expected = tuple(feature_names)
    if table.n_features != len(expected):
        raise DataError(
            f"the table has {table.n_features} feature columns but the run was "
            f"trained on {len(expected)} ({', '.join(expected[:10])}"
            f"{', ...' if len(expected) > 10 else ''}); use a file with the same "
            "columns (and --label-column for the label)"
        )
    generic = tuple(f"x{i}" for i in range(len(expected)))
    if expected == generic or table.feature_names == generic:
        return
    if table.feature_names != expected:
        diff = [
            f"{i}: '{a}' vs '{b}'"
            for i, (a, b) in enumerate(zip(table.feature_names, expected, strict=True))
            if a != b
        ]
        raise DataError(
            f"column names differ from the training run at {', '.join(diff[:5])}; "
            "reorder or rename the columns to match"
        )


def constant_columns(X: np.ndarray) -> np.ndarray:
    """Indices (int64, (K,)) of columns whose values are all equal."""
    if X.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((X == X[:1]).all(axis=0)).astype(np.int64)


def drop_anomalies(table: Table) -> Table:
    """The table without rows labelled 1 (training uses normal rows only); unchanged if no labels.

    Raises:
        DataError: every row is labelled anomalous.
    """
    if table.y is None:
        return table
    keep = table.y == 0
    n_dropped = int((~keep).sum())
    if not keep.any():
        raise DataError("every row is labelled anomalous (1); training needs normal rows (0)")
    if n_dropped:
        logger.info(
            "dropped %d anomalous row(s) of %d from the training data", n_dropped, table.n_rows
        )
    return Table(X=table.X[keep], y=table.y[keep], feature_names=table.feature_names)


def adbench_split(
    y: np.ndarray, seed: int, train_fraction: float = 0.6
) -> tuple[np.ndarray, np.ndarray]:
    """Indices for the ADBench-style semi-supervised protocol.

    Train on a random `train_fraction` of the normal rows only; test on the remaining normal
    rows plus all anomalies.

    Args:
        y: int (N,), 0 = normal, 1 = anomaly.
        seed: seed of the permutation (numpy Generator).
        train_fraction: share of normal rows used for training, in (0, 1).

    Returns:
        (train_idx, test_idx): sorted int64 index arrays; disjoint, together all rows.

    Raises:
        DataError: labels are not 0/1, there are fewer than 2 normal rows, or no anomaly.
    """
    if not 0.0 < train_fraction < 1.0:
        raise DataError(f"train_fraction must be in (0, 1), got {train_fraction}")
    labels = np.asarray(y).reshape(-1)
    if not np.isin(labels, (0, 1)).all():
        raise DataError("adbench_split needs labels 0 (normal) / 1 (anomaly)")
    normal = np.flatnonzero(labels == 0)
    anomalous = np.flatnonzero(labels == 1)
    if normal.size < 2 or anomalous.size == 0:
        raise DataError(
            f"adbench_split needs >= 2 normal rows and >= 1 anomaly; got "
            f"{normal.size} normal, {anomalous.size} anomalous"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(normal)
    n_train = min(max(1, int(round(train_fraction * normal.size))), normal.size - 1)
    train_idx = np.sort(perm[:n_train]).astype(np.int64)
    test_idx = np.sort(np.concatenate([perm[n_train:], anomalous])).astype(np.int64)
    return train_idx, test_idx
