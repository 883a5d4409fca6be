"""Unit tests for edgead.data.tabular: loading, bad-input errors, column checks, ADBench split."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edgead.data.tabular import (
    Table,
    adbench_split,
    check_columns,
    constant_columns,
    drop_anomalies,
    load_table,
)
from edgead.errors import DataError
from edgead.ops.rows import check_rows

pd = pytest.importorskip("pandas")


def _frame(n: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.integers(0, 5, n),
            "label": (np.arange(n) % 5 == 0).astype(int),
        }
    )


def test_npz_roundtrip_with_labels(tmp_path: Path) -> None:
    X = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.savez(tmp_path / "t.npz", X=X, y=np.array([0, 1, 0, 0]))
    table = load_table(tmp_path / "t.npz")
    assert table.X.dtype == np.float32 and table.X.shape == (4, 3)
    np.testing.assert_array_equal(table.X, X.astype(np.float32))
    assert table.y is not None and table.y.tolist() == [0, 1, 0, 0]
    assert table.feature_names == ("x0", "x1", "x2")


def test_npz_without_labels_and_missing_x(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", X=np.ones((3, 2)) * np.arange(3)[:, None])
    assert load_table(tmp_path / "a.npz").y is None
    np.savez(tmp_path / "b.npz", features=np.ones((3, 2)))
    with pytest.raises(DataError, match="no array 'X'"):
        load_table(tmp_path / "b.npz")


def test_csv_with_label_column(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "t.csv", index=False)
    table = load_table(tmp_path / "t.csv", label_column="label")
    assert table.feature_names == ("a", "b")
    assert table.y is not None and int(table.y.sum()) == 4
    unlabeled = load_table(tmp_path / "t.csv")
    assert unlabeled.n_features == 3 and unlabeled.y is None


def test_parquet(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    _frame().to_parquet(tmp_path / "t.parquet")
    table = load_table(tmp_path / "t.parquet", label_column="label")
    assert table.X.shape == (20, 2)


def test_missing_label_column_names_columns(tmp_path: Path) -> None:
    _frame().to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="no label column 'y'.*a, b, label"):
        load_table(tmp_path / "t.csv", label_column="y")


def test_nan_and_inf_name_column_and_count(tmp_path: Path) -> None:
    frame = _frame()
    frame.loc[[1, 2], "a"] = np.nan
    frame["b"] = frame["b"].astype(float)
    frame.loc[3, "b"] = np.inf
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError) as info:
        load_table(tmp_path / "t.csv", label_column="label")
    msg = str(info.value)
    assert "3 row(s)" in msg and "'a' (2 NaN, 0 inf)" in msg and "'b' (0 NaN, 1 inf)" in msg


def test_non_numeric_columns_are_named(tmp_path: Path) -> None:
    frame = _frame()
    frame["colour"] = "red"
    frame.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataError, match="non-numeric column.*'colour'"):
        load_table(tmp_path / "t.csv", label_column="label")


def test_empty_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_table(tmp_path / "empty.csv")
    (tmp_path / "header.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="0 rows"):
        load_table(tmp_path / "header.csv")
    np.savez(tmp_path / "e.npz", X=np.zeros((0, 3)))
    with pytest.raises(DataError, match="non-empty"):
        load_table(tmp_path / "e.npz")


def test_bad_labels_and_suffix(tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", X=np.eye(3), y=np.array([0, 2, 1]))
    with pytest.raises(DataError, match="not 0/1"):
        load_table(tmp_path / "t.npz")
    (tmp_path / "t.txt").write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported table format"):
        load_table(tmp_path / "t.txt")
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "missing.csv")


def test_constant_columns_warn_not_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    frame = _frame()
    frame["const"] = 3.0
    frame.to_csv(tmp_path / "t.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="edgead.data.tabular"):
        table = load_table(tmp_path / "t.csv", label_column="label")
    assert constant_columns(table.X).tolist() == [2]
    assert "constant column" in caplog.text and "const" in caplog.text


def test_check_columns() -> None:
    table = Table(X=np.zeros((2, 3), np.float32), y=None, feature_names=("a", "b", "c"))
    check_columns(table, ("a", "b", "c"))
    check_columns(table, ("x0", "x1", "x2"))  # generic npz names are not compared
    with pytest.raises(DataError, match="3 feature columns but the run was trained on 2"):
        check_columns(table, ("a", "b"))
    with pytest.raises(DataError, match="1: 'b' vs 'z'"):
        check_columns(table, ("a", "z", "c"))


def test_check_rows() -> None:
    assert check_rows([[1, 2], [3, 4]]).dtype == np.float32
    with pytest.raises(DataError, match="3 columns but the detector was trained on 2"):
        check_rows(np.zeros((2, 3)), 2)
    with pytest.raises(DataError, match="NaN"):
        check_rows(np.array([[1.0, np.nan]]))


def test_drop_anomalies() -> None:
    table = Table(
        X=np.arange(8, dtype=np.float32).reshape(4, 2),
        y=np.array([0, 1, 0, 1]),
        feature_names=("a", "b"),
    )
    kept = drop_anomalies(table)
    assert kept.X[:, 0].tolist() == [0.0, 4.0]
    with pytest.raises(DataError, match="every row"):
        drop_anomalies(Table(X=table.X, y=np.ones(4, np.int64), feature_names=("a", "b")))


def test_adbench_split_protocol() -> None:
    y = np.array([0] * 100 + [1] * 10)
    train, test = adbench_split(y, seed=3)
    assert train.size == 60 and (y[train] == 0).all()
    assert np.intersect1d(train, test).size == 0
    assert np.union1d(train, test).size == y.size
    assert (y[test] == 1).sum() == 10 and (y[test] == 0).sum() == 40
    again, _ = adbench_split(y, seed=3)
    other, _ = adbench_split(y, seed=4)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    with pytest.raises(DataError):
        adbench_split(np.zeros(10, np.int64), seed=0)
