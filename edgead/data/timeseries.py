"""Sensor time series: rows in time order from .csv / .parquet, checked like tabular data.

`load_series(path, ...)` returns a `Series`: float32 rows (N, D) of named feature columns in
file order, the time stamps (strings, if the file has a time column) and optional 0/1 labels.
The CSV delimiter is detected (comma, semicolon, tab or pipe) unless given. The time column is
`time_column`, or when "auto" the first column named datetime / timestamp / time / date (case
folded); it is kept as labels for the output, never used as a feature. Columns named in
`drop_columns` (e.g. SKAB's `changepoint`) are ignored; `feature_columns` picks the features
explicitly. Checks (non-numeric, NaN/inf, labels other than 0/1) are those of
`edgead.data.tabular`, with the same `DataError` messages.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgead.data.tabular import _check_labels, _is_numeric
from edgead.errors import DataError
from edgead.ops.rows import check_finite
from edgead.ops.windows import TIME_NAMES

logger = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet")
DELIMITERS = ",;\t|"


@dataclass(frozen=True)
class Series:
    """One sensor recording in time order.

    values: float32 (N, D), finite; row i is the reading at times[i].
    feature_names: the D column names.
    times: (N,) str time stamps as written in the file, or None without a time column.
    labels: int64 (N,) 0 = normal, 1 = anomaly, or None.
    """

    values: np.ndarray
    feature_names: tuple[str, ...]
    times: np.ndarray | None = None
    labels: np.ndarray | None = None

    @property
    def n_rows(self) -> int:
        """Number of rows N."""
        return int(self.values.shape[0])


def detect_delimiter(path: str | Path, sample_bytes: int = 16384) -> str:
    """The CSV delimiter of `path` (one of , ; tab |), from its first `sample_bytes` bytes.

    Raises:
        DataError: unreadable file, or no candidate splits the header into 2+ columns.
    """
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            sample = handle.read(sample_bytes)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS).delimiter
    except csv.Error:
        header = sample.splitlines()[0] if sample else ""
        counts = {d: header.count(d) for d in DELIMITERS}
        best = max(counts, key=lambda d: counts[d])
        if counts[best] == 0:
            raise DataError(
                f"{path}: cannot tell the delimiter (tried {DELIMITERS!r}); "
                "pass --delimiter or check that the file has a header row"
            ) from None
        return best


def _read_frame(path: Path, delimiter: str | None) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise DataError(
            f"reading {path.suffix} recordings needs pandas (pip install pandas, or "
            "'edgead[train]'); without it, send rows as JSON lines on stdin (--source -)"
        ) from exc

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        sep = delimiter or detect_delimiter(path)
        return pd.read_csv(path, sep=sep)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty; expected a header row and data rows") from exc
    except ImportError as exc:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install pyarrow") from exc
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read series ({exc})") from exc


def _pick_time_column(columns: list[str], time_column: str | None, path: Path) -> str | None:
    if time_column is None:
        return None
    if time_column != "auto":
        if time_column not in columns:
            raise DataError(
                f"{path}: no time column '{time_column}'; columns are: {', '.join(columns[:20])}"
            )
        return time_column
    for column in columns:
        if column.strip().lower() in TIME_NAMES:
            return column
    return None


def load_series(
    path: str | Path,
    *,
    time_column: str | None = "auto",
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    drop_columns: Sequence[str] = (),
    delimiter: str | None = None,
) -> Series:
    """Read a sensor recording (rows in time order) from .csv or .parquet.

    Args:
        path: the file; a .csv needs a header row.
        time_column: name of the time stamp column, "auto" (first of datetime / timestamp /
            time / date, if any) or None (no time column).
        label_column: 0/1 label column (removed from the features), or None.
        feature_columns: the feature columns, in this order; None = every other column.
        drop_columns: columns to ignore (absent ones are fine).
        delimiter: CSV delimiter; None detects it.

    Raises:
        DataError: missing file, unknown suffix, missing or non-numeric columns, NaN/inf,
            labels other than 0/1, no rows.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"series file not found: {path}")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"{path}: unsupported series format; use one of {', '.join(SUFFIXES)}")
    frame = _read_frame(path, delimiter)
    frame.columns = [str(c) for c in frame.columns]
    columns = list(frame.columns)
    time_name = _pick_time_column(columns, time_column, path)
    times = None if time_name is None else frame[time_name].astype(str).to_numpy()
    labels = None
    if label_column is not None:
        if label_column not in columns:
            raise DataError(
                f"{path}: no label column '{label_column}'; columns are: {', '.join(columns[:20])}"
            )
        labels = _check_labels(frame[label_column].to_numpy(), len(frame), path, label_column)
    if feature_columns is None:
        skip = {time_name, label_column, *drop_columns}
        names = [c for c in columns if c not in skip]
    else:
        names = list(feature_columns)
        missing = [c for c in names if c not in columns]
        if missing:
            raise DataError(
                f"{path}: feature column(s) {missing} not found; columns are: "
                f"{', '.join(columns[:20])}"
            )
    if not names or len(frame) == 0:
        raise DataError(f"{path}: no data ({len(frame)} rows, {len(names)} feature columns)")
    bad = [c for c in names if not _is_numeric(frame[c])]
    if bad:
        raise DataError(
            f"{path}: non-numeric column(s) {', '.join(repr(c) for c in bad)}; name the time "
            "column (--time-column), drop them, or pick --feature-columns"
        )
    values = np.ascontiguousarray(
        frame[names].to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float32
    )
    check_finite(values, tuple(names), str(path))
    return Series(values=values, feature_names=tuple(names), times=times, labels=labels)


def check_feature_names(series: Series, expected: Sequence[str]) -> None:
    """DataError unless `series` has exactly the feature columns `expected`, in order."""
    if tuple(series.feature_names) != tuple(expected):
        raise DataError(
            f"the series has feature columns {list(series.feature_names)}, but the model was "
            f"trained on {list(expected)}; pick them with --feature-columns"
        )


#: loader options a run may record (train_run's data_options for time-series detectors).
SERIES_OPTIONS = ("fit_rows", "time_column", "feature_columns", "drop_columns", "delimiter")


def series_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """Checked, typed series options: fit_rows int >= 0 (0 = every row), column lists as tuples.

    Raises:
        ConfigError: unknown keys or a bad fit_rows.
    """
    from edgead.errors import ConfigError

    given = dict(options or {})
    unknown = sorted(set(given) - set(SERIES_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown time-series data option(s) {unknown}; known: {', '.join(SERIES_OPTIONS)}"
        )
    out: dict[str, Any] = {}
    if given.get("fit_rows") not in (None, ""):
        try:
            out["fit_rows"] = int(given["fit_rows"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"fit_rows must be a whole number, got {given['fit_rows']!r}"
            ) from exc
        if out["fit_rows"] < 0:
            raise ConfigError(f"fit_rows must be >= 0 (0 = every row), got {out['fit_rows']}")
    for key in ("feature_columns", "drop_columns"):
        value = given.get(key)
        if value not in (None, ""):
            items = value.split(",") if isinstance(value, str) else list(value)
            out[key] = tuple(str(v).strip() for v in items if str(v).strip())
    for key in ("time_column", "delimiter"):
        if given.get(key) not in (None, ""):
            out[key] = str(given[key])
    return out


def load_run_series(
    path: str | Path, options: dict[str, Any] | None, label_column: str | None
) -> Series:
    """`load_series` with a run's recorded options (`series_options`)."""
    opts = series_options(options)
    return load_series(
        path,
        time_column=opts.get("time_column", "auto"),
        label_column=label_column,
        feature_columns=opts.get("feature_columns"),
        drop_columns=opts.get("drop_columns", ()),
        delimiter=opts.get("delimiter"),
    )


def fit_row_count(series: Series, options: dict[str, Any] | None) -> int:
    """Rows used for fitting: options' fit_rows (0 or absent = every row), at most N."""
    fit_rows = int(series_options(options).get("fit_rows", 0))
    return series.n_rows if fit_rows == 0 else min(fit_rows, series.n_rows)


def test_windows(
    series: Series, length: int, start_row: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(float32 (M, L, D) windows ending at rows >= start_row, their end rows' labels or None).

    A window ending at row t >= start_row may reach back into earlier rows (context only).
    """
    from edgead.ops.windows import sliding_windows, window_end_rows

    ends = window_end_rows(series.n_rows, length)
    keep = ends >= max(start_row, length - 1)
    if not keep.any():
        raise DataError(
            f"no window of {length} rows ends at or after row {start_row} "
            f"(the series has {series.n_rows} rows)"
        )
    windows = sliding_windows(series.values, length)[keep]
    labels = None if series.labels is None else series.labels[ends[keep]]
    return np.ascontiguousarray(windows), labels
