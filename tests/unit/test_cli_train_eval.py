"""Unit tests: `edgead train` / `edgead eval` through typer's CliRunner on tiny synthetic data.

Image runs use PatchCore with the default backbone's random weights (`--set pretrained=false`)
at 32 px, trained once per module; tabular runs use iforest on a synthetic table.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner, Result

from edgead.cli.main import app
from tests.helpers.data import (
    SYNTHETIC_DEFECTS,
    SYNTHETIC_TEST_GOOD,
    SYNTHETIC_TRAIN,
    make_synthetic_mvtec,
)

N_TEST = SYNTHETIC_TEST_GOOD + sum(SYNTHETIC_DEFECTS.values())
IMAGE_ARGS = ["--image-size", "32", "--set", "pretrained=false", "--set", "val_fraction=0.3"]


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _train(name: str, data: Path | str, out: Path | str, *args: str) -> Result:
    """`edgead train NAME --data DATA --out OUT ARGS...`."""
    return _invoke("train", name, "--data", str(data), "--out", str(out), *args)


def _err(result: Result) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(result.stderr.split())


@pytest.fixture(scope="module")
def image_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """(data folder, run dir, train --json output) of one PatchCore run."""
    root = tmp_path_factory.mktemp("cli")
    data = make_synthetic_mvtec(root / "category")
    run = root / "run"
    result = _train(
        "patchcore",
        data,
        run,
        "--coreset-ratio",
        "0.5",
        "--seed",
        "1",
        "--json",
        *IMAGE_ARGS,
    )
    assert result.exit_code == 0, result.output
    return data, run, json.loads(result.stdout)


def test_train_writes_a_calibrated_run(image_run: tuple[Path, Path, dict]) -> None:
    _, run, printed = image_run
    meta = json.loads((run / "run.json").read_text())
    assert meta["detector"] == "patchcore" and meta["config"]["image_size"] == 32
    assert meta["config"]["coreset_ratio"] == 0.5 and meta["seed"] == 1
    assert meta["data"]["n_train"] + meta["data"]["n_val"] == SYNTHETIC_TRAIN
    assert meta["data"]["n_val"] >= 2
    assert meta["threshold"]["policy"] == "percentile:99"
    val = meta["validation"]
    assert val["score_min"] <= meta["threshold"]["value"] <= val["score_max"]
    assert meta["normalisation"]["threshold"] == meta["threshold"]["value"]
    assert {"feature_extraction_s", "coreset_s", "fit_s", "total_s"} <= set(meta["timings_s"])
    assert printed["threshold"] == meta["threshold"] and printed["run_dir"] == str(run)
    with np.load(run / "state.npz", allow_pickle=False) as npz:
        assert npz["memory_bank"].shape[0] == meta["describe"]["memory_bank_size"]


def test_eval_json_has_the_contract_keys(image_run: tuple[Path, Path, dict]) -> None:
    data, run, _ = image_run
    result = _invoke("eval", str(run), "--data", str(data), "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for key in ("image_auroc", "image_auprc", "image_f1", "pixel_auroc", "aupro"):
        assert 0.0 <= out[key] <= 1.0, key
    assert out["n_test"] == N_TEST and out["n_anomalous"] == sum(SYNTHETIC_DEFECTS.values())
    meta = json.loads((run / "run.json").read_text())
    assert out["threshold"] == meta["threshold"]["value"]
    # default --data: the data the run was trained on gives the same numbers
    again = json.loads(_invoke("eval", str(run), "--json").stdout)
    assert again["image_auroc"] == out["image_auroc"]


def test_eval_save_maps_writes_one_panel_per_test_image(
    image_run: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    data, run, _ = image_run
    panels = tmp_path / "panels"
    result = _invoke("eval", str(run), "--data", str(data), "--save-maps", str(panels))
    assert result.exit_code == 0, result.output
    files = sorted(panels.glob("*.png"))
    assert len(files) == N_TEST
    panel = cv2.imread(str(files[-1]))
    assert panel is not None and panel.shape[1] >= 3 * 32  # image | overlay | mask
    assert "image_auroc" in result.stdout


def test_eval_of_an_exported_bundle_matches_the_run(
    image_run: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    data, run, _ = image_run
    bundle = tmp_path / "model.edgead"
    # exact index: the issue-3 guarantee (the compressed default re-fits the threshold)
    exported = _invoke("export", str(run), "--out", str(bundle), "--index", "flat", "--json")
    assert exported.exit_code == 0, exported.output
    from_bundle = json.loads(_invoke("eval", str(bundle), "--data", str(data), "--json").stdout)
    from_run = json.loads(_invoke("eval", str(run), "--data", str(data), "--json").stdout)
    for key in ("image_auroc", "image_auprc", "image_f1", "threshold", "n_test"):
        assert from_bundle[key] == pytest.approx(from_run[key], rel=1e-3), key


def test_f1_threshold_from_labelled_validation_data(
    image_run: tuple[Path, Path, dict], tmp_path: Path
) -> None:
    data, _, _ = image_run
    run = tmp_path / "run_f1"
    result = _train(
        "patchcore",
        data,
        run,
        "--val-data",
        str(data),
        "--json",
        *IMAGE_ARGS,
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "run.json").read_text())
    assert meta["threshold"]["policy"] == "f1"
    labelled = meta["validation"]["labelled"]
    assert meta["threshold"]["value"] == pytest.approx(labelled["f1_threshold"])


def test_option_the_detector_lacks_is_a_config_error(tmp_path: Path) -> None:
    data = make_synthetic_mvtec(tmp_path / "category")
    result = _train(
        "padim",
        data,
        tmp_path / "r",
        "--coreset-ratio",
        "0.1",
    )
    assert result.exit_code == 2
    assert "--coreset-ratio" in _err(result) and "padim" in _err(result)
    result = _train(
        "patchcore",
        data,
        tmp_path / "r",
        "--set",
        "coreset_ration=0.1",
    )
    assert result.exit_code == 2 and "coreset_ration" in _err(result)
    result = _train(
        "patchcore",
        data,
        tmp_path / "r",
        "--label-column",
        "y",
        *IMAGE_ARGS,
    )
    assert result.exit_code == 2 and "tabular" in _err(result)
    assert not (tmp_path / "r").exists()


def test_config_file_and_missing_data_errors(tmp_path: Path) -> None:
    config = tmp_path / "pc.toml"
    config.write_text("coreset_ratio = 0.3\nprojection_dim = 8\npretrained = false\n")
    result = _train(
        "patchcore",
        tmp_path / "nowhere",
        tmp_path / "r",
        "--config",
        str(config),
    )
    assert result.exit_code == 2 and "nowhere" in _err(result)
    result = _invoke("eval", str(tmp_path), "--json")
    assert result.exit_code == 2 and "not an edgead run" in _err(result)


def test_tabular_train_and_eval(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    normal = rng.normal(0, 1, size=(300, 5))
    anomalies = rng.normal(0, 1, size=(30, 5)) + 6.0
    table = tmp_path / "table.npz"
    np.savez(table, X=np.vstack([normal, anomalies]), y=np.r_[np.zeros(300), np.ones(30)])
    run = tmp_path / "run"
    result = _train("iforest", table, run, "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads((run / "run.json").read_text())
    assert meta["modality"] == "tabular" and meta["data"]["n_train"] + meta["data"]["n_val"] == 180
    out = json.loads(_invoke("eval", str(run), "--data", str(table), "--json").stdout)
    assert {"auroc", "auprc", "f1", "threshold", "n_test"} <= set(out)
    assert out["n_test"] == 120 + 30 and out["auroc"] > 0.95
    assert out["threshold"] == meta["threshold"]["value"]
    result = _train(
        "iforest",
        table,
        tmp_path / "r2",
        "--image-size",
        "64",
    )
    assert result.exit_code == 2 and "--image-size" in _err(result)


def test_tabular_train_on_labelled_normal_rows(tmp_path: Path) -> None:
    """A file of normal rows that carries its labels (all 0) trains on every row (issue 20)."""
    rng = np.random.default_rng(1)
    rows = rng.normal(0, 1, size=(120, 4))
    table = tmp_path / "normal.npz"
    np.savez(table, X=rows, y=np.zeros(120))
    csv = tmp_path / "normal.csv"
    header = "a,b,c,d,label"
    np.savetxt(csv, np.c_[rows, np.zeros(120)], delimiter=",", header=header, comments="")
    runs = {
        "npz": ("ae", ["--data", str(table)]),
        "csv": ("iforest", ["--data", str(csv), "--label-column", "label"]),
    }
    for kind, (model, data_args) in runs.items():
        run = tmp_path / f"run-{kind}"
        result = _invoke("train", model, *data_args, "--out", str(run), "--json")
        assert result.exit_code == 0, result.output
        meta = json.loads((run / "run.json").read_text())
        assert meta["data"]["n_train"] + meta["data"]["n_val"] == 120, kind
        assert "every label is 0" in meta["data"]["train_rows"]
        assert "no anomalies); training on all rows" in _err(result), kind
    # one anomaly is enough to switch back to the ADBench split (60 % of the normal rows)
    np.savez(table, X=rows, y=np.r_[np.zeros(119), np.ones(1)])
    result = _invoke("train", "iforest", "--data", str(table), "--out", str(tmp_path / "r3"))
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "r3" / "run.json").read_text())
    assert meta["data"]["n_train"] + meta["data"]["n_val"] == round(0.6 * 119)
