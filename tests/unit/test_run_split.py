"""The run directory stores its held-out split (split.json, `edgead.runrecord.RunSplit`) and
export reads it back instead of re-making the split with training code."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgead.errors import DataError
from edgead.export.exporter import _run_validation_inputs
from edgead.rundir import load_run, load_split
from edgead.runrecord import SPLIT_JSON, RunSplit
from edgead.training import train_run
from tests.helpers.data import make_synthetic_mvtec
from tests.helpers.tiny_models import register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_run_split")
PADIM = {"image_size": 32, "backbone": TINY, "pretrained": False}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, run dir) of one tiny PaDiM run on synthetic MVTec data."""
    root = tmp_path_factory.mktemp("split")
    data = make_synthetic_mvtec(root / "category")
    train_run("padim", data, root / "run", PADIM, seed=3)
    return data, root / "run"


@pytest.fixture(scope="module")
def table_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(table file, run dir) of one kNN run on a labelled synthetic table."""
    root = tmp_path_factory.mktemp("split_rows")
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(size=(150, 4)), rng.normal(size=(15, 4)) + 5.0])
    table = root / "table.npz"
    np.savez(table, X=x, y=np.r_[np.zeros(150), np.ones(15)])
    train_run("knn", table, root / "run", {}, seed=2)
    return table, root / "run"


def test_record_round_trips_and_bad_records_are_refused() -> None:
    split = RunSplit.of_rows(np.arange(12, dtype=np.float32).reshape(6, 2), [1, 4])
    assert RunSplit.from_dict(json.loads(json.dumps(split.to_dict()))) == split
    for bad in ({"schema": 99}, {**split.to_dict(), "val_index": [7]}, {"schema": 1}):
        with pytest.raises(DataError, match="retrain"):
            RunSplit.from_dict(bad)


def test_image_run_stores_the_held_out_images_and_export_reads_them(
    image_run: tuple[Path, Path],
) -> None:
    from edgead.training import _image_split

    data, run = image_run
    split = load_split(run)
    detector, meta = load_run(run)
    assert split is not None and split.modality == "image"
    assert len(split.val_index) == meta["data"]["n_val"] >= 2
    assert split.val_names is not None and len(set(split.val_names)) == len(split.val_index)
    got = _run_validation_inputs(detector, data, meta, split)
    # test-side only: the split training draws with the run's seed holds the same images
    want = _image_split(detector, data, 3, {}).val_data
    assert got is not None
    np.testing.assert_array_equal(got, np.stack([np.asarray(img) for img in want]))


def test_export_follows_the_stored_record_not_a_re_made_split(
    image_run: tuple[Path, Path], tmp_path: Path
) -> None:
    data, run = image_run
    detector, meta = load_run(run)
    split = load_split(run)
    assert split is not None
    from edgead.data.datasets import load_image_dataset

    dataset = load_image_dataset(data, 32)
    other = [i for i in range(split.n_items) if i not in split.val_index][:2]
    moved = RunSplit.of_images(dataset.train_paths, other)
    images = dataset.train_images()
    got = _run_validation_inputs(detector, data, meta, moved)
    assert got is not None
    np.testing.assert_array_equal(got, np.stack([images[i] for i in other]))


def test_changed_data_and_old_runs_fall_back_with_a_warning(
    image_run: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data, run = image_run
    detector, meta = load_run(run)
    split = load_split(run)
    copy = tmp_path / "category"
    shutil.copytree(data, copy)
    victim = copy / "train" / "good" / split.val_names[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # same name, another size
    with caplog.at_level(logging.WARNING, logger="edgead.export.exporter"):
        assert _run_validation_inputs(detector, copy, meta, split) is None
    assert "changed since the run" in caplog.text
    caplog.clear()
    old = tmp_path / "old_run"
    shutil.copytree(run, old)
    (old / SPLIT_JSON).unlink()
    assert load_split(old) is None
    with caplog.at_level(logging.WARNING, logger="edgead.export.exporter"):
        assert _run_validation_inputs(detector, data, meta, load_split(old)) is None
    assert "Retrain the run" in caplog.text


def test_table_run_stores_row_numbers_and_a_compressed_export_refits_on_them(
    table_run: tuple[Path, Path], tmp_path: Path
) -> None:
    from edgead.data.tabular import load_table
    from edgead.export import export_run

    table, run = table_run
    split = load_split(run)
    detector, meta = load_run(run)
    assert split is not None and split.modality == "tabular"
    assert len(split.val_index) == meta["data"]["n_val"] >= 5
    rows = _run_validation_inputs(detector, table, meta, split)
    np.testing.assert_array_equal(rows, load_table(table, None).X[list(split.val_index)])
    manifest = export_run(run, "onnx", "fp32", tmp_path / "b.edgead", index={"index": "SQ8"})
    calibration = manifest.export["calibration"]
    assert calibration["method"] == "refit" and calibration["n_inputs"] == len(split.val_index)


def test_export_does_not_import_training() -> None:
    from tests.unit.test_import_layers import GRAPH

    for module, (ours, _) in GRAPH.items():
        if module.startswith("edgead.export"):
            assert "edgead.training" not in ours, module
