"""Unit tests: PatchCore's cross-fitted threshold scores and the early refusal of runs that
could not set a threshold (before any backbone or data work)."""

from __future__ import annotations

import numpy as np
import pytest

from edgead.errors import ConfigError, DataError
from edgead.models.base import create_detector
from edgead.training import train_run
from tests.helpers.data import SYNTHETIC_TRAIN, make_synthetic_mvtec
from tests.helpers.tiny_models import gradient_images, register_tiny_backbone

TINY = register_tiny_backbone("tiny_test_patchcore_threshold")
SIZE = 32
CONFIG = {"backbone": TINY, "pretrained": False, "image_size": SIZE}


def test_crossfit_scores_never_see_their_own_patches() -> None:
    # With the full bank a training image scores 0 (its own patches are in the bank); a
    # cross-fitted score comes from a bank without its fold's entries, so it is > 0.
    det = create_detector("patchcore", {**CONFIG, "coreset_ratio": 1.0, "threshold_folds": 4})
    train = gradient_images(12, 3, SIZE, False)
    det.fit(train, seed=0)
    assert float(det.score(train).scores.max()) < 1e-3
    held = det.heldout_scores_
    assert held is not None and held.shape == (12,) and held.dtype == np.float32
    assert np.all(np.isfinite(held)) and float(held.min()) > 1e-3
    assert "4 folds" in det.heldout_source_
    assert det.fit_timings_["crossfit_s"] >= 0.0 and det.describe()["features_per_s"] > 0


def test_crossfit_off_with_a_holdout_or_folds_below_two() -> None:
    train = gradient_images(8, 4, SIZE, False)
    for extra in ({"val_fraction": 0.2}, {"threshold_folds": 1}):
        det = create_detector("patchcore", {**CONFIG, "coreset_ratio": 0.5, **extra})
        det.fit(train, seed=0)
        assert det.heldout_scores_ is None


def test_default_run_keeps_every_image_and_thresholds_on_crossfitted_scores(tmp_path) -> None:
    data = make_synthetic_mvtec(tmp_path / "category")
    meta = train_run("patchcore", data, tmp_path / "run", {**CONFIG, "coreset_ratio": 0.5})
    assert meta["data"]["n_train"] == SYNTHETIC_TRAIN and meta["data"]["n_val"] == 0
    assert meta["validation"]["source"].startswith("cross-fitted")
    assert meta["validation"]["n"] == SYNTHETIC_TRAIN
    val = meta["validation"]
    assert val["score_min"] <= meta["threshold"]["value"] <= val["score_max"]
    assert meta["threshold"]["policy"] == "percentile:99"


@pytest.fixture()
def no_heavy_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any backbone build or data loading fail loudly."""

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("heavy work started before the options were checked")

    monkeypatch.setattr("edgead.models._image_common.build_backbone", refuse)
    monkeypatch.setattr("edgead.models.patchcore.build_backbone", refuse)
    monkeypatch.setattr("edgead.data.datasets.load_image_dataset", refuse)


def test_no_threshold_source_is_refused_before_any_work(tmp_path, no_heavy_work) -> None:
    overrides = {**CONFIG, "val_fraction": 0.0, "threshold_folds": 0}
    with pytest.raises(ConfigError, match="--val-data") as info:
        train_run("patchcore", tmp_path / "no_such_data", tmp_path / "run", overrides)
    assert "val_fraction=0.1" in str(info.value) and "threshold_folds=10" in str(info.value)
    assert not (tmp_path / "run").exists()


def test_missing_val_data_is_refused_before_any_work(tmp_path, no_heavy_work) -> None:
    with pytest.raises(DataError, match="does not exist"):
        train_run(
            "patchcore",
            tmp_path / "data",
            tmp_path / "run",
            CONFIG,
            val_data=tmp_path / "no_such_folder",
        )


def test_negative_threshold_folds_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="threshold_folds"):
        create_detector("patchcore", {**CONFIG, "threshold_folds": -1})
